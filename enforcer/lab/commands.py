"""``netpol lab up|apply|probe|stats|drops|down|list`` and the one-shot ``netpol probe``.

Thin: load the manifests, call enforcer.lab.control, print. Errors are NetpolError (the
main CLI prints them, no traceback). Notes and load warnings go to stderr, results to
stdout, so ``-o json`` output can be piped.
"""
from __future__ import annotations

import json
import os
import signal
import sys

import click

from enforcer.cliutil import CONTEXT, backend_option, echo_findings, emit_picture

from enforcer.errors import LabError
from enforcer.lab import control

FILES = click.option("-f", "--filename", "files", multiple=True, required=True,
                     help="Manifest file, directory or - for stdin (repeatable).")
NAME = click.option("--name", required=True, help="The lab's name (letters, digits, '-', '_', '.').")
BACKEND = backend_option()
ENFORCE_AT = click.option("--enforce-at", "enforce_at", type=click.Choice(["pod", "host"]), default=None,
                          help="Where the rules go: inside each pod (pod, the default) or in the node's "
                               "namespace, out of the pod's reach (host). lab apply: move them.")
PORTS = click.option("--ports", help="Ports to probe, e.g. 80/TCP,81/UDP (default: every port the destination declares).")
OUTPUT = click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table",
                      show_default=True)
EXPECT = click.option("--expect", help="Compare with expected results: a JSON file (the matrix/probe "
                                       "schema) or 'model' (the model's verdicts); exit 1 on any wrong cell.")
TIMEOUT = click.option("--timeout", type=click.FloatRange(0.05, 30.0), default=1.0, show_default=True,
                       help="Seconds to wait for an answer before a probe counts as blocked.")
SERVICES = click.option("--services", is_flag=True,
                        help="Also connect to every Service port through its clusterIP (to: svc:NS/NAME), "
                             "once per backend; allowed when every connection got through.")
FAMILY = click.option("--family", type=click.Choice(["ipv4", "ipv6"]), default="ipv4", show_default=True)


def load_cluster(files):
    """Load and validate the manifests; print warnings and notes on stderr."""
    from enforcer.compiler import frontend

    result = frontend.load(files)
    echo_findings(result)
    return result.cluster


def _notes(notes) -> None:
    for n in notes:
        click.echo(f"note: {n}", err=True)


def _ports(text):
    from enforcer.views import verdict

    return verdict.parse_ports(text)


def _expected_rows(spec: str, name: str, ports, family: int) -> list[dict]:
    from enforcer.views import reachability

    if spec == "model":
        return control.expected(name, ports, family=family)
    rows = reachability.load_rows(spec)
    return [r for r in rows if r["protocol"] in control.PROBE_PROTOCOLS]


def _emit(report: control.ProbeReport, fmt: str, name: str, expect_rows: list[dict] | None) -> bool:
    """Print a probe report; with expectations also the comparison. True when all match."""
    from enforcer.views import reachability

    _notes(report.notes)
    comparison = None
    if expect_rows is not None:
        comparison = reachability.compare(expect_rows, report.rows, title=f"lab {name}, backend {report.backend}")
    if fmt == "json":
        doc: dict = {"backend": report.backend, "lab": name, "seconds": report.seconds,
                     "results": report.rows}
        if comparison is not None:
            doc["comparison"] = {"wrong": comparison.wrong, "correct": comparison.correct,
                                 "wrong_cells": [str(c) for c in comparison.wrong_cells]}
        click.echo(json.dumps(doc, indent=2))
    elif comparison is not None:
        click.echo(comparison.text, nl=False)
    else:
        click.echo(reachability.truth_table(report.rows, title=report.backend), nl=False)
    if comparison is not None and comparison.vacuous:  # a check of nothing must not pass
        click.echo("error: no cell was compared (no pair of endpoints on any expected port): "
                   "nothing was checked", err=True)
        return False
    return comparison is None or comparison.wrong == 0


@click.group(context_settings=CONTEXT)
def lab() -> None:
    """A cluster of pods as network namespaces, with real servers and real probes (root)."""


@lab.command("up", context_settings=CONTEXT)
@FILES
@NAME
@BACKEND
@click.option("--ipv6", is_flag=True, help="Give every pod an IPv6 address too (fd00:10:244::/64).")
@click.option("--no-servers", is_flag=True,
              help="Start no servers: the test brings its own (netpol lab exec).")
@click.option("--nodes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Node namespaces on a routed underlay; pods go to spec.nodeName or are spread evenly.")
@click.option("--api", is_flag=True,
              help="Run the lab's own API server: objects created through it, one agent "
                   "(netpol run --kubeconfig --node) per node enforces; drive it with kubectl.")
@ENFORCE_AT
def up_cmd(files, name, backend, ipv6, no_servers, nodes, api, enforce_at) -> None:
    """Create the lab: node namespace, bridge, pods, external hosts, servers, then policies."""
    _need_root()
    files = _stdin_once(files)
    cluster = load_cluster(files)
    node_of, policies = _raw(files, nodes, api)
    previous = _catch_termination()  # a killed up removes what it built
    try:
        out = control.up(name, cluster, backend, ipv6=ipv6, servers=not no_servers, nodes=nodes,
                         api=api, node_of=node_of, policies=policies, enforce_at=enforce_at or "pod")
    finally:
        _restore(previous)
    _notes(out.notes)
    pods = sum(1 for k in out.added if "/" in k)
    click.echo(f"lab {name} is up: {pods} pods, {len(out.added) - pods} external hosts, "
               f"{len(cluster.policies)} network policies, backend {backend} ({out.seconds:.2f}s)")
    if api:
        from enforcer.lab import apilab

        click.echo(f"kubectl: {_kubectl()} --kubeconfig {apilab.kubeconfig(name)} get pods -A -o wide")


def _stdin_once(files):
    """``-f -`` with --api/--nodes: the input is read twice (model, raw objects)."""
    if "-" not in files:
        return files
    import tempfile

    tmp = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="netpol-stdin-", delete=False)
    with tmp:
        tmp.write(sys.stdin.read())
    return tuple(tmp.name if f == "-" else f for f in files)


def _raw(files, nodes: int = 2, api: bool = True):
    if nodes <= 1 and not api:
        return {}, []
    from enforcer.lab import multinode

    return multinode.raw_inputs(files)


def _kubectl() -> str:
    path = os.path.join(os.path.dirname(sys.executable), "kubectl")
    return path if os.path.exists(path) else "kubectl"


@lab.command("kubeconfig", context_settings=CONTEXT)
@NAME
def kubeconfig_cmd(name) -> None:
    """Print the path of an API lab's admin kubeconfig (kubectl --kubeconfig $(...))."""
    from enforcer.lab import apilab

    click.echo(apilab.kubeconfig(name))


@lab.command("apply", context_settings=CONTEXT)
@NAME
@FILES
@ENFORCE_AT
def apply_cmd(name, files, enforce_at) -> None:
    """Make the input the lab's whole desired state (converges incrementally)."""
    _need_root()
    files = _stdin_once(files)
    cluster = load_cluster(files)
    node_of, policies = _raw(files)
    out = control.apply(name, cluster, node_of=node_of, policies=policies, enforce_at=enforce_at)
    _notes(out.notes)
    kinds = {}
    for k in out.applies.values():
        kinds[k] = kinds.get(k, 0) + 1
    changed = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
    click.echo(f"lab {name}: {len(out.added)} added, {len(out.removed)} removed, "
               f"firewalls changed: {changed} ({out.seconds:.2f}s)")


@lab.command("probe", context_settings=CONTEXT)
@NAME
@PORTS
@OUTPUT
@EXPECT
@TIMEOUT
@FAMILY
@SERVICES
def probe_cmd(name, ports, fmt, expect, timeout, family, services) -> None:
    """Real connections between every ordered pair of endpoints, in parallel."""
    _need_root()
    fam = 6 if family == "ipv6" else 4
    parsed = _ports(ports)
    expect_rows = _expected_rows(expect, name, parsed, fam) if expect else None
    report = control.probe(name, parsed, family=fam, timeout=timeout)
    if services:
        expect_rows = _add_services(report, expect, expect_rows, name, parsed, fam, timeout)
    if not _emit(report, fmt, name, expect_rows):
        sys.exit(1)


@lab.command("down", context_settings=CONTEXT)
@click.option("--name", help="The lab's name.")
@click.option("--force", is_flag=True, help="Also remove namespaces that merely carry the lab's "
              "prefix (netpol-NAME-...) when the lab has no state; without it they are only listed.")
@click.option("--stale", is_flag=True, help="Remove every lab whose owner process is gone "
              "(a killed pytest run or lab up); see lab list.")
def down_cmd(name, force, stale) -> None:
    """Remove everything the lab created (also a half-built or crashed lab)."""
    _need_root()
    if bool(name) == stale:
        raise click.UsageError("give either --name LAB or --stale")
    if stale:
        gone = control.down_stale()
        for n in gone:
            click.echo(f"lab {n} removed (its owner is gone)")
        if not gone:
            click.echo("note: no stale labs", err=True)
        return
    if control.down(name, force=force):
        click.echo(f"lab {name} removed")
    else:
        click.echo(f"note: no lab named {name}: nothing to remove", err=True)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _owner(item: dict) -> str:
    if item.get("owner_pid") is None:
        return "stale" if item.get("stale") else "-"
    return f"{item['owner_pid']}" + ("" if item.get("owner_alive") else " gone")


@lab.command("list", context_settings=CONTEXT)
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_cmd(fmt) -> None:
    """The labs on this machine."""
    labs = control.list_labs()
    if fmt == "json":
        click.echo(json.dumps({"labs": labs}, indent=2))
        return
    if not labs:
        click.echo("no labs")
        return
    click.echo(f"{'NAME':20} {'BACKEND':16} {'PODS':>5} {'EXT':>4} {'POLICIES':>8}  {'SERVER':8} "
               f"{'PHASE':9} {'OWNER':13} AGE")
    for item in labs:
        click.echo(f"{item['name']:20} {item.get('backend', '-'):16} {item.get('pods', 0):>5} "
                   f"{item.get('externals', 0):>4} {item.get('policies', 0):>8}  "
                   f"{item.get('server', '-'):8} {item.get('phase', '-'):9} {_owner(item):13} "
                   f"{_age(item.get('age', 0))}")
    if any(item.get("stale") for item in labs):
        click.echo("owner gone: the process that owned the lab is gone; remove such labs with: "
                   "netpol lab down --stale", err=True)


@lab.command("stats", context_settings=CONTEXT)
@NAME
@click.option("--pod", help="Only this pod (NS/POD).")
@OUTPUT
@click.option("--nonzero", is_flag=True, help="Only the rules that counted packets.")
def stats_cmd(name, pod, fmt, nonzero) -> None:
    """Packet and byte counters of every rule in every pod, each with its policy rule."""
    _need_root()
    from enforcer.lab import observe

    backend, rows = observe.stats(name, pod)
    if nonzero:
        rows = [r for r in rows if r.packets]
    if fmt == "json":
        click.echo(json.dumps({"lab": name, "backend": backend,
                               "counters": [r.to_json() for r in rows]}, indent=2))
    else:
        click.echo(observe.stats_table(rows), nl=False)


@lab.command("drops", context_settings=CONTEXT)
@NAME
@click.option("--count", type=click.IntRange(min=1), help="Stop after N drops.")
@click.option("--timeout", type=click.FloatRange(min=0.1), help="Stop after S seconds.")
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one JSON object a line.")
def drops_cmd(name, count, timeout, fmt) -> None:
    """Stream dropped packets live: pod, direction, addresses, ports, isolating policies
    (or the ClusterNetworkPolicy rule that denied them)."""
    _need_root()
    from enforcer.lab import observe

    seen = 0
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with observe.DropReader(name) as reader:
            click.echo(f"watching {len(reader.sockets)} pods of lab {name} (Ctrl-C to stop); "
                       f"{observe.RATE_NOTE}", err=True)
            for drop in reader.stream(count, timeout):
                seen += 1
                click.echo(json.dumps(drop.to_json()) if fmt == "json" else observe.format_drop(drop))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a learner stops the stream: not an error
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo(f"{seen} drop(s) seen", err=True)


@click.command("probe", context_settings=CONTEXT)
@FILES
@BACKEND
@PORTS
@OUTPUT
@EXPECT
@TIMEOUT
@FAMILY
@click.option("--ipv6", is_flag=True, help="Give every pod an IPv6 address too.")
@click.option("--name", help="The throw-away lab's name (default probe-PID).")
@SERVICES
@ENFORCE_AT
def probe(files, backend, ports, fmt, expect, timeout, family, ipv6, name, services, enforce_at) -> None:
    """Up, probe, down in one: a throw-away lab (always removed, also on errors or Ctrl-C)."""
    _need_root()
    from enforcer.lab import naming

    name = naming.check_lab_name(name) if name is not None else f"probe-{os.getpid()}"
    cluster = load_cluster(files)
    fam = 6 if family == "ipv6" else 4
    parsed = _ports(ports)
    previous = _catch_termination()
    try:
        out = control.up(name, cluster, backend, ipv6=ipv6 or fam == 6, owned=True,
                         enforce_at=enforce_at or "pod")
        _notes(out.notes)
        expect_rows = _expected_rows(expect, name, parsed, fam) if expect else None
        report = control.probe(name, parsed, family=fam, timeout=timeout)
        if services:
            expect_rows = _add_services(report, expect, expect_rows, name, parsed, fam, timeout)
    finally:
        try:
            if control.mine(name):  # not a lab of that name that someone else made
                control.down(name)
        finally:
            _restore(previous)
    if not _emit(report, fmt, name, expect_rows):
        sys.exit(1)


def _add_services(report, expect, expect_rows, name, parsed, fam, timeout):
    """``--services``: probe rows through the Services' DNAT (enforcer/lab/services.py)
    added to the report, and the model's rows for them to the expectation."""
    from enforcer.lab import services as lab_services

    report.rows += lab_services.probe_rows(name, parsed, family=fam, timeout=timeout)
    if expect == "model" and expect_rows is not None:
        expect_rows = expect_rows + lab_services.expected_rows(name, parsed, family=fam)
    return expect_rows


def _terminate(signum, _frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through ``finally``: the lab is removed


def _catch_termination() -> dict:
    """SIGTERM and SIGHUP (a closed terminal) unwind like Ctrl-C does."""
    return {s: signal.signal(s, _terminate) for s in (signal.SIGTERM, signal.SIGHUP)}


def _restore(previous: dict) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)


def _need_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates network namespaces); run it with sudo")


def _register_exec() -> None:
    from enforcer.lab.exec import exec_cmd

    lab.add_command(exec_cmd)


_register_exec()


@lab.command("draw", context_settings=CONTEXT)
@click.option("--name", required=True, help="The lab's name.")
@click.option("-o", "--output", "fmt", type=click.Choice(["dot", "svg", "png"]), default="dot")
@click.option("--out-file", type=click.Path(dir_okay=False), help="Write -o svg|png to this file (default: stdout).")
def draw(name, fmt, out_file) -> None:
    """Draw the lab's topology: node namespace, bridge, every pod on its veth, isolation."""
    from enforcer.views import pictures
    from enforcer.ir import DIRECTIONS
    from enforcer.lab import state as lab_state

    st = lab_state.load(name)
    eps = [(e.key, e.kind, e.netns, e.link, tuple(e.ips)) for e in st.endpoints.values()]
    iso = {k: "+".join(d for d in DIRECTIONS if fw.direction(d).isolated)
           for k, fw in st.firewalls.items()}
    dot = pictures.topology_dot(name, st.node_netns, st.bridge, tuple(st.gateways), eps, iso)
    if fmt == "dot":
        click.echo(dot, nl=False)
    else:
        emit_picture(dot, fmt, out_file, "lab")
