"""The file-watching agent (``netpol run --watch``) enforces ClusterNetworkPolicies (root).

Same set-up as tests/integration/test_daemon.py: a lab of three pods (a, b, c in namespace
x) built with the ``fake`` backend (namespaces and servers, no rules), and the daemon as a
subprocess restricted to the lab's namespaces by ``--netns-prefix``. Real packets decide.
"""
from __future__ import annotations

import os

import pytest

from enforcer import netns
from enforcer.daemon import status as statusfile
from enforcer.daemon.testing import DaemonProcess, wait_for, write_yaml
from tests.integration.test_daemon import IPS, SLOW, Lab, host_ruleset, pods_docs

pytestmark = pytest.mark.root


def admin_deny(name: str = "b-refuses-a", action: str = "Deny") -> dict:
    """Admin tier: pods app=b refuse pods app=a (every namespace)."""
    return {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name},
            "spec": {"tier": "Admin", "priority": 10,
                     "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "b"}}}},
                     "ingress": [{"name": "no-a", "action": action,
                                  "from": [{"pods": {"namespaceSelector": {},
                                                     "podSelector": {"matchLabels": {"app": "a"}}}}]}]}}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    before = host_ruleset()
    lab = Lab(str(tmp_path_factory.mktemp("cnplab")))
    try:
        yield lab
    finally:
        lab.down()
        assert host_ruleset() == before  # nothing of ours in the host's namespace


def _daemon(lab, tmp_path, backend: str) -> DaemonProcess:
    return DaemonProcess([str(tmp_path / "watch")], state_file=str(tmp_path / "state.json"),
                         netns_prefix=lab.prefix, backend=backend,
                         args=["--repair-interval", "1", "--settle", "0.5", "--cleanup-on-exit"],
                         log_path=str(tmp_path / "daemon.log"))


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_admin_deny_in_a_watched_file_denies_and_removing_it_allows(lab, tmp_path, backend):
    watch = tmp_path / "watch"
    watch.mkdir()
    write_yaml(str(watch / "pods.yaml"), pods_docs())
    cnp = str(watch / "cnp.yaml")
    write_yaml(cnp, [admin_deny()])  # in place at start: the first, full compile reads it
    d = _daemon(lab, tmp_path, backend)
    try:
        d.start()
        assert not lab.ok("a", "b")
        assert lab.ok("c", "b") and lab.ok("a", "c") and lab.ok("b", "a")
        tool = "nft" if backend == "nftables" else "iptables-save"
        listing = netns.run(lab.ns("b"), [tool, "list", "ruleset"] if tool == "nft" else [tool]).stdout
        assert "Admin b-refuses-a ingress[0] no-a Deny" in listing
        st = d.state()
        assert st["input_errors"] == [] and st["counts"]["cluster_policies"] == 1
        assert "1 ClusterNetworkPolicy, " in statusfile.render(st)
        # Removed: allowed again (an incremental change of the running agent).
        os.unlink(cnp)
        assert wait_for(lambda: lab.ok("a", "b"), SLOW) is not None
        assert lab.ok("c", "b")
        # Written again while running, then turned into an Accept: enforced each time.
        write_yaml(cnp, [admin_deny()])
        assert wait_for(lambda: not lab.ok("a", "b"), SLOW) is not None
        # A pod relabelled into the CNP's peers is denied too (incremental: its selection
        # moves, b's set gets the address), and out again allowed.
        write_yaml(str(watch / "pods.yaml"), pods_docs({"c": "a"}))
        assert wait_for(lambda: not lab.ok("c", "b"), SLOW) is not None
        write_yaml(str(watch / "pods.yaml"), pods_docs())
        assert wait_for(lambda: lab.ok("c", "b"), SLOW) is not None
        assert not lab.ok("a", "b")
        write_yaml(cnp, [admin_deny(action="Accept")])
        assert wait_for(lambda: lab.ok("a", "b"), SLOW) is not None
        # An invalid edit keeps the last good version in force (here: the Accept).
        bad = admin_deny(action="Deny")
        bad["spec"]["priority"] = 5000  # out of the CRD's 0..1000
        write_yaml(cnp, [bad])
        assert wait_for(lambda: any("priority" in str(e) for e in d.state()["input_errors"]), SLOW) is not None
        assert lab.ok("a", "b")
        assert d.stop() == 0
    finally:
        d.close()
    assert lab.ok("a", "b")  # --cleanup-on-exit: nothing of ours left in the pods
    assert all(lab.ok(src, "a") for src in IPS if src != "a")
