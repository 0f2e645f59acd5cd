"""An API lab waits for its agents by their state files (apilab.wait_agents): only the
running agent's own file counts, and only once it enforces what the API says. A restarted
agent's file is its killed predecessor's until its first sync (``lab.restart_agent``
returned at once on it, while the pod still held the rules of the predecessor's day)."""
from __future__ import annotations

import json
import os

import pytest

from enforcer.errors import LabError
from enforcer.lab import apilab, state


@pytest.fixture
def lab(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "LABS_DIR", str(tmp_path))
    st = state.LabState(name="w", backend="nftables", node_netns="netpol-w-node", bridge="br",
                        nodes=[{"name": "node1", "netns": "netpol-w-node1"}])
    st.endpoints = {k: state.Endpoint(key=k, kind="pod", netns=f"netpol-w-{i}", link=f"v{i}",
                                      ips=(f"10.244.0.{i + 2}",), node="node1")
                    for i, k in enumerate(("x/a", "x/b"))}
    # The agent of node1 is "running": this very process, with its start time.
    st.api = {"agents": {"node1": {"pid": os.getpid(), "start": state.proc_start(os.getpid())}}}
    os.makedirs(apilab.agent_dir(st.name))
    return st


def write_status(st, *, pid, managed=2, ok=True, error=None, from_snapshot=None, apply_errors=()):
    doc = {"pid": pid, "last_sync": {"ok": ok, "error": error}, "counts": {"managed": managed},
           "source": {"type": "api", "from_snapshot": from_snapshot}, "apply_errors": list(apply_errors)}
    with open(os.path.join(apilab.agent_dir(st.name), "node1.json"), "w") as f:
        json.dump(doc, f)


def test_the_running_agents_own_file_saying_every_pod_is_enforced_ends_the_wait(lab):
    write_status(lab, pid=os.getpid())
    apilab.wait_agents(lab, timeout=0)


@pytest.mark.parametrize("status,why", [
    # a killed predecessor's last word (ok, every pod managed); the new one's log says where it is
    (dict(pid=1), r"node1 \(still starting: importing\)"),
    (dict(pid=os.getpid(), from_snapshot="2026-12-06T12:00:00Z"), r"node1 \(enforcing its snapshot"),
    (dict(pid=os.getpid(), managed=1, apply_errors=[{"pod": "x/b", "message": "refused"}]),
     r"node1 \(1 of 2 pods; x/b: refused\)"),
    (dict(pid=os.getpid(), ok=False, error="boom"), r"node1 \(its last sync failed: boom\)"),
], ids=["predecessors-file", "snapshot", "a-pod-short", "sync-failed"])
def test_the_wait_goes_on_until_then_and_says_why(lab, status, why):
    write_status(lab, **status)
    with open(os.path.join(apilab.agent_dir(lab.name), "node1.log"), "w") as f:
        f.write('{"msg": "started"}\n\nimporting\n\n')
    with pytest.raises(LabError, match=f"the agents of {why}.* did not enforce their pods within 0s"):
        apilab.wait_agents(lab, timeout=0)


def test_an_agent_that_exited_is_named_with_the_last_line_of_its_log(lab):
    lab.api["agents"]["node1"] = {"pid": os.getpid(), "start": "not this process's start"}
    with open(os.path.join(apilab.agent_dir(lab.name), "node1.log"), "w") as f:
        f.write("Traceback (most recent call last):\n  ...\nImportError: half-edited\n")
    with pytest.raises(LabError, match=r"the agent of node1 exited \(ImportError: half-edited\); its log: "):
        apilab.wait_agents(lab, timeout=0)
