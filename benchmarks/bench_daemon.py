"""The daemon's numbers: a policy file change until enforced (verified by probes) with 110
local pods, idle CPU, resident memory with 5,000 pods in the cluster. Prints JSON.

    sudo .venv/bin/python benchmarks/bench_daemon.py [--local 110] [--cluster 5000] [--changes 40]
        [--enforce-at pod|host|both] [--shape bench|common] [--profile PREFIX]

``--profile PREFIX``: py-spy records the daemon (collapsed stacks: PREFIX-start.txt for the
start and first sync, PREFIX-changes.txt for the changes; extra py-spy flags, e.g. ``-g``
for the samples that hold the GIL, from $BENCH_SPY_ARGS). ``daemon_cpu_ms_per_change``: the
daemon's CPU time per change, repair rounds included, which the load of a shared machine
does not stretch as it stretches the wall times.

``--shape common --cluster 150000``: the other pods are issue 15's cluster (gen.common,
10,000 namespaces and policies) in one JSON List: first sync and changes at that scale.

``--enforce-at both``: the same pods, the daemon first in pod mode, then in host mode (every
pod's chains in the lab's node namespace, one transaction per node), each started on a
clean lab (``--cleanup-on-exit`` between them); the output has one section per mode.
Each mode ends with a kill -9 and a restart: time to READY, and how many tables it adopted.

Targets (issue 5): policy change -> enforced in every affected namespace, 110 local pods:
p50 <= 50 ms, p99 <= 200 ms; idle CPU < 1% of a core; RSS <= 150 MB with 5,000 pods.

Set-up: a lab (``netpol lab``, backend fake: namespaces, links and servers, no rules) with
the local pods, ``role=server`` with TCP servers on 80 and 81, and two client pods; the
watched directory holds all pods of the cluster (the other ~4,900 are peers on other nodes:
addresses, no namespace here) and one policy file. The daemon runs as a subprocess with the
nftables backend.

Each change rewrites the policy file (temporary file + rename) so that something new is
allowed for every server pod, and the probe loop sends real connections from the client to
every server until all of them get through; the time from the rename to the round in which
the last one got through is the latency (a round of 110 probes takes a few ms: that is the
resolution). Two kinds of change, alternating within each kind:

    ports   the allowed port flips between 80 and 81: the rules change, in every server's
            table the rules that differ are edited (backends/nft_edit.py; one transaction
            per namespace)
    peers   the allowed client flips between client-a and client-b: only set elements change
            (a delta per namespace)

The daemon's own delay (from the file event to the end of the sync, its
netpol_policy_implementation_delay_seconds) is read from its log for the same changes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from enforcer.load import manifests  # noqa: E402
from enforcer.daemon.testing import DaemonProcess, pod_doc, write_yaml  # noqa: E402
from enforcer.lab import control  # noqa: E402
from enforcer.lab.probe import Target, run as run_probes  # noqa: E402

NS = "bench"


def ip_of(i: int) -> str:
    """Local pods: 10.244.0.2 ... (the lab's pod CIDR)."""
    n = i + 2
    return f"10.244.{n // 256}.{n % 256}"


def remote_ip(i: int) -> str:
    """Remote pods: 10.250.0.2 ..., 64,000 per /16 (10.251... beyond: --cluster 150000)."""
    return f"10.{250 + i // 64_000}.{i // 250 % 256}.{i % 250 + 2}"


def cluster_docs(local: int, total: int) -> tuple[list[dict], list[dict]]:
    """(docs of the local pods, docs of everything) for ``local`` servers + 2 clients."""
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"tier": "bench"}}}]
    local_docs = list(docs)
    for i in range(local):
        local_docs.append(pod_doc(NS, f"s{i}", ip_of(i), {"role": "server", "idx": str(i % 10)},
                                  ((80, "TCP"), (81, "TCP"))))
    for j, name in enumerate(("client-a", "client-b")):
        local_docs.append(pod_doc(NS, name, ip_of(local + j), {"role": "client", "who": name}))
    docs = list(local_docs)
    namespaces = [f"ns{k}" for k in range(50)]
    for k in namespaces:
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": k, "labels": {"team": k[-1]}}})
    for i in range(max(0, total - local - 2)):
        docs.append(pod_doc(namespaces[i % 50], f"r{i}", remote_ip(i),
                            {"app": f"a{i % 20}", "role": "client" if i % 7 == 0 else "other"}))
    return local_docs, docs


def write_common(path: str, pods: int, namespaces: int) -> None:
    """--shape common: the other pods as issue 15's cluster (benchmarks/gen.py, as many
    policies as namespaces: --cluster 150000 is its 150k/10k/10k), one JSON List as
    ``kubectl get -o json`` prints it; the local pods keep their own namespace."""
    from benchmarks import gen

    c = gen.common(namespaces, pods, namespaces)
    with open(path, "w") as f:
        json.dump(gen.to_documents(c), f)


def policy(port: int, client: str) -> list[dict]:
    return [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": "servers", "namespace": NS},
             "spec": {"podSelector": {"matchLabels": {"role": "server"}},
                      "policyTypes": ["Ingress"],
                      "ingress": [{"from": [{"podSelector": {"matchLabels": {"who": client}}},
                                            {"namespaceSelector": {"matchLabels": {"team": "7"}},
                                             "podSelector": {"matchLabels": {"role": "client"}}}],
                                   "ports": [{"port": port, "protocol": "TCP"}]}]}}]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))
    return round(s[k], 2)


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": pct(values, 50), "p90_ms": pct(values, 90),
            "p99_ms": pct(values, 99), "max_ms": round(max(values), 2),
            "mean_ms": round(statistics.mean(values), 2)}


def wait_enforced(src_netns: str, targets: list[Target], timeout: float = 5.0) -> float:
    """Probe every target until all get through; returns the monotonic time of the round in
    which the last one did (its start plus that probe's own time)."""
    pending = list(targets)
    deadline = time.monotonic() + timeout
    last = 0.0
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} target(s) never got through")
        started = time.monotonic()
        outcomes = run_probes(pending, timeout=0.004, retries=0)
        nxt = []
        for t, o in zip(pending, outcomes):
            if o.allowed:
                last = max(last, started + o.ms / 1000)
            else:
                nxt.append(t)
        pending = nxt
    return last


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _stage(work: str, name: str, docs: list[dict]) -> str:
    """A complete file beside the watched directory (same file system), to rename in."""
    stage = os.path.join(work, "stage")
    os.makedirs(stage, exist_ok=True)
    path = os.path.join(stage, name)
    with open(path, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": docs}, f)
    return path


def _until(pred, timeout: float = 600.0) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("not reached")
        time.sleep(0.005)
    return time.monotonic()


def bursts(d: DaemonProcess, work: str, watch: str) -> dict:
    """Issue 20's cases, timed from outside through the state file (written at the end of
    every sync): the rename of the last file until the sync that read it is done."""
    def policies() -> int:
        try:
            return d.state()["counts"]["policies"]
        except (OSError, ValueError):
            return -1  # between the state file's rename and its reading

    def pol(name: str, sel: dict, port: int) -> dict:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"podSelector": {"matchLabels": sel}, "policyTypes": ["Ingress"],
                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client-a"}}}],
                                      "ports": [{"port": port, "protocol": "TCP"}]}]}}

    out: dict = {}
    base = policies()
    q1 = _stage(work, "q1.json", [pol("q1", {"role": "nobody"}, 80)])
    q2 = _stage(work, "q2.json", [pol("q2", {"role": "nobody"}, 81)])
    os.rename(q1, os.path.join(watch, "q1.json"))
    time.sleep(0.3)
    t0 = time.monotonic()
    os.rename(q2, os.path.join(watch, "q2.json"))
    out["two_files_0.3s_apart_second_read_s"] = round(_until(lambda: policies() == base + 2) - t0, 3)
    staged = [_stage(work, f"m{i:04d}.json", [pol(f"m{i:04d}", {"role": "nobody"}, 80)]) for i in range(1000)]
    t0 = time.monotonic()
    for i, p in enumerate(staged):
        os.rename(p, os.path.join(watch, f"m{i:04d}.json"))
    renamed = time.monotonic()
    done = _until(lambda: policies() == base + 1002)
    out["thousand_files_moved_in"] = {"renames_s": round(renamed - t0, 3), "all_read_s": round(done - t0, 3)}
    # 10,000 policies selecting one pod (client-b), in one file (nftables: the table then has
    # 20,000 sets, whose libnftables transaction dominates; compile alone is ~1 s).
    many = _stage(work, "many.json", [pol(f"p{i:05d}", {"who": "client-b"}, 1000 + i % 5000)
                                      for i in range(10_000)])
    mark = len(d.logs("sync done"))
    t0 = time.monotonic()
    os.rename(many, os.path.join(watch, "many.json"))
    done = _until(lambda: policies() == base + 11_002)
    sync = [s for s in d.logs("sync done")[mark:] if s.get("files")]
    out["ten_thousand_policies_one_file"] = {"until_state_shows_them_s": round(done - t0, 3),
                                              "sync_ms": sync[-1]["ms"] if sync else None}
    return out


def _spy(pid: int, path: str):
    """py-spy recording ``pid`` into ``path`` (collapsed stacks, one line a stack) until _stop."""
    import shutil
    import subprocess

    exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    return subprocess.Popen([exe, "record", "-p", str(pid), "-r", "250", "-f", "raw", "-o", path, "--nonblocking", *os.environ.get("BENCH_SPY_ARGS", "").split()],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(spy) -> None:
    import signal

    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        spy.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--local", type=int, default=110, help="server pods with a namespace here")
    ap.add_argument("--cluster", type=int, default=5000, help="pods in the cluster, local ones included")
    ap.add_argument("--changes", type=int, default=40, help="policy changes per kind")
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle to measure CPU over")
    ap.add_argument("--workers", type=int, default=1, help="--apply-workers of the daemon")
    ap.add_argument("--repair-interval", type=float, default=10.0)
    ap.add_argument("--bursts", action="store_true",
                    help="also time files moved in (2 and 1,000) and 10,000 policies in one file (issue 20)")
    ap.add_argument("--enforce-at", choices=["pod", "host", "both"], default="pod",
                    help="where the daemon enforces; both: pod mode, then host mode, on the same pods")
    ap.add_argument("--shape", choices=["bench", "common"], default="bench",
                    help="the rest of the cluster: 50 namespaces of this benchmark's own, or gen.common (issue 15)")
    ap.add_argument("--profile", metavar="PREFIX",
                    help="record the daemon with py-spy (collapsed stacks, PREFIX-start.txt for the start and "
                         "first sync, PREFIX-changes.txt for the changes); needs py-spy on the PATH or in .venv")
    args = ap.parse_args()

    lab = f"npt-bd{uuid.uuid4().hex[:6]}"
    prefix = f"netpol-{lab}-"
    work = tempfile.mkdtemp(prefix="netpol-bench-daemon-")
    watch = os.path.join(work, "watch")
    os.mkdir(watch)
    local_docs, docs = cluster_docs(args.local, args.cluster if args.shape == "bench" else 0)
    if args.shape == "common":
        docs = local_docs
        write_common(os.path.join(watch, "cluster.json"), args.cluster - len(local_docs) + 1, max(1, args.cluster // 15))
    top: dict = {"local_pods": args.local + 2, "cluster_pods": args.cluster, "backend": "nftables",
                 "apply_workers": args.workers, "cpus": os.cpu_count()}
    modes = ["pod", "host"] if args.enforce_at == "both" else [args.enforce_at]
    d = None
    try:
        write_yaml(os.path.join(work, "lab.yaml"), local_docs)
        t = time.monotonic()
        control.up(lab, manifests.load([os.path.join(work, "lab.yaml")]).cluster, "fake")
        top["lab_up_s"] = round(time.monotonic() - t, 2)
        for mode in modes:
            out = top if len(modes) == 1 else top.setdefault(f"enforce_at_{mode}", {})
            d = run_mode(args, mode, lab, prefix, work, watch, docs, out)
            d.close()
            d = None
    finally:
        if d is not None:
            d.close()
        control.down(lab)
    print(json.dumps(top, indent=2))


def run_mode(args, mode: str, lab: str, prefix: str, work: str, watch: str, docs: list[dict], out: dict):
    """One daemon in ``mode`` on the lab, measured into ``out``; returns it (to close)."""
    where = ["--enforce-at", "host", "--node-netns", f"netpol-{lab}"] if mode == "host" else []
    d = None
    try:
        write_yaml(os.path.join(watch, "pods.yaml"), docs)
        pol_path = os.path.join(watch, "policy.yaml")
        write_yaml(pol_path, policy(80, "client-a"))
        d = DaemonProcess([watch], state_file=os.path.join(work, f"state-{mode}.json"), netns_prefix=prefix,
                          args=["--apply-workers", str(args.workers), "--repair-interval", str(args.repair_interval),
                                "--cleanup-on-exit", *where],
                          log_path=os.path.join(work, f"daemon-{mode}.log"), log_level="info")
        t = time.monotonic()
        d.start(wait=0)
        spy = _spy(d.proc.pid, f"{args.profile}-start.txt") if args.profile else None
        d.wait_ready(600)
        out["start_to_ready_s"] = round(time.monotonic() - t, 2)
        _stop(spy)
        first = d.logs("sync done")
        out["first_sync_ms"] = first[0]["ms"] if first else None
        st = d.state()
        out["managed_namespaces"] = st["counts"]["managed"]
        servers = [ip_of(i) for i in range(args.local)]
        client_ns = {c: f"{prefix}{NS}-{c}" for c in ("client-a", "client-b")}

        def measure(kind: str) -> list[float]:
            lat = []
            port, client = 80, "client-a"
            for k in range(args.changes):
                if kind == "ports":
                    port = 81 if port == 80 else 80
                else:
                    client = "client-b" if client == "client-a" else "client-a"
                targets = [Target(client_ns[client], ip, port, "TCP") for ip in servers]
                time.sleep(0.15)  # let the previous change settle (min-interval, logs)
                # The change is the rename of a complete file (as write_yaml does it): the
                # clock starts there, not while this process was still writing the YAML.
                tmp = os.path.join(watch, ".policy.yaml.tmp")
                with open(tmp, "w") as f:
                    f.write(yaml.safe_dump_all(policy(port, client), sort_keys=False))
                t0 = time.monotonic()
                os.replace(tmp, pol_path)
                done = wait_enforced(client_ns[client], targets)
                lat.append((done - t0) * 1000)
            return lat

        mark = len(d.logs("sync done"))
        spy = _spy(d.proc.pid, f"{args.profile}-changes.txt") if args.profile else None
        c0 = cpu_seconds(d.proc.pid)
        ports = measure("ports")
        c1 = cpu_seconds(d.proc.pid)
        syncs = d.logs("sync done")[mark:]
        mark = len(d.logs("sync done"))
        peers = measure("peers")
        c2 = cpu_seconds(d.proc.pid)
        syncs2 = d.logs("sync done")[mark:]
        _stop(spy)
        # The daemon's CPU time per change (user + system, its repair rounds included): what
        # a change costs whatever the load of the machine, which stretches wall times.
        out["daemon_cpu_ms_per_change"] = {"ports": round((c1 - c0) * 1000 / len(ports), 1),
                                           "peers": round((c2 - c1) * 1000 / len(peers), 1)}
        out["change_to_enforced_probe"] = {"ports (rules edited in every server namespace)": summary(ports),
                                           "peers (set-element delta in every server namespace)": summary(peers),
                                           "all": summary(ports + peers)}
        # Issue 15: the first change after start (a swap) is in the figures above; alone
        # here to compare with the later ones.
        out["first_change_after_start_ms"] = round(ports[0], 2)
        out["ports_runs_ms"] = [round(x, 2) for x in ports]
        out["peers_runs_ms"] = [round(x, 2) for x in peers]  # the first: the first delta after start
        own = [s["delay_ms"] for s in syncs if s.get("delay_ms") is not None and s.get("files")]
        own2 = [s["delay_ms"] for s in syncs2 if s.get("delay_ms") is not None and s.get("files")]
        out["daemon_delay_event_to_enforced"] = {"ports": summary(own) if own else None,
                                                 "peers": summary(own2) if own2 else None}
        # Idle: nothing changes; periodic repair read-backs and resyncs go on.
        time.sleep(2)
        pid = d.proc.pid
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.idle)
        c1, t1 = cpu_seconds(pid), time.monotonic()
        out["idle_cpu_percent_of_one_core"] = round((c1 - c0) / (t1 - t0) * 100, 3)
        out["idle_window_s"] = round(t1 - t0, 1)
        out["rss_mb"] = rss_mb(pid)
        st = d.state()
        out["drift_repairs"] = st["totals"]["drift_repairs"]
        out["apply_errors"] = st["totals"]["apply_errors"]
        out["applies"] = st["totals"]["applies"]
        # kill -9 and start again: every table is found right and adopted (no swap).
        d.kill9()
        t = time.monotonic()
        d.start(wait=120)
        out["restart_after_kill9_to_ready_s"] = round(time.monotonic() - t, 2)
        st = d.state()  # (a sync that applies nothing logs "sync done" at debug only)
        out["restart_first_sync_ms"] = (st.get("last_sync") or {}).get("ms")
        out["restart_adopted"] = st["totals"]["applies"].get("adopted", 0)
        if args.bursts:
            out["bursts"] = bursts(d, work, watch)
    except BaseException:
        if d is not None:
            d.close()
        raise
    return d


if __name__ == "__main__":
    main()
