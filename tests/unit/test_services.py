"""Services in the model: decoding as the API server checks them, clusterIPs, endpoints
that follow pods and labels, named targetPorts resolved per backend, and trace svc:."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from enforcer.compiler import ipam
from enforcer.load import services
from enforcer.cli import cli
from enforcer.errors import InputError
from enforcer.load.manifests import load
from enforcer.model import ServicePort

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: ns, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: ns, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 9090}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: ns, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: other, containerPort: 7000}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: other, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: ns, labels: {app: client}}
"""


def svc(spec: str, name: str = "web") -> str:
    return f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n{spec}\n"


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return str(p)


def cluster(tmp_path: Path, text: str):
    return ipam.assign_ips(load([write(tmp_path, text)]).cluster)


def test_decoded_service_with_defaults(tmp_path):
    c = cluster(tmp_path, svc("  selector: {app: web}\n  ports: [{port: 80, targetPort: http}, {name: raw, port: 81}]"
                              .replace("{port: 80", "{name: web, port: 80")))
    s = c.services["ns/web"]
    assert s.selector == (("app", "web"),)
    assert s.ports == (ServicePort(80, "TCP", "http", "web"), ServicePort(81, "TCP", 81, "raw"))
    assert s.type == "ClusterIP"
    assert s.cluster_ip.startswith("10.96.")


def test_named_target_port_resolves_on_each_backend(tmp_path):
    c = cluster(tmp_path, PODS + svc("  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]"))
    s = c.services["ns/web"]
    got = [(b.pod, b.port) for b in services.backends(c, s, s.ports[0])]
    # c has no port named http; d is in another namespace
    assert got == [("ns/a", 8080), ("ns/b", 9090)]


def test_endpoints_follow_labels(tmp_path):
    text = PODS + svc("  selector: {app: web}\n  ports: [{port: 80, targetPort: 7000}]")
    c = cluster(tmp_path, text)
    s = c.services["ns/web"]
    assert [b.pod for b in services.backends(c, s, s.ports[0])] == ["ns/a", "ns/b", "ns/c"]
    c = cluster(tmp_path, text.replace("name: b, namespace: ns, labels: {app: web}",
                                       "name: b, namespace: ns, labels: {app: old}"))
    assert [b.pod for b in services.backends(c, s, s.ports[0])] == ["ns/a", "ns/c"]


def test_cluster_ips_are_stable_and_kept(tmp_path):
    one = cluster(tmp_path, svc("  selector: {app: a}\n  ports: [{port: 80}]", "a"))
    two = cluster(tmp_path, svc("  selector: {app: a}\n  ports: [{port: 80}]", "a")
                  + svc("  selector: {app: b}\n  ports: [{port: 80}]", "b")
                  + svc("  clusterIP: 10.96.7.7\n  selector: {app: c}\n  ports: [{port: 80}]", "c"))
    assert one.services["ns/a"].cluster_ip == two.services["ns/a"].cluster_ip
    assert two.services["ns/c"].cluster_ip == "10.96.7.7"
    assert len({s.cluster_ip for s in two.services.values()}) == 3


@pytest.mark.parametrize("spec,expected", [
    ("  selector: {app: web}", "spec.ports: Required value"),
    ("  ports: [{port: 80}, {port: 81}]", "spec.ports[0].name: Required value"),
    ("  ports: [{port: 0}]", "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535"),
    ("  ports: [{port: 80, targetPort: 70000}]", "spec.ports[0].targetPort: Invalid value: 70000"),
    ("  ports: [{port: 80, targetPort: Bad_Name}]", 'spec.ports[0].targetPort: Invalid value: "Bad_Name"'),
    ("  ports: [{port: 80, protocol: ICMP}]", 'spec.ports[0].protocol: Unsupported value: "ICMP"'),
    ("  ports: [{name: a, port: 80}, {name: a, port: 81}]", 'spec.ports[1].name: Duplicate value: "a"'),
    ("  ports: [{name: a, port: 80}, {name: b, port: 80}]", 'spec.ports[1]: Duplicate value: "80/TCP"'),
    ("  ports: [{port: 80}]\n  selectr: {app: web}", "spec.selectr: unknown field"),
    ("  ports: [{port: 80}]\n  type: Bogus", 'spec.type: Unsupported value: "Bogus"'),
    ("  ports: [{port: 80}]\n  clusterIP: 10.96.0.300", "spec.clusterIP"),
])
def test_invalid_services_are_refused(tmp_path, spec, expected):
    with pytest.raises(InputError) as e:
        load([write(tmp_path, svc(spec))])
    msgs = [str(p) for p in e.value.problems]
    assert any(f"Service ns/web: {expected}" in m for m in msgs), msgs


def test_service_name_must_be_a_dns1035_label(tmp_path):
    with pytest.raises(InputError) as e:
        load([write(tmp_path, svc("  ports: [{port: 80}]", name="1web"))])
    assert "metadata.name: Invalid value: \"1web\"" in str(e.value)


def test_headless_needs_no_ports_and_types_are_noted(tmp_path):
    r = load([write(tmp_path, svc("  clusterIP: None\n  selector: {app: web}")
                    + svc("  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80}]", "np"))])
    assert r.cluster.services["ns/web"].cluster_ip == "None"
    assert any("type NodePort is modelled as its ClusterIP" in n for n in r.notes)


# ---- trace --to svc: ---------------------------------------------------------------------


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_trace_to_a_service_shows_the_backend_and_the_target_port():
    r = run("trace", "-f", str(SHOP), "--from", "shop/frontend", "--to", "svc:shop/cart", "--port", "80/TCP",
            "-o", "json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["service"] == "shop/cart" and doc["target_port"] == "http" and doc["allowed"] is True
    assert [b["port"] for b in doc["backends"]] == [9090, 9090]  # the policy sees 9090, not 80
    assert all(b["to"].startswith("shop/cart-") for b in doc["backends"])
    r = run("trace", "-f", str(SHOP), "--from", "shop/payment", "--to", "svc:shop/cart", "--port", "80/TCP")
    assert r.exit_code == 1
    assert "targetPort http" in r.stdout and "9090/TCP" in r.stdout and "denied" in r.stdout


def test_trace_to_a_service_port_it_does_not_offer():
    r = CliRunner().invoke(cli, ["trace", "-f", str(SHOP), "--from", "shop/frontend", "--to", "svc:shop/cart",
                                 "--port", "9090/TCP"])
    assert r.exit_code != 0
    assert "Service shop/cart has no port 9090/TCP (it offers: 80/TCP)" in str(r.exception or r.output)


def test_trace_to_a_service_without_backends_is_denied(tmp_path):
    p = write(tmp_path, PODS + svc("  selector: {app: nobody}\n  ports: [{port: 80}]"))
    r = run("trace", "-f", p, "--from", "ns/client", "--to", "svc:ns/web", "--port", "80")
    assert r.exit_code == 1 and "No pod backs it" in r.stdout


# ---- the lab's DNAT table, as text (pure) --------------------------------------------------


def test_lab_dnat_rules(tmp_path):
    from enforcer.lab import services as lab_services

    text = PODS + svc("  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]") \
        + svc("  selector: {app: client}\n  ports: [{port: 53, protocol: UDP}]", "dns") \
        + svc("  selector: {app: nobody}\n  ports: [{port: 80}]", "empty") \
        + svc("  clusterIP: None\n  selector: {app: web}\n  ports: [{port: 80}]", "headless")
    c = cluster(tmp_path, text)
    ip = {k: s.cluster_ip for k, s in c.services.items()}
    pods = {k: p.ips[0] for k, p in c.pods.items()}
    rules = lab_services.rules(c)
    assert rules == [
        f'ip daddr {ip["ns/dns"]} udp dport 53 dnat to {pods["ns/client"]}:53 comment "ns/dns:53/UDP"',
        f'ip daddr {ip["ns/web"]} tcp dport 80 dnat ip to numgen inc mod 2 map '
        f'{{ 0 : {pods["ns/a"]} . 8080, 1 : {pods["ns/b"]} . 9090 }} comment "ns/web:80/TCP"',
    ]  # no backend (empty) and headless: no rule
    table = lab_services.render(c, "output")
    assert table.startswith("add table ip netpol-svc\ndelete table ip netpol-svc\n")
    assert "type nat hook output priority -100; policy accept;" in table
    assert "hook prerouting" in lab_services.render(c, "prerouting")


def test_two_services_with_one_cluster_ip_are_refused(tmp_path):
    text = svc("  clusterIP: 10.96.0.5\n  ports: [{port: 80}]", "a") + svc("  clusterIP: 10.96.0.5\n  ports: [{port: 80}]", "b")
    with pytest.raises(InputError) as e:
        load([write(tmp_path, text)])  # validate says so, not only matrix
    assert 's.yaml: Service ns/b: spec.clusterIP: Invalid value: "10.96.0.5": provided IP is already allocated (to Service ns/a)' in str(e.value)


def test_matrix_services_rows():
    r = run("matrix", "-f", str(SHOP), "--services", "-o", "json")
    rows = {(x["from"].rsplit("-", 2)[0], x["to"], x["port"]): x
            for x in json.loads(r.stdout)["results"] if x["to"].startswith("svc:")}
    assert rows[("shop/frontend", "svc:shop/cart", 80)]["allowed"] is True
    assert rows[("shop/frontend", "svc:shop/cart", 80)]["backends"] == 2
    assert rows[("shop/payment", "svc:shop/cart", 80)]["allowed"] is False
    assert rows[("shop/cart", "svc:shop/store", 5432)]["allowed"] is True
    assert rows[("shop/frontend", "svc:shop/payment", 443)]["allowed"] is True
    assert rows[("shop/store", "svc:shop/frontend", 80)]["allowed"] is False  # store has no egress
    # a Service's own backends are left out, as a pod and itself are
    assert not any(k[0] == "shop/cart" and k[1] == "svc:shop/cart" for k in rows)
    # only Service ports, never the pods' ports
    assert {k[2] for k in rows} == {80, 443, 5432}
