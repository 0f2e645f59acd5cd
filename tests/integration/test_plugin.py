"""The pytest plugin as a test author meets it (root): checks that never pass by accident,
labs that never leak (SIGTERM, SIGHUP, stale owners), failure output a person can read,
and the ``lab down`` safety rules.

Inner pytest runs use their own lab prefix (``-o netpol_lab_prefix=...``), so what they
leave behind is found by name.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from enforcer import netns
from enforcer.errors import LabError
from enforcer.lab import control, naming, serverctl, state
from enforcer.model import Cluster, ContainerPort, Namespace, Pod
from enforcer.pytest_plugin import NetpolLabWarning
from enforcer.views.reachability import Reachability
from tests.unit.test_plugin_report import SHOP, SHOP_PODS, SHOP_PORTS, shop_expectation

pytestmark = pytest.mark.root

FAST = 0.3
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def by_prefix(prefix: str) -> list[str]:
    """Everything of labs named ``prefix*``: namespaces, state directories, servers."""
    left = [n for n in netns.list_names(f"netpol-{prefix}")]
    left += [os.path.join(state.LABS_DIR, n) for n in state.names() if n.startswith(prefix)]
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            argv = serverctl._cmdline(int(pid))
            if "enforcer.lab.server" in argv and f"/labs/{prefix}" in (argv[-1] if argv else ""):
                left.append(f"server pid {pid}")
    return left


def small(ports=((80, "TCP"),)) -> Cluster:
    pods = [Pod(ns, n, {"app": n}, (), tuple(ContainerPort(p, q) for p, q in ports))
            for ns, n in (("x", "a"), ("x", "b"), ("y", "c"))]
    return Cluster({n: Namespace(n, {"kubernetes.io/metadata.name": n}) for n in ("x", "y")},
                   {p.key: p for p in pods}, {}, {})


# ----------------------------------------------------------------- never pass by accident

NOTHING_BUT = """
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {a: b}
"""


def test_manifests_without_pods_fail_and_skipped_kinds_warn(netpol_lab):
    with pytest.warns(NetpolLabWarning, match="ConfigMap"):
        with pytest.raises(pytest.fail.Exception, match="give no pods, so the lab would test nothing"):
            netpol_lab(NOTHING_BUT)
    with pytest.warns(NetpolLabWarning, match="skipped ConfigMap shop/settings"):
        lab = netpol_lab(SHOP + "---" + NOTHING_BUT)
    assert lab.cluster.pods


def test_a_comparison_that_probes_nothing_fails(netpol_lab):
    lab = netpol_lab(small(ports=()))  # pods, but no port anywhere
    with pytest.raises(pytest.fail.Exception, match="0 cells compared.*declares a port"):
        lab.assert_matches("model")
    with pytest.raises(pytest.fail.Exception, match="0 cells compared.*no cell"):
        lab.assert_matches([])
    lab.assert_matches("model", ports="80/TCP", timeout=FAST)  # with ports: 6 real cells


# ----------------------------------------------------------------- readable failures

def test_one_wrong_cell_is_named_with_the_models_reason(netpol_lab):
    lab = netpol_lab(SHOP)
    lab.assert_matches(shop_expectation(), timeout=FAST)  # per-port expectations hold
    wrong = shop_expectation().expect("shop/web", "shop/db", True, port="5432/TCP")
    with pytest.raises(AssertionError) as info:
        lab.assert_matches(wrong, timeout=FAST)
    text = str(info.value)
    lines = text.splitlines()
    assert lines[0] == ("shop/web -> shop/db 5432/TCP: expected allowed, observed blocked "
                        "(1 wrong cell of 72)")
    assert max(len(ln) for ln in lines) <= 100 and len(lines) <= 25, text
    assert "shop/db ingress is isolated by shop/db" in " ".join(text.split())
    assert text.count("(what was observed;") == 1 and "5432/TCP: 1 wrong, 11 correct" in text
    lab._verbosity = 2  # what -vv gives
    with pytest.raises(AssertionError, match=r"full tables:(.|\n)*expected 80/TCP:"):
        lab.assert_matches(wrong, timeout=FAST)


INNER_FAIL = """
from enforcer.views.reachability import Reachability
from tests.unit.test_plugin_report import SHOP, shop_expectation

def test_shop(netpol_lab):
    lab = netpol_lab(SHOP)
    lab.assert_matches(shop_expectation().expect("shop/web", "shop/db", True, port="5432/TCP"),
                       timeout=0.3)
"""


def inner_pytest(tmp_path, body: str, *args: str, prefix: str, **popen) -> subprocess.Popen:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(body))
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "-o", f"netpol_lab_prefix={prefix}", *args, str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT_DIR, COLUMNS="120"), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, **popen)


def test_the_rf_summary_line_names_the_wrong_cell(tmp_path):
    prefix = f"npt-pf{uuid.uuid4().hex[:4]}"
    proc = inner_pytest(tmp_path, INNER_FAIL, "-rf", prefix=prefix)
    out, _ = proc.communicate(timeout=120)
    summary = [ln for ln in out.splitlines() if ln.startswith("FAILED ")]
    assert summary and "AssertionError: shop/web -> shop/db 5432/TCP: expected allowed" in summary[0], out
    assert by_prefix(prefix) == []


# ----------------------------------------------------------------- never leak

INNER_SLEEP = """
import time
from tests.unit.test_plugin_report import SHOP

def test_long(netpol_lab):
    lab = netpol_lab(SHOP)
    print("LAB-UP", lab.name, flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminated_pytest_run_leaves_nothing(tmp_path, sig):
    prefix = f"npt-pt{uuid.uuid4().hex[:4]}"
    proc = inner_pytest(tmp_path, INNER_SLEEP, "-s", prefix=prefix)
    try:
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "LAB-UP" in line:
                break
        name = lines[-1].split("LAB-UP")[1].split()[0]
        assert state.exists(name) and by_prefix(prefix)  # the lab is there, with its server
        assert control.mine(name) is False  # owned by the inner pytest, not by us
        assert state.staleness(name)["owner_pid"] == proc.pid
        proc.send_signal(sig)  # what a CI cancel (timeout -s TERM) sends
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert signal.Signals(sig).name in out  # the interrupt says what it was
    assert by_prefix(prefix) == [], "".join(lines) + out


ORPHAN = """
import os, signal, sys
from enforcer.lab import control
from enforcer.model import Cluster, Pod
control.up(sys.argv[1], Cluster({}, {"x/a": Pod("x", "a", {})}, {}, {}), "fake", owned=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _orphan_lab(name: str) -> None:
    """A lab whose owner died without teardown (SIGKILL): the stale case."""
    r = subprocess.run([sys.executable, "-c", ORPHAN, name], cwd=ROOT_DIR, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == -9, r.stderr


def netpol(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enforcer", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT_DIR)


def test_lab_list_shows_owners_and_down_stale_removes_only_dead_owners():
    tag = uuid.uuid4().hex[:4]
    dead, mine, detached = f"npt-st{tag}-dead", f"npt-st{tag}-mine", f"npt-st{tag}-cli"
    try:
        _orphan_lab(dead)
        control.up(mine, small(), "fake", owned=True)
        control.up(detached, small(), "fake")  # like `netpol lab up`: no owner once up
        labs = {x["name"]: x for x in json.loads(netpol("lab", "list", "-o", "json").stdout)["labs"]}
        assert labs[dead]["stale"] and labs[dead]["owner_alive"] is False
        assert labs[mine]["owner_pid"] == os.getpid() and not labs[mine]["stale"]
        assert labs[detached]["owner_pid"] is None and not labs[detached]["stale"]
        table = netpol("lab", "list")
        row = next(ln for ln in table.stdout.splitlines() if ln.startswith(dead))
        assert " gone " in row and "netpol lab down --stale" in table.stderr
        r = netpol("lab", "down", "--stale")
        assert r.returncode == 0 and f"lab {dead} removed" in r.stdout, r.stdout + r.stderr
        assert by_prefix(dead) == []
        assert state.exists(mine) and state.exists(detached)
        assert serverctl.is_ours(state.load(mine).server_pid, mine)
    finally:
        for n in (dead, mine, detached):
            control.down(n, force=True)
    assert by_prefix(f"npt-st{tag}") == []


# ----------------------------------------------------------------- lab down safety (#20)

def test_down_of_an_unknown_lab_removes_nothing_without_force():
    name = f"npt-dn{uuid.uuid4().hex[:4]}"
    handmade = f"netpol-{name}-handmade"
    netns.create(handmade)
    try:
        r = netpol("lab", "down", "--name", name)
        assert r.returncode != 0 and handmade in r.stderr and "--force" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and netns.exists(handmade)
        with pytest.raises(LabError, match="nothing removed"):
            control.down(name)
        assert netns.exists(handmade)
        r = netpol("lab", "down", "--name", name, "--force")
        assert r.returncode == 0 and not netns.exists(handmade), r.stderr
        # A lab that exists removes what it made (its journal), not a namespace made by
        # hand with its prefix meanwhile.
        control.up(name, small(), "fake")
        netns.create(handmade)
        assert control.down(name) and netns.exists(handmade)
        assert not netns.exists(naming.node_netns(name))
    finally:
        netns.remove(handmade)
        control.down(name)


def test_lab_names_with_a_trailing_newline_are_refused():
    r = netpol("lab", "down", "--name", "demo\n")
    assert r.returncode != 0 and "invalid lab name 'demo\\n'" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(LabError, match="invalid lab name"):
        control.up("demo\n", small(), "fake")


def test_one_shot_probe_with_a_name_never_removes_someone_elses_lab(tmp_path):
    name = f"npt-op{uuid.uuid4().hex[:4]}"
    (tmp_path / "app.yaml").write_text(SHOP)
    r = netpol("probe", "-f", str(tmp_path / "app.yaml"), "--name", name, "--ports", "5432/TCP",
               "--timeout", str(FAST), "--expect", "model")
    assert r.returncode == 0 and "0 wrong" in r.stdout, r.stdout + r.stderr
    assert by_prefix(name) == []
    control.up(name, small(), "fake")
    try:
        r = netpol("probe", "-f", str(tmp_path / "app.yaml"), "--name", name, "--ports", "5432/TCP")
        assert r.returncode != 0 and "exists already" in r.stderr
        assert state.load(name).phase == "ready"  # the other lab is untouched
    finally:
        control.down(name)


# ----------------------------------------------------------------- smaller items

def test_dual_stack_labs_are_checked_in_both_families(netpol_lab):
    lab = netpol_lab(small(), ipv6=True)
    families = []
    probe = lab.probe
    lab.probe = lambda *a, **kw: families.append(kw["family"]) or probe(*a, **kw)  # type: ignore[method-assign]
    lab.assert_matches("model", timeout=FAST)
    assert families == [4, 6]


def test_stats_and_drops_from_the_handle(netpol_lab):
    deny = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: shop}
spec: {podSelector: {matchLabels: {app: db}}, policyTypes: [Ingress]}
"""
    lab = netpol_lab(SHOP + "---" + deny)
    with lab.drops() as seen:
        lab.probe(ports="5432/TCP", timeout=FAST)
    assert any(d["pod"] == "shop/db" and d["direction"] == "ingress" for d in seen), seen
    counted = lab.stats("shop/db", nonzero=True)
    assert any(c["action"] == "drop" and c["direction"] == "ingress" and c["packets"] > 0 for c in counted)
    assert all(c["pod"] == "shop/db" for c in counted)


def test_default_prefix_for_users_differs_from_our_suite():
    from enforcer import pytest_plugin

    assert pytest_plugin.DEFAULT_PREFIX == "pyt"  # docs' labs are not confused with npt-*


def test_the_command_line_fails_a_comparison_of_nothing(tmp_path):
    (tmp_path / "portless.yaml").write_text(textwrap.dedent("""
        apiVersion: v1
        kind: Pod
        metadata: {name: a, namespace: x}
        spec: {containers: [{name: c, image: i}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: b, namespace: x}
        spec: {containers: [{name: c, image: i}]}
    """))
    r = netpol("probe", "-f", str(tmp_path / "portless.yaml"), "--backend", "fake", "--expect", "model",
               "--name", f"npt-cv{uuid.uuid4().hex[:4]}")
    assert r.returncode == 1 and "no cell was compared" in r.stderr, r.stdout + r.stderr


def test_dual_stack_expectations_skip_ipv4_only_hosts_in_ipv6(netpol_lab):
    from enforcer.model import ExternalHost

    cluster = small()
    cluster.externals = {"backup": ExternalHost("backup", ("192.168.50.10",), (ContainerPort(22, "TCP"),))}
    lab = netpol_lab(cluster, ipv6=True)
    r = Reachability(["x/a", "x/b", "y/c", "backup"], ports=["22/TCP"])
    lab.assert_matches(r, timeout=FAST)  # backup has no IPv6 address: its cells only in IPv4
    with pytest.raises(AssertionError, match="x/a -> nobody 22/TCP: expected allowed, observed missing"):
        lab.assert_matches(Reachability(["x/a", "nobody"], ports=["22/TCP"]), timeout=FAST)
