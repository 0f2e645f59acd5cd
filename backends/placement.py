"""Where a pod's firewall is enforced: inside the pod (``pod``) or on the node (``host``).

The IR (enforcer.ir.PodFirewall) is the same for both placements; a placement only decides
where the chains go. Pod mode: one table per pod namespace (backends/nftables.py,
backends/iptables.py). Host mode: one table per node namespace holding a chain per pod,
out of the pod's reach (backends/nft_host.py, backends/ipt_host.py).

This module holds what both host renderings share and is pure: the pod's tag (the word
its chains and sets carry), the packet mark that names the pod's host-side interface,
and the IR with set names made unique within a node's table.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re

from enforcer.errors import ApplyError, BackendError, NetpolError
from enforcer.ir import PodFirewall

PLACEMENTS = ("pod", "host")
RENDER_PLACEMENTS = ("pod", "host", "both")

# Host mode marks a pod's packets as they enter the node from its veth (the bridge's
# prerouting hook knows the port; the IP forward hook only sees the bridge). The top byte
# says "a netpol pod id", the low 24 bits are the pod's id. A pod's mark never leaves the
# node: veth clears the mark whenever a packet crosses into another namespace.
MARK_TAG = 0x4E000000
MARK_MASK = 0xFF000000
TAG_MAX = 96  # chain and set names stay far below nft's 256 and iptables' 28 are separate


def check_placement(value: str, allowed: tuple[str, ...] = PLACEMENTS) -> str:
    if value not in allowed:
        raise BackendError(f"--enforce-at {value!r}: choose one of {', '.join(allowed)}")
    return value


def pod_tag(pod: str) -> str:
    """``ns/name`` -> ``ns.name``: unique (namespaces hold no dots), readable, a valid nft
    identifier. Long keys are cut and end in a short hash of the whole."""
    ns, _, name = pod.partition("/")
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{ns}.{name}")
    if len(tag) > TAG_MAX:
        tag = tag[: TAG_MAX - 9] + "~" + hashlib.sha256(pod.encode()).hexdigest()[:8]
        tag = tag.replace("~", "_")
    return tag


def pod_mark(pod: str) -> int:
    """The pod's packet mark: stable across processes and nodes (a hash of the key), so a
    new pod's entry never renumbers another pod. Two pods of one node with the same id are
    refused by the kernel (a map key with two verdicts) and reported by ``check_marks``."""
    h = int.from_bytes(hashlib.blake2b(pod.encode(), digest_size=4).digest(), "big")
    return MARK_TAG | (h & 0xFFFFFF)


def check_marks(pods: list[str]) -> None:
    seen: dict[int, str] = {}
    for p in sorted(pods):
        m = pod_mark(p)
        if m in seen:
            raise BackendError(f"host mode: pods {seen[m]} and {p} hash to the same mark "
                               f"0x{m:08x}; run them on different nodes or use --enforce-at pod")
        seen[m] = p


def prefixed(fw: PodFirewall) -> PodFirewall:
    """``fw`` with every set renamed ``<set>.<tag>``: set names are per pod (in_0_0, ...),
    and a node's table holds the sets of all its pods."""
    tag = pod_tag(fw.pod)
    return _renamed_fw(fw, lambda name: None if name is None else f"{name}.{tag}")


def node_set_name(s, tag: str) -> str:
    """A set's name in a node's table: ``g.<group>``, shared by every pod of the node that
    reads the same peer group (enforcer.ir.GROUP_DOC); ``<set>.<tag>``, the pod's own, for
    a set whose group is not known."""
    return f"g.{s.group}" if s.group else f"{s.name}.{tag}"


def shared(fw: PodFirewall) -> PodFirewall:
    """``fw`` with its sets under their node names (``node_set_name``); two rules of the
    pod that read one group read one set."""
    tag = pod_tag(fw.pod)
    names = {s.name: node_set_name(s, tag) for s in fw.sets}
    out = _renamed_fw(fw, lambda name: None if name is None else names[name])
    seen: dict[str, object] = {}
    for s in out.sets:
        seen.setdefault(s.name, s)
    return out if len(seen) == len(out.sets) else dataclasses.replace(out, sets=tuple(seen.values()))


def _renamed_fw(fw: PodFirewall, rn) -> PodFirewall:

    def direction(d):
        rules = tuple(dataclasses.replace(r, peers=rn(r.peers), addr_ports=rn(r.addr_ports))
                      for r in d.rules)
        admin = tuple(dataclasses.replace(r, peers=rn(r.peers), addr_ports=rn(r.addr_ports))
                      for r in d.admin)
        baseline = tuple(dataclasses.replace(r, peers=rn(r.peers), addr_ports=rn(r.addr_ports))
                         for r in d.baseline)
        return dataclasses.replace(d, rules=rules, admin=admin, baseline=baseline)

    sets = tuple(_renamed(s, rn(s.name)) for s in fw.sets)
    return dataclasses.replace(fw, ingress=direction(fw.ingress), egress=direction(fw.egress), sets=sets)


def _renamed(s, name):
    # dataclasses.replace would recompute the digest from the same tuples: cheap (memoised).
    return dataclasses.replace(s, name=name)


class HostMap:
    """Where each pod sits in host mode: pod netns -> (node netns, host-side veth, pod key).

    ``source`` is called on every lookup, so pods added while a lab is being built are
    found (a lab keeps its endpoints in its state, which grows as pods are wired)."""

    def __init__(self, source) -> None:
        self._source = source
        # Remembered: a pod being removed has often left the source already.
        self._seen: dict[str, tuple[str, str, str]] = dict(source())

    def _get(self, netns: str) -> tuple[str, str, str]:
        found = self._source().get(netns) or self._seen.get(netns)
        if found is not None:
            self._seen[netns] = found
        if found is None:
            raise BackendError(f"host mode: no node and interface known for namespace {netns}")
        return found

    def __call__(self, netns: str) -> tuple[str, str]:
        node, iface, _ = self._get(netns)
        return node, iface

    def pod_of(self, netns: str) -> str | None:
        try:
            return self._get(netns)[2]
        except BackendError:
            return None


def by_node(jobs, resolve, ensure, kind_of, label: str):
    """Sort an ``apply_many`` batch by node, as both host placements do: ``(results,
    {node: [(index, host-side veth, kind)]})``. A pod whose firewall did not change
    (``kind_of(previous, fw) == "none"``) is done already; a pod whose node cannot be
    resolved or prepared (``ensure(node)``) gets its error, and the others go on."""
    from backends.base import ApplyResult

    results: list = [None] * len(jobs)
    per_node: dict[str, list[tuple[int, str, str]]] = {}
    for i, (netns, fw, previous) in enumerate(jobs):
        kind = kind_of(previous, fw)
        if kind == "none":
            results[i] = ApplyResult("none")
            continue
        try:
            node, iface = resolve(netns)
            ensure(node)
        except NetpolError as e:
            results[i] = e
            continue
        except (OSError, ValueError) as e:
            results[i] = ApplyError(f"{label}: {fw.pod}: {e}")
            continue
        per_node.setdefault(node, []).append((i, iface, kind))
    return results, per_node
