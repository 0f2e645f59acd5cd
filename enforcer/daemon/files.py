"""Reading watched manifest files safely, and remembering their last good versions.

``read_text`` reads one file as the daemon must (issue 20): only a regular file (a FIFO
would block the worker for good), non-blocking, owned by root or the daemon's user, and
never through a symlink that leads out of the watched directories. ``tame`` cuts long
quoted values out of problem messages, which reach the log and the state file.
``LastGood`` keeps, in a private directory, the texts that objects in force came from.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from typing import Iterable

from enforcer.load import manifests
from enforcer.daemon.status import write_atomic
from enforcer.errors import Problem

ObjKey = tuple[str, str]  # (kind, key), as in enforcer.daemon.sources


_QUOTED = re.compile(r'"((?:[^"\\]|\\.){%d,})"' % 21)


def tame(p: Problem) -> Problem:
    """``p`` with long quoted values cut to a short prefix: the daemon's messages go to
    the log and the state file, which other users may read, and a bad value may be the
    content of a file that is not theirs to see (a symlink planted in a watched
    directory). The object name is cut the same way."""
    def cut(m: re.Match) -> str:
        return '"' + m.group(1)[:16] + '..." (cut)'

    msg = _QUOTED.sub(cut, p.message)
    msg = msg if len(msg) <= 300 else msg[:297] + "..."
    obj = p.obj if len(p.obj) <= 100 else p.obj[:40] + "... (cut)"
    if msg == p.message and obj == p.obj:
        return p
    return Problem(p.file, obj, p.field, msg, p.warning)


def text_digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class LastGood:
    """The last good versions, on disk, for the next start of the daemon.

    Per watched file: which text (by digest) each of its objects in force came from, and
    those texts. ``<dir>/<digest>.txt`` are the texts; ``<dir>/files/<hash of the path>.json``
    say, for one watched file, which object came from which text (one small file per
    watched file, so a policy edit never rewrites the record of a 5,000-pod file). A daemon
    that starts while a file is damaged decodes the remembered texts of that file instead
    of forgetting what was in force (fail-static across restarts). Only files that exist
    are ever recalled: a file deleted while the daemon was down removes its objects.
    """

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.index: dict[str, dict[str, str]] = {}
        self._uses: dict[str, int] = {}  # digest -> references
        # Private (0700, ours): another user must neither plant records (policies we
        # would enforce after a restart) nor steer our writes through links.
        from enforcer.daemon.status import safe_dir

        try:
            for d in (directory, os.path.join(directory, "files")):
                safe_dir(d, private=True)
                _private_files(d)  # copies an older version wrote 0644
            self.usable, self.problem = True, ""
            names = os.listdir(os.path.join(directory, "files"))
        except OSError as e:
            # Not ours to use: no last good versions across restarts (said once at start).
            self.usable, self.problem = False, f"last good versions not kept: {e.strerror or e}"
            names = []
        for name in names:
            try:
                with open(os.path.join(directory, "files", name)) as f:
                    data = json.load(f)
                path, refs = data["path"], dict(data["refs"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            self.index[path] = refs
            for d in refs.values():
                self._uses[d] = self._uses.get(d, 0) + 1

    def recall(self, path: str, legacy: bool = False) -> tuple[dict[ObjKey, object], dict[ObjKey, str]]:
        refs = self.index.get(path, {})
        objects: dict[ObjKey, object] = {}
        origin: dict[ObjKey, str] = {}
        by_digest: dict[str, set[ObjKey]] = {}
        for ref, digest in refs.items():
            kind, _, key = ref.partition(" ")
            by_digest.setdefault(digest, set()).add((kind, key))
        for digest, keys in by_digest.items():
            try:
                with open(os.path.join(self.dir, f"{digest}.txt"), encoding="utf-8", errors="surrogatepass") as f:
                    text = f.read()
            except OSError:
                continue
            decoded, _, _ = manifests.decode_text(text, path, legacy_namespace_isolation=legacy)
            for d in decoded:
                key = (d.kind, d.key)
                if key in keys and d.obj is not None and key not in objects:
                    objects[key] = d.obj
                    origin[key] = digest
        return objects, origin

    def remember(self, path: str, origin: dict[ObjKey, str], digest: str, text: str) -> None:
        refs = {f"{k} {key}": d for (k, key), d in sorted(origin.items())}
        if not self.usable or self.index.get(path, {}) == refs:
            return
        try:
            if digest in refs.values():
                target = os.path.join(self.dir, f"{digest}.txt")
                if not os.path.exists(target):
                    write_atomic(target, text)
            self._update(path, refs)
        except OSError:
            pass  # a full /run costs the restart memory, never the running enforcement

    def forget(self, path: str) -> None:
        if self.usable and path in self.index:
            try:
                self._update(path, {})
            except OSError:
                pass

    def _record(self, path: str) -> str:
        return os.path.join(self.dir, "files", hashlib.blake2b(path.encode(), digest_size=12).hexdigest() + ".json")

    def _update(self, path: str, refs: dict[str, str]) -> None:
        old = self.index.pop(path, {})
        if refs:
            self.index[path] = refs
            write_atomic(self._record(path), json.dumps({"path": path, "refs": refs}, indent=0))
        else:
            try:
                os.unlink(self._record(path))
            except FileNotFoundError:
                pass
        for d in refs.values():
            self._uses[d] = self._uses.get(d, 0) + 1
        for d in old.values():
            self._uses[d] -= 1
            if self._uses[d] <= 0:
                del self._uses[d]
                try:
                    os.unlink(os.path.join(self.dir, f"{d}.txt"))
                except FileNotFoundError:
                    pass


def _private_files(directory: str) -> None:
    for name in os.listdir(directory):
        full = os.path.join(directory, name)
        st = os.lstat(full)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(full, 0o600)


# ---------------------------------------------------------------------- reading


def signature(st: os.stat_result) -> tuple:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _owners() -> set[int]:
    return {0, os.geteuid()}


def _inside(real: str, roots: Iterable[str]) -> bool:
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)


def read_text(path: str, roots: Iterable[str] | None = None) -> tuple[str | None, Problem | None]:
    """A manifest file's text, or the problem that stops us reading it.

    Only a regular file is read (a FIFO or a device would block the worker or never
    end), opened non-blocking, owned by root or by us (anyone else could make it say
    anything), and reached either directly or through symlinks that stay inside the
    watched directories ``roots`` (Kubernetes' ConfigMap volumes are such links): a link
    out of them could make the daemon read, and quote, a file that is not theirs."""
    target = path
    if roots is not None and os.path.islink(path):
        target = os.path.realpath(path)
        if not _inside(target, [os.path.realpath(r) for r in roots]):
            return None, Problem(path, "", "", "symbolic link leading out of the watched directories: not read")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        return None, Problem(path, "", "", f"cannot read: {(e.strerror or str(e)).lower()}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, Problem(path, "", "", "not a regular file (a FIFO, socket or device): not read")
        if st.st_uid not in _owners():
            return None, Problem(path, "", "", f"owned by uid {st.st_uid}, not by root or the daemon's "
                                 "user: not read")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(manifests.MAX_FILE_BYTES + 1)
    except OSError as e:
        return None, Problem(path, "", "", f"cannot read: {(e.strerror or str(e)).lower()}")
    finally:
        os.close(fd)
    if len(data) > manifests.MAX_FILE_BYTES:
        return None, Problem(path, "", "", "file too large: refusing to parse it")
    if b"\x00" in data:
        return None, Problem(path, "", "", "binary data (NUL bytes), not YAML or JSON text")
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        return None, Problem(path, "", "", f"not UTF-8 text (invalid byte at offset {e.start})")


def is_manifest(name: str) -> bool:
    return not name.startswith(".") and name.endswith(manifests.MANIFEST_SUFFIXES)


def list_dir(directory: str) -> tuple[dict[str, tuple], Problem | None]:
    """Manifest files directly in ``directory`` with their signatures (not recursive)."""
    try:
        names = os.listdir(directory)
    except OSError as e:
        return {}, Problem(directory, "", "", f"cannot read directory: {(e.strerror or str(e)).lower()}")
    out = {}
    for name in names:
        if not is_manifest(name):
            continue
        full = os.path.join(directory, name)
        try:
            st = os.stat(full)
        except OSError:
            continue  # gone between listdir and stat: the next scan sees it
        if os.path.isdir(full):
            continue
        out[full] = signature(st)
    return out, None


