"""One input per API-server rule: the field path and the message a user sees."""
from __future__ import annotations

import pytest
import yaml

from enforcer.load import validation as V
from enforcer.load.manifests import decode_text

SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
             "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
             "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
         "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
         "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
QNAME = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
         "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
         "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
VALUE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
         "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  "
         "or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
RANGE = "must be between 1 and 65535, inclusive"
CIDR = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
IP = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
PROTOS = 'supported values: "TCP", "UDP", "SCTP"'


def found(doc: dict | str) -> list[tuple[str, str]]:
    """(field, message) of every problem that decoding ``doc`` reports."""
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    objs, file_problems, _ = decode_text(text, "t.yaml")
    assert file_problems == []
    return [(p.field, p.message) for d in objs for p in d.problems]


def policy(spec: dict | None = None, name: str = "np", namespace: str = "prod", **meta) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace, **meta}, "spec": spec or {}}


def peer(p: object, direction: str = "ingress") -> dict:
    return {direction: [{"from" if direction == "ingress" else "to": [p]}]}


def port(p: object) -> dict:
    return {"ingress": [{"ports": [p]}]}


def selector(s: object) -> dict:
    return {"podSelector": s}


def ip_block(cidr: object, *excepts: str) -> dict:
    b: dict = {"cidr": cidr}
    if excepts:
        b["except"] = list(excepts)
    return peer({"ipBlock": b})


F = "spec.ingress[0].from[0]"
P = "spec.ingress[0].ports[0]"
S = "spec.podSelector"

NETWORK_POLICY_CASES = [
    # names
    ("name subdomain", policy(name="Db_1"), [("metadata.name", f'Invalid value: "Db_1": {SUBDOMAIN}')]),
    ("name length", policy(name="a" * 254), [("metadata.name", f'Invalid value: "{"a" * 254}": must be no more than 253 characters')]),
    ("name missing", policy(name=None), [("metadata.name", "Required value: name or generateName is required")]),
    ("namespace label", policy(namespace="a.b"), [("metadata.namespace", f'Invalid value: "a.b": {LABEL}')]),
    ("namespace length", policy(namespace="n" * 64), [("metadata.namespace", f'Invalid value: "{"n" * 64}": must be no more than 63 characters')]),
    # labels on the object
    ("label key chars", policy(labels={"-app": "x"}), [("metadata.labels", f'Invalid value: "-app": {QNAME}')]),
    ("label key prefix", policy(labels={"Example.com/app": "x"}), [("metadata.labels", f'Invalid value: "Example.com/app": prefix part {SUBDOMAIN}')]),
    ("label key empty prefix", policy(labels={"/app": "x"}), [("metadata.labels", 'Invalid value: "/app": prefix part must be non-empty')]),
    ("label key name length", policy(labels={"k" * 64: "x"}), [("metadata.labels", f'Invalid value: "{"k" * 64}": name part must be no more than 63 characters')]),
    ("label key prefix length", policy(labels={"p" * 254 + "/k": "x"}), [("metadata.labels", f'Invalid value: "{"p" * 254}/k": prefix part must be no more than 253 characters')]),
    ("label key two slashes", policy(labels={"a/b/c": "x"}),
     [("metadata.labels", 'Invalid value: "a/b/c": a qualified name ' + QNAME[len("name part "):] + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")]),
    ("label value chars", policy(labels={"app": "-x"}), [("metadata.labels", f'Invalid value: "-x": {VALUE}')]),
    ("label value length", policy(labels={"app": "v" * 64}), [("metadata.labels", f'Invalid value: "{"v" * 64}": must be no more than 63 characters')]),
    ("annotation key", policy(annotations={"bad key": "x"}), [("metadata.annotations", f'Invalid value: "bad key": {QNAME}')]),
    # label selectors
    ("matchLabels key", policy(selector({"matchLabels": {"a b": "x"}})), [(f"{S}.matchLabels", f'Invalid value: "a b": {QNAME}')]),
    ("matchLabels value", policy(selector({"matchLabels": {"app": "a b"}})), [(f"{S}.matchLabels", f'Invalid value: "a b": {VALUE}')]),
    ("In without values", policy(selector({"matchExpressions": [{"key": "a", "operator": "In"}]})),
     [(f"{S}.matchExpressions[0].values", "Required value: must be specified when `operator` is 'In' or 'NotIn'")]),
    ("NotIn with empty values", policy(selector({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]})),
     [(f"{S}.matchExpressions[0].values", "Required value: must be specified when `operator` is 'In' or 'NotIn'")]),
    ("Exists with values", policy(selector({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})),
     [(f"{S}.matchExpressions[0].values", "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'")]),
    ("DoesNotExist with values", policy(selector({"matchExpressions": [{"key": "a", "operator": "DoesNotExist", "values": ["x"]}]})),
     [(f"{S}.matchExpressions[0].values", "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'")]),
    ("unknown operator", policy(selector({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]})),
     [(f"{S}.matchExpressions[0].operator", 'Invalid value: "Equals": not a valid selector operator')]),
    ("operator case", policy(selector({"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]})),
     [(f"{S}.matchExpressions[0].operator", 'Invalid value: "in": not a valid selector operator')]),
    ("expression key", policy(selector({"matchExpressions": [{"key": "a b", "operator": "Exists"}]})),
     [(f"{S}.matchExpressions[0].key", f'Invalid value: "a b": {QNAME}')]),
    ("expression value", policy(selector({"matchExpressions": [{"key": "a", "operator": "In", "values": ["ok", "-no"]}]})),
     [(f"{S}.matchExpressions[0].values[1]", f'Invalid value: "-no": {VALUE}')]),
    ("peer selector checked too", policy(peer({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}})),
     [(f"{F}.namespaceSelector.matchExpressions[0].values", "Required value: must be specified when `operator` is 'In' or 'NotIn'")]),
    # peers
    ("empty peer", policy(peer({})), [(F, "Required value: must specify a peer")]),
    ("null peer", policy(peer(None)), [(F, "Required value: must specify a peer")]),
    ("empty egress peer", policy(peer({}, "egress")), [("spec.egress[0].to[0]", "Required value: must specify a peer")]),
    ("ipBlock and podSelector", policy(peer({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}})),
     [(F, "Forbidden: may not specify both ipBlock and another peer")]),
    ("ipBlock and namespaceSelector", policy(peer({"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}, "egress")),
     [("spec.egress[0].to[0]", "Forbidden: may not specify both ipBlock and another peer")]),
    # ipBlock
    ("cidr missing", policy(peer({"ipBlock": {"except": ["10.0.0.0/8"]}})), [(f"{F}.ipBlock.cidr", "Required value")]),
    ("cidr empty", policy(ip_block("")), [(f"{F}.ipBlock.cidr", "Required value")]),
    ("cidr without prefix", policy(ip_block("10.0.0.0")), [(f"{F}.ipBlock.cidr", f'Invalid value: "10.0.0.0": {CIDR}')]),
    ("cidr prefix too long", policy(ip_block("10.0.0.0/33")), [(f"{F}.ipBlock.cidr", f'Invalid value: "10.0.0.0/33": {CIDR}')]),
    ("cidr bad address", policy(ip_block("300.0.0.0/8")), [(f"{F}.ipBlock.cidr", f'Invalid value: "300.0.0.0/8": {CIDR}')]),
    ("cidr ipv6 bad", policy(ip_block("fd00:::/64")), [(f"{F}.ipBlock.cidr", f'Invalid value: "fd00:::/64": {CIDR}')]),
    ("status", {**policy(), "status": {}},
     [("status", "unknown field (a NetworkPolicy has had no status since Kubernetes 1.28 (kubectl get on older "
                 "clusters printed status: {}): delete it)")]),
    ("cidr ipv4-mapped", policy(ip_block("::ffff:10.0.0.0/104")),  # a warning: it is 10.0.0.0/8
     [(f"{F}.ipBlock.cidr", 'non-standard CIDR value "::ffff:10.0.0.0/104" will be considered invalid in a '
                            'future Kubernetes release: use "10.0.0.0/8"')]),
    ("cidr ipv4-mapped below /96", policy(ip_block("::ffff:0:0/90")),
     [(f"{F}.ipBlock.cidr", 'Invalid value: "::ffff:0:0/90": must not have an IPv4-mapped IPv6 address with a '
                            'prefix shorter than /96')]),
    ("except bad", policy(ip_block("10.0.0.0/8", "bogus")), [(f"{F}.ipBlock.except[0]", f'Invalid value: "bogus": {CIDR}')]),
    ("except outside", policy(ip_block("10.0.0.0/16", "10.1.0.0/16")),
     [(f"{F}.ipBlock.except[0]", 'Invalid value: "10.1.0.0/16": must be a strict subset of cidr')]),
    ("except equal", policy(ip_block("10.0.0.0/16", "10.0.0.0/16")),
     [(f"{F}.ipBlock.except[0]", 'Invalid value: "10.0.0.0/16": must be a strict subset of cidr')]),
    ("except wider", policy(ip_block("10.0.0.0/16", "10.0.0.0/8")),
     [(f"{F}.ipBlock.except[0]", 'Invalid value: "10.0.0.0/8": must be a strict subset of cidr')]),
    ("except other family", policy(ip_block("10.0.0.0/8", "fd00::/64")),
     [(f"{F}.ipBlock.except[0]", 'Invalid value: "fd00::/64": must be a strict subset of cidr')]),
    ("ipv6 except outside", policy(ip_block("fd00::/64", "fd01::/80")),
     [(f"{F}.ipBlock.except[0]", 'Invalid value: "fd01::/80": must be a strict subset of cidr')]),
    # ports
    ("protocol unknown", policy(port({"protocol": "ICMP"})), [(f"{P}.protocol", f'Unsupported value: "ICMP": {PROTOS}')]),
    ("protocol case", policy(port({"protocol": "tcp", "port": 80})), [(f"{P}.protocol", f'Unsupported value: "tcp": {PROTOS}')]),
    ("protocol empty", policy(port({"protocol": ""})), [(f"{P}.protocol", f'Unsupported value: "": {PROTOS}')]),
    ("port zero", policy(port({"port": 0})), [(f"{P}.port", f"Invalid value: 0: {RANGE}")]),
    ("port too big", policy(port({"port": 65536})), [(f"{P}.port", f"Invalid value: 65536: {RANGE}")]),
    ("port negative", policy(port({"port": -1})), [(f"{P}.port", f"Invalid value: -1: {RANGE}")]),
    ("port name length", policy(port({"port": "abcdefghijklmnop"})), [(f"{P}.port", 'Invalid value: "abcdefghijklmnop": must be no more than 15 characters')]),
    ("port name upper", policy(port({"port": "Http"})), [(f"{P}.port", 'Invalid value: "Http": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)')]),
    ("port name no letter", policy(port({"port": "80"})), [(f"{P}.port", 'Invalid value: "80": must contain at least one letter (a-z)')]),
    ("port name double hyphen", policy(port({"port": "a--b"})), [(f"{P}.port", 'Invalid value: "a--b": must not contain consecutive hyphens')]),
    ("port name leading hyphen", policy(port({"port": "-ab"})), [(f"{P}.port", 'Invalid value: "-ab": must not begin or end with a hyphen')]),
    ("port name trailing hyphen", policy(port({"port": "ab-"})), [(f"{P}.port", 'Invalid value: "ab-": must not begin or end with a hyphen')]),
    ("port name empty", policy(port({"port": ""})), [
        (f"{P}.port", 'Invalid value: "": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)'),
        (f"{P}.port", 'Invalid value: "": must contain at least one letter (a-z)')]),
    ("endPort with named port", policy(port({"port": "http", "endPort": 90})),
     [(f"{P}.endPort", "Invalid value: 90: may not be specified when `port` is non-numeric")]),
    ("endPort without port", policy(port({"endPort": 90})),
     [(f"{P}.endPort", "Invalid value: 90: may not be specified when `port` is not specified")]),
    ("endPort below port", policy(port({"port": 90, "endPort": 80})),
     [(f"{P}.endPort", "Invalid value: 80: must be greater than or equal to `port`")]),
    ("endPort too big", policy(port({"port": 90, "endPort": 65536})), [(f"{P}.endPort", f"Invalid value: 65536: {RANGE}")]),
    ("egress ports checked", policy({"egress": [{"ports": [{"port": 0}]}]}), [("spec.egress[0].ports[0].port", f"Invalid value: 0: {RANGE}")]),
    # policyTypes
    ("policyType unknown", policy({"policyTypes": ["ingress"]}), [("spec.policyTypes[0]", 'Unsupported value: "ingress": supported values: "Ingress", "Egress"')]),
    ("policyTypes three", policy({"policyTypes": ["Ingress", "Egress", "Ingress"]}),
     [("spec.policyTypes", 'Invalid value: ["Ingress", "Egress", "Ingress"]: may not specify more than two policyTypes')]),
    # strict decoding: unknown fields, types
    ("ports inside a peer", policy(peer({"podSelector": {}, "ports": [{"port": 80}]})),
     [(f"{F}.ports", 'unknown field ("ports" is a field of spec.ingress[0]: check the indentation)')]),
    ("podSelector inside namespaceSelector", policy(peer({"namespaceSelector": {"podSelector": {}}})),
     [(f"{F}.namespaceSelector.podSelector", 'unknown field ("podSelector" is a field of a peer: put it beside the other field in '
                                               'spec.ingress[0].from[0] (both must match) or in an item of its own (either matches))')]),
    ("egress inside ingress rule", policy({"ingress": [{"egress": []}]}),
     [("spec.ingress[0].egress", 'unknown field ("egress" is a field of spec: check the indentation)')]),
    ("field case", policy({"podselector": {}}), [("spec.podselector", 'unknown field (did you mean "podSelector"? spec has no field "podselector")')]),
    ("misspelled spec field", policy({"podSelecter": {}}), [("spec.podSelecter", 'unknown field (did you mean "podSelector"? spec has no field "podSelecter")')]),
    ("from in an egress rule", policy({"egress": [{"from": []}]}),
     [("spec.egress[0].from", 'unknown field (an egress rule lists its peers under "to"; "from" is for ingress)')]),
    ("to in an ingress rule", policy({"ingress": [{"to": []}]}),
     [("spec.ingress[0].to", 'unknown field (an ingress rule lists its peers under "from"; "to" is for egress)')]),
    # Never "podSelector is a field of spec": moving it there would change the policy's targets.
    ("peer field in a rule", policy({"ingress": [{"podSelector": {}}]}),
     [("spec.ingress[0].podSelector", 'unknown field ("podSelector" is a field of a peer, not of a rule: make it an item '
                                      'of a from list (from: [{podSelector: ...}]) in the rule whose ports it should share)')]),
    ("misspelled peer field in a selector", policy(peer({"podSelector": {"namespaceSelectr": {}}})),
     [(f"{F}.podSelector.namespaceSelectr", 'unknown field (did you mean "namespaceSelector"? "namespaceSelector" is a field '
                                            'of a peer: put it beside the other field in spec.ingress[0].from[0] (both must '
                                            'match) or in an item of its own (either matches))')]),
    ("rule field in spec", policy({"ports": []}),
     [("spec.ports", 'unknown field ("ports" is a field of a rule, an item of spec.ingress or spec.egress: check the indentation)')]),
    ("spec field at the top", {**policy(), "egress": []}, [("egress", 'unknown field ("egress" is a field of spec: check the indentation)')]),
    ("unknown top-level field", {**policy(), "extra": 1}, [("extra", "unknown field")]),
    ("unknown metadata field", policy(label={"a": "b"}), [("metadata.label", 'unknown field (did you mean "labels"? metadata has no field "label")')]),
    ("unknown selector field", policy(selector({"matchLabel": {"a": "b"}})),
     [(f"{S}.matchLabel", 'unknown field (did you mean "matchLabels"? spec.podSelector has no field "matchLabel")')]),
    ("unknown expression field", policy(selector({"matchExpressions": [{"key": "a", "operator": "Exists", "value": ["x"]}]})),
     [(f"{S}.matchExpressions[0].value", 'unknown field (did you mean "values"? spec.podSelector.matchExpressions[0] has no field "value")')]),
    ("unknown ipBlock field", policy(peer({"ipBlock": {"cidr": "10.0.0.0/8", "excepts": []}})),
     [(f"{F}.ipBlock.excepts", 'unknown field (did you mean "except"? spec.ingress[0].from[0].ipBlock has no field "excepts")')]),
    ("unknown port field", policy(port({"port": 80, "portEnd": 81})), [(f"{P}.portEnd", "unknown field")]),
    ("ingress not a list", policy({"ingress": {"from": []}}), [("spec.ingress", "Invalid type: expected a list, got a mapping")]),
    ("spec not a mapping", {**policy(), "spec": []}, [("spec", "Invalid type: expected a mapping, got a list")]),
    ("port float", policy(port({"port": 80.5})), [(f"{P}.port", "Invalid type: expected an integer or a port name, got number 80.5")]),
    ("port boolean", policy(port({"port": True})), [(f"{P}.port", "Invalid type: expected an integer or a port name, got boolean true")]),
    ("endPort string", policy(port({"port": 80, "endPort": "90"})), [(f"{P}.endPort", 'Invalid type: expected an integer, got string "90"')]),
    ("matchLabels value int", policy(selector({"matchLabels": {"version": 2}})),
     [(f"{S}.matchLabels.version", "Invalid type: expected a string (quote it), got integer 2")]),
    ("label value yes", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\n  namespace: prod\n  labels: {enabled: yes}\n",
     [("metadata.labels.enabled", "Invalid type: expected a string (quote it), got boolean true")]),
    ("values not a list", policy(selector({"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]})),
     [(f"{S}.matchExpressions[0].values", 'Invalid type: expected a list, got string "x"'),
      (f"{S}.matchExpressions[0].values", "Required value: must be specified when `operator` is 'In' or 'NotIn'")]),
    ("name not a string", policy(name=5), [("metadata.name", "Invalid type: expected a string, got integer 5")]),
    ("duplicate key", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: prod}\n"
                      "spec:\n  ingress:\n  - from: []\n    from: []\n",
     [("spec.ingress[0].from", 'duplicate key "from" (again at line 7): the mapping gives it twice')]),
    ("duplicate label key", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\n  namespace: prod\n"
                            "  labels:\n    app.kubernetes.io/name: a\n    app.kubernetes.io/name: b\n",
     [("metadata.labels[app.kubernetes.io/name]", 'duplicate key "app.kubernetes.io/name" (again at line 8): the mapping gives it twice')]),
]


@pytest.mark.parametrize("doc, expected", [c[1:] for c in NETWORK_POLICY_CASES],
                         ids=[c[0] for c in NETWORK_POLICY_CASES])
def test_network_policy_rule(doc, expected):
    assert found(doc) == expected


def test_problem_renders_file_object_field_message():
    objs, _, _ = decode_text(yaml.safe_dump(policy(ip_block("10.0.0.0/16", "10.1.0.0/16"))), "policies.yaml")
    assert str(objs[0].problems[0]) == ('policies.yaml: NetworkPolicy prod/np: spec.ingress[0].from[0].ipBlock.except[0]: '
                                        'Invalid value: "10.1.0.0/16": must be a strict subset of cidr')


def test_every_problem_of_one_object_is_reported():
    spec = {"podSelector": {"matchLabels": {"-a": "b"}},
            "ingress": [{"from": [{}], "ports": [{"port": 0}, {"protocol": "ICMP"}]}],
            "policyTypes": ["Ingress", "Bogus"]}
    assert [f for f, _ in found(policy(spec, name="Bad"))] == [
        "metadata.name", "spec.podSelector.matchLabels", "spec.ingress[0].ports[0].port",
        "spec.ingress[0].ports[1].protocol", "spec.ingress[0].from[0]", "spec.policyTypes[1]"]


@pytest.mark.parametrize("spec", [
    {},
    {"podSelector": {}, "ingress": [{}]},
    {"ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {}}]}]},
    {"ingress": [{"ports": [{"port": 80, "endPort": 80}, {"port": 1}, {"port": 65535, "protocol": "SCTP"},
                            {"protocol": "UDP"}, {"port": "a-b-1"}, {"port": "abcdefghijklmno"}]}]},
    {"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "0.0.0.0/1"]}},
                        {"ipBlock": {"cidr": "::/0", "except": ["fd00::/8"]}},
                        {"ipBlock": {"cidr": "10.0.0.1/32"}}]}]},
    {"podSelector": {"matchLabels": {"example.com/a_b.c": "", "k": "V-1.2_3"},
                     "matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x", ""]},
                                          {"key": "b", "operator": "Exists", "values": []}]}},
    {"policyTypes": ["Egress", "Ingress"]},
    {"policyTypes": []},
])
def test_valid_policies_have_no_problems(spec):
    assert found(policy(spec, labels={"a" * 63: "b" * 63, "x" * 253 + "/y": ""})) == []


@pytest.mark.parametrize("types", [["Ingress", "Ingress"], ["Egress", "Egress"]])
def test_policy_types_listed_twice_are_accepted_with_a_warning(types):
    # The API server's validation has no duplicate check on policyTypes
    # (pkg/apis/networking/validation ValidateNetworkPolicySpec: at most two, each known).
    objs, _, _ = decode_text(yaml.safe_dump(policy({"policyTypes": types})), "t.yaml")
    assert objs[0].obj is not None
    assert [(p.field, p.message, p.warning) for p in objs[0].problems] == [
        ("spec.policyTypes[1]", f'"{types[0]}" is listed twice; once means the same', True)]


@pytest.mark.parametrize("spec, types", [
    ({}, {"Ingress"}),
    ({"egress": []}, {"Ingress"}),
    ({"egress": None}, {"Ingress"}),
    ({"egress": [{}]}, {"Ingress", "Egress"}),
    ({"policyTypes": ["Egress"]}, {"Egress"}),
    ({"policyTypes": [], "egress": [{}]}, {"Ingress", "Egress"}),
    ({"policyTypes": ["Ingress"], "egress": [{}]}, {"Ingress"}),
    ({"policyTypes": ["Egress", "Egress"]}, {"Egress"}),
])
def test_effective_policy_types(spec, types):
    objs, _, _ = decode_text(yaml.safe_dump(policy(spec)), "t.yaml")
    assert objs[0].obj.policy_types == frozenset(types)


def test_port_protocol_defaults_to_tcp():
    objs, _, _ = decode_text(yaml.safe_dump(policy(port({"port": 80}))), "t.yaml")
    assert objs[0].obj.ingress[0].ports[0].protocol == "TCP"


# ---- Pods --------------------------------------------------------------------------------


def pod(ports: list | None = None, status: dict | None = None, name: str = "p", **extra) -> dict:
    doc: dict = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "prod"},
                 "spec": {"containers": [{"name": "c", "image": "x", "ports": [] if ports is None else ports}]}}
    if status is not None:
        doc["status"] = status
    doc.update(extra)
    return doc


C = "spec.containers[0].ports"

POD_CASES = [
    ("name", pod(name="P"), [("metadata.name", f'Invalid value: "P": {SUBDOMAIN}')]),
    ("containerPort missing", pod([{"name": "http"}]), [(f"{C}[0].containerPort", "Required value")]),
    ("containerPort zero", pod([{"containerPort": 0}]), [(f"{C}[0].containerPort", "Required value")]),
    ("containerPort range", pod([{"containerPort": 65536}]), [(f"{C}[0].containerPort", f"Invalid value: 65536: {RANGE}")]),
    ("containerPort string", pod([{"containerPort": "80"}]), [(f"{C}[0].containerPort", 'Invalid type: expected an integer, got string "80"')]),
    ("port name", pod([{"containerPort": 80, "name": "web_1"}]),
     [(f"{C}[0].name", 'Invalid value: "web_1": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)')]),
    ("port name duplicate", pod([{"containerPort": 80, "name": "web"}, {"containerPort": 81, "name": "web"}]),
     [(f"{C}[1].name", 'Duplicate value: "web"')]),
    ("port protocol", pod([{"containerPort": 80, "protocol": "HTTP"}]), [(f"{C}[0].protocol", f'Unsupported value: "HTTP": {PROTOS}')]),
    ("hostPort range", pod([{"containerPort": 80, "hostPort": 70000}]), [(f"{C}[0].hostPort", f"Invalid value: 70000: {RANGE}")]),
    ("port unknown field", pod([{"containerport": 80}]),
     [(f"{C}[0].containerport", 'unknown field (did you mean "containerPort"? spec.containers[0].ports[0] has no field "containerport")'),
      (f"{C}[0].containerPort", "Required value")]),
    ("ports inside a port", pod([{"containerPort": 80, "ports": []}]),
     [(f"{C}[0].ports", 'unknown field ("ports" is a field of spec.containers[0]: check the indentation)')]),
    ("ports not a list", pod({"containerPort": 80}), [(C, "Invalid type: expected a list, got a mapping")]),
    ("podIP", pod(status={"podIP": "10.0.0.300"}), [("status.podIP", f'Invalid value: "10.0.0.300": {IP}')]),
    ("podIP ipv4-mapped", pod(status={"podIP": "::ffff:10.0.0.1"}),  # a warning: it is 10.0.0.1
     [("status.podIP", 'non-standard IP address "::ffff:10.0.0.1" will be considered invalid in a future '
                       'Kubernetes release: use "10.0.0.1"')]),
    ("podIPs entry", pod(status={"podIPs": [{"ip": "fd00::g"}]}), [("status.podIPs[0].ip", f'Invalid value: "fd00::g": {IP}')]),
    ("podIPs same family", pod(status={"podIPs": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}),
     [("status.podIPs", 'Invalid value: ["10.0.0.1", "10.0.0.2"]: may specify no more than one IP for each IP family')]),
    ("podIPs three", pod(status={"podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}, {"ip": "fd00::2"}]}),
     [("status.podIPs", 'Invalid value: ["10.0.0.1", "fd00::1", "fd00::2"]: may specify no more than one IP for each IP family')]),
    ("podIPs duplicate", pod(status={"podIPs": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.1"}]}),
     [("status.podIPs", 'Invalid value: ["10.0.0.1", "10.0.0.1"]: may specify no more than one IP for each IP family'),
      ("status.podIPs[1].ip", 'Duplicate value: "10.0.0.1"')]),
    ("podIP differs", pod(status={"podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.1"}]}),  # a warning
     [("status.podIPs", 'ignored: status.podIP "10.0.0.2" differs from status.podIPs[0].ip, and the API server '
                        'then keeps status.podIP alone')]),
    ("podIPs unknown field", pod(status={"podIPs": [{"ip": "10.0.0.1", "family": "v4"}]}), [("status.podIPs[0].family", "unknown field")]),
    ("podIPs entry empty", pod(status={"podIPs": [{}]}), [("status.podIPs[0].ip", "Required value")]),
    ("status not a mapping", pod(status=[]), [("status", "Invalid type: expected a mapping, got a list")]),
    ("unknown top-level", pod(extra=1), [("extra", "unknown field")]),
    ("unknown metadata", pod(metadata={"name": "p", "lables": {}}), [("metadata.lables", 'unknown field (did you mean "labels"? metadata has no field "lables")')]),
]


@pytest.mark.parametrize("doc, expected", [c[1:] for c in POD_CASES], ids=[c[0] for c in POD_CASES])
def test_pod_rule(doc, expected):
    assert found(doc) == expected


def test_pod_fields_we_do_not_read_are_tolerated():
    doc = pod([{"containerPort": 80, "name": "http", "hostIP": "0.0.0.0", "hostPort": 8080}],
              status={"phase": "Running", "hostIP": "192.168.1.1", "conditions": [{"type": "Ready"}],
                      "podIP": "fd00::1", "podIPs": [{"ip": "fd00::1"}, {"ip": "10.0.0.1"}]})
    doc["spec"].update({"nodeName": "n1", "volumes": [{"name": "v", "emptyDir": {}}],
                        "initContainers": [{"name": "i", "image": "x", "ports": [{"bogus": 1}]}]})
    doc["spec"]["containers"][0].update({"command": ["sh"], "resources": {"limits": {"cpu": 1}},
                                         "livenessProbe": {"httpGet": {"port": "http"}}})
    doc["metadata"].update({"uid": "1234", "resourceVersion": "5", "generation": 2,
                            "creationTimestamp": "2024-01-01T00:00:00Z", "ownerReferences": [],
                            "finalizers": ["x/y"], "managedFields": [], "generateName": "p-"})
    objs, _, _ = decode_text(yaml.safe_dump(doc), "t.yaml")
    assert objs[0].problems == []
    assert objs[0].obj.ips == ("fd00::1", "10.0.0.1")


def test_pod_ip_differing_from_pod_ips_wins_as_in_the_api_servers_conversion():
    # The v1 conversion compares the strings: podIP wins, podIPs is dropped whole.
    objs, _, _ = decode_text(yaml.safe_dump(pod(status={"podIP": "fd00::0001",
                                                        "podIPs": [{"ip": "fd00::1"}, {"ip": "10.0.0.1"}]})), "t.yaml")
    assert objs[0].obj.ips == ("fd00::1",)
    assert [(p.warning, p.field) for p in objs[0].problems] == [(True, "status.podIPs"), (True, "status.podIP")]
    assert "RFC 5952" in objs[0].problems[1].message


def test_pod_ip_with_leading_zeros_is_a_warning_as_in_the_api_server():
    objs, _, _ = decode_text(yaml.safe_dump(pod(status={"podIP": "010.000.001.002"})), "t.yaml")
    assert objs[0].obj.ips == ("10.0.1.2",)
    assert [(p.warning, p.field, p.message) for p in objs[0].problems] == [
        (True, "status.podIP", 'non-standard IP address "010.000.001.002" will be considered invalid '
                               'in a future Kubernetes release: use "10.0.1.2"')]


def test_container_port_protocol_empty_defaults_to_tcp():
    objs, _, _ = decode_text(yaml.safe_dump(pod([{"containerPort": 80, "protocol": ""}])), "t.yaml")
    assert objs[0].problems == [] and objs[0].obj.ports[0].protocol == "TCP"


# ---- Namespaces and ExternalHosts --------------------------------------------------------


def namespace(name: object = "ns", **extra) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, **extra}


def external(spec: dict, name: str = "backup") -> dict:
    return {"apiVersion": "netpol-enforcer/v1alpha1", "kind": "ExternalHost", "metadata": {"name": name},
            "spec": spec}


OTHER_CASES = [
    ("namespace dots", namespace("a.b"), [("metadata.name", f'Invalid value: "a.b": {LABEL}')]),
    ("namespace upper", namespace("Prod"), [("metadata.name", f'Invalid value: "Prod": {LABEL}')]),
    ("namespace spec field", namespace(spec={"finalizer": []}), [("spec.finalizer", 'unknown field (did you mean "finalizers"? spec has no field "finalizer")')]),
    ("namespace label", namespace(metadata={"name": "ns", "labels": {"a": "-"}}), [("metadata.labels", f'Invalid value: "-": {VALUE}')]),
    ("external name", external({"ips": ["10.0.0.1"]}, name="Backup"), [("metadata.name", f'Invalid value: "Backup": {SUBDOMAIN}')]),
    ("external no ips", external({}), [("spec.ips", "Required value: an external host needs at least one address")]),
    ("external bad ip", external({"ips": ["10.0.0.1/32"]}), [("spec.ips[0]", f'Invalid value: "10.0.0.1/32": {IP}')]),
    ("external duplicate ip", external({"ips": ["fd00::1", "FD00:0::1"]}),
     [("spec.ips[1]", 'Duplicate value: "FD00:0::1"'),
      ("spec.ips[1]", 'IPv6 address "FD00:0::1" should be in RFC 5952 canonical format ("fd00::1")')]),
    ("external port missing", external({"ips": ["10.0.0.1"], "ports": [{"protocol": "TCP"}]}), [("spec.ports[0].port", "Required value")]),
    ("external port range", external({"ips": ["10.0.0.1"], "ports": [{"port": 0}]}), [("spec.ports[0].port", f"Invalid value: 0: {RANGE}")]),
    ("external protocol", external({"ips": ["10.0.0.1"], "ports": [{"port": 1, "protocol": "udp"}]}),
     [("spec.ports[0].protocol", f'Unsupported value: "udp": {PROTOS}')]),
    ("external named port", external({"ips": ["10.0.0.1"], "ports": [{"port": 22, "name": "ssh"}]}), [("spec.ports[0].name", "unknown field")]),
    ("external mis-indented ips", external({"ports": [{"port": 22, "ips": []}], "ips": ["10.0.0.1"]}),
     [("spec.ports[0].ips", 'unknown field ("ips" is a field of spec: check the indentation)')]),
    ("external status", {**external({"ips": ["10.0.0.1"]}), "status": {}}, [("status", "unknown field")]),
]


@pytest.mark.parametrize("doc, expected", [c[1:] for c in OTHER_CASES], ids=[c[0] for c in OTHER_CASES])
def test_namespace_and_external_host_rule(doc, expected):
    assert found(doc) == expected


# ---- the pure checks themselves ----------------------------------------------------------


@pytest.mark.parametrize("text, network, warnings", [
    ("10.0.0.0/8", "10.0.0.0/8", 0),
    ("10.0.0.5/24", "10.0.0.0/24", 1),
    ("10.0.0.5/32", "10.0.0.5/32", 0),
    ("0.0.0.0/0", "0.0.0.0/0", 0),
    ("FD00:0:0::/48", "fd00::/48", 1),  # not RFC 5952's form
    ("fd00::/48", "fd00::/48", 0),
    ("::ffff:10.0.0.0/104", "10.0.0.0/8", 1),
    ("fd00::1/64", "fd00::/64", 1),
    ("010.0.0.0/8", "10.0.0.0/8", 1),
    ("10.0.0.0/08", "10.0.0.0/8", 1),
])
def test_parse_cidr_normalises(text, network, warnings):
    p = V.parse_cidr(text)
    assert p.errors == () or p.errors == []
    assert str(p.value) == network and len(p.warnings) == warnings


@pytest.mark.parametrize("text", ["", "/8", "10.0.0.0/", "10.0.0.0/a", "10.0.0.0/-1", "10.0.0/8", "fe80::1%eth0/64",
                                  "10.0.0.0/8/8", " 10.0.0.0/8", "10.0.0.0/ 8", "1.2.3.4.5/32", "::/129", "10.0.0.0/٣"])
def test_parse_cidr_rejects(text):
    assert V.parse_cidr(text).value is None


@pytest.mark.parametrize("name, ok", [
    ("http", True), ("h", True), ("a-1", True), ("123456789012345a", False), ("1", False), ("a_b", False),
    ("a--b", False), ("-a", False), ("a-", False), ("A", False), ("", False),
])
def test_port_name(name, ok):
    assert (V.port_name(name) == []) is ok


@pytest.mark.parametrize("key, ok", [
    ("app", True), ("a.b-c_d", True), ("example.com/app", True), ("a" * 63, True), ("a" * 64, False),
    ("Example.com/app", False), ("/app", False), ("app/", False), ("a/b/c", False), ("app\n", False),
    ("_app", False), ("k8s.io/" + "b" * 63, True), ("x" * 254 + "/a", False),
])
def test_qualified_name(key, ok):
    assert (V.qualified_name(key) == []) is ok


def test_label_value_allows_empty_and_rejects_newline():
    assert V.label_value("") == [] and V.label_value("a\n") != []
