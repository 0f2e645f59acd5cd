"""Where the desired state comes from: manifest files in watched directories.

Two parts:

``ManifestStore`` (pure, no threads, no clock) holds, per file, the objects it contributes
and merges the files into one view, keyed by (kind, key). Bad input never costs
enforcement (DESIGN "Daemon behaviour"):

* an object that is invalid now keeps its last good version in force (and its problems
  are reported); an invalid object that never had a good version is not loaded;
* a file with any error never *removes* an object: a half-written or truncated file may
  simply not show the objects that follow the damage, so objects it no longer shows are
  kept until the file is whole again;
* a document whose kind is a cut-off kind we read ("kind: Netw") marks the file as damaged;
* an empty file that had objects is treated as being written, not as "delete everything"
  (delete the file to remove its objects); an unreadable file keeps its objects too;
* a deleted file removes its objects; a watched directory that disappears or cannot be
  read removes nothing;
* the same object in two files: the first file in path order wins (as ``netpol validate``
  and friends load), the other is reported.

Every update returns the objects whose version in force changed, so the compiler is fed
incremental changes, and the problems in force can be diffed to log each exactly once.

``DirSource`` watches the directories (inotify, through watchdog) and decides *when* a file
is read: after it is closed or moved into place, not while it is written. A modified file
that someone holds open (IN_OPEN without its IN_CLOSE yet) waits for the close, however
long; a modification without a visible open waits ``settle`` seconds. A periodic ``scan``
compares every file's stat signature as a safety net for lost events (never reading a
file that is still held or settling). Only regular files owned by root or the daemon's
user are read, never through a symlink leading out of the watched directories.
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from enforcer.load import manifests
from enforcer.daemon.files import (LastGood, is_manifest, list_dir, read_text, signature,  # noqa: F401
                                   tame, text_digest)
from enforcer.errors import Problem
from enforcer.model import Cluster

ObjKey = tuple[str, str]  # (kind, key): ("NetworkPolicy", "prod/db"), ("Namespace", "prod")

KEPT = "last good version stays in force"
NOT_LOADED = "not loaded"
FILE_KEPT = "objects of this file stay in force"

HELD = float("inf")  # "ready at" of a file its writer still holds open: at its close

KIND_ORDER = {"Namespace": 0, "Pod": 1, "NetworkPolicy": 2, "ExternalHost": 3, "ClusterNetworkPolicy": 4}


@dataclass(frozen=True)
class Issue:
    """A problem in force and what it costs: the object's last good version stays,
    the object is not loaded, or the file's objects are all kept."""

    problem: Problem
    consequence: str

    def __str__(self) -> str:
        return f"{self.problem} ({self.consequence})"


@dataclass
class FileEntry:
    path: str
    sig: tuple | None = None
    objects: dict[ObjKey, object] = field(default_factory=dict)  # in force from this file
    origin: dict[ObjKey, str] = field(default_factory=dict)  # digest of the text each came from
    issues: list[Issue] = field(default_factory=list)


def describe(key: ObjKey) -> str:
    return f"{key[0]} {key[1]}"


class ManifestStore:
    def __init__(self, *, legacy_namespace_isolation: bool = False, memory: "LastGood | None" = None) -> None:
        self.legacy = legacy_namespace_isolation
        self.memory = memory
        self.files: dict[str, FileEntry] = {}
        self.owners: dict[ObjKey, set[str]] = {}  # which files hold each object
        self.view: dict[ObjKey, object] = {}  # the object in force per key
        self.counts: dict[str, int] = {}  # kind -> objects in force
        self._dups: set[ObjKey] = set()  # objects defined in more than one file
        self.dir_issues: dict[str, Issue] = {}  # watched directory -> problem reading it

    # ------------------------------------------------------------------ updates

    def put_text(self, path: str, text: str, sig: tuple | None = None) -> dict[ObjKey, object | None]:
        """The new content of ``path``; returns {key: object in force now, or None if gone}."""
        first_read = path not in self.files
        entry = self.files.get(path) or FileEntry(path)
        old = dict(entry.objects)
        old_origin = dict(entry.origin)
        decoded, file_problems, notes = manifests.decode_text(
            text, path, legacy_namespace_isolation=self.legacy)
        digest = text_digest(text)
        if first_read and self.memory is not None and _has_errors(decoded, file_problems, notes):
            # Damaged at start-up: what an earlier run of the daemon had in force from
            # this file is the last good version.
            old, old_origin = self.memory.recall(path, self.legacy)
        objects: dict[ObjKey, object] = {}
        issues: list[Issue] = []
        broken = any(not p.warning for p in file_problems)
        file_problems = [tame(p) for p in file_problems]
        for note in notes:
            kind = truncated_kind(note)
            if kind is not None:
                # "kind: Netw" is a kind we skip, but it is also what a file cut in the
                # middle of "kind: NetworkPolicy" looks like.
                broken = True
                issues.append(Issue(Problem(path, "", "kind", f"{kind!r} looks like a cut-off kind "
                                            "(the file may be half-written)"), FILE_KEPT))
        for p in file_problems:
            issues.append(Issue(p, FILE_KEPT if not p.warning else "warning"))
        for d in decoded:
            key = (d.kind, d.key)
            errors = [tame(p) for p in d.problems if not p.warning]
            warnings = [tame(p) for p in d.problems if p.warning]
            issues.extend(Issue(p, "warning") for p in warnings)
            if d.obj is not None and not errors:
                if key not in objects:  # a duplicate inside the file: the first wins
                    objects[key] = d.obj
                continue
            broken = True
            if d.key and key in old and key not in objects:
                objects[key] = old[key]
                issues.extend(Issue(p, KEPT) for p in errors)
            else:
                consequence = NOT_LOADED if d.key else FILE_KEPT
                issues.extend(Issue(p, consequence) for p in errors)
        if not text.strip() and old:
            broken = True
            issues.append(Issue(Problem(path, "", "", f"file is empty; treated as being written, "
                                        f"its {len(old)} object(s) stay in force (delete the file "
                                        "to remove them)"), FILE_KEPT))
        if broken:
            # Objects this file no longer shows may sit behind the damage: keep them.
            for key, obj in old.items():
                objects.setdefault(key, obj)
        entry.origin = {k: (old_origin.get(k, digest) if objects[k] is old.get(k) else digest) for k in objects}
        entry.objects = objects
        entry.issues = issues
        entry.sig = sig
        self.files[path] = entry
        if self.memory is not None:
            self.memory.remember(path, entry.origin, digest, text)
        return self._reindex(path, dict(self._in_force(path, old)), objects)

    def put_unreadable(self, path: str, problem: Problem, sig: tuple | None = None) -> dict[ObjKey, object | None]:
        """``path`` exists but cannot be read or is not text: its objects stay."""
        entry = self.files.get(path) or FileEntry(path)
        entry.issues = [Issue(problem, FILE_KEPT)]
        entry.sig = sig
        self.files[path] = entry
        return {}

    def drop(self, path: str) -> dict[ObjKey, object | None]:
        """``path`` was deleted: its objects go."""
        entry = self.files.pop(path, None)
        if self.memory is not None:
            self.memory.forget(path)
        if entry is None:
            return {}
        return self._reindex(path, entry.objects, {})

    def _in_force(self, path: str, old: dict[ObjKey, object]) -> dict[ObjKey, object]:
        """The objects ``path`` contributed before this update (recalled ones were not
        indexed: they are new to this process)."""
        return {k: v for k, v in old.items() if path in self.owners.get(k, ())}

    def set_dir_issue(self, directory: str, problem: Problem | None) -> None:
        if problem is None:
            self.dir_issues.pop(directory, None)
        else:
            self.dir_issues[directory] = Issue(problem, "objects of its files stay in force")

    def _reindex(self, path: str, old: dict[ObjKey, object], new: dict[ObjKey, object]
                 ) -> dict[ObjKey, object | None]:
        changes: dict[ObjKey, object | None] = {}
        for key in old.keys() - new.keys():
            owners = self.owners.get(key)
            if owners is not None:
                owners.discard(path)
                if not owners:
                    del self.owners[key]
        for key in new.keys() - old.keys():
            self.owners.setdefault(key, set()).add(path)
        for key in old.keys() | new.keys():
            owners = self.owners.get(key)
            if owners is not None and len(owners) > 1:
                self._dups.add(key)
            else:
                self._dups.discard(key)
            now = self.files[min(owners)].objects[key] if owners else None
            before = self.view.get(key)
            if now is None:
                if key in self.view:
                    del self.view[key]
                    self.counts[key[0]] -= 1
                    changes[key] = None
            elif before is None or not same_object(before, now):
                if before is None:
                    self.counts[key[0]] = self.counts.get(key[0], 0) + 1
                self.view[key] = now
                changes[key] = now
        return changes

    # ------------------------------------------------------------------ queries

    def cluster(self) -> Cluster:
        c = Cluster()
        tables = {"Namespace": c.namespaces, "Pod": c.pods, "NetworkPolicy": c.policies,
                  "ExternalHost": c.externals, "ClusterNetworkPolicy": c.cnps, "Service": c.services}
        for (kind, key), obj in self.view.items():
            table = tables.get(kind)
            if table is not None:  # workloads are not expanded into pods here: skipped, not fatal
                table[key] = obj
        return c

    def issues(self) -> list[Issue]:
        """Every problem in force: per directory, per file, and duplicates across files."""
        out = list(self.dir_issues.values())
        for path in sorted(self.files):
            out.extend(self.files[path].issues)
        for key in sorted(self._dups):
            owners = self.owners[key]
            if len(owners) > 1:
                first = min(owners)
                for other in sorted(owners - {first}):
                    out.append(Issue(Problem(other, describe(key), "metadata.name",
                                             f"Duplicate value: also defined in {first}"),
                                     f"the one in {first} is used"))
        return out

    def errors(self) -> list[Issue]:
        return [i for i in self.issues() if i.consequence != "warning"]


_SKIPPED = re.compile(r": skipped (\S+) ")


def truncated_kind(note: str) -> str | None:
    """The kind of a "skipped KIND ..." note if KIND is a proper prefix of a kind we read."""
    m = _SKIPPED.search(note)
    if m is None:
        return None
    kind = m.group(1)
    if any(k != kind and k.startswith(kind) for k in KIND_ORDER):
        return kind
    return None


def same_object(a: object, b: object) -> bool:
    """Model objects compare labels by identity-free value only through ``dict()`` (the
    dataclasses exclude labels from hashing, not from ==; be explicit anyway)."""
    if a != b:
        return False
    la, lb = getattr(a, "labels", None), getattr(b, "labels", None)
    return la is None or dict(la) == dict(lb)


def _has_errors(decoded, file_problems, notes) -> bool:
    return (any(not p.warning for p in file_problems) or any(d.obj is None for d in decoded)
            or any(not p.warning for d in decoded for p in d.problems)
            or any(truncated_kind(n) for n in notes) or not decoded)


# ---------------------------------------------------------------------- watching


class DirSource:
    """The watched directories: which files must be (re)read, and when.

    ``on_ready(event_time, not_before)`` is called from the watcher thread whenever a file
    becomes due; the daemon turns it into a runner request. ``take_due`` and ``scan`` run
    on the daemon's worker thread.
    """

    def __init__(self, dirs: Iterable[str], store: ManifestStore, *, settle: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dirs = [os.path.abspath(d) for d in dirs]
        self.store = store
        self.settle = settle
        self.clock = clock
        self.on_ready: Callable[[float, float | None], None] = lambda at, nb: None
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[float, float]] = {}  # path -> (event time, ready at)
        self._open: dict[str, int] = {}  # path -> open file handles we saw being made
        self._observer = None
        self._watched: set[str] = set()

    # -- events (watcher thread)

    def opened(self, path: str, delta: int) -> None:
        """IN_OPEN (+1) and IN_CLOSE_* (-1): how many holders a file has right now. Our
        own reads count too, and balance out."""
        with self._lock:
            n = max(0, self._open.get(path, 0) + delta)
            if n:
                self._open[path] = n
            else:
                self._open.pop(path, None)

    def note(self, path: str, ready: bool, at: float | None = None) -> None:
        """A file changed; ``ready``: it is complete now (closed, moved in, deleted)."""
        if os.path.dirname(path) not in self.dirs or not is_manifest(os.path.basename(path)):
            return
        now = self.clock()
        at = now if at is None else at
        with self._lock:
            held = self._pending.get(path)
            if held is not None:
                at = min(at, held[0])
            if ready or (held is not None and held[1] <= now):
                ready_at = now  # complete (or already due and not yet read)
            elif self._open.get(path):
                # Modified and still open: wait for the writer's close (IN_CLOSE_WRITE, or
                # the kernel's close when the writer dies), however long it writes. Its
                # last good version stays in force meanwhile: a partial file is never read.
                ready_at = HELD
            else:
                ready_at = now + self.settle  # modified without an open we saw: settle
            self._pending[path] = (at, ready_at)
        self.on_ready(at, None if ready_at <= now else ready_at)

    def next_ready(self) -> float | None:
        with self._lock:
            return min((r for _, r in self._pending.values() if r != HELD), default=None)

    def take_due(self) -> tuple[list[str], float | None]:
        """Paths due for reading now, and the oldest event time among them."""
        now = self.clock()
        with self._lock:
            due = [p for p, (_, r) in self._pending.items() if r <= now]
            first = min((self._pending[p][0] for p in due), default=None)
            for p in due:
                del self._pending[p]
        return sorted(due), first

    # -- reading (worker thread)

    def load(self, paths: Iterable[str]) -> dict[ObjKey, object | None]:
        """(Re)read ``paths`` into the store; returns the objects whose version changed."""
        changes: dict[ObjKey, object | None] = {}
        for path in paths:
            directory = os.path.dirname(path)
            if directory in self.store.dir_issues:
                continue  # the directory is unreadable: keep everything as it was
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if os.path.isdir(directory):
                    changes.update(self.store.drop(path))
                continue
            except OSError as e:
                changes.update(self.store.put_unreadable(path, Problem(path, "", "", f"cannot stat: {e.strerror}")))
                continue
            text, problem = read_text(path, self.dirs)
            if problem is not None:
                changes.update(self.store.put_unreadable(path, problem, signature(st)))
            else:
                changes.update(self.store.put_text(path, text, signature(st)))  # type: ignore[arg-type]
        return changes

    def scan(self, *, force: bool = False) -> dict[ObjKey, object | None]:
        """Compare every file with what the store read last; read what differs (all files
        with ``force``). A file modified less than ``settle`` ago is left to its events."""
        changes: dict[ObjKey, object | None] = {}
        wall = time.time()
        for d in self.dirs:
            listing, problem = list_dir(d)
            self.store.set_dir_issue(d, problem)
            if problem is not None:
                continue
            self._ensure_watch(d)
            known = {p for p in self.store.files if os.path.dirname(p) == d}
            stale = []
            with self._lock:
                now = self.clock()
                waiting = {p: r for p, (_, r) in self._pending.items() if r > now}
            for path, sig in listing.items():
                if path in waiting and (not force or waiting[path] == HELD):
                    continue  # still being written or settling: its own event reads it
                entry = self.store.files.get(path)
                if not force and entry is not None and entry.sig == sig:
                    continue
                if not force and entry is not None and wall - sig[2] / 1e9 < self.settle:
                    continue  # being written right now; its close event reads it
                stale.append(path)
            stale += sorted(known - listing.keys())
            changes.update(self.load(sorted(stale)))
        return changes

    # -- the daemon's Source protocol (enforcer.daemon.desired)

    def poll(self, *, full: bool, force: bool) -> tuple[dict[ObjKey, object | None], int]:
        """Files due, and every file on a full run (their stat signature decides)."""
        changes: dict[ObjKey, object | None] = {}
        if full:
            changes.update(self.scan(force=force))
        paths, _ = self.take_due()
        changes.update(self.load(paths))
        return changes, len(paths)

    def wait_complete(self, stopping: Callable[[], bool]) -> None:
        pass  # the first poll reads every file

    def is_local(self, pod_key: str) -> bool:
        return True  # a pod is ours when its address is in one of our namespaces

    def health(self) -> tuple[bool, str]:
        return True, ""

    def describe(self) -> dict:
        return {"type": "files", "watch": list(self.dirs)}

    def register_metrics(self, registry) -> None:
        pass

    # -- inotify

    def start(self) -> None:
        try:
            # Full events: a file moved in from outside the watched directory is reported
            # as a move (complete: read it now), not as a creation (still being written).
            from watchdog.observers.inotify import InotifyObserver

            self._observer = InotifyObserver(generate_full_events=True)
        except (ImportError, TypeError, OSError):
            from watchdog.observers import Observer

            self._observer = Observer()
        self._observer.daemon = True
        for d in self.dirs:
            self._ensure_watch(d)
        self._observer.start()

    def _ensure_watch(self, directory: str) -> None:
        if self._observer is None or directory in self._watched:
            return
        try:
            self._observer.schedule(_Handler(self), directory, recursive=False)
            self._watched.add(directory)
        except OSError:
            pass  # missing now; the scan reports it and tries again next time

    def lost_watch(self, directory: str) -> None:
        self._watched.discard(directory)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None


class _Handler:
    """watchdog event handler (duck-typed: ``dispatch`` is all the observer calls)."""

    def __init__(self, source: DirSource) -> None:
        self.source = source

    def dispatch(self, event) -> None:
        kind = event.event_type
        src = os.fsdecode(event.src_path)
        if event.is_directory:
            if kind in ("deleted", "moved") and src in self.source.dirs:
                self.source.lost_watch(src)
            return
        if kind == "moved":  # src or dest is "" for a move from or to outside the directory
            if src:
                self.source.note(src, True)
            if event.dest_path:
                self.source.note(os.fsdecode(event.dest_path), True)
        elif kind == "closed":
            self.source.opened(src, -1)
            self.source.note(src, True)
        elif kind == "deleted":
            self.source.opened(src, -1_000_000)
            self.source.note(src, True)
        elif kind in ("created", "modified"):
            self.source.note(src, False)
        elif kind == "opened":
            self.source.opened(src, +1)
        elif kind == "closed_no_write":
            self.source.opened(src, -1)
        # attrib: content unchanged
