"""``netpol run`` and ``netpol status`` (registered by enforcer.cli)."""
from __future__ import annotations

import json
import os
import sys

import click

from enforcer.cliutil import CONTEXT, backend_option

from enforcer.daemon import status as statusfile
from enforcer.errors import NetpolError


def _positive(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter("must be > 0")
    return value


@click.command(context_settings=CONTEXT)
@click.option("--watch", "watch", multiple=True, type=click.Path(file_okay=False),
              help="Directory of manifests (namespaces, pods with status.podIP(s), policies); repeatable. "
                   "Without --watch the daemon reads the Kubernetes API (--kubeconfig, or in-cluster).")
@click.option("--kubeconfig", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="Read Namespaces, Pods and NetworkPolicies from this cluster's API server "
                   "(default in a pod: its service account, when KUBERNETES_SERVICE_HOST is set).")
@click.option("--node", default=None, envvar="NODE_NAME", metavar="NAME",
              help="With the API: this node's name; local pods are those with spec.nodeName == NAME "
                   "(default: $NODE_NAME).")
@backend_option()
@click.option("--metrics-addr", default=None, metavar="HOST:PORT",
              help="Serve Prometheus /metrics and /healthz here, e.g. 127.0.0.1:9617.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--min-interval", type=float, default=0.05, show_default=True, callback=_positive,
              help="Seconds between two syncs at least (bursts of changes become one sync).")
@click.option("--resync", type=float, default=60.0, show_default=True, callback=_positive,
              help="Seconds between full resyncs (re-scan files and namespaces) whatever happens.")
@click.option("--repair-interval", type=float, default=10.0, show_default=True, callback=_positive,
              help="Seconds between read-backs of every managed table (drift repair).")
@click.option("--cleanup-on-exit", is_flag=True,
              help="Remove our rules when stopped by SIGTERM/SIGINT (default: leave them in force).")
@click.option("--conntrack-strict", is_flag=True,
              help="After a change, delete conntrack entries the new policy no longer allows.")
@click.option("--state-file", default=statusfile.DEFAULT_STATE_FILE, show_default=True,
              help="Where the daemon writes its state for `netpol status`.")
@click.option("--netns-prefix", default="", metavar="PREFIX",
              help="Only look at network namespaces whose name starts with PREFIX.")
@click.option("--node-ip", "node_ips", multiple=True, metavar="IP",
              help="Address of this node on the pod network, always allowed (repeatable; "
                   "default: the lab's gateways 10.244.0.1 and fd00:10:244::1).")
@click.option("--settle", type=float, default=1.0, show_default=True, callback=_positive,
              help="Seconds to wait for a file modified without an open we saw (a file held "
                   "open by its writer is read when it is closed, however long).")
@click.option("--apply-workers", type=click.IntRange(1, 32), default=1, show_default=True,
              help="Namespaces applied in parallel when several change at once (iptables "
                   "backends; nftables always applies one at a time: libnftables is not thread-safe).")
@click.option("--legacy-namespace-isolation", is_flag=True,
              help="Honour the pre-v1 namespace annotation net.beta.kubernetes.io/network-policy.")
@click.option("--enforce-at", "enforce_at", type=click.Choice(["pod", "host"]), default="pod", show_default=True,
              help="Where the rules go: inside each pod's namespace (pod), or a chain per pod in the "
                   "node's namespace, on the host side of its veth, out of the pod's reach (host; "
                   "needs --node-netns). Restarting with the other value removes the old place's rules.")
@click.option("--node-netns", default=None, metavar="NAME",
              help="The node's network namespace, where the pods' host-side veths are (a name under "
                   "/run/netns, or a path such as /proc/1/ns/net). Host mode puts its table there; "
                   "pod mode removes a host-mode table left there.")
def run(watch, kubeconfig, node, backend, metrics_addr, log_format, log_level, min_interval, resync, repair_interval,
        cleanup_on_exit, conntrack_strict, state_file, netns_prefix, node_ips, settle, apply_workers,
        legacy_namespace_isolation, enforce_at, node_netns) -> None:
    """The daemon: watch manifest directories (--watch) or a Kubernetes API server
    (--kubeconfig, or in-cluster) and keep every local pod's namespace enforcing its
    policies (fail-static on start and stop, fail-closed for new pods)."""
    import ipaddress

    from enforcer.daemon import logs
    from enforcer.daemon.notify import Notifier
    from enforcer.daemon.service import DEFAULT_NODE_IPS, Daemon, Options

    for ip in node_ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise click.BadParameter(f"{ip!r} is not an IP address", param_hint="--node-ip") from None
    api = not watch
    if watch and kubeconfig:
        raise click.UsageError("--watch and --kubeconfig are two sources: give one")
    if api and not kubeconfig and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise click.UsageError("give --watch DIR (manifest files) or --kubeconfig FILE (an API server; "
                               "in a pod, KUBERNETES_SERVICE_HOST selects the in-cluster configuration)")
    if api and not node:
        raise click.UsageError("--node NAME (or $NODE_NAME) is required with the API source")
    if enforce_at == "host" and not node_netns:
        raise click.UsageError("--enforce-at host needs --node-netns NAME (the node's namespace, "
                               "where the pods' host-side veths are)")
    log = logs.setup(log_format, log_level)
    import faulthandler
    import signal

    # kill -USR2 <pid>: every thread's stack on stderr (the journal), for a daemon that looks stuck.
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    opts = Options(watch=list(watch), backend=backend, metrics_addr=metrics_addr, log_format=log_format,
                   min_interval=min_interval, resync=resync, repair_interval=repair_interval,
                   cleanup_on_exit=cleanup_on_exit, conntrack_strict=conntrack_strict,
                   state_file=state_file or None, netns_prefix=netns_prefix,
                   node_ips=tuple(node_ips) or DEFAULT_NODE_IPS, settle=settle,
                   legacy_namespace_isolation=legacy_namespace_isolation, apply_workers=apply_workers,
                   enforce_at=enforce_at, node_netns=node_netns)
    try:
        impl, point = _enforce_point(opts, log)
        source = None
        if api:
            from enforcer.daemon.kube import api_source

            source = api_source(kubeconfig, node, state_file=opts.state_file, log=log,
                                legacy_namespace_isolation=legacy_namespace_isolation)
        daemon = Daemon(opts, backend=impl, log=log, notifier=Notifier(), source=source, enforce_point=point)
        code = daemon.serve()
    except NetpolError as e:
        log.error("cannot start", error=str(e))
        raise
    sys.exit(code)


def _enforce_point(opts, log):
    """(the reconciler's backend, the EnforcePoint) for ``opts.enforce_at``. A backend
    without host mode refuses here, before anything is started or changed."""
    from backends import registry
    from enforcer.daemon.enforcepoint import EnforcePoint
    from enforcer.daemon.hostside import NodeSide, host_backend

    pod_backend = registry.get(opts.backend)
    if opts.enforce_at == "host":
        from enforcer import netns as nsmod

        if not nsmod.exists(opts.node_netns):
            raise NetpolError(f"--node-netns {opts.node_netns}: no such network namespace "
                              f"(a name under {nsmod.RUN_DIR}, or a path to a namespace file)")
        node = NodeSide(opts.node_netns)
        host = host_backend(opts.backend, node)
        host.check()
        return host, EnforcePoint("host", pod_backend=pod_backend, log=log, node=node)
    # Pod mode: a host-mode table a previous run left on the node goes (after the first sync).
    old = [(opts.node_netns, opts.backend)] if opts.node_netns else []
    if opts.state_file:
        try:
            before = statusfile.read(opts.state_file)
        except NetpolError:
            before = {}
        if before.get("enforce_at") == "host" and isinstance(before.get("node_netns"), str):
            old.append((before["node_netns"], str(before.get("backend") or opts.backend)))
    return pod_backend, EnforcePoint("pod", pod_backend=pod_backend, log=log, old_nodes=tuple(old))


@click.command(context_settings=CONTEXT)
@click.option("--state-file", default=statusfile.DEFAULT_STATE_FILE, show_default=True,
              help="The state file the daemon writes (its --state-file).")
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def status(state_file, fmt) -> None:
    """What the daemon enforces: isolated pods and their policies, the last sync, errors in
    force. Exit 0 if it runs without errors, 1 if it is not running or has errors."""
    data = statusfile.read(state_file)
    if fmt == "json":
        data = dict(data, running=statusfile.running(data))
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(statusfile.render(data))
    errors = data.get("input_errors") or data.get("apply_errors") or data.get("conflicts")
    sys.exit(0 if statusfile.running(data) and not errors else 1)
