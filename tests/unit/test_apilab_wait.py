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


def write_status(st, *, pid, managed=2, ok=True, from_snapshot=None):
    doc = {"pid": pid, "last_sync": {"ok": ok}, "counts": {"managed": managed},
           "source": {"type": "api", "from_snapshot": from_snapshot}}
    with open(os.path.join(apilab.agent_dir(st.name), "node1.json"), "w") as f:
        json.dump(doc, f)


def test_the_running_agents_own_file_saying_every_pod_is_enforced_ends_the_wait(lab):
    write_status(lab, pid=os.getpid())
    apilab.wait_agents(lab, timeout=0)


@pytest.mark.parametrize("status", [
    dict(pid=1),  # a killed predecessor's last word: ok, every pod managed
    dict(pid=os.getpid(), from_snapshot="2026-12-06T12:00:00Z"),  # the API has not answered yet
    dict(pid=os.getpid(), managed=1),
    dict(pid=os.getpid(), ok=False),
], ids=["predecessors-file", "snapshot", "a-pod-short", "sync-failed"])
def test_the_wait_goes_on_until_then(lab, status):
    write_status(lab, **status)
    with pytest.raises(LabError, match="the agents of node1 did not enforce their pods"):
        apilab.wait_agents(lab, timeout=0)
