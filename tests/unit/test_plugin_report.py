"""What the pytest plugin builds on, without root: vacuous comparisons, per-port
expectations, the failure message of a wrong cell, lab names, lab owners, held interrupts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from enforcer import interrupts
from enforcer.errors import LabError
from enforcer.lab import naming, report, state
from enforcer.views.reachability import Reachability, compare, rows_of, truth_table

# An app as a test author writes it: four pods, four policies, six ports.
SHOP = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, image: nginx, ports: [{containerPort: 80}, {containerPort: 443}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {containers: [{name: c, image: api, ports: [{containerPort: 8080}, {containerPort: 9090, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {containers: [{name: c, image: postgres, ports: [{containerPort: 5432}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: other, labels: {app: client}}
spec: {containers: [{name: c, image: busybox, ports: [{containerPort: 53, protocol: UDP}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: 80}, {port: 443}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 8080}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: api}}}], ports: [{port: 5432}]}]
"""
SHOP_PODS = ["other/client", "shop/api", "shop/db", "shop/web"]
SHOP_PORTS = ["80/TCP", "443/TCP", "8080/TCP", "9090/UDP", "5432/TCP", "53/UDP"]


def shop_expectation() -> Reachability:
    """The app's intent, per port, in one object."""
    r = Reachability(SHOP_PODS, ports=SHOP_PORTS)
    for p in ("shop/web", "shop/api", "shop/db"):
        r.expect_all_ingress(p, False)
    r.expect_all_ingress("shop/web", True, port=["80/TCP", "443/TCP"])
    r.expect("shop/web", "shop/api", True, port="8080/TCP")
    r.expect("shop/api", "shop/db", True, port="5432/TCP")
    return r


def shop_model():
    import tempfile

    from enforcer.compiler import ipam
    from enforcer.load import manifests
    from enforcer.compiler.compile import compile_cluster

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(SHOP)
        f.flush()
        cluster = manifests.load([f.name]).cluster
    cluster = ipam.assign_ips(cluster, ("10.244.0.0/16",))
    return cluster, compile_cluster(cluster, node_ips=("10.244.0.1",))


# ----------------------------------------------------------------- vacuous comparisons

def test_a_comparison_of_nothing_is_vacuous():
    c = compare([], [])
    assert c.vacuous and c.ok  # ok (nothing wrong) but vacuous: the plugin fails on it
    assert "nothing was compared" in c.text
    assert not compare(Reachability(["a/a", "a/b"]).rows(), []).vacuous


def test_truth_table_legend_explains_every_mark():
    text = truth_table(Reachability(["x/a", "x/b"]).rows()[:1])
    assert text.splitlines()[3].split() == ["x/b", "?", "-"]  # x/b -> x/a has no row
    legend = text.splitlines()[-1]
    assert legend.startswith("legend:") and all(m in legend for m in (". ", "X ", "- ", "? "))


# ----------------------------------------------------------------- per-port expectations

def test_expectations_per_port_in_one_object():
    rows = {(r["from"], r["to"], r["port"]): r["allowed"] for r in shop_expectation().rows()}
    assert rows[("other/client", "shop/web", 80)] is True
    assert rows[("other/client", "shop/web", 8080)] is False
    assert rows[("shop/web", "shop/api", 8080)] is True
    assert rows[("shop/web", "shop/api", 80)] is False
    assert rows[("shop/api", "shop/db", 5432)] is True and rows[("shop/web", "shop/db", 5432)] is False
    assert rows[("shop/db", "other/client", 53)] is True  # the default
    assert len(rows) == 12 * 6


def test_per_port_errors_and_get():
    r = Reachability(["x/a", "x/b"], ports=["80/TCP", "81/UDP"])
    r.expect("x/a", "x/b", False, port=(81, "UDP"))
    assert r.get("x/a", "x/b", port="80/TCP") is True and r.get("x/a", "x/b", port="81/UDP") is False
    with pytest.raises(ValueError, match="differs by port"):
        r.get("x/a", "x/b")
    with pytest.raises(ValueError, match="82/TCP is not one of"):
        r.expect("x/a", "x/b", True, port="82/TCP")
    r.expect_peer("*", "*", False, port=["80/TCP", "81/UDP"])
    assert not any(row["allowed"] for row in r.rows())


def test_combining_expectations():
    r80 = Reachability(["x/a", "x/b"], ports=["80/TCP"]).expect("x/a", "x/b", False)
    r81 = Reachability(["x/a", "x/b"], ports=["81/UDP"], default=False)
    rows = rows_of([r80, r81])
    assert [(r["port"], r["allowed"]) for r in rows] == [(80, False), (80, True), (81, False), (81, False)]


# ----------------------------------------------------------------- the failure message

def _one_wrong(n_extra: int = 0):
    """Expected and observed rows that differ in one cell: shop/api -> shop/db 5432/TCP."""
    pods = SHOP_PODS + [f"zz{i:02d}/some-long-pod-name-{i}" for i in range(n_extra)]
    want = (shop_expectation() if not n_extra else Reachability(pods, ports=SHOP_PORTS)).rows()
    got = [dict(r, allowed=not r["allowed"]) if (r["from"], r["to"], r["port"]) == ("shop/api", "shop/db", 5432)
           else dict(r) for r in want]
    return want, got


def test_one_wrong_cell_reads_in_a_few_short_lines():
    want, got = _one_wrong()
    c = compare(want, got)
    assert c.wrong == 1
    text = report.failure_text(c, want, got, context="lab t (nftables, IPv4)",
                               reasons=lambda cells: {(x.frm, x.to, x.port, x.protocol): "model: allowed: "
                                                      "shop/db ingress allowed by shop/db ingress[0]" for x in cells})
    lines = text.splitlines()
    assert lines[0] == "shop/api -> shop/db 5432/TCP: expected allowed, observed blocked (1 wrong cell of 72)"
    assert max(len(ln) for ln in lines) <= 100
    assert len(lines) <= 20, text
    assert sum(1 for ln in lines if "(what was observed;" in ln) == 1  # one table: 5432
    assert "5432/TCP: 1 wrong, 11 correct" in text and "80/TCP:" not in text
    assert "shop/db ingress[0]" in text
    row = next(ln for ln in lines if ln.startswith("2  shop/api"))
    assert "[X]" in row  # the wrong cell, bracketed, in shop/db's column
    assert "? no result" in text  # the legend
    full = report.failure_text(c, want, got, context="t", verbose=True)
    assert "expected 80/TCP:" in full and "comparison 5432/TCP" in full


def test_wide_matrices_still_fit_100_columns():
    want, got = _one_wrong(n_extra=40)
    c = compare(want, got)
    text = report.failure_text(c, want, got, context="lab t")
    assert c.wrong == 1 and max(len(ln) for ln in text.splitlines()) <= 100
    assert "only the rows and columns with a wrong cell" in text
    many = compare(Reachability(SHOP_PODS + [f"n/p{i}" for i in range(60)]).rows(),
                   Reachability(SHOP_PODS + [f"n/p{i}" for i in range(60)], default=False).rows())
    text = report.failure_text(many, *_rows_of(many), context="lab t")
    assert max(len(ln) for ln in text.splitlines()) <= 100
    assert text.count("\n  ") <= 12 and "(5 of 4032 shown)" in text


def _rows_of(_c):
    eps = SHOP_PODS + [f"n/p{i}" for i in range(60)]
    return Reachability(eps).rows(), Reachability(eps, default=False).rows()


def test_the_models_reason_names_policy_and_rule():
    from enforcer.views import verdict

    cluster, firewalls = shop_model()
    eps = {e.id: e for e in verdict.endpoints(cluster)}
    allowed = report.verdict_reason(cluster, verdict.verdict(firewalls, eps["shop/api"], eps["shop/db"], 5432, "TCP"))
    assert allowed.startswith("model: allowed") and "shop/db ingress[0]" in allowed
    denied = report.verdict_reason(cluster, verdict.verdict(firewalls, eps["shop/web"], eps["shop/db"], 5432, "TCP"))
    assert denied.startswith("model: blocked") and "shop/db" in denied and "default-deny" in denied


# ----------------------------------------------------------------- lab names and owners

@pytest.mark.parametrize("bad", ["demo\n", "demo\r\n", "\ndemo", "Demo", "a" * 41, "-a", ""])
def test_lab_names_are_checked_whole(bad):
    with pytest.raises(LabError, match="invalid lab name"):
        naming.check_lab_name(bad)


def test_owners_and_stale_labs(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "LABS_DIR", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state.claim("alive")
    state.claim("gone", owner_pid=dead.pid)
    state.claim("detached")
    state.set_owner("detached", None)
    os.mkdir(tmp_path / "unclaimed")  # a claim killed before it wrote its owner
    assert state.staleness("alive")["stale"] is False and state.staleness("alive")["owner_alive"]
    gone = state.staleness("gone")
    assert gone["stale"] and gone["owner_pid"] == dead.pid and gone["owner_alive"] is False
    assert state.staleness("detached") == {"stale": False, "owner_pid": None, "owner_alive": None,
                                           "age": state.staleness("detached")["age"]}
    assert not state.staleness("unclaimed")["stale"]  # may still be claiming
    assert state.staleness("unclaimed", now=time.time() + 120)["stale"]
    # a recycled pid is not the owner: same pid, another start time
    doc = json.loads((tmp_path / "alive" / "owner").read_text())
    doc["start"] = "1"
    (tmp_path / "alive" / "owner").write_text(json.dumps(doc))
    assert state.staleness("alive")["stale"]


# ----------------------------------------------------------------- held interrupts

def test_deferred_interrupts_arrive_after_the_block():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _deferred_checks()
    finally:
        signal.signal(signal.SIGINT, previous)


def _deferred_checks():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
            done.append("rest of the block")
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupts.deferred(drop=True):
        signal.raise_signal(signal.SIGINT)  # dropped: cleanup after an interrupt
    with interrupts.deferred():
        with interrupts.deferred():
            pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
