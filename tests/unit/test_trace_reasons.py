"""trace says exactly why: every rule, peer and port of every isolating policy, with the
label, except range, port or named-port resolution that decided it (enforcer.views.reasons).

The reasons are computed from the policy as written, the verdict from the IR; the first
tests check, on every bundled example and every upstream conformance step, that a rule
matches in the reasons exactly when the IR says it allows the flow.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from enforcer.compiler import ipam
from enforcer.load import manifests
from enforcer.views import verdict
from enforcer.cli import cli, load
from enforcer.compiler.compile import compile_cluster
from enforcer.model import ContainerPort, ExternalHost, PortSpec
from enforcer.views.reasons import side_reasons
from tests.conformance.cases import load_cases
from tests.unit.clusters import (cluster, peer_block, peer_ns, peer_pods, pod, policy, rule, sel)

ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "examples"
C = EX / "concepts"


def _agree(cl, fws, ports=None):
    """Every (flow, isolating rule): reasons.matched == the IR allows by that rule."""
    eps = {e.id: e for e in verdict.endpoints(cl)}
    checked = 0
    for case in verdict.probe_cases(cl, ports):
        v = verdict.verdict(fws, eps[case.src], eps[case.dst], case.port, case.protocol)
        for s in (v.egress, v.ingress):
            if s is None or s.always or not s.isolated:
                continue
            allowed = {(p.policy, p.direction, p.rule_index) for p in s.allowed_by}
            for pr in side_reasons(cl, s.isolated_by, s.direction, v.src.id, v.src_ip,
                                   v.dst.id, v.dst_ip, v.port, v.protocol):
                for r in pr.rules:
                    assert r.matched == ((r.policy, r.direction, r.index) in allowed), (case, r)
                    checked += 1
    return checked


EXAMPLE_SETS = [[EX / "three-tier"]]
# Each file of a concept folder is one alternative (a-..., b-...), on the concept cluster.
EXAMPLE_SETS += [[C / "cluster.yaml", *sorted(d.glob("hosts.yaml")), f]
                 for d in sorted(C.iterdir()) if d.is_dir() and d.name not in ("08-indentation", "11-legacy")
                 for f in sorted(d.glob("*.yaml")) if f.name != "hosts.yaml"]
EXAMPLE_SETS += [[d / "cluster.yaml", d / "policy.yaml"] for d in sorted((EX / "recipes").iterdir()) if d.is_dir()]


@pytest.mark.parametrize("paths", EXAMPLE_SETS, ids=lambda ps: "+".join(p.name for p in ps))
def test_reasons_agree_with_the_ir_on_examples(paths):
    loaded = load([str(p) for p in paths])
    _agree(loaded.cluster, loaded.firewalls, [(80, "TCP"), (3306, "TCP"), (22, "TCP"), (8080, "TCP"), (53, "UDP")])


def test_reasons_agree_with_the_ir_on_every_conformance_step(tmp_path):
    checked = 0
    for case in load_cases():
        for i, step in enumerate(case.steps):
            path = step.write(tmp_path / f"{case.id}-{i}")
            cl = ipam.assign_ips(manifests.load([str(path)]).cluster)
            checked += _agree(cl, compile_cluster(cl, node_ips=ipam.node_ips()), step.ports)
    assert checked > 900  # the cases do exercise isolated rules


def _trace(*args):
    r = CliRunner().invoke(cli, ["trace", *args], catch_exceptions=False)
    return r.exit_code, r.output


def test_except_range_is_named():
    code, out = _trace("-f", str(C / "cluster.yaml"), "-f", str(C / "09-ipblock" / "a-except.yaml"),
                       "-f", str(C / "09-ipblock" / "hosts.yaml"), "--from", "guest", "--to", "prod/db",
                       "--port", "3306/TCP")
    assert code == 1
    assert "from[0] addresses in 172.17.0.0/16 except 172.17.1.0/24: no, 172.17.1.20 is in 172.17.0.0/16 " \
           "but also in except 172.17.1.0/24" in out
    assert "ports[0] 3306/TCP: yes" in out


def test_port_mismatch_is_not_called_a_peer_mismatch():
    code, out = _trace("-f", str(C / "cluster.yaml"), "-f", str(C / "09-ipblock" / "a-except.yaml"),
                       "-f", str(C / "09-ipblock" / "hosts.yaml"), "--from", "prod/db", "--to", "backup",
                       "--port", "80/TCP")
    assert code == 1
    assert "egress[0] does not allow it: to[0] covers backup, but no ports entry covers 80/TCP" in out
    assert "ports[0] 22/TCP: no, the connection is to 80/TCP" in out
    assert "does not allow backup" not in out


def test_and_selector_names_the_failing_label():
    code, out = _trace("-f", str(C / "cluster.yaml"), "-f", str(C / "07-and-or" / "and.yaml"),
                       "--from", "dev/api", "--to", "prod/db", "--port", "3306/TCP")
    assert code == 1
    assert "no, namespace dev has env=dev, wanted env=prod (though pod dev/api has role=api)" in out


def test_or_peers_say_which_one_matched():
    code, out = _trace("-f", str(C / "cluster.yaml"), "-f", str(C / "07-and-or" / "or.yaml"),
                       "--from", "prod/web", "--to", "prod/db", "--port", "3306/TCP")
    assert code == 0
    assert "ingress[0] allows it: from[1] covers prod/web" in out
    assert "from[0] pods labelled role=api in namespace prod: no, pod prod/web has role=web, wanted role=api" in out
    assert "from[1] all pods in namespaces labelled env=prod: yes, namespace prod has env=prod" in out


def _named_port_cluster():
    return cluster(
        pod("prod", "api", {"role": "api"}, ports=[ContainerPort(8080, "TCP", "http")]),
        pod("prod", "web", {"role": "web"}, ports=[ContainerPort(80, "TCP", "http")]),
        pod("prod", "db", {"role": "db"}, ports=[ContainerPort(3306, "TCP", "mysql")]),
        ExternalHost("backup", ("192.168.5.10",)),
        policy("prod", "web-out", sel({"role": "web"}), egress=[rule(ports=[PortSpec("TCP", "http")])]),
        policy("prod", "api-in", sel({"role": "api"}), ingress=[rule(peer_pods({"role": "web"}), ports=[PortSpec("TCP", "http")])]),
    )


def _verdict(cl, src, dst, port, proto="TCP"):
    fws = compile_cluster(cl, node_ips=ipam.node_ips())
    v = verdict.verdict(fws, verdict.resolve(cl, src), verdict.resolve(cl, dst), port, proto)
    return v


def test_named_port_is_resolved_in_words_and_json():
    from enforcer.views.explain import trace_json, trace_lines

    cl = _named_port_cluster()
    v = _verdict(cl, "prod/web", "prod/api", 8080)
    assert v.allowed
    text = "\n".join(trace_lines(cl, v))
    assert "ports[0] named port http/TCP: yes, http on prod/api is 8080/TCP" in text
    j = trace_json(v, cl)
    port = j["ingress"]["policies"][0]["rules"][0]["ports"][0]
    assert port == {"field": "ports[0]", "text": "named port http/TCP", "matched": True,
                    "reason": "http on prod/api is 8080/TCP", "resolved_port": 8080}
    # the same name is 80 on web: 80 to api is not http there
    v = _verdict(cl, "prod/web", "prod/api", 80)
    assert not v.allowed
    assert "http on prod/api is 8080/TCP, the connection is to 80" in "\n".join(trace_lines(cl, v))
    # egress: the name resolves on the destination; an external host has no named ports
    v = _verdict(cl, "prod/web", "backup", 80)
    assert not v.allowed
    assert "backup is not a pod: a named port resolves on pods only" in "\n".join(trace_lines(cl, v))
    v = _verdict(cl, "prod/web", "prod/db", 3306)
    assert "prod/db declares no container port named http (TCP)" in "\n".join(trace_lines(cl, v))


def test_protocol_and_namespace_scope_reasons():
    from enforcer.views.explain import trace_lines

    cl = cluster(
        pod("prod", "db", {"role": "db"}), pod("dev", "api", {"role": "api"}),
        policy("prod", "db", sel({"role": "db"}), ingress=[rule(peer_pods({"role": "api"}), ports=[("UDP", 53)])]),
    )
    text = "\n".join(trace_lines(cl, _verdict(cl, "dev/api", "prod/db", 53)))
    assert "ports[0] 53/UDP: no, the connection is TCP, this entry is UDP" in text
    assert ("dev/api is in namespace dev; a podSelector alone selects pods of the policy's namespace prod only "
            "(though pod dev/api has role=api)") in text


def test_match_expressions_misses():
    from enforcer.views.explain import trace_lines

    cl = cluster(
        pod("prod", "db", {"role": "db"}), pod("prod", "api", {"role": "api", "tier": "x"}),
        policy("prod", "db", sel({"role": "db"}), ingress=[rule(
            peer_pods(None, ("tier", "In", ["back", "mid"])), peer_pods(None, ("tier", "DoesNotExist", [])),
            peer_ns({"env": "prod"}))]),
    )
    text = "\n".join(trace_lines(cl, _verdict(cl, "prod/api", "prod/db", 3306)))
    assert "pod prod/api has tier=x, wanted tier in (back,mid)" in text
    assert "pod prod/api has tier=x, wanted no label tier" in text
    assert "namespace prod has no label env, wanted env=prod" in text


def test_json_has_a_reason_per_rule_peer_and_port():
    r = CliRunner().invoke(cli, ["trace", "-f", str(EX / "three-tier"), "--from", "prod/web", "--to", "prod/db",
                                 "--port", "3306/TCP", "-o", "json"], catch_exceptions=False)
    j = json.loads(r.output)
    rules = j["ingress"]["policies"][0]["rules"]
    assert j["ingress"]["policies"][0]["policy"] == "prod/db-policy"
    assert rules[0]["matched"] is False and rules[0]["peer_matched"] is False and rules[0]["port_matched"] is True
    assert [p["field"] for p in rules[0]["peers"]] == ["from[0]", "from[1]"]
    assert rules[0]["peers"][0]["reason"] == "pod prod/web has role=web, wanted role=api (though namespace prod has name=prod)"
    assert rules[0]["peers"][1]["reason"] == "10.244.0.7 is not in 192.168.5.10/32"
    assert j["egress"]["isolated"] is False and "policies" not in j["egress"]


def test_ip_block_family_and_unmatched_cidr():
    from enforcer.views.explain import trace_lines

    cl = cluster(pod("prod", "db", {"role": "db"}), ExternalHost("h", ("10.9.0.1",)),
                 policy("prod", "db", sel({"role": "db"}), ingress=[rule(peer_block("2001:db8::/64"), peer_block("10.0.0.0/16"))]))
    text = "\n".join(trace_lines(cl, _verdict(cl, "h", "prod/db", 1)))
    assert "from[0] addresses in 2001:db8::/64: no, 10.9.0.1 is not in 2001:db8::/64" in text
    assert "from[1] addresses in 10.0.0.0/16: no, 10.9.0.1 is not in 10.0.0.0/16" in text
