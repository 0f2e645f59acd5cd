"""``netpol lab exec``: run a test author's own program inside a pod's network namespace.

The program sees exactly what the lab's own servers and probes see: the pod's eth0 and
addresses, its firewall on the way in and out, the Services' DNAT. Only the network
namespace is entered (nsenter --net): the program keeps the caller's filesystem, user and
environment, so a test can run its own server or client from its checkout.

The lab's lock is held only to look the pod up, not while the program runs: a server
started with ``lab.popen`` must not block ``lab apply`` or ``lab probe``.
"""
from __future__ import annotations

import subprocess
from typing import Callable, Sequence, TypeVar

from enforcer import netns
from enforcer.errors import LabError
from enforcer.lab import state

T = TypeVar("T")


def netns_of(lab: str, endpoint: str) -> str:
    """The namespace of pod ``NS/POD`` (or external host ``NAME``) in lab ``lab``."""
    with state.locked(lab):
        st = state.load(lab)
    ep = st.endpoints.get(endpoint)
    if ep is None:
        known = sorted(st.endpoints)
        hint = f" (it has: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''})" if known else ""
        raise LabError(f"lab {lab} has no pod or external host {endpoint}{hint}")
    return ep.netns


def argv_in(lab: str, endpoint: str, argv: Sequence[str]) -> list[str]:
    if not argv:
        raise LabError("lab exec: no command given (netpol lab exec --name LAB NS/POD -- CMD ...)")
    return ["nsenter", f"--net={netns.path(netns_of(lab, endpoint))}", "--", *argv]


def run(lab: str, endpoint: str, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``argv`` in the endpoint's namespace and wait (``subprocess.run`` keywords)."""
    return _start(subprocess.run, lab, endpoint, argv, kwargs)


def popen(lab: str, endpoint: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
    """Start ``argv`` in the endpoint's namespace (``subprocess.Popen`` keywords)."""
    return _start(subprocess.Popen, lab, endpoint, argv, kwargs)


def _start(how: Callable[..., T], lab: str, endpoint: str, argv: Sequence[str], kwargs: dict) -> T:
    full = argv_in(lab, endpoint, argv)
    try:
        return how(full, **kwargs)
    except FileNotFoundError as e:  # nsenter, or the program itself
        raise LabError(f"lab exec: cannot run {argv[0]}: {e}") from e


# ---- the command line ------------------------------------------------------------------------

import click  # noqa: E402  (the command below; the functions above need no click)

from enforcer.cliutil import CONTEXT  # noqa: E402


@click.command("exec", context_settings={**CONTEXT, "ignore_unknown_options": True,
                                         "allow_interspersed_args": False})
@click.option("--name", required=True, help="The lab's name.")
@click.argument("endpoint", metavar="NS/POD")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD [ARG]...")
def exec_cmd(name, endpoint, argv) -> None:
    """Run CMD inside a pod's network namespace (or an external host's); its exit code is ours.

    Only the network namespace changes: CMD runs with this shell's files, user and
    environment. Example: netpol lab exec --name demo shop/store-0 -- python3 -m http.server 5432
    """
    import os
    import sys

    if os.geteuid() != 0:
        raise LabError("the lab needs root (it enters network namespaces); run it with sudo")
    argv = list(argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    rc = run(name, endpoint, argv).returncode
    sys.exit(128 - rc if rc < 0 else rc)  # killed by a signal: the shell's convention
