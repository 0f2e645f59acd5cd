"""A test author's own programs in the lab: ``lab up --no-servers``, ``lab.popen`` for a
server, ``lab.exec`` / ``netpol lab exec`` for a client. They meet the pods' firewalls
exactly as the lab's own servers and probes do."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

MANIFESTS = """
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: server, namespace: app}
spec:
  replicas: 1
  selector: {matchLabels: {app: server}}
  template:
    metadata: {labels: {app: server}}
    spec: {containers: [{name: s, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: friend, namespace: app, labels: {app: friend}}
---
apiVersion: v1
kind: Pod
metadata: {name: stranger, namespace: app, labels: {app: stranger}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-friend, namespace: app}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: friend}}}]
    ports: [{port: http}]
"""

# A server of the test's own: answers one line per connection.
SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(16)
print("listening", flush=True)
while True:
    c, addr = s.accept()
    c.sendall(b"hello from the test's server\\n")
    c.close()
"""

CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], 8080), timeout=1.0)
print(s.recv(100).decode().strip())
"""


def server_pod(lab) -> str:
    return next(k for k in lab.cluster.pods if k.startswith("app/server-"))


@pytest.mark.root
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_own_server_and_client_see_the_policy(netpol_lab, backend):
    lab = netpol_lab(MANIFESTS, backend=backend, servers=False)
    srv = server_pod(lab)
    ip = lab.cluster.pods[srv].ips[0]
    # Without servers every port is closed: an allowed probe is refused (RST), not answered.
    rows = {(r["from"], r["to"]): r for r in lab.probe(["8080/TCP"], timeout=0.5)}
    assert rows[("app/friend", srv)]["detail"] == "refused"
    assert rows[("app/stranger", srv)]["detail"] == "timeout"

    proc = lab.popen(srv, [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "listening"

    ok = lab.exec("app/friend", [sys.executable, "-c", CLIENT, ip])
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "hello from the test's server"
    denied = lab.exec("app/stranger", [sys.executable, "-c", CLIENT, ip])
    assert denied.returncode != 0 and "timed out" in denied.stderr

    # The lab's probes now meet the test's server: connected where the policy allows.
    rows = {(r["from"], r["to"]): r for r in lab.probe(["8080/TCP"], timeout=0.5)}
    assert rows[("app/friend", srv)]["detail"] == "connected"
    assert rows[("app/stranger", srv)]["allowed"] is False
    lab.assert_matches("model", ports=["8080/TCP"], timeout=0.5)


@pytest.mark.root
def test_cli_lab_exec_passes_the_exit_code_through(netpol_lab):
    lab = netpol_lab(MANIFESTS, servers=False)
    netpol = [sys.executable, "-m", "enforcer"]
    r = subprocess.run(netpol + ["lab", "exec", "--name", lab.name, "app/friend", "--",
                                 "sh", "-c", "ip -4 -o addr show dev eth0; exit 7"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 7
    assert lab.cluster.pods["app/friend"].ips[0] in r.stdout  # the pod's own interface
    r = subprocess.run(netpol + ["lab", "exec", "--name", lab.name, "app/nobody", "--", "true"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "has no pod or external host app/nobody" in r.stderr


@pytest.mark.root
def test_popen_processes_stop_with_the_lab(netpol_lab):
    lab = netpol_lab(MANIFESTS, servers=False)
    proc = lab.popen("app/friend", ["sleep", "600"])
    time.sleep(0.1)
    assert proc.poll() is None
    lab.down()
    assert proc.poll() is not None
