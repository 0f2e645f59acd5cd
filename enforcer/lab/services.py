"""ClusterIP Services in the lab: DNAT, as kube-proxy does it, so real packets show that
NetworkPolicy sees the backend pod and its targetPort, never the Service's address or port.

Where the DNAT happens, and why: kube-proxy rewrites a connection in the network namespace
it leaves its pod by, before any policy of the CNI looks at it. The lab enforces policy
inside each pod's own namespace (the source's egress filter, the destination's ingress
filter), so the rewrite must come before the SOURCE pod's egress filter: a ``nat`` chain on
the ``output`` hook at priority -100 (dstnat) in every pod's namespace, ahead of the
firewall's ``output`` chain at priority 0. Had it been done later (in the node's namespace),
a pod isolated for egress would be judged on ``clusterIP:port``, which no policy names.
The node's namespace gets the same rules on ``prerouting``, for connections that do not come
from a pod (external hosts). Nothing is ever added to the host's own namespace.

One table, ``ip netpol-svc``, replaced atomically (add + delete + define in one nft
transaction), separate from the firewall's table so that neither can disturb the other.
Endpoints follow pods and labels: every ``lab up`` / ``lab apply`` rewrites it from the
cluster in force. Replies are un-NATed by conntrack in the same namespace.

A Service port with several backends picks one per connection, round robin
(``numgen inc``), like kube-proxy's equal-probability choice but reproducible in tests.
"""
from __future__ import annotations

from enforcer import netns
from enforcer.load import services as S
from enforcer.errors import LabError, NetnsError
from enforcer.model import Cluster

TABLE = "netpol-svc"
_PROTO = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


def rules(cluster: Cluster) -> list[str]:
    """One nft rule per Service port that has backends (IPv4 ClusterIPs)."""
    out = []
    for key in sorted(cluster.services):
        svc = cluster.services[key]
        if not svc.cluster_ip or svc.cluster_ip == "None" or ":" in svc.cluster_ip:
            continue
        for sp in svc.ports:
            bks = S.backends(cluster, svc, sp, 4)
            if not bks:
                continue  # nothing answers: the connection goes to the node and is refused
            match = f"ip daddr {svc.cluster_ip} {_PROTO[sp.protocol]} dport {sp.port}"
            if len(bks) == 1:
                target = f"dnat to {bks[0].ip}:{bks[0].port}"
            else:
                elems = ", ".join(f"{i} : {b.ip} . {b.port}" for i, b in enumerate(bks))
                target = f"dnat ip to numgen inc mod {len(bks)} map {{ {elems} }}"
            out.append(f"{match} {target} comment \"{key}:{sp.port}/{sp.protocol}\"")
    return out


def render(cluster: Cluster, hook: str) -> str:
    """The table for one namespace: hook ``output`` (pods) or ``prerouting`` (the node)."""
    body = "".join(f"\t\t{r}\n" for r in rules(cluster))
    return (f"add table ip {TABLE}\ndelete table ip {TABLE}\n"
            f"table ip {TABLE} {{\n\tchain services {{\n"
            f"\t\ttype nat hook {hook} priority -100; policy accept;\n{body}\t}}\n}}\n")


def remove_text() -> str:
    return f"add table ip {TABLE}\ndelete table ip {TABLE}\n"


def sync(cluster: Cluster, pod_netns: list[str], node_netns: str, had_services: bool) -> None:
    """Install the Services' DNAT in every pod's namespace and the node's; remove it when
    the cluster has no Service any more. Does nothing for a lab that never had one."""
    if not cluster.services and not had_services:
        return
    if cluster.services:
        texts = [(n, render(cluster, "output")) for n in pod_netns]
        texts.append((node_netns, render(cluster, "prerouting")))
    else:
        texts = [(n, remove_text()) for n in [*pod_netns, node_netns]]
    for name, text in texts:
        _install(name, text)


def _install(name: str, text: str) -> None:
    """One nft transaction in namespace ``name``: in-process through libnftables when it
    is there (no process per pod), else with the nft command."""
    from backends import libnft

    try:
        if libnft.available():
            with netns.entered(name), libnft.Context() as ctx:
                ctx.run(text)
        else:
            netns.run(name, ["nft", "-f", "-"], input=text)
    except (NetnsError, libnft.NftError) as e:
        raise LabError(f"Services' DNAT in {name}: {e}") from e


# ---- probes through the DNAT (``lab probe --services``) --------------------------------------


def probe_rows(lab: str, ports: list[tuple[int, str]] | None = None, *, family: int = 4,
               timeout: float = 1.0) -> list[dict]:
    """Real connections from every endpoint to every Service port, as many as the port has
    backends: they run at once from one namespace, so the round robin gives each backend
    one (no retry: a retried connection would land on the next backend). A row is allowed
    when every connection got through, as in ``matrix --services``."""
    from enforcer.lab import state
    from enforcer.lab.probe import Target
    from enforcer.lab.probe import run as run_probes

    with state.locked(lab):
        st = state.load(lab)
    cases = [c for c in S.probe_cases(st.cluster, ports, family) if c.protocol in _PROBED]
    targets, owner = [], []
    for i, c in enumerate(cases):
        for _ in c.backends:
            targets.append(Target(st.endpoints[c.src].netns, c.ip, c.port, c.protocol))
            owner.append(i)
    outcomes = run_probes(targets, timeout=timeout, retries=0)
    got: dict[int, list] = {}
    for i, o in zip(owner, outcomes):
        got.setdefault(i, []).append(o)
    rows = []
    for i, c in enumerate(cases):
        os_ = got.get(i, [])
        through = sum(1 for o in os_ if o.allowed)
        detail = next((o.detail for o in os_ if not o.allowed), os_[0].detail if os_ else "timeout")
        rows.append({"from": c.src, "to": c.svc, "port": c.port, "protocol": c.protocol,
                     "allowed": bool(os_) and through == len(os_), "detail": detail,
                     "backends": len(c.backends), "reached": through,
                     "ms": max((o.ms for o in os_), default=0.0)})
    return rows


def expected_rows(lab: str, ports: list[tuple[int, str]] | None = None, *, family: int = 4) -> list[dict]:
    """The model's rows for the same cases (the firewalls the lab installed)."""
    from enforcer.lab import endpoints, state

    with state.locked(lab):
        st = state.load(lab)
    firewalls = endpoints.firewalls_in_force(st)
    return [r for r in S.matrix_rows(st.cluster, firewalls, ports, family) if r["protocol"] in _PROBED]


_PROBED = ("TCP", "UDP")
