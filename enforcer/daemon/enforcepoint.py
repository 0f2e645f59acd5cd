"""Where the daemon enforces (``--enforce-at pod|host``) and what a switch between the two
leaves behind: nothing.

Pod mode: the reconciler's backend writes one table inside each pod's namespace. Host
mode: the backend is the host placement of the same backend (hostside.host_backend), and
every pod's chains go into the node's table (``--node-netns``), one transaction per node.

What this module adds around the reconciler, after each converge:

* host mode, a pod namespace seen for the first time: the pod-mode table inside it (a
  daemon that ran in pod mode before) is removed, *after* its host chains are in force;
* host mode, a managed namespace that vanished: its chains and map entries leave the
  node's table (in pod mode they went with the namespace; on the node they would stay,
  and a new pod given the same address would find them). A namespace released while it
  still exists keeps its chains (fail-static, as in pod mode) until it goes;
* pod mode, once the first converge is done: the node's host tables are removed (a daemon
  that ran in host mode before), from ``--node-netns`` and from the node namespace the
  previous run wrote in the state file.

Each removal is logged; a failed one is logged and retried at the next sync (never
stops one).
"""
from __future__ import annotations

from typing import Callable

from enforcer import netns as nsmod
from enforcer.daemon.hostside import NodeSide, host_backend
from enforcer.daemon.reconcile import Outcome

PLACES = ("pod", "host")


class EnforcePoint:
    def __init__(self, where: str, *, pod_backend, log, node: NodeSide | None = None,
                 old_nodes: tuple[tuple[str, str], ...] = (), host_backend_for: Callable = host_backend,
                 inode: Callable[[str], int | None] = nsmod.inode) -> None:
        self.where = where
        self.pod_backend = pod_backend  # pod mode's backend: the one that removes pod tables
        self.node = node
        self.log = log
        self._host_backend_for = host_backend_for
        self._inode = inode
        self._pod_cleared: dict[str, int] = {}  # host mode: pod netns -> inode cleared of pod tables
        self._lingering: dict[str, int | None] = {}  # host mode: released netns -> inode
        # pod mode: (node netns, backend name) whose host tables are to be removed once
        self._old_nodes = [n for n in dict.fromkeys(old_nodes) if n[0]]
        self.host = None  # host mode: the reconciler's backend (set by the daemon)

    def generation(self, reader):
        """The nf_tables generation the drift repair compares: the pod's namespace in pod
        mode, the node's in host mode (a pod flushing its own namespace changes nothing
        of ours there)."""
        if self.where != "host" or reader is None:
            return reader
        return _NodeGeneration(reader, self.node.node)

    def before_sync(self) -> None:
        if self.node is not None:
            self.node.invalidate()

    def placed(self, local: dict[str, str]) -> None:
        if self.node is not None:
            self.node.place(local)

    def after_converge(self, out: Outcome, managed) -> None:
        if self.where == "host":
            self._clear_pod_tables(managed)
            self._clear_gone(out, managed)
        elif self._old_nodes:
            self._clear_host_tables()

    def remove_all(self, reconciler) -> dict[str, str]:
        """--cleanup-on-exit: every rule of ours goes (netns -> error for what could not).
        Host mode: the node's tables are the daemon's alone, so both go whole (one
        transaction, instead of a listing of the node's table per pod)."""
        if self.where != "host":
            return reconciler.remove_all()
        managed = list(reconciler.managed)
        try:
            self.host.remove_node(self.node.node)
        except Exception as e:
            return {ns: str(e) for ns in managed} or {self.node.node: str(e)}
        reconciler.managed.clear()
        return {}

    # -- host mode

    def _clear_pod_tables(self, managed) -> None:
        for ns, m in managed.items():
            if self._pod_cleared.get(ns) == m.inode:
                continue
            try:
                self.pod_backend.remove(ns)
            except Exception as e:
                self.log.warning("pod-mode rules not removed", netns=ns, pod=m.pod, error=str(e),
                                 reason="host mode enforces on the node; retried at the next sync")
                continue
            self._pod_cleared[ns] = m.inode

    def _clear_gone(self, out: Outcome, managed) -> None:
        for ns in out.released:
            self._lingering[ns] = self._inode(ns)
        for ns in out.vanished:
            self._lingering[ns] = None
        held_by = {m.pod: ns for ns, m in managed.items()}
        for ns, ino in list(self._lingering.items()):
            if ns in managed:  # managed again (re-created, or the pod came back)
                del self._lingering[ns]
                continue
            if ino is not None and self._inode(ns) == ino:
                continue  # released, still there: its chains stay (fail-static)
            pod = self.node.pod_of(ns) if self.node else None
            if pod is not None and pod in held_by:
                # The pod lives on in another namespace: its chains are its new namespace's.
                del self._lingering[ns]
                self.node.forget(ns)
                self._pod_cleared.pop(ns, None)
                continue
            try:
                self.host.remove(ns)
            except Exception as e:
                self.log.warning("host chains not removed", netns=ns, pod=pod or "", error=str(e),
                                 reason="retried at the next sync")
                continue
            del self._lingering[ns]
            self._pod_cleared.pop(ns, None)
            if self.node is not None:
                self.node.forget(ns)
            self.log.info("host chains removed", netns=ns, pod=pod or "", node_netns=self.node.node,
                          reason="the pod's namespace is gone")

    # -- pod mode

    def _clear_host_tables(self) -> None:
        from enforcer.errors import BackendUnavailable

        left = []
        for node, backend in self._old_nodes:
            if not nsmod.exists(node):
                continue
            try:
                host = self._host_backend_for(backend, NodeSide(node))
                host.remove_node(node)
            except BackendUnavailable:
                continue  # that backend has no host mode: nothing of it can be there
            except Exception as e:
                self.log.warning("host-mode rules not removed", node_netns=node, error=str(e),
                                 reason="retried at the next sync")
                left.append((node, backend))
                continue
            self.log.info("host-mode rules removed", node_netns=node, backend=backend,
                          reason="this daemon enforces in the pods (--enforce-at pod)")
        self._old_nodes = left


class _NodeGeneration:
    def __init__(self, reader, node: str) -> None:
        self.reader = reader
        self.node = node

    def __call__(self, _netns: str) -> int | None:
        return self.reader(self.node)

    def close(self) -> None:
        close = getattr(self.reader, "close", None)
        if close is not None:
            close()
