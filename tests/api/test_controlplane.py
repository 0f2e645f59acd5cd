"""The control plane the API tests run against: a real etcd and kube-apiserver, driven as a
kubelet and an operator would drive them."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enforcer.k8s import controlplane as cpmod
from enforcer.k8s.controlplane import ControlPlane, KubectlError, missing_binaries

REPO = Path(__file__).resolve().parents[2]


def test_pinned_version_is_the_one_the_go_module_builds():
    gomod = (REPO / "controlplane" / "go.mod").read_text()
    assert re.search(rf"^\s*k8s\.io/kubernetes {re.escape(cpmod.K8S_VERSION)}$", gomod, re.M)
    staging = "v0." + cpmod.K8S_VERSION.removeprefix("v1.")
    # Every staging module is pinned to the same release (a mix does not build, or worse).
    replaced = re.findall(r"^\s*(k8s\.io/[a-z-]+) => \1 (\S+)$", gomod, re.M)
    assert len(replaced) > 20 and {v for _, v in replaced} == {staging}


def test_missing_go_is_the_skip_reason(monkeypatch):
    monkeypatch.setattr(cpmod, "binary_dir", lambda: None)
    real_which = shutil.which
    monkeypatch.setattr(cpmod.shutil, "which", lambda name: None if name == "go" else real_which(name))
    monkeypatch.setattr(cpmod.Path, "exists", lambda self: False if str(self).endswith("/go") else os.path.exists(self))
    assert missing_binaries().startswith("Go is not installed")


def pod_doc(ns: str, name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
                       "spec": {"nodeName": "node-a",
                                "containers": [{"name": "c", "image": "registry.invalid/x",
                                                "ports": [{"name": "http", "containerPort": 80}]}]}})


def test_kubectl_creates_a_pod_and_reports_its_status_as_a_kubelet_would(control_plane, kubectl, api_namespace_prefix):
    ns = api_namespace_prefix + "a"
    kubectl("create", "namespace", ns)
    kubectl("apply", "-f", "-", input=pod_doc(ns, "web"))
    status = {"status": {"phase": "Running", "podIP": "10.244.1.5",
                         "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}]}}
    kubectl("patch", "pod", "web", "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(status))
    got = json.loads(kubectl("get", "pod", "web", "-n", ns, "-o", "json").stdout)
    assert got["spec"]["nodeName"] == "node-a"
    assert got["status"]["phase"] == "Running"
    assert [p["ip"] for p in got["status"]["podIPs"]] == ["10.244.1.5", "fd00:10:244:1::5"]
    # The API server validates status too: two IPs of one family are refused.
    bad = {"status": {"podIPs": [{"ip": "10.244.1.5"}, {"ip": "10.244.1.6"}]}}
    with pytest.raises(KubectlError, match="one IP for each IP family"):
        kubectl("patch", "pod", "web", "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(bad))


def test_delete_namespace_does_the_missing_controllers_job(control_plane, kubectl, api_namespace_prefix):
    ns = api_namespace_prefix + "gone"
    kubectl("create", "namespace", ns)
    kubectl("apply", "-f", "-", input=pod_doc(ns, "web"))
    control_plane.delete_namespace(ns)
    assert "NotFound" in kubectl("get", "namespace", ns, check=False).stderr
    assert kubectl("get", "pods", "-n", ns, "-o", "name").stdout == ""


ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: NS}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: NS}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects:
- {kind: ServiceAccount, name: reader, namespace: NS}
"""


def test_service_account_token_is_bound_by_rbac(control_plane, kubectl, api_namespace_prefix):
    ns, other = api_namespace_prefix + "sa", api_namespace_prefix + "other"
    kubectl("create", "namespace", ns)
    kubectl("create", "namespace", other)
    kubectl("apply", "-f", "-", input=ROLE.replace("NS", ns))
    kubectl("apply", "-f", "-", input=pod_doc(ns, "web"))
    sa = control_plane.kubeconfig_for_service_account(ns, "reader")
    as_sa = lambda *a: kubectl(*a, kubeconfig=sa, check=False)  # noqa: E731
    listed = as_sa("get", "pods", "-n", ns, "-o", "name")
    assert listed.returncode == 0 and listed.stdout.split() == ["pod/web"]
    whoami = json.loads(as_sa("auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:reader"
    for args in (("get", "pods", "-n", other), ("get", "secrets", "-n", ns),
                 ("delete", "pod", "web", "-n", ns), ("get", "namespaces")):
        denied = as_sa(*args)
        assert denied.returncode != 0 and "Forbidden" in denied.stderr, args


def test_paused_api_server_does_not_answer_until_resumed(control_plane, kubectl):
    control_plane.pause_apiserver()
    try:
        hung = kubectl("get", "namespaces", "--request-timeout=2s", check=False)
        assert hung.returncode != 0
        assert not control_plane.ready()
    finally:
        control_plane.resume_apiserver()
    assert kubectl("get", "namespace", "default", "-o", "name").stdout.strip() == "namespace/default"


def test_api_server_restarts_on_the_same_port_with_the_same_data(control_plane, kubectl, api_namespace_prefix):
    ns = api_namespace_prefix + "kept"
    kubectl("create", "namespace", ns)
    server, etcd_pid = control_plane.server, control_plane.etcd_pid
    control_plane.stop_apiserver()
    try:
        assert control_plane.apiserver_pid is None
        refused = kubectl("get", "namespaces", "--request-timeout=2s", check=False)
        assert refused.returncode != 0 and "refused" in refused.stderr
    finally:
        control_plane.start_apiserver()
    assert control_plane.server == server and control_plane.etcd_pid == etcd_pid
    assert kubectl("get", "namespace", ns, "-o", "name").stdout.strip() == f"namespace/{ns}"


def assert_watch_from_old_version_gets_410(cp, ns: str) -> None:
    def create(path: str, name: str) -> dict:  # plain requests: five kubectl runs cost seconds
        reply = cp.api("POST", path, json.dumps({"apiVersion": "v1", "kind": "ConfigMap" if "configmaps" in path
                                                 else "Namespace", "metadata": {"name": name}}))
        assert reply.ok, reply
        return reply.body

    create("/api/v1/namespaces", ns)
    old = create(f"/api/v1/namespaces/{ns}/configmaps", "c0")["metadata"]["resourceVersion"]
    for i in range(1, 4):
        create(f"/api/v1/namespaces/{ns}/configmaps", f"c{i}")
    watch = f"/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={old}&timeoutSeconds=1"
    before = cp.api("GET", watch)  # timeoutSeconds ends the stream: the whole answer is read
    assert before.ok and '"ADDED"' in before.text, before
    cp.compact_etcd()
    after = cp.api("GET", watch)
    if after.status == 410:  # the watch cache refuses before the stream starts
        assert after.body["reason"] == "Expired", after
        return
    # etcd's answer comes inside the stream, as an ERROR event
    assert after.ok, after
    events = [json.loads(line) for line in after.text.splitlines() if line.strip()]
    assert [e["type"] for e in events] == ["ERROR"], events
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] in ("Expired", "Gone")


def test_compacting_etcd_makes_an_old_watch_fail_with_410_gone(control_plane, api_namespace_prefix):
    assert_watch_from_old_version_gets_410(control_plane, api_namespace_prefix + "w")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_stop_leaves_nothing_running(tmp_path):
    reason = missing_binaries()
    if reason:
        pytest.skip(reason)
    with ControlPlane(tmp_path, watch_cache=False) as cp:
        assert_watch_from_old_version_gets_410(cp, "no-watch-cache")  # an etcd watch, not a cached one
        pids = [cp.apiserver_pid, cp.etcd_pid]
        port = int(cp.server.rsplit(":", 1)[1])
        etcd_port = int(cp.etcd_url.rsplit(":", 1)[1])
        assert all(pids) and _listening(port) and _listening(etcd_port)
        cp.pause_apiserver()  # even a stopped (SIGSTOP) API server must go
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} left running"
    assert not _listening(port) and not _listening(etcd_port)
    assert cp.apiserver_pid is None and cp.etcd_pid is None
    assert not (tmp_path / "etcd-data").exists()
    cp.stop()  # idempotent


def test_a_killed_test_run_takes_its_control_plane_with_it(tmp_path):
    """SIGKILL gives no finally and no atexit: the children must still go (PDEATHSIG)."""
    reason = missing_binaries()
    if reason:
        pytest.skip(reason)
    script = ("import sys, json, pathlib\n"
              "from enforcer.k8s.controlplane import ControlPlane\n"
              "cp = ControlPlane(pathlib.Path(sys.argv[1])); cp.start()\n"
              "print(json.dumps([cp.apiserver_pid, cp.etcd_pid]), flush=True)\n"
              "sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(proc.stdout.readline())
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], "left running after SIGKILL"
