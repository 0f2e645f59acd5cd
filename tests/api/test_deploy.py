"""deploy/: the agent's manifests pass a real API server, and its ClusterRole grants exactly
what the agent reads."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = [DEPLOY / "rbac.yaml", DEPLOY / "daemonset.yaml"]
NS = "netpol-enforcer"


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(kind: str) -> dict:
    [found] = [d for p in MANIFESTS for d in docs(p) if d["kind"] == kind]
    return found


def test_daemonset_promises():
    ds = by_kind("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert pod["hostNetwork"] is True and pod["serviceAccountName"] == NS
    assert pod["tolerations"] == [{"operator": "Exists"}]
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "SYS_ADMIN"]}
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    [netns] = [m for m in c["volumeMounts"] if m["mountPath"] == "/run/netns"]
    assert netns["mountPropagation"] == "HostToContainer"
    [env] = c["env"]
    assert env == {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    args = " ".join(c["command"] + c["args"])
    assert args.startswith("netpol run --node $(NODE_NAME) --backend nftables")
    assert "--kubeconfig" not in args  # in-cluster configuration


def test_cluster_role_reads_four_kinds_and_nothing_more():
    role = by_kind("ClusterRole")
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {(g, r, v) for g, r in (("", "pods"), ("", "namespaces"),
                                              ("networking.k8s.io", "networkpolicies"),
                                              ("policy.networking.k8s.io", "clusternetworkpolicies"))
                       for v in ("get", "list", "watch")}


def test_manifests_pass_server_side_dry_run(control_plane, kubectl):
    # A dry run creates nothing, so the namespace the other objects live in must exist.
    kubectl("create", "namespace", NS, check=False)
    out = kubectl("apply", "--server-side", "--dry-run=server", "--validate=strict", *sum((["-f", str(p)] for p in MANIFESTS), []))
    lines = out.stdout.splitlines()
    kinds = [d["kind"] for p in MANIFESTS for d in docs(p)]
    assert len(lines) == len(kinds) and all("(server dry run)" in line for line in lines), out.stdout
    assert out.stderr == "", out.stderr  # no warnings either (deprecated fields, unknown fields)
    assert "NotFound" in kubectl("get", "daemonset", NS, "-n", NS, check=False).stderr


def test_service_account_of_the_cluster_role_reads_and_watches_only_what_it_needs(control_plane, kubectl):
    kubectl("apply", "--server-side", "-f", str(DEPLOY / "rbac.yaml"))
    sa = control_plane.kubeconfig_for_service_account(NS, NS)
    as_agent = lambda *a: kubectl(*a, kubeconfig=sa, check=False)  # noqa: E731
    for path in ("/api/v1/pods", "/api/v1/namespaces", "/apis/networking.k8s.io/v1/networkpolicies"):
        listed = as_agent("get", "--raw", path + "?limit=1")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["kind"].endswith("List")
        watched = as_agent("get", "--raw", path + "?watch=1&timeoutSeconds=1")
        assert watched.returncode == 0, watched.stderr
    node_pods = as_agent("get", "pods", "-A", "--field-selector", "spec.nodeName=node-a", "-o", "name")
    assert node_pods.returncode == 0, node_pods.stderr
    for args in (("get", "secrets", "-A"), ("get", "secrets", "-n", NS), ("get", "configmaps", "-A"),
                 ("get", "nodes"), ("delete", "pod", "any", "-n", "default"),
                 ("create", "namespace", "agent-may-not")):
        denied = as_agent(*args)
        assert denied.returncode != 0 and "Forbidden" in denied.stderr, (args, denied.stderr)


UNIT = DEPLOY / "netpol-enforcer-kubeconfig.service"


def test_kubeconfig_unit_runs_the_agent_with_the_same_limits_as_the_file_unit():
    text = UNIT.read_text().replace("\\\n", " ")
    start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert "--kubeconfig /etc/netpol-enforcer/kubeconfig" in start and "--node %H" in start
    assert "--watch" not in start
    assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN" in text
    assert "AF_INET AF_INET6" in text  # it talks to a remote API server


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_kubeconfig_unit_passes_systemd_analyze_verify(tmp_path):
    netpol = os.path.join(os.path.dirname(sys.executable), "netpol")
    if not os.path.exists(netpol):
        pytest.skip("the netpol entry point is not installed next to this python")
    unit = tmp_path / "netpol-enforcer.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/netpol", netpol))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "netpol-enforcer.service" not in proc.stderr, proc.stderr
