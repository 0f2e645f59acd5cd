"""Workloads become the pods their controllers would make: names, labels, ports, replicas,
and the API server's checks on the parts we read."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from enforcer.load import workloads
from enforcer.cli import cli
from enforcer.errors import InputError
from enforcer.load.manifests import load
from enforcer.model import ContainerPort

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"

TEMPLATE = """
  template:
    metadata: {labels: {app: x, tier: t}}
    spec:
      containers:
      - name: c
        ports: [{name: http, containerPort: 8080}, {containerPort: 53, protocol: UDP}]"""


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "w.yaml"
    p.write_text(text)
    return str(p)


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(InputError) as e:
        load([write(tmp_path, text)])
    return [str(p) for p in e.value.problems]


def workload(kind: str, spec: str, api: str | None = None, name: str = "x") -> str:
    api = api or workloads.API_VERSIONS[kind]
    return f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n{spec}\n"


SELECTOR = "  selector: {matchLabels: {app: x}}"


@pytest.mark.parametrize("kind,spec,names", [
    ("Deployment", f"  replicas: 3\n{SELECTOR}{TEMPLATE}", None),
    ("ReplicaSet", f"  replicas: 2\n{SELECTOR}{TEMPLATE}", ["ns/x-0", "ns/x-1"]),
    ("StatefulSet", f"  replicas: 2\n  serviceName: x\n{SELECTOR}{TEMPLATE}", ["ns/x-0", "ns/x-1"]),
    ("DaemonSet", f"{SELECTOR}{TEMPLATE}", ["ns/x-node-0"]),
    ("ReplicationController", f"  replicas: 2\n  selector: {{app: x}}{TEMPLATE}", ["ns/x-0", "ns/x-1"]),
    ("Job", f"  parallelism: 2\n  completions: 5{TEMPLATE}", ["ns/x-0", "ns/x-1"]),
    ("CronJob", f"  schedule: '*/5 * * * *'\n  jobTemplate:\n    spec:\n      parallelism: 2\n"
                + TEMPLATE.replace("\n  ", "\n      "), ["ns/x-0", "ns/x-1"]),
])
def test_every_kind_becomes_its_replicas_with_template_labels_and_ports(tmp_path, kind, spec, names):
    c = load([write(tmp_path, workload(kind, spec))]).cluster
    if kind == "Deployment":
        h = workloads.name_hash("ns", "x")
        names = [f"ns/x-{h}-{i}" for i in range(3)]
    assert sorted(c.pods) == names
    for key in names:
        pod = c.pods[key]
        assert pod.labels["app"] == "x" and pod.labels["tier"] == "t"
        assert pod.ports == (ContainerPort(8080, "TCP", "http"), ContainerPort(53, "UDP"))
        assert pod.owner == f"{kind}/x"
        assert pod.ips == ()  # addresses come from the IPAM


def test_controllers_labels_as_a_cluster_sets_them(tmp_path):
    text = workload("StatefulSet", f"  replicas: 2\n  ordinals: {{start: 3}}\n{SELECTOR}{TEMPLATE}", name="db")
    text = text.replace("{app: x}", "{app: db}").replace("{app: x, tier: t}", "{app: db}")
    text += "---\n" + workload("Job", f"  parallelism: 1{TEMPLATE}", name="backup")
    text += "---\n" + workload("Deployment", f"{SELECTOR}{TEMPLATE}", name="web")
    c = load([write(tmp_path, text)]).cluster
    assert c.pods["ns/db-3"].labels == {"app": "db", "statefulset.kubernetes.io/pod-name": "db-3",
                                        "apps.kubernetes.io/pod-index": "3"}
    assert "ns/db-4" in c.pods and "ns/db-0" not in c.pods
    assert c.pods["ns/backup-0"].labels["job-name"] == "backup"
    assert c.pods["ns/backup-0"].labels["batch.kubernetes.io/job-name"] == "backup"
    web = [p for p in c.pods.values() if p.owner == "Deployment/web"]
    assert len(web) == 1 and web[0].labels["pod-template-hash"] == workloads.name_hash("ns", "web")


def test_zero_replicas_and_default_one(tmp_path):
    text = workload("Deployment", f"  replicas: 0\n{SELECTOR}{TEMPLATE}", name="none")
    text += "---\n" + workload("StatefulSet", f"{SELECTOR}{TEMPLATE}", name="one")
    c = load([write(tmp_path, text)]).cluster
    assert sorted(c.pods) == ["ns/one-0"]


def test_names_are_stable_and_the_same_in_every_load(tmp_path):
    text = workload("Deployment", f"  replicas: 2\n{SELECTOR}{TEMPLATE}")
    a = sorted(load([write(tmp_path, text)]).cluster.pods)
    b = sorted(load([write(tmp_path, text.replace("tier: t", "tier: changed"))]).cluster.pods)
    assert a == b  # a relabelled template keeps its pod names: the lab relabels, not recreates


@pytest.mark.parametrize("kind,spec,expected", [
    ("Deployment", f"  replicas: -1\n{SELECTOR}{TEMPLATE}",
     "Deployment ns/x: spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
    ("Deployment", TEMPLATE[1:], "Deployment ns/x: spec.selector: Required value"),
    ("ReplicaSet", f"  selector: {{matchLabels: {{app: y}}}}{TEMPLATE}",
     'ReplicaSet ns/x: spec.template.metadata.labels: Invalid value: "app=x,tier=t": '
     "`selector` does not match template `labels`"),
    ("StatefulSet", f"  selector: {{}}{TEMPLATE}",
     "StatefulSet ns/x: spec.selector: Invalid value: {}: empty selector is invalid for statefulset"),
    ("DaemonSet", SELECTOR, "DaemonSet ns/x: spec.template: Required value"),
    ("ReplicationController", f"  selector: {{app: other}}{TEMPLATE}",
     'ReplicationController ns/x: spec.template.metadata.labels: Invalid value: "app=x,tier=t": '
     "`selector` does not match template `labels`"),
    ("Job", f"{SELECTOR}{TEMPLATE}",
     'Job ns/x: spec.selector: Invalid value: "selector": `selector` will be auto-generated'),
    ("Deployment", f"{SELECTOR}{TEMPLATE.replace('8080', '70000')}",
     "Deployment ns/x: spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 70000: "
     "must be between 1 and 65535, inclusive"),
    ("Deployment", f"{SELECTOR}{TEMPLATE.replace('name: http', 'name: HTTP')}",
     'Deployment ns/x: spec.template.spec.containers[0].ports[0].name: Invalid value: "HTTP"'),
    ("Deployment", f"{SELECTOR}{TEMPLATE}\n  replica: 2", "Deployment ns/x: spec.replica: unknown field"),
    ("Deployment", f"{SELECTOR}{TEMPLATE.replace('tier: t', 'tier: -bad-')}",
     'Deployment ns/x: spec.template.metadata.labels: Invalid value: "-bad-"'),
    ("CronJob", "  schedule: '@daily'", "CronJob ns/x: spec.jobTemplate: Required value"),
])
def test_invalid_workloads_are_refused_with_the_field(tmp_path, kind, spec, expected):
    errs = errors(tmp_path, workload(kind, spec))
    assert any(expected in e for e in errs), errs
    assert all(e.startswith(str(tmp_path / "w.yaml") + ": ") for e in errs)


def test_wrong_api_version_is_refused(tmp_path):
    errs = errors(tmp_path, workload("Deployment", f"{SELECTOR}{TEMPLATE}", api="extensions/v1beta1"))
    assert any('no matches for kind "Deployment" in version "extensions/v1beta1"' in e for e in errs)


def test_the_rest_of_a_workload_is_ignored(tmp_path):
    spec = (f"  strategy: {{type: RollingUpdate}}\n  revisionHistoryLimit: 3\n{SELECTOR}{TEMPLATE}\n"
            "      restartPolicy: Always\n      volumes: [{name: v, emptyDir: {}}]")
    c = load([write(tmp_path, workload("Deployment", spec))]).cluster
    assert len(c.pods) == 1


def test_a_workload_pod_named_like_a_pod_is_an_error(tmp_path):
    text = workload("StatefulSet", f"{SELECTOR}{TEMPLATE}", name="db")
    text += "---\napiVersion: v1\nkind: Pod\nmetadata: {name: db-0, namespace: ns}\n"
    errs = errors(tmp_path, text)
    assert any("its pod ns/db-0 has the name of a pod of" in e for e in errs), errs


def test_host_network_template(tmp_path):
    text = workload("DaemonSet", f"{SELECTOR}{TEMPLATE}\n      hostNetwork: true", name="agent")
    c = load([write(tmp_path, text)]).cluster
    assert c.host_network["ns/agent-node-0"].host_network and not c.pods


# ---- the command line --------------------------------------------------------------------


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_shop_validates_and_its_matrix_groups_by_workload():
    r = run("validate", "-f", str(SHOP))
    assert r.exit_code == 0 and "7 pods" in r.output and "4 services" in r.output
    r = run("matrix", "-f", str(SHOP), "--by", "workload", "-o", "json")
    rows = {(x["from"], x["to"], x["port"]): x for x in json.loads(r.output)["results"]}
    assert rows[("shop/frontend", "shop/cart", 9090)]["allowed"] is True
    assert rows[("shop/frontend", "shop/cart", 9090)]["pairs"] == 4
    assert rows[("shop/payment", "shop/cart", 9090)]["allowed"] is False
    assert rows[("shop/cart", "shop/store", 5432)]["allowed"] is True
    assert rows[("shop/frontend", "shop/store", 5432)]["allowed"] is False
    assert rows[("shop/frontend", "shop/payment", 7070)]["allowed"] is True
    assert rows[("shop/cart", "shop/frontend", 8080)]["allowed"] is True
    assert rows[("shop/store", "shop/frontend", 8080)]["allowed"] is False  # store has no egress
    assert not any(x["mixed"] for x in rows.values())


def test_group_rows_marks_mixed_replicas(tmp_path):
    # a policy for one StatefulSet pod only (its pod-name label): the replicas differ
    text = workload("StatefulSet", f"  replicas: 2\n{SELECTOR}{TEMPLATE}", name="db").replace(
        "app: x", "app: db").replace("{app: x, tier: t}", "{app: db}")
    text += "---\n" + workload("Deployment", f"{SELECTOR}{TEMPLATE}", name="web")
    text += """---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-db-1, namespace: ns}
spec:
  podSelector: {matchLabels: {statefulset.kubernetes.io/pod-name: db-1}}
  policyTypes: [Ingress]
"""
    r = run("matrix", "-f", write(tmp_path, text), "--by", "workload", "--ports", "8080", "-o", "json")
    rows = {(x["from"], x["to"]): x for x in json.loads(r.output)["results"]}
    assert rows[("ns/web", "ns/db")] == {"from": "ns/web", "to": "ns/db", "port": 8080, "protocol": "TCP",
                                         "allowed": False, "pairs": 2, "mixed": True}


def test_trace_and_explain_name_workloads():
    r = CliRunner().invoke(cli, ["trace", "-f", str(SHOP), "--from", "shop/frontend",
                                                 "--to", "shop/store", "--port", "5432/TCP"])
    assert r.exit_code == 1
    first = sorted(k for k in workloads.groups(load([str(SHOP)]).cluster)["shop/frontend"])[0]
    assert f"Deployment shop/frontend (2 pods): tracing its first pod, {first}" in r.stderr
    assert r.stdout.startswith(f"{first} -> shop/store-")
    r = run("explain", "-f", str(SHOP), "--by", "workload", "-o", "json")
    rows = {x["policy"]: x for x in json.loads(r.output)}
    assert rows["shop/cart-from-frontend"]["targets"] == ["Deployment shop/cart (2 pods)"]


HOSTNET = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      hostNetwork: true
      containers: [{name: a, ports: [{containerPort: 9100}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod, labels: {app: db}}
spec: {containers: [{name: d, ports: [{containerPort: 5432}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {hostNetwork: true}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: prod}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"""


def test_host_network_pods_are_the_node(tmp_path):
    r = load([write(tmp_path, HOSTNET)])
    assert sorted(r.cluster.pods) == ["prod/db"]  # no endpoint of their own
    assert sorted(r.cluster.host_network) == ["kube-system/agent-node-0", "prod/web"]
    assert any("prod/web: hostNetwork pod" in n and "it is the node" in n for n in r.notes)
    p = write(tmp_path, HOSTNET)
    # prod/db is isolated both ways and allows nothing, yet the node's pods reach it
    res = CliRunner().invoke(cli, ["trace", "-f", p, "--from", "kube-system/agent", "--to", "prod/db",
                                   "--port", "5432"])
    assert res.exit_code == 0, res.output
    assert "kube-system/agent-node-0 is a hostNetwork pod, i.e. the node: no egress policy applies" in res.stdout
    assert "traffic with the pod's own node is always allowed" in res.stdout
    assert "as far as policy goes it is the node" in res.stderr
    res = CliRunner().invoke(cli, ["trace", "-f", p, "--from", "prod/db", "--to", "prod/web", "--port", "80"])
    assert res.exit_code == 0 and "prod/web is a hostNetwork pod, i.e. the node" in res.stdout


def test_host_network_field_type_is_checked(tmp_path):
    errs = errors(tmp_path, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {hostNetwork: 'yes'}\n")
    assert any('spec.hostNetwork: Invalid type: expected a boolean, got string "yes"' in e for e in errs), errs


def test_render_takes_a_workload_name():
    r = run("render", "-f", str(SHOP), "--pod", "shop/cart", "--backend", "nftables")
    assert r.exit_code == 0
    assert r.output.count("# pod shop/cart-") == 2 and "shop/frontend-" not in r.output.split("\n")[0]


def test_trace_by_workload_judges_every_replica_pair(tmp_path):
    r = run("trace", "-f", str(SHOP), "--by", "workload", "--from", "shop/frontend", "--to", "shop/cart",
            "--port", "9090/TCP", "-o", "json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and doc["allowed"] and doc["pairs"] == 4 and doc["allowed_pairs"] == 4
    # replicas differ: only db-1 is isolated (its pod-name label), so web -> db is partly allowed
    text = workload("StatefulSet", f"  replicas: 2\n{SELECTOR}{TEMPLATE}", name="db").replace(
        "app: x", "app: db").replace("{app: x, tier: t}", "{app: db}")
    text += "---\n" + workload("Deployment", f"{SELECTOR}{TEMPLATE}", name="web")
    text += ("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: ns}\n"
             "spec: {podSelector: {matchLabels: {statefulset.kubernetes.io/pod-name: db-1}}, policyTypes: [Ingress]}\n")
    r = run("trace", "-f", write(tmp_path, text), "--by", "workload", "--from", "ns/web", "--to", "ns/db",
            "--port", "8080")
    assert r.exit_code == 1
    assert r.stdout.startswith("Deployment ns/web (1 pod) -> StatefulSet ns/db (2 pods) 8080/TCP: "
                               "partly allowed (1 of 2 pod pairs).")
    assert "e.g. ns/web-" in r.stdout and "-> ns/db-0:" in r.stdout and "-> ns/db-1:" in r.stdout


DUMP = """
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web, namespace: shop, uid: d1}
  spec:
    replicas: 2
    selector: {matchLabels: {app: web}}
    template:
      metadata: {labels: {app: web}}
      spec: {containers: [{name: w, image: nginx, ports: [{containerPort: 80}]}]}
- apiVersion: apps/v1
  kind: ReplicaSet
  metadata:
    name: web-7d4b9c8f5
    namespace: shop
    ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: d1, controller: true}]
  spec:
    replicas: 2
    selector: {matchLabels: {app: web, pod-template-hash: 7d4b9c8f5}}
    template:
      metadata: {labels: {app: web, pod-template-hash: 7d4b9c8f5}}
      spec: {containers: [{name: w, image: nginx, ports: [{containerPort: 80}]}]}
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-7d4b9c8f5-abcde
    namespace: shop
    labels: {app: web, pod-template-hash: 7d4b9c8f5}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9c8f5, uid: r1}]
  spec: {containers: [{name: w, image: nginx, ports: [{containerPort: 80}]}]}
  status: {podIP: 10.244.1.5}
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-7d4b9c8f5-fghij
    namespace: shop
    labels: {app: web, pod-template-hash: 7d4b9c8f5}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9c8f5, uid: r1}]
  spec: {containers: [{name: w, image: nginx, ports: [{containerPort: 80}]}]}
  status: {podIP: 10.244.1.6}
"""


def test_a_dump_of_a_running_cluster_is_not_counted_twice(tmp_path):
    """`kubectl get all -o yaml` has the Deployment, its ReplicaSet and their Pods: the
    Pods stand for the ReplicaSet, the ReplicaSet for the Deployment."""
    r = load([write(tmp_path, DUMP)])
    assert sorted(r.cluster.pods) == ["shop/web-7d4b9c8f5-abcde", "shop/web-7d4b9c8f5-fghij"]
    assert any("Deployment shop/web: not expanded into pods: the input has the objects it owns "
               "(ReplicaSet shop/web-7d4b9c8f5, ...)" in n for n in r.notes), r.notes
    # without its Pods, the ReplicaSet makes them (and still stands for the Deployment)
    no_pods = DUMP.split("- apiVersion: v1\n  kind: Pod")[0]
    c = load([write(tmp_path, no_pods)]).cluster
    assert sorted(c.pods) == ["shop/web-7d4b9c8f5-0", "shop/web-7d4b9c8f5-1"]
