"""Datapath: the rate of new flows a pod receives, against the number of allowed peers.

    sudo .venv/bin/python -m benchmarks.bench_datapath [--quick] [--rounds 15] [--seconds 0.2]

What is measured (prints one JSON document):

    sender netns  npt-bench-dp<pid>-s   one veth per receiver, 10.77.<k>.1/24
        |  one-way UDP datagrams to port 9, the source port changing with every packet
        v  (2,048 ports in turn): no reply ever comes back, so conntrack keeps every
           packet in state NEW and every packet walks the whole input chain
    receiver netns npt-bench-dp<pid>-r<k>   10.77.<k>.2/24, one per (layout, peers) case

Layouts (the receiver's ingress is isolated; the sender's address is one of N peers):

    nft-set       our nftables table, one rule matching an exact-address set of N pods
    nft-interval  our nftables table, one rule matching a set of N ipBlocks (address .
                  protocol intervals, every protocol: the kernel's pipapo set)
    ipt-set       our iptables rules (the host's iptables) with an ipset hash:ip
    ipt-net       the same with N ipBlocks in an ipset hash:net
    iptl-set/-net the same through iptables-legacy (python-iptables), full runs only
    nft-concat    hand-written variant of nft-interval: the same ipBlocks in an
                  ``address . port`` interval set (pipapo too, the port in the key)
    nft-naive     hand-written: N nftables rules, one per peer, the sender's rule last
    ipt-naive     hand-written: N iptables rules, one per peer, the sender's rule last
    none          no rules at all (no conntrack either): the ceiling

The set layouts are exactly what we install: a PodFirewall is built by hand and applied
with ``backends.registry.get(name).apply``. The ipBlocks mix prefix lengths (/25 .. /32)
and the sender sits in a /25, the least specific one: ipset hash:net looks an address up
once per prefix length in the set, so this is its worst case; an nft interval set is a
tree and does not care.

The receiver counts what passed its input chain: UDP InDatagrams + InErrors (its socket is
never read, so most datagrams end as receive-buffer errors, which is cheap) in its own
/proc/net/snmp. A burst from an address that is no peer must count zero: that proves each
case enforces before it is measured.

The sender is one process sending with sendmmsg(2) through ctypes (batches of 256): a
Python loop of sendto reaches ~300k pps here, sendmmsg ~500k pps, which leaves less of
the per-packet cost to the sender and makes differences between layouts easier to see.
The kernel's receive path runs in the sender's own context (veth delivers in softirq on
the sending CPU), so the rate is the whole path's cost. Cases are measured in rounds; in
each round the layouts come in a shuffled order and each layout's peer counts back to
back, so the ratios (N peers against 1 peer of the same layout) are paired in time.
Medians over rounds are reported with the quartiles: single runs on this shared machine
swing by +-30%.
"""
from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import os
import random
import signal
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

PORT = 9
SPORTS = 2048  # distinct source ports per receiver: 2,048 conntrack entries each
PAYLOAD = 18
BATCH = 256
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# layout -> (backend registry name or None, peer kind)
LAYOUTS: dict[str, tuple[str | None, str]] = {
    "nft-set": ("nftables", "exact"),
    "nft-interval": ("nftables", "interval"),
    "ipt-set": ("iptables", "exact"),
    "ipt-net": ("iptables", "interval"),
    "iptl-set": ("iptables-legacy", "exact"),
    "iptl-net": ("iptables-legacy", "interval"),
    "nft-concat": (None, "interval"),
    "nft-naive": (None, "exact"),
    "ipt-naive": (None, "exact"),
    "none": (None, "none"),
}
# Hand-written layouts and the fixed baselines: not drawn from our backends.
NAIVE = ("nft-naive", "ipt-naive")
HAND_WRITTEN = NAIVE + ("nft-concat",)
BASELINES = ("none",)
INTERVAL_PREFIXES = (32, 30, 28, 26, 25)  # the ipBlocks' prefix lengths, in turn

FULL_PEERS = (1, 100, 1000, 10000)


def _wait_link(ipr, ifname: str, timeout: float = 2.0) -> int:
    """The index of ``ifname``: a veth peer just moved into a namespace was seen missing
    for a moment on a loaded machine (once in a CI run), so look again briefly."""
    deadline = time.monotonic() + timeout
    while True:
        found = ipr.link_lookup(ifname=ifname)
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise RuntimeError(f"link {ifname} did not appear")
        time.sleep(0.02)


@dataclass(frozen=True)
class Case:
    layout: str
    peers: int

    @property
    def key(self) -> str:
        return f"{self.layout}/{self.peers}"


def full_cases(legacy: bool = True) -> list[Case]:
    layouts = ["nft-set", "nft-interval", "ipt-set", "ipt-net"]
    if legacy:
        layouts += ["iptl-set", "iptl-net"]
    layouts += ["nft-concat"] + list(NAIVE)
    cases = [Case(lay, n) for lay in layouts for n in FULL_PEERS]
    return cases + [Case("none", 0)]


def quick_cases() -> list[Case]:
    """What ``--quick`` measures: enough for the ratios the regression check compares."""
    cases = [Case(lay, n) for lay in ("nft-set", "nft-interval", "ipt-set", "ipt-net")
             for n in (1, 10000)]
    return cases + [Case("nft-set", 1000), Case("nft-naive", 1000), Case("none", 0)]


# ---------------------------------------------------------------------------------------
# Pure: addresses, firewalls and the naive rulesets


def link_addrs(k: int) -> dict[str, str]:
    """Addresses on link k: sender, receiver, a stranger (a sender address that is no
    peer) and the pod's node address."""
    return {"sender": f"10.77.{k}.1", "receiver": f"10.77.{k}.2", "stranger": f"10.77.{k}.200",
            "node": f"10.77.{k}.254"}


def exact_peers(sender: str, n: int) -> list[str]:
    """n host prefixes: n-1 other pods (10.128.0.0/9) and the sender, last."""
    base = int(ipaddress.ip_address("10.128.0.10"))
    return [f"{ipaddress.ip_address(base + i)}/32" for i in range(n - 1)] + [f"{sender}/32"]


def interval_peers(sender: str, n: int) -> list[str]:
    """n ipBlocks: n-1 non-adjacent blocks of mixed prefix lengths in 10.128.0.0/9 (each
    followed by a gap as large as itself, so none merge), and the sender's /25."""
    out = []
    cursor = int(ipaddress.ip_address("10.128.0.0"))
    for i in range(n - 1):
        plen = INTERVAL_PREFIXES[i % len(INTERVAL_PREFIXES)]
        size = 1 << (32 - plen)
        cursor = (cursor + size - 1) // size * size  # align
        out.append(f"{ipaddress.ip_address(cursor)}/{plen}")
        cursor += 2 * size
    own = ipaddress.ip_network(f"{sender}/25", strict=False)
    return out + [str(own)]


def peer_firewall(k: int, n: int, kind: str):
    """The receiver's PodFirewall: ingress isolated by one policy whose one rule allows UDP
    port 9 from a set of n peers (exact or interval); egress open."""
    from enforcer.ir import AddrSet, AllowRule, DirectionPolicy, PodFirewall, PortMatch, Provenance

    a = link_addrs(k)
    interval = kind == "interval"
    elems = interval_peers(a["sender"], n) if interval else exact_peers(a["sender"], n)
    peers = AddrSet("peers", v4=tuple(elems), interval=interval)
    rule = AllowRule(Provenance("bench/allow-peers", "ingress", 0), peers="peers",
                     ports=(PortMatch("UDP", PORT),))
    return PodFirewall(pod=f"bench/recv-{k}", ips=(a["receiver"],), node_ips=(a["node"],),
                       ingress=DirectionPolicy(True, ("bench/allow-peers",), (rule,)),
                       egress=DirectionPolicy(), sets=(peers,))


def naive_peer_list(sender: str, n: int) -> list[str]:
    """The peers of the rule-per-peer layouts, the sender last: every packet walks all n
    rules (the average peer would walk n/2)."""
    return [p.split("/")[0] for p in exact_peers(sender, n)]


def naive_nft(peers: list[str], node: str) -> str:
    lines = ["table inet naive {", "\tchain input {",
             "\t\ttype filter hook input priority filter; policy accept;",
             "\t\tct state established,related accept", "\t\tct state invalid drop",
             '\t\tiif "lo" accept', f"\t\tip saddr {node} accept"]
    lines += [f"\t\tip saddr {p} udp dport {PORT} accept" for p in peers]
    lines += ["\t\tcounter drop", "\t}", "}"]
    return "\n".join(lines) + "\n"


def concat_nft(blocks: list[str], node: str) -> str:
    """The ipBlocks as ``address . port`` intervals: a concatenation with intervals is kept
    by the kernel's pipapo set type (bitmaps per field, AVX2 where the CPU has it)."""
    elems = ", ".join(f"{b} . {PORT}" for b in blocks)
    return "\n".join([
        "table inet concat {",
        "\tset peers {", "\t\ttype ipv4_addr . inet_service", "\t\tflags interval",
        f"\t\telements = {{ {elems} }}", "\t}",
        "\tchain input {", "\t\ttype filter hook input priority filter; policy accept;",
        "\t\tct state established,related accept", "\t\tct state invalid drop",
        '\t\tiif "lo" accept', f"\t\tip saddr {node} accept",
        "\t\tip saddr . udp dport @peers accept", "\t\tcounter drop", "\t}", "}"]) + "\n"


def naive_iptables(peers: list[str], node: str) -> str:
    lines = ["*filter", ":NAIVE - [0:0]", "-A INPUT -j NAIVE",
             "-A NAIVE -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
             "-A NAIVE -m conntrack --ctstate INVALID -j DROP",
             "-A NAIVE -i lo -j ACCEPT", f"-A NAIVE -s {node}/32 -j ACCEPT"]
    lines += [f"-A NAIVE -s {p}/32 -p udp --dport {PORT} -j ACCEPT" for p in peers]
    lines += ["-A NAIVE -j DROP", "COMMIT"]
    return "\n".join(lines) + "\n"


def udp_packets(count: int = SPORTS, payload: int = PAYLOAD) -> bytes:
    """UDP headers + payload, one per source port (1024 + i), checksum 0 (allowed in IPv4):
    what the raw socket sends; the kernel adds the IP header."""
    body = b"x" * payload
    return b"".join(struct.pack("!HHHH", 1024 + i, PORT, 8 + payload, 0) + body for i in range(count))


# ---------------------------------------------------------------------------------------
# Pure: statistics


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(values: list[float], digits: int = 0) -> dict:
    def r(x: float) -> float:
        return round(x, digits) if digits else round(x)

    return {"median": r(statistics.median(values)), "p25": r(quantile(values, 0.25)),
            "p75": r(quantile(values, 0.75)), "min": r(min(values)), "max": r(max(values)),
            "n": len(values)}


def paired_ratio(rounds: list[dict[str, float]], num: str, den: str) -> dict | None:
    """Median over rounds of rate[num] / rate[den], each ratio taken within one round."""
    vals = [r[num] / r[den] for r in rounds if r.get(num) and r.get(den)]
    if not vals:
        return None
    out = summary(vals, 3)
    out["runs"] = [round(v, 3) for v in vals]
    return out


def ratios(rounds: list[dict[str, float]], cases: list[Case]) -> dict[str, dict]:
    """Every ratio worth reading: each layout's N peers against its 1 peer, each layout
    against no rules, sets against rule-per-peer at the same N."""
    keys = {c.key for c in cases}
    out: dict[str, dict] = {}
    for c in cases:
        one = f"{c.layout}/1"
        if c.peers > 1 and one in keys:
            out[f"{c.layout}: {c.peers} vs 1 peer"] = paired_ratio(rounds, c.key, one)
        if c.layout not in BASELINES and "none/0" in keys:
            out[f"{c.key} vs no rules"] = paired_ratio(rounds, c.key, "none/0")
    for n in sorted({c.peers for c in cases}):
        for s_lay, n_lay in (("nft-set", "nft-naive"), ("ipt-set", "ipt-naive"), ("nft-set", "ipt-naive"),
                             ("nft-concat", "nft-interval"), ("ipt-net", "nft-interval")):
            a, b = f"{s_lay}/{n}", f"{n_lay}/{n}"
            if a in keys and b in keys:
                out[f"{s_lay} vs {n_lay} at {n} peers"] = paired_ratio(rounds, a, b)
    return {k: v for k, v in out.items() if v is not None}


# ---------------------------------------------------------------------------------------
# The sender (runs in its own process inside the sender namespace)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(_Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


class _Burst:
    """A prepared sendmmsg batch list for one (source, destination): built once, reused."""

    def __init__(self, src: str, dst: str) -> None:
        import socket

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        self.sock.bind((src, 0))
        size = 8 + PAYLOAD
        self.buf = ctypes.create_string_buffer(udp_packets(), SPORTS * size)
        self.sa = ctypes.create_string_buffer(struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0)
                                              + socket.inet_aton(dst) + b"\0" * 8, 16)
        self.iovs = (_Iovec * SPORTS)()
        self.msgs = (_Mmsghdr * SPORTS)()
        base = ctypes.addressof(self.buf)
        for i in range(SPORTS):
            self.iovs[i].base = base + size * i
            self.iovs[i].len = size
            h = self.msgs[i].hdr
            h.name = ctypes.addressof(self.sa)
            h.namelen = 16
            h.iov = ctypes.pointer(self.iovs[i])
            h.iovlen = 1
        self.batches = [ctypes.byref(self.msgs, i * ctypes.sizeof(_Mmsghdr)) for i in range(0, SPORTS, BATCH)]


def sender_main() -> int:
    """Serve ``src dst seconds`` lines on stdin; answer ``sent elapsed`` for each."""
    libc = ctypes.CDLL(None, use_errno=True)
    sendmmsg = libc.sendmmsg
    bursts: dict[tuple[str, str], _Burst] = {}
    for line in sys.stdin:
        src, dst, seconds = line.split()
        b = bursts.get((src, dst))
        if b is None:
            b = bursts[(src, dst)] = _Burst(src, dst)
        fd = b.sock.fileno()
        sent = 0
        perf = time.perf_counter
        t0 = perf()
        end = t0 + float(seconds)
        while perf() < end:
            for p in b.batches:
                r = sendmmsg(fd, p, BATCH, 0)
                if r < 0:
                    err = ctypes.get_errno()
                    if err in (105, 11):  # ENOBUFS, EAGAIN: count what went, go on
                        continue
                    print(f"error {err}", flush=True)
                    return 1
                sent += r
        elapsed = perf() - t0
        print(f"{sent} {elapsed:.6f}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# Topology and measurement (root)


class Bench:
    """The namespaces, links, rules and the sender process of one run."""

    made = 0

    def __init__(self, cases: list[Case], log=print) -> None:
        self.cases = cases
        Bench.made += 1  # a retried set-up gets fresh names (npt-bench-dp<pid>b-...)
        self.tag = f"npt-bench-dp{os.getpid()}" + ("" if Bench.made == 1 else chr(96 + Bench.made))
        self.sender_ns = f"{self.tag}-s"
        self.receivers: dict[str, tuple[int, str]] = {}  # case key -> (link, netns)
        self.sockets: list = []
        self.proc: subprocess.Popen | None = None
        self.used_backends: dict[str, object] = {}
        self.log = log
        self.setup_s: dict[str, float] = {}

    # -- set-up --------------------------------------------------------------------
    def up(self) -> None:
        from enforcer import netns

        netns.create(self.sender_ns)
        with netns.iproute(self.sender_ns) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        links: dict[str, int] = {}
        for c in self.cases:
            key = c.key
            if key not in links:
                links[key] = len(links)
            k = links[key]
            name = f"{self.tag}-r{k}"
            self.receivers[c.key] = (k, name)
        for key, k in links.items():
            self._wire(k, f"{self.tag}-r{k}")
        for c in self.cases:
            k, name = self.receivers[c.key]
            if c.layout in BASELINES:
                continue
            t = time.perf_counter()
            self._install(c, k, name)
            self.setup_s[c.key] = round(time.perf_counter() - t, 3)
        self.proc = _start_sender(self.sender_ns)

    def _wire(self, k: int, name: str) -> None:
        """Receiver namespace k, its veth to the sender, addresses, pinned neighbours, and a
        bound UDP socket on port 9 that is never read."""
        import socket

        from enforcer import netns

        a = link_addrs(k)
        netns.create(name)
        with netns.iproute(self.sender_ns) as ipr:
            ipr.link("add", ifname=f"dp{k}", kind="veth",
                     peer={"ifname": "eth0", "net_ns_fd": netns.path(name)})
            idx = ipr.link_lookup(ifname=f"dp{k}")[0]
            ipr.addr("add", index=idx, address=a["sender"], prefixlen=24)
            ipr.addr("add", index=idx, address=a["stranger"], prefixlen=24)
            ipr.link("set", index=idx, state="up")
            smac = ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")
        with netns.iproute(name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ridx = _wait_link(ipr, "eth0")
            ipr.addr("add", index=ridx, address=a["receiver"], prefixlen=24)
            ipr.link("set", index=ridx, state="up")
            rmac = ipr.get_links(ridx)[0].get_attr("IFLA_ADDRESS")
            for ip in (a["sender"], a["stranger"]):
                ipr.neigh("replace", dst=ip, lladdr=smac, ifindex=ridx, state=0x80)
        with netns.iproute(self.sender_ns) as ipr:
            ipr.neigh("replace", dst=a["receiver"], lladdr=rmac, ifindex=idx, state=0x80)
        with netns.entered(name):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.bind(("0.0.0.0", PORT))
        self.sockets.append(s)

    def _install(self, c: Case, k: int, name: str) -> None:
        from enforcer import netns

        a = link_addrs(k)
        backend_name, kind = LAYOUTS[c.layout]
        if backend_name is not None:
            from backends import registry

            b = registry.get(backend_name)
            self.used_backends[backend_name] = b
            b.apply(name, peer_firewall(k, c.peers, kind))
        elif c.layout == "nft-naive":
            netns.run(name, ["nft", "-f", "-"], input=naive_nft(naive_peer_list(a["sender"], c.peers), a["node"]),
                      timeout=300)
        elif c.layout == "nft-concat":
            netns.run(name, ["nft", "-f", "-"], input=concat_nft(interval_peers(a["sender"], c.peers), a["node"]),
                      timeout=300)
        elif c.layout == "ipt-naive":
            netns.run(name, ["iptables-restore", "--noflush"],
                      input=naive_iptables(naive_peer_list(a["sender"], c.peers), a["node"]), timeout=300)

    # -- measuring -----------------------------------------------------------------
    def _send(self, src: str, dst: str, seconds: float) -> tuple[int, float]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{src} {dst} {seconds}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        if len(line) != 2:
            raise RuntimeError(f"sender failed: {' '.join(line) or 'no answer'}")
        return int(line[0]), float(line[1])

    def passed(self, name: str) -> int:
        """Datagrams that passed the receiver's input chain so far."""
        from enforcer import netns

        with netns.entered(name):
            with open("/proc/thread-self/net/snmp") as f:
                rows = [line.split() for line in f if line.startswith("Udp:")]
        udp = dict(zip(rows[0][1:], (int(x) for x in rows[1][1:])))
        return udp["InDatagrams"] + udp["InErrors"] + udp["NoPorts"]

    def measure(self, c: Case, seconds: float) -> dict:
        k, name = self.receivers[c.key]
        a = link_addrs(k)
        before = self.passed(name)
        sent, elapsed = self._send(a["sender"], a["receiver"], seconds)
        time.sleep(0.005)  # the last batch's softirq work
        got = self.passed(name) - before
        return {"pps": got / elapsed, "sent": sent, "received": got}

    def enforced(self, c: Case) -> bool | None:
        """A burst from the stranger (no peer) passes only where nothing is enforced."""
        if c.layout in BASELINES:
            return None
        k, name = self.receivers[c.key]
        a = link_addrs(k)
        before = self.passed(name)
        self._send(a["stranger"], a["receiver"], 0.05)
        time.sleep(0.005)
        return self.passed(name) == before

    # -- tear-down -----------------------------------------------------------------
    def down(self) -> None:
        from enforcer import netns

        if self.proc is not None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=5)
            except Exception:
                self.proc.kill()
        for s in self.sockets:
            s.close()
        names = {n for _, n in self.receivers.values()} | {self.sender_ns}
        for n in sorted(names):
            try:
                netns.remove(n)
            except Exception as e:  # keep removing the others
                self.log(f"bench_datapath: could not remove {n}: {e}")
        for b in self.used_backends.values():  # forget per-namespace handles (libnftables)
            for _, n in self.receivers.values():
                try:
                    b.remove(n)  # type: ignore[attr-defined]
                except Exception:
                    pass


def _start_sender(ns: str) -> subprocess.Popen:
    from enforcer import netns

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return netns.popen(ns, [sys.executable, "-m", "benchmarks.bench_datapath", "--sender"],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)


def _set_up(cases: list[Case], log) -> "Bench":
    """Bring the namespaces up, trying again from scratch after a failed set-up: on this
    machine a just-created namespace or veth peer was now and then not found a moment
    later (unexplained yet; seen in about one run in three late in a session). A set-up
    glitch is not a datapath measurement, so it must not fail a regression check."""
    for attempt in range(1, 4):
        bench = Bench(cases, log=log)
        try:
            bench.up()
            return bench
        except Exception as e:
            bench.down()
            if attempt == 3:
                raise
            log(f"bench_datapath: set-up failed ({type(e).__name__}: {e}); trying again")
            time.sleep(0.5)
    raise AssertionError("unreachable")


def run(cases: list[Case], rounds: int, seconds: float, seed: int = 1, log=print) -> dict:
    """Set up every case, check that each enforces, measure ``rounds`` rounds, tear down."""
    rnd = random.Random(seed)
    t_start = time.monotonic()
    per_round: list[dict[str, float]] = []
    raw: dict[str, list[dict]] = {c.key: [] for c in cases}
    bench = _set_up(cases, log)
    try:
        setup_done = time.monotonic()
        enforced = {c.key: bench.enforced(c) for c in cases}
        for c in cases:  # warm-up: first packets create conntrack entries and caches
            bench.measure(c, 0.05)
        by_layout: dict[str, list[Case]] = {}
        for c in cases:
            by_layout.setdefault(c.layout, []).append(c)
        for r in range(rounds):
            order = list(by_layout)
            rnd.shuffle(order)
            row: dict[str, float] = {}
            for lay in order:
                group = by_layout[lay]
                shift = r % len(group)
                for c in group[shift:] + group[:shift]:
                    m = bench.measure(c, seconds)
                    raw[c.key].append(m)
                    row[c.key] = m["pps"]
            per_round.append(row)
            log(f"bench_datapath: round {r + 1}/{rounds} done")
        measured = time.monotonic()
    finally:
        bench.down()
    results = []
    for c in cases:
        pps = [m["pps"] for m in raw[c.key]]
        lost = [1 - m["received"] / m["sent"] for m in raw[c.key] if m["received"] is not None and m["sent"]]
        results.append({"layout": c.layout, "peers": c.peers, "pps": summary(pps),
                        "pps_runs": [round(p) for p in pps],
                        "ns_per_packet_median": round(1e9 / statistics.median(pps), 1),
                        "not_received_median": round(statistics.median(lost), 4) if lost else None,
                        "stranger_dropped": enforced[c.key],
                        "install_s": bench.setup_s.get(c.key)})
    return {"what": "new-flow rate (one-way UDP, every packet conntrack NEW) received by a pod",
            "rounds": rounds, "seconds_per_measurement": seconds, "source_ports": SPORTS,
            "results": results, "ratios": ratios(per_round, cases),
            "setup_s": round(setup_done - t_start, 1), "measure_s": round(measured - setup_done, 1),
            "kernel": os.uname().release}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sender", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="the cases the regression check needs")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="per measurement")
    ap.add_argument("--no-legacy", action="store_true", help="skip iptables-legacy layouts")
    ap.add_argument("--layouts", default="", help="comma-separated subset of the full layouts")
    args = ap.parse_args(argv)
    if args.sender:
        return sender_main()
    if os.geteuid() != 0:
        print("bench_datapath: needs root (creates network namespaces)", file=sys.stderr)
        return 2
    sys.path.insert(0, REPO)
    # SIGTERM (a timeout, Ctrl-C from make) unwinds like an exception, so the namespaces
    # are removed by run()'s finally.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        cases, rounds, seconds = quick_cases(), args.rounds or 7, args.seconds or 0.2
    else:
        cases, rounds, seconds = full_cases(legacy=not args.no_legacy), args.rounds or 15, args.seconds or 0.2
    if args.layouts:
        keep = set(args.layouts.split(","))
        cases = [c for c in cases if c.layout in keep]
    out = run(cases, rounds, seconds, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
