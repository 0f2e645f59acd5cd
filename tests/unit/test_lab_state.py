"""state.json, the lab's memory between commands: what a state writes, that it reads back
the same, and that files written before a field existed (or broken ones) are read as they
should be. No root: the lab directory is a temporary one."""
from __future__ import annotations

import json

import pytest

from enforcer.compiler import frontend
from enforcer.errors import LabError
from enforcer.lab import state
from enforcer.lab.state import Endpoint, LabState

POD = Endpoint("x/a", "pod", "lab-x-a", "lab-1", ("10.244.0.2",), ((80, "TCP"), (53, "UDP")),
               mac="02:00:00:00:00:01", node="node1")
EXTERNAL = Endpoint("backup", "external", "lab-backup", "lab-2", ("192.168.5.10",), (),
                    ("192.168.5.1",), "02:00:00:00:00:02", "02:00:00:00:00:03")


def test_an_endpoint_is_written_in_the_documented_shape():
    assert POD.to_json() == {"key": "x/a", "kind": "pod", "netns": "lab-x-a", "link": "lab-1",
                             "ips": ["10.244.0.2"], "ports": [[80, "TCP"], [53, "UDP"]], "node_addrs": [],
                             "mac": "02:00:00:00:00:01", "node_mac": "", "node": "node1"}
    assert "node" not in EXTERNAL.to_json()  # one-node labs' files carry no node
    assert EXTERNAL.to_json()["node_addrs"] == ["192.168.5.1"]


def test_a_full_state_reads_back_equal_through_json():
    prep = frontend.prepare(["examples/three-tier"])
    firewalls = {k: prep.compiler.firewall(k) for k in sorted(prep.cluster.pods)[:2]}
    st = LabState(name="t", backend="nftables", node_netns="lab-node", bridge="lab-br",
                  cidrs=("10.244.0.0/16",), gateways=("10.244.0.1",), next_index=3,
                  endpoints={"x/a": POD, "backup": EXTERNAL}, cluster=prep.cluster, firewalls=firewalls,
                  server_pid=123, server_generation=2, created=1.5, phase="ready", no_servers=True,
                  nodes=[{"name": "node1", "netns": "lab-n1"}], api={"kubeconfig": "/k"})
    data = json.loads(json.dumps(st.to_json()))
    assert data["version"] == state.VERSION and data["cidrs"] == ["10.244.0.0/16"]
    assert list(data["endpoints"]) == ["backup", "x/a"]  # sorted: a stable file
    again = LabState.from_json(data)
    assert again == st
    assert isinstance(again.cidrs, tuple) and isinstance(again.endpoints["x/a"].ports[0], tuple)


def test_a_file_from_before_the_optional_fields_takes_their_defaults():
    early = {"name": "t", "backend": "iptables", "node_netns": "n", "bridge": "b",
             "endpoints": {"x/a": {"key": "x/a", "kind": "pod", "netns": "n1", "link": "l1", "ips": ["10.0.0.2"]}}}
    st = LabState.from_json(early)
    assert st.phase == "ready"  # written by a lab up that had finished: phase came later
    assert (st.cidrs, st.nodes, st.api, st.firewalls, st.no_servers) == ((), [], None, {}, False)
    assert st.endpoints["x/a"] == Endpoint("x/a", "pod", "n1", "l1", ("10.0.0.2",))
    assert LabState.from_json({**early, "phase": "building"}).phase == "building"


@pytest.mark.parametrize("broken", [
    '{"backend": "nftables", "node_netns": "n", "bridge": "b"}',  # no name
    '{"name": "t", "backend": "x", "node_netns": "n", "bridge": "b", "endpoints": {"a": {"key": "a"}}}',
    '{"name": "t", "backend": "x", "node_netns": "n", "bridge": "b", "cidrs": 5}',
    "not json",
])
def test_a_broken_state_file_is_one_clear_error(tmp_path, monkeypatch, broken):
    monkeypatch.setattr(state, "LABS_DIR", str(tmp_path))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "state.json").write_text(broken)
    with pytest.raises(LabError, match="lab t: unreadable state .*netpol lab down --name t"):
        state.load("t")
