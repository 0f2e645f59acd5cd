"""The Pod fast path (enforcer.load.podfast) against the strict decoder: whatever it accepts, the
strict decoder accepts without a message and decodes to the same Pod; whatever it doubts,
it leaves to the strict decoder (Hypothesis, over valid pods and near misses)."""
from __future__ import annotations

import json
from unittest import mock

import pytest
from hypothesis import given, settings, strategies as st

from enforcer.load import decode, manifests, podfast
from enforcer.errors import InputError
from enforcer.load.manifests import decode_text, load

NAMES = st.sampled_from(["p0", "web-1", "a.b", "", "Web", "-x", "x" * 254, 7, None])
NAMESPACES = st.sampled_from(["ns0", "default", "", None, "Bad_ns", "a.b", 3])
LABEL_KEYS = st.sampled_from(["app", "example.com/role", "bad key", "", "a/b/c", "x" * 64])
LABEL_VALUES = st.sampled_from(["web", "", "a-b.c_d", "-bad", "x" * 64, None, 5, True])
PORT_NAMES = st.sampled_from(["http", "metrics", "", "HTTP", "a--b", "x" * 16, "8080", None, 9])
PORT_NUMBERS = st.sampled_from([80, 8080, 65535, 0, 65536, -1, "80", True, None])
PROTOCOLS = st.sampled_from(["TCP", "UDP", "SCTP", "", "tcp", None, 6, False, 0, []])
IPS = st.sampled_from(["10.0.0.1", "10.0.0.01", "fd00::1", "", "300.1.1.1", 5, None])


@st.composite
def container_ports(draw):
    p = {}
    for field, values in (("name", PORT_NAMES), ("containerPort", PORT_NUMBERS), ("protocol", PROTOCOLS)):
        if draw(st.booleans()) or field == "containerPort":
            p[field] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        p[draw(st.sampled_from(["hostPort", "hostIP", "bogus"]))] = draw(st.sampled_from([80, "1.2.3.4", None]))
    return p


@st.composite
def pods(draw):
    meta = {"name": draw(NAMES)}
    if draw(st.booleans()):
        meta["namespace"] = draw(NAMESPACES)
    if draw(st.booleans()):
        meta["labels"] = draw(st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=3))
    for field in draw(st.lists(st.sampled_from(["uid", "resourceVersion", "annotations", "ownerReferences",
                                                "generation", "finalizers", "deletionTimestamp", "selfLink",
                                                "managedFields", "bogus"]), max_size=3)):
        meta[field] = draw(st.sampled_from(["abc", 5, None, [], {"a": "b"}, {"bad key!": "x"}, {"a": None},
                                            ["f"], [None], [{"kind": "ReplicaSet", "name": "r"}], True]))
    containers = []
    for _ in range(draw(st.integers(0, 2))):
        c = {"name": "c", "image": "i"}
        if draw(st.booleans()):
            c["ports"] = draw(st.lists(container_ports(), max_size=3))
        containers.append(c if draw(st.integers(0, 9)) else draw(st.sampled_from([None, "c", 1])))
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": meta}
    if draw(st.booleans()):
        doc["spec"] = {"containers": containers}
        if draw(st.integers(0, 4)) == 0:
            doc["spec"]["hostNetwork"] = draw(st.sampled_from([True, False, "yes", None]))
    if draw(st.booleans()):
        ip = draw(IPS)
        status = {"phase": "Running", "podIP": ip}
        shape = draw(st.integers(0, 3))
        if shape == 1:
            status["podIPs"] = [{"ip": ip}]
        elif shape == 2:
            status["podIPs"] = [{"ip": ip}, {"ip": "fd00::2"}]
        elif shape == 3:
            del status["podIP"]
            status["podIPs"] = draw(st.sampled_from([None, [], [{"ip": ip}]]))
        doc["status"] = status
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.sampled_from(["spec", "status", "metadata", "extra"]))] = draw(st.sampled_from([None, "x", []]))
    return doc


def strict(doc: dict) -> tuple[object, list, list]:
    errs: list = []
    warns: list = []
    with mock.patch.object(decode, "fast_pod", lambda d, source: None):
        obj = decode.decode_kind(json.loads(json.dumps(doc)), "Pod", errs, warns, "f.json", False, [], "Pod x")
    return obj, errs, warns


@settings(max_examples=600, deadline=None)
@given(pods())
def test_fast_path_accepts_only_what_the_strict_decoder_accepts_unchanged(doc):
    fast = podfast.fast_pod(json.loads(json.dumps(doc)), "f.json")
    if fast is None:
        return
    obj, errs, warns = strict(doc)
    assert errs == [] and warns == []
    assert fast == obj and vars(fast) == vars(obj)


def test_common_pods_take_the_fast_path():
    doc = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web-0", "namespace": "prod", "labels": {"app": "web"}, "uid": "u1"},
           "spec": {"containers": [{"name": "c", "image": "i", "ports": [
               {"containerPort": 8080, "protocol": "TCP", "name": "http"}, {"containerPort": 53, "protocol": "UDP"}]}]},
           "status": {"phase": "Running", "podIP": "10.0.0.7", "podIPs": [{"ip": "10.0.0.7"}]}}
    pod = podfast.fast_pod(doc, "f.json")
    assert pod is not None and pod.key == "prod/web-0" and pod.ips == ("10.0.0.7",)
    assert [(p.port, p.protocol, p.name) for p in pod.ports] == [(8080, "TCP", "http"), (53, "UDP", None)]


def test_a_bad_pod_in_a_large_list_still_gets_its_exact_message(tmp_path):
    items = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "namespace": "ns", "labels": {"app": "a"}},
              "status": {"podIP": f"10.0.0.{i + 1}"}} for i in range(50)]
    items[30]["metadata"]["labels"] = {"app": "-bad"}
    items[40]["spec"] = {"containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"},
                                                                 {"containerPort": 81, "name": "http"}]}]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    with pytest.raises(InputError) as e:
        load([str(path)])
    lines = str(e.value).splitlines()
    assert any("Pod ns/p30: metadata.labels: Invalid value: \"-bad\"" in line for line in lines), lines
    assert any("Pod ns/p40: spec.containers[0].ports[1].name: Duplicate value: \"http\"" in line for line in lines), lines


@settings(max_examples=150, deadline=None)
@given(st.lists(pods(), max_size=6))
def test_a_list_decodes_the_same_with_and_without_the_fast_path(docs):
    """What decode_text returns for a List (objects, keys, owners, every problem) does not
    depend on the fast path."""
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    fast = decode_text(text, "f.json")
    with mock.patch.object(manifests, "fast_pod", lambda d, source: None), \
            mock.patch.object(decode, "fast_pod", lambda d, source: None):
        slow = decode_text(text, "f.json")
    assert fast == slow
