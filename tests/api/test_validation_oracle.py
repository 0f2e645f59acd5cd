"""`netpol validate` against the real thing: every invalid and tricky NetworkPolicy, Pod and
Namespace of our own test corpus goes to kube-apiserver (server-side dry run, strict field
validation) and to our validator; both must accept it or both must refuse it.

Where they differ, the API server is right. Known differences are listed in KNOWN with what
differs, as strict xfails: fixing one turns its xfail into a failure, so the list stays true.
Pod status (podIP, podIPs) is only validated by the API server on the status subresource, as
a kubelet writes it: those cases create the pod for real, then dry-run the status patch.
"""
from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import pytest
import yaml

from click.testing import CliRunner

from enforcer.cli import cli
from enforcer.load.manifests import decode_text
from tests.unit import test_validation as corpus

DATA = Path(__file__).resolve().parents[1] / "unit" / "data" / "manifests"
KINDS = ("NetworkPolicy", "Pod", "Namespace")
# Fields only the API server sets: a create must not carry them, a `kubectl get` output does.
SERVER_SET = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink")


def _params(test_function) -> list:
    [mark] = [m for m in test_function.pytestmark if m.name == "parametrize"]
    return list(mark.args[1])


def _valid_policies() -> list[tuple[str, dict]]:
    labels = {"a" * 63: "b" * 63, "x" * 253 + "/y": ""}
    return [(f"valid policy {i}", corpus.policy(spec, labels=labels))
            for i, spec in enumerate(_params(corpus.test_valid_policies_have_no_problems))]


TRICKY: list[tuple[str, object]] = [
    # accepted by the API server, some with a warning
    ("cidr with host bits", corpus.policy(corpus.ip_block("10.0.0.5/24"))),
    ("cidr with leading zeros", corpus.policy(corpus.ip_block("010.0.0.0/8"))),
    ("ipv6 cidr upper case", corpus.policy(corpus.ip_block("FD00:0:0::/48", "fd00::/64"))),
    ("port name 15 chars", corpus.policy(corpus.port({"port": "abcdefghijklmno"}))),
    ("endPort equal port", corpus.policy(corpus.port({"port": 80, "endPort": 80}))),
    ("empty policyTypes", corpus.policy({"policyTypes": []})),
    ("null egress", corpus.policy({"egress": None})),
    ("podIP leading zeros", corpus.pod(status={"podIP": "010.000.001.002"})),
    ("podIP non-canonical ipv6", corpus.pod(status={"podIP": "fd00::0001", "podIPs": [{"ip": "fd00::1"}]})),
    ("dual-stack podIPs", corpus.pod(status={"podIP": "fd00::1", "podIPs": [{"ip": "fd00::1"}, {"ip": "10.0.0.1"}]})),
    ("container port protocol empty", corpus.pod([{"containerPort": 80, "protocol": ""}])),
    ("pod fields we do not read", {
        **corpus.pod([{"containerPort": 80, "name": "http", "hostIP": "0.0.0.0", "hostPort": 8080}],
                     status={"phase": "Running", "hostIP": "192.168.1.1", "podIP": "10.0.0.9"}),
        "spec": {"nodeName": "n1", "volumes": [{"name": "v", "emptyDir": {}}],
                 "containers": [{"name": "c", "image": "x", "command": ["sh"],
                                 "ports": [{"containerPort": 80, "name": "http"}],
                                 "resources": {"limits": {"cpu": 1}},
                                 "livenessProbe": {"httpGet": {"port": "http"}}}],
                 "initContainers": [{"name": "i", "image": "x", "ports": [{"bogus": 1}]}]}}),
    ("namespace with labels", corpus.namespace("ns-ok", metadata={"name": "ns-ok", "labels": {"team": "a", "x.io/y": ""}})),
    ("policyTypes twice", corpus.policy({"policyTypes": ["Ingress", "Ingress"]})),
    ("pod without containers", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "prod"},
                                "status": {"podIP": "10.0.0.1"}}),
    ("networkpolicy with status", {**corpus.policy(), "status": {}}),
]

_NP = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: prod}\n"
# YAML as written: the API server decodes these bytes itself (YAML 1.1, like PyYAML).
TRICKY_TEXT: list[tuple[str, str]] = [
    ("yaml: anchors and merge keys", _NP + "spec:\n  podSelector:\n    matchLabels: &l {app: db}\n"
                                          "  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n"
                                          "          <<: *l\n          tier: x\n"),
    ("yaml: flow style", "{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: np, namespace: prod},"
                         " spec: {podSelector: {}}}"),
    ("yaml: json", '{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", '
                   '"metadata": {"name": "np", "namespace": "prod"}, "spec": {"podSelector": {}}}'),
    ("yaml: octal port 010", _NP + "spec:\n  ingress:\n  - ports:\n    - port: 010\n"),
    ("yaml: port 0080", _NP + "spec:\n  ingress:\n  - ports:\n    - port: 0080\n"),
    ("yaml: port 1_000", _NP + "spec:\n  ingress:\n  - ports:\n    - port: 1_000\n"),
    ("yaml: port 80.0", _NP + "spec:\n  ingress:\n  - ports:\n    - port: 80.0\n"),
    ("yaml: port 0x50", _NP + "spec:\n  ingress:\n  - ports:\n    - port: 0x50\n"),
    ("yaml: label value on", _NP.replace("namespace: prod}", "namespace: prod, labels: {a: on}}")),
    ("yaml: label value null", _NP.replace("namespace: prod}", "namespace: prod, labels: {a: ~}}")),
    ("yaml: label value 1e3", _NP.replace("namespace: prod}", "namespace: prod, labels: {a: 1e3}}")),
    ("yaml: label value y", _NP.replace("namespace: prod}", "namespace: prod, labels: {a: y}}")),
    ("yaml: port 1:20", _NP + "spec:\n  ingress:\n  - ports:\n    - port: 1:20\n"),
    ("yaml: port 0o120", _NP + "spec:\n  ingress:\n  - ports:\n    - port: 0o120\n"),
    ("yaml: port 1e2", _NP + "spec:\n  ingress:\n  - ports:\n    - port: 1e2\n"),
    ("yaml: old apiVersion", _NP.replace("networking.k8s.io/v1", "extensions/v1beta1")),
    ("yaml: kind lowercase", _NP.replace("kind: NetworkPolicy", "kind: networkpolicy")),
    ("yaml: tab indentation", _NP + "spec:\n\tpodSelector: {}\n"),
    ("yaml: duplicate spec", _NP + "spec: {}\nspec: {}\n"),
]


class _Loader(yaml.SafeLoader):
    """Timestamps stay strings (as kubectl reads them), so they go back to the server as sent."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _file_cases() -> list[tuple[str, object]]:
    out = []
    for path in sorted(DATA.rglob("*")):
        if path.suffix not in (".yaml", ".yml", ".json"):
            continue
        text = path.read_text()
        try:
            docs = [d for d in yaml.load_all(text, Loader=_Loader) if isinstance(d, dict)]
        except yaml.YAMLError:
            continue
        for i, d in enumerate(docs):
            items = d.get("items") if d.get("kind", "").endswith("List") else [d]
            for j, item in enumerate(items or []):
                if isinstance(item, dict) and item.get("kind", d.get("kind", "").removesuffix("List")) in KINDS:
                    item = {"kind": d["kind"].removesuffix("List"), "apiVersion": d.get("apiVersion"), **item} \
                        if "kind" not in item else item
                    out.append((f"{path.relative_to(DATA)}#{i}.{j}", item))
    return out


CASES: list[tuple[str, object]] = (
    [(f"policy: {n}", d) for n, d, _ in corpus.NETWORK_POLICY_CASES]
    + [(f"pod: {n}", d) for n, d, _ in corpus.POD_CASES]
    + [(f"namespace: {n}", d) for n, d, _ in corpus.OTHER_CASES if n.startswith("namespace")]
    + _valid_policies() + TRICKY + TRICKY_TEXT + _file_cases()
)

# Known differences: case id -> what differs and why we keep it. Strict xfails: fixing one
# turns its xfail into a failure, so the list stays true.
_NO_CONTAINERS = ("deliberate: a Pod without spec.containers is refused by the API server (Required "
                  "value); we accept it as a stub (labels and address are all a policy reads, and "
                  "tests, docs and users' sketches write pods so)")
KNOWN: dict[str, str] = {
    "policy: cidr ipv4-mapped below /96": "deliberate: the API server accepts ::ffff:0:0/90 with a warning; "
                                          "it reaches past the IPv4-mapped range into plain IPv6, where "
                                          "implementations disagree on its meaning, so we refuse it",
    "pod fields we do not read": "deliberate: the API server checks every field of a Pod (strict decoding: "
                                 "unknown field spec.initContainers[0].ports[0].bogus); we check the fields "
                                 "we read (metadata, containers[].ports, status.podIP(s)), not the whole "
                                 "PodSpec",
    "pod without containers": _NO_CONTAINERS,
    "yaml: label value y": "deliberate: go-yaml v2 (the API server's reader) takes y and n for booleans, so "
                           "the label value is refused; YAML 1.1 reads the string \"y\", and so do we: "
                           "PyYAML writes that string bare, so a boolean y would break every file it "
                           "writes for the upstream namespace y (tests, the lab, users' scripts)",
}
# Deliberate: we warn where the API server accepts silently (docs/concepts.md lists them).
DELIBERATE_WARNINGS: dict[str, str] = {
    "policyTypes twice": "a policy type listed twice means the same as once",
    "pod: podIP differs": "status.podIPs is dropped whole when podIP differs from podIPs[0]",
}

_ids = itertools.count()


def _kind_and_ns(doc: object) -> tuple[str, str]:
    if isinstance(doc, str):
        try:
            doc = yaml.safe_load(doc)
        except yaml.YAMLError:  # the server refuses it too; any path will do
            return "NetworkPolicy", "prod"
        if not isinstance(doc, dict):
            return "NetworkPolicy", "prod"
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    ns = meta.get("namespace")
    return doc.get("kind"), ns if isinstance(ns, str) else "default"


def _path(kind: str, ns: str) -> str:
    if kind == "Namespace":
        return "/api/v1/namespaces"
    if kind == "Pod":
        return f"/api/v1/namespaces/{ns}/pods"
    return f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"


DRY = "?dryRun=All&fieldValidation=Strict"


def ours(doc: object, tmp_path: Path | None = None) -> tuple[bool, list[str]]:
    """(accepted, warnings) of our validator: the verdict is `netpol validate`'s exit code
    (run in-process) when *tmp_path* is given; the warnings are the loader's, the ones that
    mirror the API server's (validate also prints lint's hints, which the API server has
    no counterpart for)."""
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    objs, file_problems, _ = decode_text(text, "case.yaml")
    problems = list(file_problems) + [p for o in objs for p in o.problems]
    accepted = not any(not p.warning for p in problems)
    if tmp_path is not None:
        case = tmp_path / "case.yaml"
        case.write_text(text)
        result = CliRunner().invoke(cli, ["validate", "-f", str(case)])
        assert result.exit_code in (0, 1), result.output
        assert accepted == (result.exit_code == 0), result.output  # one loader, one verdict
    return accepted, [p.message for p in problems if p.warning]


def _accepted(reply) -> bool:
    # AlreadyExists comes from storage, after validation passed (the corpus reuses names).
    return reply.ok or reply.body.get("reason") == "AlreadyExists"


def theirs(cp, doc: object) -> tuple[bool, str, list[str]]:
    """(accepted, message, warnings) of the API server."""
    kind, ns = _kind_and_ns(doc)
    if isinstance(doc, str):  # the exact bytes: the server's own YAML decoding decides
        reply = cp.api("POST", _path(kind, ns) + DRY, doc, content_type="application/yaml")
        return _accepted(reply), reply.body.get("message", ""), reply.warnings
    doc = copy.deepcopy(doc)
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    for key in SERVER_SET:
        meta.pop(key, None)
    status = doc.pop("status", None) if kind == "Pod" else None
    reply = cp.api("POST", _path(kind, ns) + DRY, json.dumps(doc))
    if not reply.ok or status is None:
        return _accepted(reply), reply.body.get("message", ""), reply.warnings
    # Status: create the pod for real in a namespace of its own, then dry-run the status
    # write a kubelet would make.
    real_ns = f"oracle-{next(_ids)}"
    made = cp.api("POST", "/api/v1/namespaces", json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": real_ns}}))
    assert made.ok, made
    meta["namespace"] = real_ns
    created = cp.api("POST", _path("Pod", real_ns), json.dumps(doc))
    assert created.ok, created
    name = created.body["metadata"]["name"]
    patch = cp.api("PATCH", f"/api/v1/namespaces/{real_ns}/pods/{name}/status" + DRY,
                   json.dumps({"status": status}), content_type="application/merge-patch+json")
    return patch.ok, patch.body.get("message", ""), reply.warnings + patch.warnings


@pytest.fixture(scope="module")
def oracle_namespaces(control_plane):
    """The namespaces the corpus' objects live in (they are not what is being tested)."""
    names = {_kind_and_ns(d)[1] for _, d in CASES} - {"default"}
    for ns in sorted(n for n in names if isinstance(n, str) and corpus.V.dns1123_label(n) == []):
        control_plane.kubectl("create", "namespace", ns, check=False)


def _marks(case_id: str):
    if case_id in KNOWN:
        return [pytest.mark.xfail(strict=True, reason=KNOWN[case_id])]
    return []


@pytest.mark.parametrize("doc", [pytest.param(d, id=i, marks=_marks(i)) for i, d in CASES])
def test_validate_agrees_with_the_api_server(control_plane, oracle_namespaces, doc, request, tmp_path):
    accepted, warnings = ours(doc, tmp_path)
    server_ok, message, server_warnings = theirs(control_plane, doc)
    assert accepted == server_ok, (f"we {'accept' if accepted else 'refuse'}, the API server "
                                   f"{'accepts' if server_ok else 'refuses'}: {message}")
    if not accepted:
        return
    # Accepted by both: a warning from one must be a warning from the other (wording may
    # differ), except where we warn on purpose.
    if request.node.callspec.id in DELIBERATE_WARNINGS:
        assert warnings and not server_warnings, (warnings, server_warnings)
    else:
        assert bool(warnings) == bool(server_warnings), (f"ours: {warnings}", f"API server: {server_warnings}")
