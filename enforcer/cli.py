"""The ``netpol`` command line. Thin: parse options, call the pipeline, print.

Every error the tool knows about is an ``enforcer.errors.NetpolError``; ``main`` prints it
(one line per problem) and exits with its code. Anything else is a bug: we still print one
line, not a traceback (set NETPOL_DEBUG=1 to see it).
"""
from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

import click

from enforcer.compiler import ipam
from enforcer.cliutil import CONTEXT, backend_option, echo_findings, emit_picture
from enforcer.errors import InputError, NetpolError

if TYPE_CHECKING:  # imported where used: the CLI starts without the compiler
    from enforcer.compiler.frontend import Prepared

FILES = click.option("-f", "--filename", "files", multiple=True, required=True,
                     help="Manifest file, directory or - for stdin (repeatable).")
BY = click.option("--by", type=click.Choice(["pod", "workload"]), default="pod", show_default=True,
                  help="workload: one row per Deployment, StatefulSet, ... (its replicas together).")
LEGACY = click.option("--legacy-namespace-isolation", is_flag=True,
                      help="Honour the pre-v1 namespace annotation net.beta.kubernetes.io/network-policy (DefaultDeny).")


def load(files, *, legacy: bool = False, cidrs: tuple[str, ...] = (ipam.DEFAULT_POD_CIDR,)) -> Prepared:
    """enforcer.compiler.frontend.prepare, with its warnings and notes on stderr."""
    from enforcer.compiler.frontend import prepare

    prepared = prepare(files, legacy=legacy, cidrs=cidrs)
    echo_findings(prepared)
    return prepared


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="netpol-enforcer")
def cli() -> None:
    """Enforce and explain Kubernetes NetworkPolicy with nftables or iptables in network namespaces."""


@cli.command(context_settings=CONTEXT)
@FILES
@LEGACY
def validate(files, legacy_namespace_isolation) -> None:
    """Check every object as the API server would (exit 1 if anything is invalid); also
    print lint's warnings (they do not change the exit code)."""
    c, warnings, notes = _lint(files, legacy_namespace_isolation)
    for w in warnings:
        click.echo(str(w), err=True)
    for n in notes:
        click.echo(n, err=True)
    extra = f", {len(c.services)} services" if c.services else ""
    extra += f", {len(c.cnps)} cluster network policies" if c.cnps else ""
    click.echo(f"valid: {len(c.namespaces)} namespaces, {len(c.pods)} pods, "
               f"{len(c.policies)} network policies, {len(c.externals)} external hosts{extra}")


@cli.command("lint", context_settings=CONTEXT)
@FILES
@LEGACY
def lint_command(files, legacy_namespace_isolation) -> None:
    """Warnings for policies that do nothing or surprise: selectors that select nothing,
    unknown namespaces, rules that never match, egress without DNS (exit 1 if any)."""
    _, warnings, notes = _lint(files, legacy_namespace_isolation)
    for w in warnings:
        click.echo(str(w), err=True)
    for n in notes:
        click.echo(n, err=True)
    click.echo(f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}" if warnings else "no warnings")
    sys.exit(1 if warnings else 0)


def _lint(files, legacy: bool):
    """(cluster, the loader's warnings and lint's, notes). An input with no object is an
    error: a file of comments only must not pass as 'valid: 0 network policies'."""
    from enforcer.compiler import frontend
    from enforcer.views import lint as L

    result = frontend.load(files, legacy=legacy)
    c = result.cluster
    if not (c.namespaces or c.pods or c.policies or c.externals or getattr(c, "services", None)):
        skipped = f" ({len(result.notes)} object(s) of kinds not used skipped)" if result.notes else ""
        names = ", ".join("<stdin>" if f == "-" else f for f in files)
        raise InputError(f"{names}: no Kubernetes objects to check: the input is empty "
                         f"or only comments{skipped}")
    cluster, compiler = frontend.compile_cluster(c, legacy=legacy)
    selected = {k: compiler.selected_pods(k) for k in cluster.policies}
    warnings = list(result.warnings) + L.lint(cluster, selected, compiler.firewalls())
    return c, warnings, list(result.notes) + L.notes(cluster)


def _endpoint(loaded, name: str):
    """A trace endpoint by name (a pod, a workload's pod, a hostNetwork pod as its node...),
    with the notes its resolution made said on stderr."""
    from enforcer.load import workloads
    from enforcer.views import verdict

    name, note = workloads.resolve_name(loaded.cluster, name)
    found, host_note = workloads.host_network_endpoint(loaded.cluster, name, loaded.compiler.node_ips)
    for n in (note, host_note):
        if n:
            click.echo(f"note: {n}", err=True)
    return found or verdict.resolve(loaded.cluster, name)


def _family(value: str) -> int:
    return 6 if value == "ipv6" else 4


@cli.command(context_settings=CONTEXT)
@FILES
@LEGACY
@click.option("--ports", help="Ports to check, e.g. 80/TCP,81/UDP (default: every port the destination declares).")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json", "dot", "svg", "png"]), default="table")
@click.option("--family", type=click.Choice(["ipv4", "ipv6"]), default="ipv4")
@click.option("--out-file", type=click.Path(dir_okay=False), help="Write -o svg|png to this file (default: stdout).")
@click.option("--from", "src_glob", default="*", help="Only sources matching this pattern, e.g. 'prod/*'.")
@click.option("--to", "dst_glob", default="*", help="Only destinations matching this pattern, e.g. 'prod/db'.")
@BY
@click.option("--services", is_flag=True,
              help="Also every endpoint to every Service port (to: svc:NS/NAME; allowed when every backend allows it).")
def matrix(files, legacy_namespace_isolation, ports, fmt, family, out_file, src_glob, dst_glob, by, services) -> None:
    """The model's verdict for every ordered pair of endpoints (no root needed)."""
    import fnmatch

    from enforcer.views import verdict
    from enforcer.ir import DIRECTIONS

    loaded = load(files, legacy=legacy_namespace_isolation)
    rows = verdict.matrix(loaded.cluster, loaded.firewalls, verdict.parse_ports(ports), _family(family))
    if services:
        from enforcer.load import services as svcs

        rows += svcs.matrix_rows(loaded.cluster, loaded.firewalls, verdict.parse_ports(ports), _family(family))
    if by == "workload":
        from enforcer.load import workloads

        rows = workloads.group_rows(loaded.cluster, rows)
    # Dense clusters draw unreadable pictures: the patterns keep what a reader asks about.
    rows = [r for r in rows if fnmatch.fnmatchcase(r["from"], src_glob) and fnmatch.fnmatchcase(r["to"], dst_glob)]
    isolated = {k: {d for d in DIRECTIONS if fw.direction(d).isolated} for k, fw in loaded.firewalls.items()}
    scope = "" if (src_glob, dst_glob) == ("*", "*") else f" (from {src_glob} to {dst_glob})"
    emit_rows(rows, fmt, backend="model", out_file=out_file, isolated=isolated, title="model" + scope)


def emit_rows(rows: list[dict], fmt: str, *, backend: str, out_file: str | None = None,
              isolated: dict | None = None, title: str | None = None) -> None:
    """Print matrix/probe rows in the requested format (shared by matrix and the lab).
    Pictures go to stdout unless ``out_file`` names a file: never a file nobody asked for."""
    from enforcer.views import reachability

    if fmt == "json":
        click.echo(json.dumps({"backend": backend, "results": rows}, indent=2))
    elif fmt == "table":
        click.echo(reachability.truth_table(rows, title=backend))
    else:
        from enforcer.views import pictures

        dot = pictures.matrix_dot(rows, title=title or backend, isolated=isolated)
        if fmt == "dot":
            click.echo(dot)
        else:
            emit_picture(dot, fmt, out_file, "matrix")


@cli.command(context_settings=CONTEXT)
@FILES
@LEGACY
@click.option("--from", "src", required=True, help="Source: NAMESPACE/POD, NAMESPACE/WORKLOAD, an ExternalHost name or an IP.")
@click.option("--to", "dst", required=True,
              help="Destination: NAMESPACE/POD, NAMESPACE/WORKLOAD, svc:NAMESPACE/SERVICE, an ExternalHost name or an IP.")
@click.option("--port", "port", required=True, help="PORT/PROTOCOL, e.g. 80/TCP.")
@click.option("--family", type=click.Choice(["ipv4", "ipv6"]), default="ipv4")
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text")
@BY
def trace(files, legacy_namespace_isolation, src, dst, port, family, fmt, by) -> None:
    """Verdict for one connection and the reasons (exit 0 allowed, 1 denied)."""
    from enforcer.views import explain, verdict

    loaded = load(files, legacy=legacy_namespace_isolation)
    (p, proto), = verdict.parse_ports(port) or [(0, "")]
    from enforcer.load import services, workloads

    if by == "workload" and not dst.startswith(services.PREFIX):
        lines, doc, allowed = workloads.trace_groups(loaded.cluster, loaded.firewalls, src, dst, p, proto,
                                                     _family(family))
        click.echo(json.dumps(doc, indent=2) if fmt == "json" else "\n".join(lines))
        sys.exit(0 if allowed else 1)

    a = _endpoint(loaded, src)
    svc = services.trace(loaded.cluster, loaded.firewalls, a, dst, p, proto, _family(family))
    if svc is not None:
        lines, doc, allowed = svc
        click.echo(json.dumps(doc, indent=2) if fmt == "json" else "\n".join(lines))
        sys.exit(0 if allowed else 1)
    b = _endpoint(loaded, dst)
    v = verdict.verdict(loaded.firewalls, a, b, p, proto, _family(family))
    if fmt == "json":
        click.echo(json.dumps(explain.trace_json(v, loaded.cluster), indent=2))
    else:
        click.echo("\n".join(explain.trace_lines(loaded.cluster, v)))
    sys.exit(0 if v.allowed else 1)


@cli.command(context_settings=CONTEXT)
@FILES
@LEGACY
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table")
@BY
def explain(files, legacy_namespace_isolation, fmt, by) -> None:
    """Per policy: the pods it selects, its directions, its peers and ports in words."""
    from enforcer.views import explain as ex

    loaded = load(files, legacy=legacy_namespace_isolation)
    sel = {k: loaded.compiler.selected_pods(k) for k in loaded.cluster.policies}
    rows = ex.explain_rows(loaded.cluster, sel, legacy=legacy_namespace_isolation)
    if by == "workload":
        from enforcer.load import workloads

        for row in rows:
            row["targets"] = sorted({workloads.describe_group(loaded.cluster, workloads.group_of(loaded.cluster.pods[k]))
                                     for k in row["targets"] if k in loaded.cluster.pods})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    from enforcer.views import output

    click.echo(output.explain_table(rows))


@cli.command(context_settings=CONTEXT)
@FILES
@LEGACY
@backend_option(also={"all": "nftables and iptables side by side"})
@click.option("--pod", "pods", multiple=True,
              help="NAMESPACE/POD or NAMESPACE/WORKLOAD (repeatable; default: every pod).")
@click.option("--enforce-at", "enforce_at", type=click.Choice(["pod", "host", "both"]), default="pod",
              show_default=True, help="pod: each pod's own table; host: the node's table (a chain per "
                                      "pod); both: the two side by side, per pod.")
def render(files, legacy_namespace_isolation, backend, pods, enforce_at) -> None:
    """The exact ruleset that would be installed in each pod's namespace (or its node's)."""
    from backends import registry
    from enforcer.views import output

    loaded = load(files, legacy=legacy_namespace_isolation)
    comp = loaded.compiler
    from enforcer.load import workloads

    groups = None  # grouping 150,000 pods by workload costs seconds: only for a workload name
    keys = []
    for p in pods:  # a workload's name (NS/WORKLOAD) means each of its pods
        if p not in comp.pods and groups is None:
            groups = workloads.groups(loaded.cluster)
        members = [p] if p in comp.pods else [k for k in groups.get(p, []) if k in comp.pods]
        if not members:
            raise InputError(f"--pod {p}: no such pod or workload in the input")
        keys.extend(members)
    keys = keys or sorted(comp.pods)
    names = ["nftables", "iptables"] if backend == "all" else [backend]
    if enforce_at != "pod":
        from backends import ipt_host, nft_host

        if "fake" in names:
            raise InputError(f"--enforce-at {enforce_at}: choose nftables, iptables, iptables-legacy "
                             "or all (the fake backend has no host placement)")
        host = {n: nft_host if n == "nftables" else ipt_host for n in names}  # iptables: both flavours
        veth = {k: f"veth{i}" for i, k in enumerate(sorted(comp.pods))}  # as a node would name them
        if enforce_at == "host":
            for n in names:
                which = "" if names == ["nftables"] else f", {n}"
                click.echo(f"# node (host mode{which}, {len(keys)} pod{'s' if len(keys) != 1 else ''})\n"
                           + host[n].render_node([(comp.firewall(k), veth[k]) for k in keys]).rstrip())
            return
        pod_impls = {n: registry.get(n, check=False) for n in names}
        for key in keys:
            fw = comp.firewall(key)
            click.echo(output.render_block(key, [b for n in names for b in (
                (f"pod: {n}", pod_impls[n].render(fw)),
                (f"host: {n}", host[n].render_node([(fw, veth[key])])))]))
        return
    impls = [registry.get(n, check=False) for n in names]
    for key in keys:  # compiled on demand: --pod builds only the asked-for pods' firewalls
        texts = [(b.name, b.render(comp.firewall(key))) for b in impls]
        click.echo(output.render_block(key, texts))


def _register_commands() -> None:
    """Commands that live in their own packages. Imported unconditionally: every
    dependency they need is a required one, so an ImportError here is a bug to see, not
    a command to hide."""
    from enforcer.daemon.commands import run, status
    from enforcer.views.diff import diff
    from enforcer.lab.commands import lab, probe

    for command in (lab, probe, run, status, diff):
        cli.add_command(command)


_register_commands()


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except NetpolError as e:
        click.echo(str(e), err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SystemExit:
        raise
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # a bug: one line, not a traceback
        if os.environ.get("NETPOL_DEBUG"):
            raise
        click.echo(f"internal error: {type(e).__name__}: {e} (set NETPOL_DEBUG=1 for details)", err=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
