"""--conntrack-strict: cut existing flows that the new policy no longer allows.

By default a tightened policy keeps established flows (their packets match the
``ct state established`` accept before any policy rule), as Calico, Antrea and kube-router
do (SEMANTICS 14). In strict mode, after a pod's firewall changed, every conntrack entry in
the pod's namespace is judged by the new firewall (the same ``verdict.side`` that ``trace``
uses) and the ones it would not allow are deleted: the flow's next packet is then NEW and
meets the policy. When a pod goes away, entries naming its address are deleted in the
namespaces we manage.

The ``conntrack`` tool runs *inside* the pod's namespace (enforcer.netns.run enters it
before exec). Not pyroute2's Conntrack: its netlink socket is opened lazily, outside the
namespace entered when the object was made, so it would read and delete the host's
entries (checked on pyroute2 0.9).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable

from enforcer import netns as nsmod
from enforcer.errors import NetnsError
from enforcer.ir import PROTOCOLS, PodFirewall
from enforcer.views.verdict import side

PROTOS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP", "icmp": "ICMP", "icmpv6": "ICMPV6"}
_FIELD = re.compile(r"(\w+)=(\S+)")


@dataclass(frozen=True)
class Flow:
    """The original-direction tuple of one conntrack entry."""

    family: int
    protocol: str  # "TCP", "UDP", "SCTP", "ICMP", ...
    src: str
    dst: str
    sport: int
    dport: int

    def delete_args(self) -> list[str]:
        """Arguments of ``conntrack -D`` for every entry of this flow's *group*: same
        addresses, protocol and destination port, any source port. A verdict never depends
        on the source port, so a group is allowed or denied as a whole, and one process
        deletes all of it (a pod may hold thousands of entries to one peer)."""
        args = ["-f", "ipv6" if self.family == 6 else "ipv4", "-p", self.protocol.lower(),
                "-s", self.src, "-d", self.dst]
        if self.protocol in PROTOCOLS:
            args += ["--dport", str(self.dport)]
        return args


def parse(text: str, family: int) -> list[Flow]:
    """``conntrack -L`` lines -> flows (the first src/dst/sport/dport are the original tuple)."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] not in PROTOS:
            continue
        fields: dict[str, str] = {}
        for k, v in _FIELD.findall(line):
            fields.setdefault(k, v)
        if "src" not in fields or "dst" not in fields:
            continue
        out.append(Flow(family, PROTOS[words[0]], fields["src"], fields["dst"],
                        int(fields.get("sport", 0)), int(fields.get("dport", 0))))
    return out


def allowed(fw: PodFirewall, flow: Flow) -> bool:
    """Would ``fw`` (the firewall of the pod whose namespace holds the entry) let this
    flow start now? Flows that are not the pod's own traffic are left alone."""
    ips = {str(ipaddress.ip_address(a)) for a in fw.ips}
    src, dst = _canon(flow.src), _canon(flow.dst)
    if src == dst or _loopback(src) or _loopback(dst):
        return True
    if src in ips:
        return side(fw, "egress", dst, flow.protocol, flow.dport).allowed
    if dst in ips:
        return side(fw, "ingress", src, flow.protocol, flow.dport).allowed
    return True


def _canon(a: str) -> str:
    try:
        return str(ipaddress.ip_address(a))
    except ValueError:
        return a


def _loopback(a: str) -> bool:
    try:
        return ipaddress.ip_address(a).is_loopback
    except ValueError:
        return False


Runner = Callable[..., object]


class Conntrack:
    """Runs the conntrack tool in a namespace; ``runner`` is enforcer.netns.run (tests
    pass a fake)."""

    def __init__(self, runner: Runner = nsmod.run) -> None:
        self.run = runner

    def flows(self, netns: str) -> list[Flow]:
        out: list[Flow] = []
        for fam in (4, 6):
            proc = self.run(netns, ["conntrack", "-L", "-f", "ipv6" if fam == 6 else "ipv4"], check=False)
            out += parse(getattr(proc, "stdout", "") or "", fam)
        return out

    def cut(self, netns: str, fw: PodFirewall) -> int:
        """Delete the entries in ``netns`` that ``fw`` no longer allows; returns how many."""
        return self._delete(netns, [f for f in self.flows(netns) if not allowed(fw, f)])

    def forget_ips(self, netns: str, ips: set[str]) -> int:
        """Delete entries from or to any of ``ips`` (pods that went away)."""
        wanted = {_canon(a) for a in ips}
        return self._delete(netns, [f for f in self.flows(netns)
                                    if _canon(f.src) in wanted or _canon(f.dst) in wanted])

    def _delete(self, netns: str, flows: list[Flow]) -> int:
        for args in dict.fromkeys(tuple(f.delete_args()) for f in flows):
            self.run(netns, ["conntrack", "-D", *args], check=False)
        return len(flows)


def safe(fn: Callable[[], int]) -> tuple[int, str | None]:
    """Run a conntrack action; a vanished namespace or a missing tool is a message, not a crash."""
    try:
        return fn(), None
    except NetnsError as e:
        return 0, str(e)
