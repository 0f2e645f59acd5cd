"""The compiler as the daemon feeds it: one sync's changes as one batch.

``Compiler.set_policy`` and friends rebuild every pod a change touches at once. Fed a
burst one object at a time, N policies that select one pod rebuild that pod N times, each
time with all its policies so far: quadratic (10,000 policies in one file took 860 s in
the daemon; the one-shot CLI compile of the same input takes about a second). Inside a
batch the rebuilds are only collected, and each touched pod is rebuilt once at the end.

The batch also checks, between objects, whether the daemon is stopping: a burst of
thousands of objects must not make it deaf to SIGTERM.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from enforcer.compiler.compile import Compiler
from enforcer.daemon.sources import KIND_ORDER, ObjKey


class Interrupted(Exception):
    """The daemon is stopping: the sync was abandoned between two objects (nothing half
    done reaches the kernel: compiling is pure)."""


class BatchCompiler(Compiler):
    """A Compiler whose rebuilds can be deferred to the end of a batch."""

    _deferred: set[str] | None = None

    def _rebuild(self, pods: Iterable[str]) -> set[str]:
        if self._deferred is not None:
            self._deferred.update(pods)
            return set()
        return super()._rebuild(pods)

    def feed(self, changes: dict[ObjKey, Any], stopping: Callable[[], bool] = lambda: False
             ) -> tuple[set[str], set[str]]:
        """Changed objects -> compiler calls, in the compiler's own order (namespaces, then
        policy removals, pod removals, pods, policies), rebuilding each touched pod once.
        Returns (pods whose firewall changed or that went away, addresses of pods that went
        away). Raises Interrupted if ``stopping()`` turns true on the way."""
        affected: set[str] = set()
        gone: set[str] = set()
        items = sorted(changes.items(), key=lambda kv: (KIND_ORDER.get(kv[0][0], 9), kv[0][1]))
        self._deferred = set()
        try:
            for n, ((kind, key), obj) in enumerate(self._ordered(items)):
                if n % 256 == 255 and stopping():
                    raise Interrupted()
                if kind == "Namespace":
                    affected |= self.remove_namespace(key) if obj is None else self.set_namespace(obj)
                elif kind == "NetworkPolicy":
                    affected |= self.remove_policy(key) if obj is None else self.set_policy(obj)
                elif kind == "ClusterNetworkPolicy":
                    affected |= self.remove_cnp(key) if obj is None else self.set_cnp(obj)
                elif kind == "Pod":
                    old = self.pods.get(key)
                    if obj is None:
                        if old is not None:
                            gone.update(old.ips)
                        affected |= self.remove_pod(key)  # the removed pod itself
                    else:
                        if old is not None and old.ips != obj.ips:
                            gone.update(set(old.ips) - set(obj.ips))
                        affected |= self.set_pod(obj)
            pods, self._deferred = self._deferred, None
        finally:
            self._deferred = None
        return affected | self._rebuild(pods), gone

    @staticmethod
    def _ordered(items):
        for (kind, key), obj in items:
            if kind == "Namespace":
                yield (kind, key), obj
        for (kind, key), obj in items:
            if kind == "NetworkPolicy" and obj is None:
                yield (kind, key), obj
        for (kind, key), obj in items:
            if kind == "Pod" and obj is None:
                yield (kind, key), obj
        for (kind, key), obj in items:
            if kind == "Pod" and obj is not None:
                yield (kind, key), obj
        for (kind, key), obj in items:
            if kind == "NetworkPolicy" and obj is not None:
                yield (kind, key), obj
        for (kind, key), obj in items:  # rebuilds every pod: last, deferred like the rest
            if kind == "ClusterNetworkPolicy":
                yield (kind, key), obj
