"""ClusterNetworkPolicy decoding and validation (enforcer/cnp/decode.py).

VALID and INVALID are also the corpus tests/api/test_cnp_crd.py sends to a real
kube-apiserver with our CRD, so every case here is checked against the API server too.
"""
from __future__ import annotations

import copy

import pytest
import yaml

from enforcer.errors import InputError
from enforcer.load.manifests import decode_text, load

API = "policy.networking.k8s.io/v1alpha2"
NS = {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}}


def cnp(name: str = "p", **spec) -> dict:
    base = {"tier": "Admin", "priority": 10, "subject": NS}
    base.update(spec)
    return {"apiVersion": API, "kind": "ClusterNetworkPolicy", "metadata": {"name": name}, "spec": base}


def rule(action="Deny", peers=None, protocols=None, field="from", **extra) -> dict:
    r = {"action": action, field: peers if peers is not None else [NS], **extra}
    if protocols is not None:
        r["protocols"] = protocols
    return r


def tcp(n):
    return {"tcp": {"destinationPort": {"number": n}}}


VALID: list[tuple[str, dict]] = [
    ("minimal", cnp()),
    ("baseline", cnp(tier="Baseline", priority=0)),
    ("priority 1000", cnp(priority=1000)),
    ("subject pods", cnp(subject={"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}})),
    ("subject pods without namespaceSelector", cnp(subject={"pods": {"podSelector": {}}})),
    ("every action", cnp(ingress=[rule("Accept"), rule("Deny"), rule("Pass", name="r" * 100)])),
    ("egress networks", cnp(egress=[rule("Deny", [{"networks": ["10.0.0.0/8", "fd00::/8", "10.1.2.3/24"]}], field="to")])),
    ("ports", cnp(ingress=[rule(protocols=[tcp(80), {"udp": {"destinationPort": {"range": {"start": 1, "end": 65535}}}},
                                           {"sctp": {"destinationPort": {"number": 9}}},
                                           {"destinationNamedPort": "web"}])])),
    ("egress named port to pods", cnp(egress=[rule("Accept", [{"pods": {"namespaceSelector": {}, "podSelector": {}}}],
                                                  [{"destinationNamedPort": "dns"}], field="to")])),
    ("25 rules", cnp(ingress=[rule()] * 25)),
    ("empty rule lists", cnp(ingress=[], egress=[])),
    ("match expressions", cnp(subject={"namespaces": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}})),
]

INVALID: list[tuple[str, dict, str]] = [
    ("no tier", cnp(tier=None), "spec.tier: Required value"),
    ("bad tier", cnp(tier="admin"), 'spec.tier: Unsupported value: "admin"'),
    ("priority over 1000", cnp(priority=1001), "spec.priority: Invalid value: 1001"),
    ("negative priority", cnp(priority=-1), "spec.priority: Invalid value: -1"),
    ("priority as string", cnp(priority="5"), "spec.priority: Invalid type"),
    ("no priority", cnp(priority=None), "spec.priority: Required value"),
    ("no subject", cnp(subject=None), "spec.subject: Required value"),
    ("empty subject", cnp(subject={}), "spec.subject: Invalid value: 0"),
    ("two subjects", cnp(subject={**NS, "pods": {"podSelector": {}}}), "spec.subject: Invalid value: 2"),
    ("pods without podSelector", cnp(subject={"pods": {"namespaceSelector": {}}}), "spec.subject.pods.podSelector: Required value"),
    ("unknown spec field", cnp(podSelector={}), "spec.podSelector: unknown field"),
    ("bad action", cnp(ingress=[rule("Allow")]), 'spec.ingress[0].action: Unsupported value: "Allow"'),
    ("no action", cnp(ingress=[{"from": [NS]}]), "spec.ingress[0].action: Required value"),
    ("no from", cnp(ingress=[{"action": "Deny"}]), "spec.ingress[0].from: Required value"),
    ("empty from", cnp(ingress=[rule(peers=[])]), "spec.ingress[0].from: Invalid value: 0"),
    ("26 rules", cnp(egress=[rule(field="to")] * 26), "spec.egress: Too many: 26"),
    ("26 peers", cnp(ingress=[rule(peers=[NS] * 26)]), "spec.ingress[0].from: Too many: 26"),
    ("name too long", cnp(ingress=[rule(name="r" * 101)]), "spec.ingress[0].name: Too long"),
    ("empty peer", cnp(ingress=[rule(peers=[{}])]), "spec.ingress[0].from[0]: Invalid value: 0"),
    ("two-field peer", cnp(ingress=[rule(peers=[{**NS, "pods": {"podSelector": {}}}])]), "spec.ingress[0].from[0]: Invalid value: 2"),
    ("networks in ingress", cnp(ingress=[rule(peers=[{"networks": ["10.0.0.0/8"]}])]), "spec.ingress[0].from[0].networks: unknown field"),
    ("nodes peer", cnp(egress=[rule(peers=[{"nodes": {}}], field="to")]), "spec.egress[0].to[0].nodes: unknown field"),
    ("domainNames peer", cnp(egress=[rule("Accept", [{"domainNames": ["a.example"]}], field="to")]), "spec.egress[0].to[0].domainNames: unknown field"),
    ("bad cidr", cnp(egress=[rule(peers=[{"networks": ["10.0.0.0/33"]}], field="to")]), "Invalid CIDR format provided"),
    ("cidr without prefix", cnp(egress=[rule(peers=[{"networks": ["10.0.0.1"]}], field="to")]), "Invalid CIDR format provided"),
    ("cidr leading zeros", cnp(egress=[rule(peers=[{"networks": ["010.0.0.0/8"]}], field="to")]), "Invalid CIDR format provided"),
    ("duplicate network", cnp(egress=[rule(peers=[{"networks": ["10.0.0.0/8", "10.0.0.0/8"]}], field="to")]), "Duplicate value"),
    ("empty networks", cnp(egress=[rule(peers=[{"networks": []}], field="to")]), "spec.egress[0].to[0].networks: Invalid value: 0"),
    ("named port with networks", cnp(egress=[rule("Accept", [{"networks": ["10.0.0.0/8"]}], [{"destinationNamedPort": "web"}], field="to")]),
     "spec.egress[0]: Invalid value"),
    ("empty protocols", cnp(ingress=[rule(protocols=[])]), "spec.ingress[0].protocols: Invalid value: 0"),
    ("empty protocol", cnp(ingress=[rule(protocols=[{}])]), "spec.ingress[0].protocols[0]: Invalid value: 0"),
    ("two protocols in one", cnp(ingress=[rule(protocols=[{**tcp(80), "udp": {"destinationPort": {"number": 1}}}])]),
     "spec.ingress[0].protocols[0]: Invalid value: 2"),
    ("tcp without port", cnp(ingress=[rule(protocols=[{"tcp": {}}])]), "spec.ingress[0].protocols[0].tcp: Invalid value: 0"),
    ("port 0", cnp(ingress=[rule(protocols=[tcp(0)])]), "destinationPort.number: Invalid value: 0"),
    ("port 65536", cnp(ingress=[rule(protocols=[tcp(65536)])]), "destinationPort.number: Invalid value: 65536"),
    ("port as string", cnp(ingress=[rule(protocols=[tcp("80")])]), "destinationPort.number: Invalid type"),
    ("number and range", cnp(ingress=[rule(protocols=[{"tcp": {"destinationPort": {"number": 1, "range": {"start": 1, "end": 2}}}}])]),
     "destinationPort: Invalid value: 2"),
    ("range start = end", cnp(ingress=[rule(protocols=[{"tcp": {"destinationPort": {"range": {"start": 5, "end": 5}}}}])]),
     "Start port must be less than End port"),
    ("range without end", cnp(ingress=[rule(protocols=[{"tcp": {"destinationPort": {"range": {"start": 5}}}}])]),
     "range.end: Required value"),
    ("unknown protocol field", cnp(ingress=[rule(protocols=[{"icmp": {}}])]), "spec.ingress[0].protocols[0].icmp: unknown field"),
    ("no spec", {"apiVersion": API, "kind": "ClusterNetworkPolicy", "metadata": {"name": "p"}}, "spec: Required value"),
    ("bad name", cnp(name="Bad_Name"), "metadata.name: Invalid value"),
]


def _clean(doc: dict) -> dict:
    """cnp(tier=None) means: no tier field."""
    doc = copy.deepcopy(doc)
    if isinstance(doc.get("spec"), dict):
        doc["spec"] = {k: v for k, v in doc["spec"].items() if v is not None}
    return doc


def problems(doc: dict) -> list[str]:
    objs, file_problems, _ = decode_text(yaml.safe_dump(_clean(doc)), "cnp.yaml")
    return [str(p) for p in file_problems] + [str(p) for o in objs for p in o.problems if not p.warning]


@pytest.mark.parametrize("doc", [pytest.param(d, id=i) for i, d in VALID])
def test_valid_cnps_load(doc):
    assert problems(doc) == []


@pytest.mark.parametrize("doc,expected", [pytest.param(d, e, id=i) for i, d, e in INVALID])
def test_invalid_cnps_are_refused_with_the_field(doc, expected):
    found = problems(doc)
    assert found, "accepted"
    assert any(expected in p for p in found), found
    assert all(p.startswith("cnp.yaml: ClusterNetworkPolicy ") for p in found), found


def test_the_model_keeps_order_actions_and_ports(tmp_path):
    doc = cnp("deny-db", priority=3, ingress=[
        rule("Pass", name="monitoring", protocols=[tcp(9100)]),
        rule("Deny", [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "x"}}}}],
             [{"udp": {"destinationPort": {"range": {"start": 1000, "end": 2000}}}}, {"destinationNamedPort": "web"}])],
        egress=[rule("Accept", [{"networks": ["10.1.2.3/24"]}], field="to")])
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(doc))
    c = load([str(f)]).cluster.cnps["deny-db"]
    assert (c.tier, c.priority, c.source) == ("Admin", 3, str(f))
    assert [r.action for r in c.ingress] == ["Pass", "Deny"]
    assert c.ingress[0].name == "monitoring"
    assert [str(p) for p in c.ingress[1].protocols] == ["1000-2000/UDP", "named port web"]
    assert str(c.ingress[1].peers[0]) == "pods app=x in namespaces <all>"
    assert c.egress[0].peers[0].networks == ("10.1.2.0/24",)  # host bits set: the network


def test_a_cnp_with_a_namespace_is_still_cluster_scoped(tmp_path):
    doc = cnp("p")
    doc["metadata"]["namespace"] = "x"
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(doc))
    assert list(load([str(f)]).cluster.cnps) == ["p"]


def test_wrong_api_version_is_refused(tmp_path):
    doc = cnp()
    doc["apiVersion"] = "policy.networking.k8s.io/v1alpha1"
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="apiVersion.*v1alpha2"):
        load([str(f)])
