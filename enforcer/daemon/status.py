"""The daemon's state file (``--state-file``, default /run/netpol-enforcer/daemon.json) and
``netpol status``, which reads it.

The daemon rewrites the file atomically (temporary file + rename) after every sync and
repair, so a reader never sees half of it. It says which local pods are isolated by which
policies, when the last sync ran and how it ended, and every error in force (input
problems, failed applies, ambiguous namespaces).
"""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import time
from typing import Any

from enforcer.errors import NetpolError

DEFAULT_STATE_FILE = "/run/netpol-enforcer/daemon.json"
VERSION = 1


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def safe_dir(directory: str, *, private: bool) -> None:
    """Make sure the daemon (root) can write in ``directory`` without another user
    steering it: a real directory (not a symlink), owned by root or the daemon's user,
    not writable by others (``private``: mode 0700), or else a sticky shared one such as
    /tmp (mkstemp + rename never follow a planted link there). Created 0700 if missing.
    Raises OSError saying what is wrong."""
    try:
        os.makedirs(directory, mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ENOTDIR, f"{directory} is not a directory (a symbolic link?)")
    if st.st_uid not in (0, os.geteuid()):
        raise OSError(errno.EPERM, f"{directory} is owned by uid {st.st_uid}, not root or the daemon's user")
    if private:
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(directory, 0o700)
    elif st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise OSError(errno.EPERM, f"{directory} is writable by other users (and not sticky)")


def write_atomic(path: str, text: str, *, prefix: str = ".tmp-", suffix: str = "") -> None:
    """Write ``text`` to ``path`` atomically, mode 0600: a temporary file beside it made
    exclusively (mkstemp: no name to plant a link at), then renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write(path: str, data: dict[str, Any]) -> None:
    """Atomically, mode 0600 (write_atomic), in a directory safe_dir accepts."""
    safe_dir(os.path.dirname(os.path.abspath(path)), private=False)
    write_atomic(path, json.dumps(data, separators=(",", ":")) + "\n", prefix=".daemon-", suffix=".json")


def read(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise NetpolError(f"no daemon state at {path}: is `netpol run` running "
                          "(or started with another --state-file)?") from None
    except (OSError, ValueError) as e:
        raise NetpolError(f"cannot read the daemon state {path}: {e}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise NetpolError(f"{path}: not a netpol daemon state file (version {VERSION})")
    return data


def alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(data: dict[str, Any]) -> bool:
    return data.get("phase") in ("starting", "running") and alive(data.get("pid"))


def api_line(src: dict[str, Any]) -> str:
    """The API source's line: where, which node, and whether the state is current."""
    kinds = src.get("kinds") or {}
    if src.get("reachable") is False:
        how = f"UNREACHABLE since {src.get('unreachable_since')} (fail-static: the last good state stays enforced)"
    elif src.get("from_snapshot"):
        how = f"not answered yet: enforcing the snapshot of {src.get('from_snapshot')}"
    elif not all(k.get("listed") for k in kinds.values()):
        how = "waiting for the first complete list"
    else:
        how = "in sync"
    errors = [f"{kind}: {k['error']}" for kind, k in sorted(kinds.items()) if k.get("error")]
    errors += [f"{kind}: none ({k['absent']})" for kind, k in sorted(kinds.items()) if k.get("absent")]
    relists = sum(k.get("relists", 0) for k in kinds.values())
    text = f"source: API server {src.get('server')} (node {src.get('node')}): {how}; relists: {relists}"
    return text + "".join(f"\n  {e}" for e in errors)


def render(data: dict[str, Any]) -> str:
    """The text of ``netpol status``."""
    lines = []
    state = "running" if running(data) else f"not running (state {data.get('phase')})"
    lines.append(f"netpol daemon: {state}, pid {data.get('pid')}, backend {data.get('backend')}, "
                 f"started {data.get('started')}")
    if data.get("enforce_at") == "host":
        lines.append(f"enforced at: host (each pod's chains in node namespace {data.get('node_netns')})")
    src = data.get("source") or {}
    if src.get("type") == "api":
        lines.append(api_line(src))
    ls = data.get("last_sync") or {}
    if ls:
        how = "ok" if ls.get("ok") else f"FAILED: {ls.get('error')}"
        lines.append(f"last sync: {ls.get('at')} ({ls.get('kind')}, {ls.get('ms')} ms): {how}")
    c = data.get("counts", {})
    n = c.get("cluster_policies", 0)
    cnps = f"{n} ClusterNetworkPolic{'y' if n == 1 else 'ies'}, " if n else ""
    lines.append(f"cluster: {c.get('pods', 0)} pods, {c.get('policies', 0)} policies, {cnps}"
                 f"{c.get('namespaces', 0)} namespaces; on this node: {c.get('local_pods', 0)} pods "
                 f"enforced in {c.get('managed', 0)} network namespaces")
    t = data.get("totals", {})
    lines.append(f"drift repairs: {t.get('drift_repairs', 0)}, apply errors: {t.get('apply_errors', 0)}, "
                 f"syncs: {t.get('syncs', 0)}")
    errors = data.get("input_errors", []) + [f"{e['netns']} ({e['pod']}): {e['message']} "
                                             f"(failed {e['count']}x, retrying)" for e in data.get("apply_errors", [])]
    errors += data.get("conflicts", [])
    bad = data.get("not_enforced") or []
    if bad:
        lines.append(f"NOT ENFORCED: {len(bad)} pod(s) whose rules are not in force: "
                     + ", ".join(f"{b['pod']} ({b['netns']})" for b in bad))
    if errors:
        lines.append(f"errors in force: {len(errors)}")
        lines += [f"  {e}" for e in errors]
    else:
        lines.append("errors in force: none")
    pods = data.get("pods", [])
    if pods:
        rows = [("POD", "NETNS", "STATE", "INGRESS ISOLATED BY", "EGRESS ISOLATED BY")]
        for p in pods:
            rows.append((p["pod"], p["netns"], p.get("state", ""),
                         ",".join(p.get("ingress") or []) or "-", ",".join(p.get("egress") or []) or "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.append("")
        for r in rows:
            lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return "\n".join(lines)
