"""Services in the lab, with real packets: the shop example's matrix on both backends, and
connections to ClusterIPs going through the DNAT to a backend pod's targetPort, which is
what NetworkPolicy sees (never the Service's port)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"

# Our own server: tells which pod answered.
SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[2].encode() + b"\\n")
    c.close()
"""
CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.0)
print(s.recv(100).decode().strip())
"""


def pods_of(lab, app: str) -> list[str]:
    return sorted(k for k, p in lab.cluster.pods.items() if p.labels.get("app") == app)


def connect(lab, src: str, ip: str, port: int) -> str | None:
    r = lab.exec(src, [sys.executable, "-c", CLIENT, ip, str(port)])
    return r.stdout.strip() if r.returncode == 0 else None


def serve(lab, pod: str, port: int) -> None:
    proc = lab.popen(pod, [sys.executable, "-c", SERVER, str(port), pod], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "listening"


@pytest.mark.root
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_shop_matrix_with_real_packets(netpol_lab, backend):
    lab = netpol_lab(str(SHOP), backend=backend)
    assert len(lab.cluster.pods) == 7
    lab.assert_matches("model", timeout=0.5)


POLICY_ON_SERVICE_PORT = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cart-from-frontend, namespace: shop}
spec:
  podSelector: {matchLabels: {app: cart}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 80}]          # the Service's port: never what the policy sees
"""

FRONTEND_EGRESS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: frontend-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: frontend}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: cart}}}]
    ports: [{port: 9090}]        # the pod's port, after DNAT
"""


@pytest.mark.root
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_connections_to_a_cluster_ip_reach_the_target_port(netpol_lab, backend, tmp_path):
    lab = netpol_lab(str(SHOP), backend=backend, servers=False)
    carts = pods_of(lab, "cart")
    for pod in carts:
        serve(lab, pod, 9090)
    cart_ip = lab.cluster.services["shop/cart"].cluster_ip
    front = pods_of(lab, "frontend")[0]
    payment = pods_of(lab, "payment")[0]

    # Through the DNAT, round robin over both backends; the policy admits frontend on 9090.
    answers = {connect(lab, front, cart_ip, 80) for _ in range(4)}
    assert answers == set(carts)
    assert connect(lab, payment, cart_ip, 80) is None  # the same DNAT, but not allowed

    # A policy written on the Service's port (80) allows nothing: the policy sees 9090.
    (tmp_path / "bad").mkdir()
    bad = tmp_path / "bad" / "policies.yaml"
    text = (SHOP / "policies.yaml").read_text()
    start = text.index("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: cart-from-frontend")
    end = text.index("---", start + 4)
    bad.write_text(text[:start] + "---\n" + POLICY_ON_SERVICE_PORT + text[end:])
    lab.apply([str(SHOP / "app.yaml"), str(bad)])
    assert connect(lab, front, cart_ip, 80) is None

    # Egress isolation of the client is judged after the DNAT too: the frontend may reach
    # cart pods on 9090 only, and that is exactly what a connection to cart:80 becomes.
    eg = tmp_path / "egress.yaml"
    eg.write_text(FRONTEND_EGRESS)
    lab.apply([str(SHOP), str(eg)])
    assert connect(lab, front, cart_ip, 80) in carts
    store_ip = lab.cluster.services["shop/store"].cluster_ip
    assert connect(lab, front, store_ip, 5432) is None  # egress denies, whatever answers


@pytest.mark.root
def test_endpoints_follow_the_pods(netpol_lab, tmp_path):
    lab = netpol_lab(str(SHOP), servers=False)
    front = pods_of(lab, "frontend")[0]
    cart_ip = lab.cluster.services["shop/cart"].cluster_ip
    # One cart replica: every connection lands on it.
    one = tmp_path / "app.yaml"
    one.write_text((SHOP / "app.yaml").read_text().replace(
        "metadata: {name: cart, namespace: shop}\nspec:\n  replicas: 2",
        "metadata: {name: cart, namespace: shop}\nspec:\n  replicas: 1"))
    lab.apply([str(one), str(SHOP / "policies.yaml")])
    carts = pods_of(lab, "cart")
    assert len(carts) == 1
    serve(lab, carts[0], 9090)
    assert {connect(lab, front, cart_ip, 80) for _ in range(3)} == set(carts)
    # No Service any more: the DNAT goes and the address answers nothing.
    lab.apply(_without_services(tmp_path, one))
    assert connect(lab, front, cart_ip, 80) is None


def _without_services(tmp_path: Path, app: Path) -> list[str]:
    docs = app.read_text().split("\n---\n")
    kept = [d for d in docs if "kind: Service" not in d]
    out = tmp_path / "no-services.yaml"
    out.write_text("\n---\n".join(kept))
    return [str(out), str(SHOP / "policies.yaml")]


EVERY_KIND = """
apiVersion: v1
kind: Namespace
metadata: {name: w}
"""
_TEMPLATE = """
    metadata: {labels: {app: %(app)s}}
    spec: {containers: [{name: c, ports: [{name: http, containerPort: %(port)d}]}]}"""
for _kind, _api, _spec in [
    ("Deployment", "apps/v1", "replicas: 2\n  selector: {matchLabels: {app: deploy}}"),
    ("ReplicaSet", "apps/v1", "replicas: 2\n  selector: {matchLabels: {app: rs}}"),
    ("StatefulSet", "apps/v1", "replicas: 2\n  serviceName: sts\n  selector: {matchLabels: {app: sts}}"),
    ("DaemonSet", "apps/v1", "selector: {matchLabels: {app: ds}}"),
    ("ReplicationController", "v1", "replicas: 2\n  selector: {app: rc}"),
    ("Job", "batch/v1", "parallelism: 2"),
]:
    _app = {"Deployment": "deploy", "ReplicaSet": "rs", "StatefulSet": "sts", "DaemonSet": "ds",
            "ReplicationController": "rc", "Job": "job"}[_kind]
    EVERY_KIND += (f"---\napiVersion: {_api}\nkind: {_kind}\nmetadata: {{name: {_app}, namespace: w}}\n"
                   f"spec:\n  {_spec}\n  template:" + _TEMPLATE % {"app": _app, "port": 8080} + "\n")
EVERY_KIND += """
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: cron, namespace: w}
spec:
  schedule: "@hourly"
  jobTemplate:
    spec:
      parallelism: 1
      template:
        metadata: {labels: {app: cron}}
        spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deploy-from-jobs, namespace: w}
spec:
  podSelector: {matchLabels: {app: deploy}}
  ingress:
  - from: [{podSelector: {matchExpressions: [{key: job-name, operator: Exists}]}}]
    ports: [{port: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: sts-1-only-from-sts-0, namespace: w}
spec:
  podSelector: {matchLabels: {statefulset.kubernetes.io/pod-name: sts-1}}
  ingress:
  - from: [{podSelector: {matchLabels: {statefulset.kubernetes.io/pod-name: sts-0}}}]
"""


@pytest.mark.root
def test_every_workload_kind_in_the_lab(netpol_lab):
    lab = netpol_lab(EVERY_KIND, backend="nftables")
    pods = sorted(lab.cluster.pods)
    assert len(pods) == 2 + 2 + 2 + 1 + 2 + 2 + 1, pods
    assert {"w/sts-0", "w/sts-1", "w/ds-node-0", "w/rs-0", "w/rc-1", "w/job-1", "w/cron-0"} <= set(pods)
    rows = lab.probe(["8080/TCP"], timeout=0.5)
    allowed = {(r["from"], r["to"]) for r in rows if r["allowed"]}
    deploy = [p for p in pods if p.startswith("w/deploy-")]
    # the controllers' own labels are what these policies select on
    assert ("w/job-0", deploy[0]) in allowed and ("w/cron-0", deploy[1]) in allowed
    assert ("w/rs-0", deploy[0]) not in allowed
    assert ("w/sts-0", "w/sts-1") in allowed and ("w/sts-1", "w/sts-0") in allowed
    assert ("w/rc-0", "w/sts-1") not in allowed
    lab.assert_matches("model", ports=["8080/TCP"], timeout=0.5)


NAMED = """
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: n, labels: {app: api}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: new, namespace: n, labels: {app: api}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 9090}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: n, labels: {app: client}}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: n}
spec:
  selector: {app: api}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-on-http, namespace: n}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}]
"""


@pytest.mark.root
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_a_named_target_port_with_a_different_number_on_each_backend(netpol_lab, backend):
    lab = netpol_lab(NAMED, backend=backend, servers=False)
    serve(lab, "n/old", 8080)
    serve(lab, "n/new", 9090)
    ip = lab.cluster.services["n/api"].cluster_ip
    assert {connect(lab, "n/client", ip, 80) for _ in range(4)} == {"n/old", "n/new"}


@pytest.mark.root
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_probe_services_agrees_with_the_model(backend):
    """`netpol probe --services`: every endpoint to every Service port through the DNAT,
    once per backend, compared with `matrix --services`."""
    r = subprocess.run([sys.executable, "-m", "enforcer", "probe", "-f", str(SHOP), "--backend", backend,
                        "--services", "--expect", "model", "--timeout", "0.5", "-o", "json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import json

    doc = json.loads(r.stdout)
    svc_rows = [x for x in doc["results"] if x["to"].startswith("svc:")]
    assert len(svc_rows) == 7 * 4 - 7  # every pod to every Service it does not back
    assert doc["comparison"]["wrong"] == 0
    front = [x for x in svc_rows if x["from"].startswith("shop/frontend-") and x["to"] == "svc:shop/cart"]
    assert front and all(x["allowed"] and x["reached"] == 2 for x in front)
