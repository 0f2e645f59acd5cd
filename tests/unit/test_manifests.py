"""Loading manifests: formats, sources, the model they produce, and hostile input."""
from __future__ import annotations

import io
import json
import os
import re
import tempfile
import traceback
from pathlib import Path

import pytest
import yaml

from enforcer.load import documents, manifests
from enforcer.errors import InputError
from enforcer.load.manifests import Decoded, build_cluster, decode_text, load
from enforcer.model import (
    ContainerPort,
    ExternalHost,
    IPBlock,
    LabelSelector,
    Namespace,
    Peer,
    PortSpec,
    Requirement,
)
from tests.conftest import ROOT

DATA = Path(__file__).parent / "data" / "manifests"
CLUSTER = DATA / "cluster"


def problems(text: str, filename: str = "t.yaml", **kw) -> list[str]:
    objs, file_problems, _ = decode_text(text, filename, **kw)
    return [str(p) for p in file_problems] + [str(p) for d in objs for p in d.problems]


def load_error(paths, **kw) -> list[str]:
    with pytest.raises(InputError) as e:
        load([str(p) for p in paths], **kw)
    return [str(p) for p in e.value.problems]


# ---- sources and formats ----------------------------------------------------------------


def test_directory_loads_manifest_files_sorted_and_not_recursive():
    r = load([str(CLUSTER)])
    c = r.cluster
    assert sorted(c.namespaces) == ["dev", "prod"]
    assert sorted(c.pods) == ["prod/api", "prod/db"]  # not .hidden.yaml, not sub/nested.yaml
    assert list(c.policies) == ["prod/db"]
    assert list(c.externals) == ["backup"]
    assert r.warnings == []
    assert r.notes == [f"{CLUSTER}/01-namespaces.yaml: skipped ConfigMap prod/web (kind not used)"]


def test_directory_model_contents():
    c = load([str(CLUSTER)]).cluster
    prod = c.namespaces["prod"]
    # the API server sets kubernetes.io/metadata.name, overriding what was written
    assert prod.labels == {"team": "payments", "kubernetes.io/metadata.name": "prod"}
    assert c.namespaces["dev"] == Namespace("dev", {"kubernetes.io/metadata.name": "dev"})

    db = c.pods["prod/db"]
    assert db.labels == {"app": "db", "since": "2024-01-01"}  # timestamps stay strings
    assert db.ips == ("10.244.0.10", "fd00:10:244::a")
    assert db.ports == (ContainerPort(5432, "TCP", "pg"), ContainerPort(9187, "TCP", "metrics"),
                        ContainerPort(53, "UDP", None))
    assert db.source == f"{CLUSTER}/02-pods.yml"
    assert c.pods["prod/api"].ips == ()  # no status: IPAM assigns one later

    np = c.policies["prod/db"]
    assert np.pod_selector == LabelSelector((("app", "db"),))
    assert np.policy_types == frozenset({"Ingress"})  # `egress: []` is not an egress section
    assert np.egress == ()
    r0, r1 = np.ingress
    assert r0.peers == (Peer(pod_selector=LabelSelector((("app", "api"),))),)
    assert r0.ports == (PortSpec("TCP", "pg", None),)
    assert r1.peers == (Peer(ip_block=IPBlock("192.168.0.0/16", ("192.168.1.0/24",))),)
    assert r1.ports == (PortSpec("TCP", 9187, 9190),)

    assert c.externals["backup"] == ExternalHost("backup", ("192.168.50.10",), (ContainerPort(22, "TCP"),))


def test_single_files_and_stdin_combine():
    stdin = io.StringIO("apiVersion: v1\nkind: Namespace\nmetadata: {name: from-stdin}\n")
    c = load([str(CLUSTER / "04-external.yaml"), "-"], stdin=stdin).cluster
    assert list(c.namespaces) == ["from-stdin"]
    assert list(c.externals) == ["backup"]


def test_stdin_bytes_buffer_and_its_name_in_messages():
    class Stdin(io.TextIOWrapper):
        pass

    stdin = Stdin(io.BytesIO(b"apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad}\n"))
    errs = load_error(["-"], stdin=stdin)
    assert errs[0].startswith("<stdin>: Namespace Bad: metadata.name: Invalid value: \"Bad\"")


def test_kind_list_and_skipped_items():
    r = load([str(DATA / "list.yaml")])
    assert list(r.cluster.pods) == ["ns1/a"]
    assert r.cluster.policies["ns1/deny-all"].policy_types == frozenset({"Ingress", "Egress"})
    assert r.notes == [f"{DATA}/list.yaml: skipped ConfigMap ns1/svc (kind not used)"]


def test_typed_list_items_inherit_kind_and_api_version():
    c = load([str(DATA / "typed-list.json")]).cluster
    assert sorted(c.pods) == ["ns1/p1", "ns1/p2"]
    assert c.pods["ns1/p1"].ips == ("10.0.0.1",)
    assert c.pods["ns1/p1"].labels == {"app": "p"}


def test_typed_list_of_policies_in_yaml():
    text = yaml.safe_dump({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicyList",
        "items": [{"metadata": {"name": f"p{i}", "namespace": "x"}, "spec": {"podSelector": {}}}
                  for i in range(3)],
    })
    objs, probs, _ = decode_text(text, "l.yaml")
    assert probs == [] and [d.key for d in objs] == ["x/p0", "x/p1", "x/p2"]


def test_json_stream_and_multi_document_yaml():
    json_text = '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}\n' \
                '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}'
    objs, probs, _ = decode_text(json_text, "s.json")
    assert probs == [] and [d.key for d in objs] == ["a", "b"]
    yaml_text = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\n" \
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n...\n"
    objs, probs, _ = decode_text(yaml_text, "s.yaml")
    assert probs == [] and [d.key for d in objs] == ["a", "b"]


def test_flow_yaml_that_is_not_json_still_loads():
    objs, probs, _ = decode_text("{apiVersion: v1, kind: Namespace, metadata: {name: a}}", "f.yaml")
    assert probs == [] and objs[0].obj == Namespace("a", {"kubernetes.io/metadata.name": "a"})


def test_utf8_bom_is_accepted(tmp_path):
    f = tmp_path / "bom.yaml"
    f.write_bytes(b"\xef\xbb\xbfapiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    assert list(load([str(f)]).cluster.namespaces) == ["a"]


def test_empty_inputs_are_fine(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "comments.yaml").write_text("# nothing\n---\n")
    r = load([str(tmp_path)])
    assert r.cluster.pods == {} and r.warnings == []


def test_anchors_and_merge_keys_work():
    text = """
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata:
    name: a
    labels: &labels {app: web, tier: front}
  spec:
    containers:
    - &c
      name: c
      ports: [{containerPort: 80}]
- apiVersion: v1
  kind: Pod
  metadata:
    name: b
    labels:
      <<: *labels
      tier: back
  spec:
    containers: [*c]
---
a: *labels
"""
    objs, probs, _ = decode_text(text, "a.yaml")
    assert all(d.problems == [] for d in objs)
    assert objs[0].obj.labels == {"app": "web", "tier": "front"}
    assert objs[1].obj.labels == {"app": "web", "tier": "back"}  # explicit keys win over <<
    assert objs[1].obj.ports == (ContainerPort(80),)
    # anchors belong to their document
    assert [str(p) for p in probs] == ["a.yaml: line 25: alias *labels names no anchor defined before it"]


@pytest.mark.parametrize("scalar", [
    "1", "-17", "0x1F", "017", "1_000", "1.5", "-.inf", "yes", "No", "off", "~", "null",
    "''", "'quoted'", '"5"', "!!str 5", "!!int '7'", "!!float '1'", "!!bool 'true'", "0b101",
    "hello world", "'-'", "+1", ".5",
])
def test_scalars_resolve_like_pyyaml(scalar):
    """Our event-level builder agrees with PyYAML's SafeLoader (YAML 1.1) on every type..."""
    text = f"v: {scalar}\n"
    docs, probs = documents.parse_all(text, "s.yaml")
    assert probs == []
    assert docs[0].value == yaml.load(text, Loader=yaml.SafeLoader)


@pytest.mark.parametrize("scalar, value", [
    ("1:30", "1:30"), ("08", 8), ("0080", 80), ("1e3", 1000), ("80.0", 80), ("80.5", 80.5), ("0o17", 15),
    ("0X1F", 31), ("-1E2", -100),
])
def test_scalars_resolve_like_the_api_server_where_it_differs_from_yaml_1_1(scalar, value):
    """...except where the API server's reader (go-yaml v2, then JSON) reads numbers otherwise:
    no base 60, Go's number syntax, and a number without fraction is an integer."""
    docs, probs = documents.parse_all(f"v: {scalar}\n", "s.yaml")
    assert probs == [] and docs[0].value == {"v": value} and type(docs[0].value["v"]) is type(value)


def test_timestamps_stay_strings_as_in_kubectl():
    docs, _ = documents.parse_all("a: 2024-01-01\nb: 2024-01-01 10:00:00\n", "t.yaml")
    assert docs[0].value == {"a": "2024-01-01", "b": "2024-01-01 10:00:00"}


# ---- decode_text and build_cluster (the daemon's per-object API) ------------------------


def test_decode_text_returns_objects_with_keys_and_problems():
    text = (CLUSTER / "01-namespaces.yaml").read_text() + "\n---\n" + \
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: Bad, namespace: prod}\n"
    objs, file_problems, notes = decode_text(text, "x.yaml")
    assert file_problems == []
    assert [(d.kind, d.key, d.obj is None) for d in objs] == [
        ("Namespace", "prod", False), ("Namespace", "dev", False), ("NetworkPolicy", "prod/Bad", True)]
    assert objs[2].problems[0].field == "metadata.name"
    assert notes == ["x.yaml: skipped ConfigMap prod/web (kind not used)"]
    cluster = build_cluster(objs)
    assert sorted(cluster.namespaces) == ["dev", "prod"] and cluster.policies == {}


def test_decode_text_keeps_documents_before_a_syntax_error():
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\nfoo: [\n"
    objs, file_problems, _ = decode_text(text, "x.yaml")
    assert [d.key for d in objs] == ["ok"] and objs[0].obj is not None
    assert len(file_problems) == 1 and file_problems[0].field.startswith("line 6")
    assert "YAML syntax error" in file_problems[0].message


def test_warnings_keep_the_object_valid():
    text = yaml.safe_dump({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": "a"}, "spec": {"ingress": [{"from": [
                               {"ipBlock": {"cidr": "10.0.0.5/24", "except": ["10.0.0.130/25"]}}]}]}})
    objs, _, _ = decode_text(text, "w.yaml")
    d = objs[0]
    assert d.obj is not None and all(p.warning for p in d.problems) and len(d.problems) == 2
    assert d.obj.ingress[0].peers[0].ip_block == IPBlock("10.0.0.0/24", ("10.0.0.128/25",))
    assert str(d.problems[0]) == (
        'warning: w.yaml: NetworkPolicy default/a: spec.ingress[0].from[0].ipBlock.cidr: '
        'CIDR value "10.0.0.5/24" has bits set beyond the prefix length: it means the network '
        '"10.0.0.0/24" (for the single address write "10.0.0.5/32")')


def test_load_returns_warnings(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: 010.0.0.1}\n")
    r = load([str(f)])
    assert r.cluster.pods["default/p"].ips == ("10.0.0.1",)
    assert len(r.warnings) == 1 and "will be considered invalid" in r.warnings[0].message


def test_build_cluster_skips_invalid_and_keeps_first_duplicate():
    ns = Namespace("a")
    objs = [Decoded("f", "Namespace", "a", ns), Decoded("f", "Namespace", "a", Namespace("a", {"x": "y"})),
            Decoded("f", "Namespace", "b", None)]
    assert build_cluster(objs).namespaces == {"a": ns}


# ---- all problems, one run --------------------------------------------------------------


def test_every_problem_of_every_file_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: A}\n")
    (tmp_path / "b.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: X}\n")
    (tmp_path / "c.yaml").write_text("a: [\n")
    errs = load_error([tmp_path, tmp_path / "missing.yaml"])
    assert len(errs) == 4
    assert errs[0].startswith(f"{tmp_path}/a.yaml: Pod default/A: metadata.name: Invalid value")
    assert errs[1].startswith(f"{tmp_path}/b.yaml: Pod X/b: metadata.namespace: Invalid value")
    # the line is ours to get right; the column is libyaml's, and varies with its version
    assert re.match(rf"{re.escape(str(tmp_path))}/c\.yaml: line 2(, column \d+)?: YAML syntax error", errs[2])
    assert errs[3] == f"{tmp_path}/missing.yaml: cannot read: no such file or directory"


def test_semantics_example_message_is_exact():
    errs = load_error([DATA / "invalid-policies.yaml"])
    f = DATA / "invalid-policies.yaml"
    assert errs == [
        f'{f}: NetworkPolicy prod/db: spec.ingress[0].from[1].ipBlock.except[0]: Invalid value: '
        '"10.1.0.0/16": must be a strict subset of cidr',
        f'{f}: NetworkPolicy prod/db: spec.ingress[1].from[0].ports: unknown field '
        '("ports" is a field of spec.ingress[1]: check the indentation)',
        f'{f}: NetworkPolicy prod/web: spec.egress[0].ports[0].endPort: Invalid value: 79: '
        'must be greater than or equal to `port`',
        f'{f}: NetworkPolicy prod/web: spec.egress[0].ports[1].protocol: Unsupported value: '
        '"ICMP": supported values: "TCP", "UDP", "SCTP"',
        f'{f}: NetworkPolicy prod/web: spec.egress[0].to[0].namespaceSelector.podSelector: '
        'unknown field ("podSelector" is a field of a peer: put it beside the other field in spec.egress[0].to[0] '
        '(both must match) or in an item of its own (either matches))',
    ]


def test_duplicate_objects_across_files(tmp_path):
    doc = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: n}\n"
    (tmp_path / "a.yaml").write_text(doc)
    (tmp_path / "b.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: p}\n---\n" + doc)
    errs = load_error([tmp_path])
    assert errs == [f'{tmp_path}/b.yaml: Pod n/p: metadata.name: Duplicate value: "n/p": Pod defined twice '
                    f'(first in {tmp_path}/a.yaml, document 1 (line 1))']


def test_duplicate_object_within_one_file_is_invalid_in_decode_text():
    doc = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"
    objs, _, _ = decode_text(doc + "---\n" + doc, "d.yaml")
    assert objs[0].obj is not None and objs[1].obj is None
    assert "defined twice" in objs[1].problems[0].message


# ---- what is not an object --------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("hello\n", 't.yaml: document 1 (line 1): expected a Kubernetes object (a mapping), got string "hello"'),
    ("- a\n", "t.yaml: document 1 (line 1): expected a Kubernetes object (a mapping), got a list"),
    ("apiVersion: v1\nmetadata: {name: x}\n", "t.yaml: document 1 (line 1): kind: Required value: every object needs kind"),
    ("kind: Pod\nmetadata: {name: x}\n", "t.yaml: document 1 (line 1): apiVersion: Required value: every object needs apiVersion"),
    ("apiVersion: v1\nkind: 5\n", "t.yaml: document 1 (line 1): kind: Invalid type: expected a string, got integer 5"),
    ("apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: a}\n",
     't.yaml: NetworkPolicy default/a: apiVersion: no matches for kind "NetworkPolicy" in version '
     '"extensions/v1beta1" (use "networking.k8s.io/v1")'),
    ("apiVersion: networking.k8s.io/v1\nkind: networkpolicy\nmetadata: {name: a}\n",
     't.yaml: networkpolicy a: kind: Unsupported value: "networkpolicy": supported values: "NetworkPolicy"'),
    ("apiVersion: v1\nkind: List\nitems: {}\n", "t.yaml: List in document 1 (line 1): items: Invalid type: expected a list, got a mapping"),
    ("apiVersion: v1\nkind: List\nitems: []\nextra: 1\n", "t.yaml: List in document 1 (line 1): extra: unknown field"),
])
def test_documents_that_are_not_objects(text, expected):
    assert problems(text) == [expected]


# ---- robustness -------------------------------------------------------------------------

BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
# Refusals stop at the problem: they pull at most this many events from libyaml, whatever
# the size of the input (the deep block case below is 9 MB, ~6,000 events if read through).
STOPS_WITHIN = documents.MAX_DEPTH + 5


@pytest.fixture
def parser_events(monkeypatch):
    """How many events the YAML builder pulls from the parser: "fails fast" measured in work
    done, not in seconds (unit tests carry no timed assertions; speed is for benchmarks/)."""
    real = documents._Parser
    count = [0]

    class Counting:
        def __init__(self, text):
            self._parser = real(text)

        def get_event(self):
            count[0] += 1
            return self._parser.get_event()

    monkeypatch.setattr(documents, "_Parser", Counting)
    return lambda: count[0]


@pytest.mark.parametrize("text, where, message", [
    (BILLION_LAUGHS, "line 6", "refusing a possible alias bomb"),
    ("a: &a [*a]\n", "line 1", "recursive alias *a"),
    ("a: *nope\n", "line 1", "alias *nope names no anchor defined before it"),
    ("a: " + "[" * 500, "line 1", "nested deeper than 100 levels"),
    # libyaml 0.2.6 (PyYAML 6.0.4's wheels) stops flow nesting at 1,000 levels itself, while
    # scanning ahead and before our builder sees 100: either refusal is a clear one.
    ("a: " + "[" * 200_000, "line 1", ("nested deeper than 100 levels", "exceeded maximum nesting depth")),
    ("".join("  " * i + "- \n" for i in range(3000)), "line 101", "nested deeper than 100 levels"),
    ("[" * 200_000 + "]" * 200_000, "", "JSON nested too deeply"),
    ("? [a]\n: b\n", "line 1", "a mapping key must be a string, not a list"),
    ("a: !!binary aGk=\n", "line 1", 'unsupported YAML tag tag:yaml.org,2002:binary for value "aGk="'),
    ("a: !custom x\n", "line 1", "unsupported YAML tag !custom"),
    ("a: !!set {x}\n", "line 1", "unsupported YAML tag tag:yaml.org,2002:set"),
    ("a: 1\n\x07: 2\n", "line 2", "unacceptable character #x0007: control characters are not allowed"),
    ("a: b\n c: d\n", "line 2", "YAML syntax error: mapping values are not allowed"),
    ("a:\n\tb: 1\n", "line 2", "YAML syntax error: found character that cannot start any token"),
    ('{"a": [}', "line 1", "JSON syntax error: Expecting value"),
    ("x: &a {y: 1}\nz:\n  <<: 5\n", "line 3", "a merge key (<<) needs a mapping or a list of mappings"),
])
def test_hostile_yaml_fails_fast_with_a_clear_problem(text, where, message, parser_events):
    objs, file_problems, _ = decode_text(text, "h.yaml")
    assert objs == [] and len(file_problems) == 1
    p = file_problems[0]
    # The line is ours; a column, where there is one, is the parser's and varies by version.
    assert p.file == "h.yaml" and re.fullmatch(rf"{where}(, column \d+)?", p.field), p.field
    assert any(m in p.message for m in ((message,) if isinstance(message, str) else message)), p.message
    assert parser_events() <= STOPS_WITHIN


def test_alias_bomb_through_load_is_an_input_error(tmp_path, parser_events):
    f = tmp_path / "bomb.yaml"
    f.write_text(BILLION_LAUGHS)
    errs = load_error([f])
    assert len(errs) == 1 and "alias bomb" in errs[0]
    assert parser_events() <= STOPS_WITHIN  # refused while parsing: nothing was expanded


def test_moderate_alias_reuse_is_allowed():
    # yaml.dump writes shared Python objects as aliases: that must keep working at scale
    labels = {"app": "web"}
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "labels": labels}}
            for i in range(2000)]
    text = yaml.dump({"apiVersion": "v1", "kind": "List", "items": pods}, Dumper=yaml.SafeDumper)
    assert "*id001" in text
    objs, probs, _ = decode_text(text, "l.yaml")
    assert probs == [] and len(objs) == 2000 and objs[-1].obj.labels == labels


@pytest.mark.parametrize("content, message", [
    (b"apiVersion: v1\x00\x01\x02", "binary data (NUL bytes), not YAML or JSON text"),
    (b"apiVersion: v1\nkind: Pod\nmetadata: {name: \xff\xfe}\n", "not UTF-8 text (invalid byte 0xff at offset 42)"),
])
def test_binary_and_non_utf8_files(tmp_path, content, message):
    f = tmp_path / "bad.yaml"
    f.write_bytes(content)
    errs = load_error([f])
    assert len(errs) == 1 and errs[0].startswith(f"{f}: ") and errs[0].endswith(message)


def test_huge_file_is_refused_without_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(documents, "MAX_FILE_BYTES", 1000)  # reading checks the size
    f = tmp_path / "big.yaml"
    f.write_text("a: " + "x" * 2000)
    assert load_error([f]) == [f"{f}: input larger than 1000 bytes: refusing to parse it"]
    assert problems("a: " + "x" * 2000) == ["t.yaml: input larger than 1000 bytes: refusing to parse it"]


def test_unreadable_path(tmp_path):
    d = tmp_path / "dir.yaml"
    d.mkdir()
    (d / "a.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    assert list(load([str(d)]).cluster.namespaces) == ["a"]
    errs = load_error([tmp_path / "nope" / "x.yaml"])
    assert errs == [f"{tmp_path}/nope/x.yaml: cannot read: no such file or directory"]


NOBODY = 65534  # the unprivileged uid and gid Debian calls nobody / nogroup


def _load_problems(path) -> list[str]:
    try:
        load([str(path)])
    except InputError as e:
        return [str(p) for p in e.problems]
    return []


def _load_problems_unprivileged(path) -> list[str]:
    """load() in a forked child that gave up root for good (root reads any file, so the
    permission check must run as someone else). The modules are imported already: the
    child opens nothing but the manifest."""
    if not ROOT:
        return _load_problems(path)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(w, json.dumps(_load_problems(path)).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged reader failed (see stderr)"
    return json.loads(out)


def test_permission_denied():
    # Not pytest's tmp_path: its directories are private to the user running the tests.
    with tempfile.TemporaryDirectory(prefix="npt-perm-") as tmp:
        os.chmod(tmp, 0o755)
        f = os.path.join(tmp, "secret.yaml")
        with open(f, "w") as out:
            out.write("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
        os.chmod(f, 0o644)
        assert _load_problems_unprivileged(f) == []  # the reader reaches the file...
        os.chmod(f, 0)
        # ...and only its mode stops it
        assert _load_problems_unprivileged(f) == [f"{f}: cannot read: permission denied"]


def test_legacy_namespace_isolation_annotation():
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "old", "annotations": {
            "net.beta.kubernetes.io/network-policy": '{"ingress": {"isolation": "DefaultDeny"}}'}}})
    objs, _, notes = decode_text(text, "n.yaml")
    assert objs[0].obj.legacy_default_deny is False
    assert notes == ["n.yaml: Namespace old: annotation net.beta.kubernetes.io/network-policy "
                     "ignored (legacy namespace isolation is not enabled)"]
    objs, _, notes = decode_text(text, "n.yaml", legacy_namespace_isolation=True)
    assert objs[0].obj.legacy_default_deny is True and notes == []
    bad = text.replace("DefaultDeny", "Deny")
    assert problems(bad, legacy_namespace_isolation=True) == [
        't.yaml: Namespace old: metadata.annotations[net.beta.kubernetes.io/network-policy]: '
        'Invalid value: "{\\"ingress\\": {\\"isolation\\": \\"Deny\\"}}": must be JSON like '
        '{"ingress": {"isolation": "DefaultDeny"}}']


def test_selector_expressions_reach_the_model():
    text = yaml.safe_dump({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": "a", "namespace": "n"},
                           "spec": {"podSelector": {"matchExpressions": [
                               {"key": "tier", "operator": "In", "values": ["a", "b"]},
                               {"key": "x", "operator": "DoesNotExist"}]},
                               "egress": [{}]}})
    np = decode_text(text, "s.yaml")[0][0].obj
    assert np.pod_selector.match_expressions == (Requirement("tier", "In", ("a", "b")),
                                                 Requirement("x", "DoesNotExist", ()))
    assert np.policy_types == frozenset({"Ingress", "Egress"})  # egress: [{}] is a section
    assert np.egress[0].peers == () and np.egress[0].ports == ()


def test_null_rule_is_allow_all_and_null_fields_are_absent():
    text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\n" \
           "spec:\n  podSelector:\n  ingress:\n  -\n  - from:\n    ports: ~\n"
    objs, probs, _ = decode_text(text, "n.yaml")
    assert probs == [] and objs[0].problems == []
    assert [(r.peers, r.ports) for r in objs[0].obj.ingress] == [((), ()), ((), ())]


def test_two_thousand_pods_in_one_file():
    """2,000 pods in one file all decode (their speed, up to 150,000, is benchmarks/' job)."""
    text = "".join(
        f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\n  namespace: ns{i % 7}\n"
        f"  labels: {{app: a{i % 10}}}\nspec:\n  containers:\n  - name: c\n    image: x\n"
        f"    ports: [{{containerPort: 80, name: http}}]\nstatus: {{podIP: 10.1.{i // 250}.{i % 250 + 1}}}\n"
        for i in range(2000))
    objs, probs, _ = decode_text(text, "p.yaml")
    assert probs == [] and len(objs) == 2000 and all(d.obj is not None for d in objs)


# ---- never a traceback ------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FIELDS = ["apiVersion", "kind", "metadata", "spec", "status", "name", "namespace", "labels",
          "annotations", "podSelector", "namespaceSelector", "ipBlock", "cidr", "except", "ingress",
          "egress", "from", "to", "ports", "port", "endPort", "protocol", "policyTypes", "matchLabels",
          "matchExpressions", "key", "operator", "values", "containers", "containerPort", "podIP",
          "podIPs", "ip", "ips", "items", "<<", "x"]
SCALARS = (st.none() | st.booleans() | st.integers(-70000, 70000) | st.floats(allow_nan=False)
           | st.sampled_from(["", "TCP", "In", "Exists", "10.0.0.0/8", "10.0.0.1", "http", "v1",
                              "Ingress", "NetworkPolicy", "Pod", "a/b", "-"]) | st.text(max_size=6))
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), c, max_size=4),
                      max_leaves=25)
KINDS = [("networking.k8s.io/v1", "NetworkPolicy"), ("v1", "Pod"), ("v1", "Namespace"),
         ("netpol-enforcer/v1alpha1", "ExternalHost"), ("v1", "List"), ("v1", "PodList")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KINDS), st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=5), st.booleans())
def test_random_objects_give_problems_never_exceptions(kind, body, as_json):
    import json
    doc = {"apiVersion": kind[0], "kind": kind[1], **body}
    text = json.dumps(doc) if as_json else yaml.safe_dump(doc)
    objs, file_problems, _ = decode_text(text, "r.yaml", legacy_namespace_isolation=True)
    for d in objs:
        assert (d.obj is None) == any(not p.warning for p in d.problems)
    build_cluster(objs)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`,? \n\t\\0123<~.")), max_size=80))
def test_random_text_gives_problems_never_exceptions(text):
    decode_text(text, "r.yaml")


def test_real_kubectl_get_output_loads_cleanly():
    r = load([str(DATA / "kubectl-get.yaml")])
    c = r.cluster
    assert r.warnings == [] and r.notes == []
    assert c.namespaces["shop"].labels == {"kubernetes.io/metadata.name": "shop"}
    web = c.pods["shop/web-7d4b9c8f6d-x2x9k"]
    assert web.ips == ("10.244.0.17",) and web.ports == (ContainerPort(8080, "TCP", "http"),)
    assert c.policies["shop/web"].ingress[0].ports == (PortSpec("TCP", "http"),)
