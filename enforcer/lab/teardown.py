"""Finding labs and taking them down: ``down``, ``list``, stale labs and leftovers.

    down    stop the server, remove every namespace the lab made (its state and its
            journal; with force also any namespace carrying its prefix), forget the
            state. Works on half-built labs. Without state nothing is removed unless forced.

A namespace is the lab's only if its name carries the lab's prefix (naming.carries), and a
name another lab journaled is that lab's, however the prefixes overlap.
"""
from __future__ import annotations

import os

from enforcer import netns
from enforcer.errors import LabError, NetnsError
from enforcer.lab import endpoints, naming, serverctl, state


def prefixed(name: str) -> list[str]:
    """Namespaces of lab ``name`` found by their prefix. Lab ``a``'s pod ``b/p`` and lab
    ``a-b``'s namespaces share a prefix: a name another lab journaled is that lab's, and
    otherwise the lab with the longest matching name owns it."""
    labs = set(state.names()) | {name}
    found = [n for n in netns.list_names(naming.node_netns(name)) if naming.owned_by(name, n, labs)]
    if not found:
        return []
    foreign: set[str] = set()
    for other in labs - {name}:
        if naming.carries(name, naming.node_netns(other)) or naming.carries(other, naming.node_netns(name)):
            foreign.update(state.journaled(other))
    return [n for n in found if n not in foreign]


def remove_all(name: str, scan: bool = False) -> int:
    """Remove what the lab's state and journal name (and, with ``scan``, every namespace
    carrying its prefix: ``lab down --force``)."""
    st = None
    try:
        st = state.load(name)
    except LabError:
        pass
    serverctl.stop(name, [st.server_pid] if st else [])
    from enforcer.lab import apilab

    apilab.kill_processes(name, st.api if st else None)  # agents, API server, etcd
    names = set(state.journaled(name)) | (set(prefixed(name)) if scan else set())
    backend = None
    if st is not None:
        names |= {e.netns for e in st.endpoints.values()} | {st.node_netns}
        try:
            from backends import registry

            backend = registry.get(st.backend, check=False)
        except Exception:
            backend = None
    node = naming.node_netns(name)
    errors = []
    for n in sorted(names, key=lambda x: (x == node, x)):  # the node last
        try:
            endpoints.remove_netns(name, n, backend)
        except NetnsError as e:
            errors.append(str(e))
    state.forget(name)
    if errors:
        raise LabError(f"lab {name}: {len(errors)} namespace(s) could not be removed: {errors[0]}")
    return len(names)


def orphans(name: str) -> list[str]:
    """What carries lab ``name``'s marks although the lab has no state: namespaces with
    its prefix and server processes naming its configuration."""
    return prefixed(name) + [f"server pid {p}" for p in serverctl.find(name)]


def down(name: str, *, force: bool = False) -> bool:
    """Remove lab ``name`` entirely; False when there was nothing to remove.

    Without the lab's state nothing says that namespaces merely carrying its prefix were
    made by it (someone may have made ``netpol-NAME-mine`` by hand): they are listed in
    the error and removed only with ``force``.
    """
    naming.check_lab_name(name)
    if not state.exists(name):
        found = orphans(name)
        if not found:
            return False
        if not force:
            shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
            raise LabError(f"no lab named {name}, but {len(found)} thing(s) carry its name: {shown}; "
                           f"nothing removed (they may not be a lab's). Remove them with: "
                           f"netpol lab down --name {name} --force")
        remove_all(name, scan=True)
        return True
    with state.locked(name):
        remove_all(name, scan=force)
    return True


def mine(name: str) -> bool:
    """Whether lab ``name`` exists and is owned by this process (``up(owned=True)``)."""
    doc = state.owner(name) if state.exists(name) else None
    return bool(doc) and doc.get("pid") == os.getpid() and state.owner_alive(doc)


def stale_labs() -> list[str]:
    """Labs whose owner process is gone (see state.staleness)."""
    return [n for n in state.names() if state.staleness(n)["stale"]]


def down_stale() -> list[str]:
    """Remove every stale lab; the names removed."""
    gone = []
    for n in stale_labs():
        try:
            if down(n):
                gone.append(n)
        except LabError:
            if state.exists(n):
                raise
    return gone


def list_labs() -> list[dict]:
    out = []
    for n in state.names():
        item = {"name": n, **state.staleness(n)}
        try:
            st = state.load(n)
        except LabError as e:
            item.update({"phase": "broken", "problem": str(e)})
            out.append(item)
            continue
        item.update({
            "backend": st.backend, "phase": st.phase,
            "pods": sum(1 for e in st.endpoints.values() if e.kind == "pod"),
            "externals": sum(1 for e in st.endpoints.values() if e.kind == "external"),
            "policies": len(st.cluster.policies),
            "server": "running" if serverctl.is_ours(st.server_pid, n) else "stopped",
            "node_netns": st.node_netns, "cidrs": list(st.cidrs),
        })
        if st.nodes or st.api is not None:
            from enforcer.lab import apilab

            item.update(apilab.describe(st))
        out.append(item)
    return out
