"""`netpol lint` (and `validate`): policies that the API server accepts but that do nothing
or surprise get a warning naming file, object, field and a one-line fix; exit 1 when any.
Also the input mistakes that must be errors: an unknown kind of a group we read, an empty
input."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
C = ROOT / "examples" / "concepts"
CLUSTER = str(C / "cluster.yaml")


def netpol(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enforcer", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=120)


def lint(tmp_path: Path, policy: str, *more: str) -> subprocess.CompletedProcess:
    f = tmp_path / "p.yaml"
    f.write_text(textwrap.dedent(policy))
    return netpol("lint", "-f", CLUSTER, *more, "-f", str(f))


def np(body: str, ns: str = "prod", name: str = "p") -> str:
    head = f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n"
    return head + textwrap.indent(textwrap.dedent(body), "  ")


def warnings(r: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ")]


def test_clean_policy_exit_0():
    r = netpol("lint", "-f", CLUSTER, "-f", str(C / "02-isolation"))
    assert (r.returncode, r.stdout, r.stderr) == (0, "no warnings\n", "")


def test_selector_in_wrong_case_selects_nothing(tmp_path):
    r = lint(tmp_path, np("podSelector: {matchLabels: {role: DB}}\ningress: [{}]\n"))
    assert r.returncode == 1 and r.stdout == "1 warning\n"
    f = tmp_path / "p.yaml"
    assert warnings(r) == [f"warning: {f}: NetworkPolicy prod/p: spec.podSelector: selects no pod in namespace prod now "
                           f"(podSelector role=DB); fix: labels are case-sensitive: the pods there carry role=db"]


def test_namespace_selector_on_a_pod_label(tmp_path):
    r = lint(tmp_path, np("""\
        podSelector: {matchLabels: {role: db}}
        ingress:
        - from:
          - namespaceSelector: {matchLabels: {role: api}}
        """))
    assert r.returncode == 1
    (w,) = warnings(r)
    assert "spec.ingress[0].from[0].namespaceSelector: no namespace has a label role, so this selector selects no namespace" in w
    assert "fix: it is a pod label (" in w and "move it to a podSelector in the same peer" in w


def test_namespace_not_in_the_input(tmp_path):
    r = lint(tmp_path, np("podSelector: {}\n", ns="prdo"))
    (w,) = warnings(r)
    assert ("NetworkPolicy prdo/p: metadata.namespace: namespace prdo is not in the input, so this policy selects no pod; "
            "fix: did you mean namespace prod? set metadata.namespace: prod") in w


def test_pod_selector_alone_names_the_namespace_it_would_need(tmp_path):
    cluster = tmp_path / "c.yaml"
    cluster.write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: db, namespace: prod, labels: {role: db}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: mon, namespace: ops, labels: {role: monitoring}}
        """))
    f = tmp_path / "p.yaml"
    f.write_text(np("""\
        podSelector: {matchLabels: {role: db}}
        ingress:
        - from:
          - podSelector: {matchLabels: {role: monitoring}}
        """))
    r = netpol("lint", "-f", str(cluster), "-f", str(f))
    assert warnings(r) == [
        f"warning: {f}: NetworkPolicy prod/p: spec.ingress[0].from[0].podSelector: selects no pod in namespace prod, "
        "the only namespace a podSelector alone looks in; it would match ops/mon; fix: to mean those pods, add "
        "namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ops}} to this same peer (no dash)"]


def test_rules_that_never_match(tmp_path):
    r = lint(tmp_path, np("""\
        podSelector: {matchLabels: {role: db}}
        policyTypes: [Ingress]
        ingress:
        - ports: [{port: http}]
          from:
          - ipBlock: {cidr: 10.0.0.0/24, except: [10.0.0.0/25, 10.0.0.128/25]}
        egress:
        - {}
        """))
    ws = warnings(r)
    assert any("spec.egress: has 1 rule(s) but spec.policyTypes has no Egress: they are ignored; "
               "fix: add Egress to spec.policyTypes" in w for w in ws)
    assert any("spec.ingress[0].ports[0].port: named port http/TCP is declared by none of the pods this policy selects"
               in w and "use a name they declare (mysql/TCP)" in w for w in ws)
    assert any("spec.ingress[0].from[0].ipBlock.except: the except ranges cover all of 10.0.0.0/24" in w for w in ws)
    assert len(ws) == 3


def test_egress_isolation_without_dns(tmp_path):
    r = lint(tmp_path, np("""\
        podSelector: {matchLabels: {role: db}}
        policyTypes: [Egress]
        egress:
        - ports: [{port: 53, protocol: UDP}]
        """))
    (w,) = warnings(r)
    assert ("spec.policyTypes: isolates prod/db for egress and no egress rule allows 53/TCP: DNS lookups will fail; "
            "fix: add an egress rule with ports") in w
    r = lint(tmp_path, np("""\
        podSelector: {matchLabels: {role: db}}
        policyTypes: [Egress]
        egress:
        - ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
        """))
    assert warnings(r) == [] and r.returncode == 0


def test_validate_prints_lint_warnings_and_stays_0(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(np("podSelector: {matchLabels: {role: DB}}\n"))
    r = netpol("validate", "-f", CLUSTER, "-f", str(f))
    assert r.returncode == 0
    assert "spec.podSelector: selects no pod" in r.stderr
    assert r.stdout.startswith("valid: ")


def test_policies_without_pods_skip_selection_checks(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(np("podSelector: {matchLabels: {role: DB}}\n"))
    r = netpol("lint", "-f", str(f))
    assert r.returncode == 0
    assert "note: no pods in the input" in r.stderr


@pytest.mark.parametrize("command", ["lint", "validate"])
@pytest.mark.parametrize("text", ["", "# only a comment\n# and another\n", "---\n---\n"])
def test_empty_input_is_an_error(command, text, tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text(text)
    r = netpol(command, "-f", str(f))
    assert r.returncode == 1
    assert r.stderr == f"{f}: no Kubernetes objects to check: the input is empty or only comments\n"


def test_only_skipped_kinds_is_an_error():
    r = netpol("validate", "-f", "-", stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    assert r.returncode == 1
    assert "no Kubernetes objects to check" in r.stderr and "1 object(s) of kinds not used skipped" in r.stderr


@pytest.mark.parametrize("kind, version, want", [
    ("NetworkPolicies", "networking.k8s.io/v1", '(did you mean "NetworkPolicy"?)'),
    ("Pods", "v1", '(did you mean "Pod"?)'),
    ("NetworkPolicys", "v1", '(did you mean "NetworkPolicy" in "networking.k8s.io/v1"?)'),
])
def test_unknown_kind_of_a_known_group_is_an_error(kind, version, want):
    r = netpol("validate", "-f", "-", stdin=f"apiVersion: {version}\nkind: {kind}\nmetadata: {{name: a, namespace: x}}\n")
    assert r.returncode == 1
    assert r.stderr == (f'<stdin>: {kind} x/a: kind: no matches for kind "{kind}" in version "{version}" {want}\n')


@pytest.mark.parametrize("kind, version", [("ConfigMap", "v1"), ("Ingress", "networking.k8s.io/v1")])
def test_other_kinds_are_still_skipped(kind, version):
    doc = f"apiVersion: {version}\nkind: {kind}\nmetadata: {{name: a, namespace: x}}\n---\n" \
          "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"
    r = netpol("validate", "-f", "-", stdin=doc)
    assert r.returncode == 0, r.stderr
    assert f"skipped {kind} x/a (kind not used)" in r.stderr


def test_course_notes_name_label_gets_the_label_every_namespace_has():
    r = netpol("lint", "-f", "examples/concepts/cluster.yaml", "-f", "examples/concepts/06-namespace-selector/a-seed-name-label.yaml")
    assert r.returncode == 1
    assert warnings(r) == [
        "warning: examples/concepts/06-namespace-selector/a-seed-name-label.yaml: NetworkPolicy prod/db-net-policy: "
        "spec.ingress[0].from[0].namespaceSelector: no namespace has a label name, so this selector selects no "
        "namespace; fix: use kubernetes.io/metadata.name: prod, the label every namespace has"]


def test_empty_stdin_is_named():
    r = netpol("lint", "-f", "-", stdin="# nothing here\n")
    assert (r.returncode, r.stderr) == (1, "<stdin>: no Kubernetes objects to check: the input is empty or only comments\n")
