"""A lab's state on disk: /run/netpol-enforcer/labs/<LAB>/.

    state.json        what the lab is: backend, pod CIDRs, endpoints (netns, links,
                      addresses, ports), the cluster in force and the firewall installed
                      in each pod (so ``lab apply`` in a new process can ask for deltas)
    netns.journal     every namespace name, appended BEFORE the namespace is created, so a
                      crash at any point leaves a complete list for ``lab down``
    lock              flock'd by every command that reads or changes the lab
    servers.json      the server daemon's configuration (see servers.py)
    servers.ready     the daemon's answer: the configuration generation it has opened
    server.log        the daemon's stderr
    owner             who owns the lab: {"pid", "start", "since"}; pid null once a
                      ``lab up`` finished (the lab lives on by design). A lab whose owner
                      process is gone (a killed pytest, a killed ``lab up``) is stale.

/run is a tmpfs, like /run/netns: a reboot forgets labs and their namespaces together.
The directory is created with ``mkdir`` (atomic): that is how ``lab up`` claims a name.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator

from enforcer.errors import LabError
from enforcer.ir import PodFirewall
from enforcer.lab import codec
from enforcer.model import Cluster

LABS_DIR = os.environ.get("NETPOL_LABS_DIR", "/run/netpol-enforcer/labs")
VERSION = 1


def lab_dir(name: str) -> str:
    return os.path.join(LABS_DIR, name)


def exists(name: str) -> bool:
    return os.path.isdir(lab_dir(name))


def names() -> list[str]:
    try:
        return sorted(n for n in os.listdir(LABS_DIR) if os.path.isdir(os.path.join(LABS_DIR, n)))
    except FileNotFoundError:
        return []


# --- state.json: each field as it is, or as its declaration says ---------------------------
# JSON has no tuples and no dataclasses: a field that needs converting carries its
# (to JSON, from JSON) pair, so the file's format is read off the declarations, and a field
# added later is written and read without a second place to edit.


def _stored_as(dump: Callable[[Any], Any], load: Callable[[Any], Any], **default: Any) -> Any:
    """A field kept in state.json as ``dump(value)`` and read back with ``load``."""
    return field(metadata={"json": (dump, load)}, **default)


_OMIT_EMPTY = {"omit_empty": True}  # not written while empty (a one-node lab's endpoints carry no node)


def _each(convert: Callable[[Any], Any]) -> Callable[[dict], dict]:
    """A dict's values through ``convert``, by sorted key (a stable file)."""
    return lambda m: {k: convert(v) for k, v in sorted(m.items())}


_LIST = (list, tuple)  # a tuple field: a JSON list, a tuple again when read


def _to_json(obj: Any) -> dict[str, Any]:
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("omit_empty") and not value:
            continue
        dump = f.metadata.get("json", (None, None))[0]
        out[f.name] = dump(value) if dump else value
    return out


def _from_json(cls: type, d: dict[str, Any], before: dict[str, Any] | None = None) -> Any:
    """``cls`` from its JSON. A field the file lacks (written before the field existed)
    takes its default, or what ``before`` says it meant then; a required one missing is a
    TypeError (``load`` reports the file as unreadable)."""
    kwargs = dict(before or {})
    for f in fields(cls):
        if f.name in d:
            load = f.metadata.get("json", (None, None))[1]
            kwargs[f.name] = load(d[f.name]) if load else d[f.name]
    return cls(**kwargs)


@dataclass
class Endpoint:
    """One pod or external host as built: its namespace, node-side link and addresses."""

    key: str
    kind: str  # "pod" | "external"
    netns: str
    link: str  # node-side veth name
    ips: tuple[str, ...] = _stored_as(*_LIST)
    ports: tuple[tuple[int, str], ...] = _stored_as(lambda ps: [list(p) for p in ps],
                                                    lambda ps: tuple((int(p), str(q)) for p, q in ps), default=())
    node_addrs: tuple[str, ...] = _stored_as(*_LIST, default=())  # externals: node-side addresses on their link
    mac: str = ""  # the endpoint's eth0
    node_mac: str = ""  # externals: the node's side of their link
    # a multi-node lab's pod: the node it runs on (enforcer/lab/nodes.py)
    node: str = field(default="", metadata=_OMIT_EMPTY)

    def to_json(self) -> dict:
        return _to_json(self)

    @classmethod
    def from_json(cls, d: dict) -> "Endpoint":
        return _from_json(cls, d)


@dataclass
class LabState:
    name: str
    backend: str
    node_netns: str
    bridge: str
    cidrs: tuple[str, ...] = _stored_as(*_LIST, default=())
    gateways: tuple[str, ...] = _stored_as(*_LIST, default=())
    next_index: int = 0
    endpoints: dict[str, Endpoint] = _stored_as(_each(Endpoint.to_json), _each(Endpoint.from_json),
                                                default_factory=dict)
    cluster: Cluster = _stored_as(codec.encode, lambda d: codec.decode(d) if d else Cluster(),
                                  default_factory=Cluster)
    firewalls: dict[str, PodFirewall] = _stored_as(_each(codec.encode), _each(codec.decode), default_factory=dict)
    server_pid: int | None = None
    server_generation: int = 0
    created: float = 0.0
    phase: str = "building"  # "building" until lab up finished, then "ready"
    no_servers: bool = False  # lab up --no-servers: the test brings its own (lab exec)
    # A multi-node lab (--nodes N, enforcer/lab/nodes.py): one dict per node (name, netns,
    # cidr, gateway, underlay address, MAC); empty for the classic one-node lab.
    nodes: list[dict] = _stored_as(list, lambda v: list(v or ()), default_factory=list)
    # An API lab (--api, enforcer/lab/apilab.py): the control plane's and agents' processes.
    api: dict | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, **_to_json(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LabState":
        # A file from before ``phase`` existed was written by a lab up that had finished.
        return _from_json(cls, d, before={"phase": "ready"})


def claim(name: str, owner_pid: int | None = None) -> str:
    """Create the lab's directory and record its owner (this process unless told);
    fail clearly if the name is taken."""
    os.makedirs(LABS_DIR, mode=0o755, exist_ok=True)
    path = lab_dir(name)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        raise LabError(f"lab {name} exists already (remove it with: netpol lab down --name {name})") from None
    set_owner(name, os.getpid() if owner_pid is None else owner_pid)
    return path


def save(st: LabState) -> None:
    """Write state.json atomically (a crash leaves the old or the new file, never half)."""
    path = os.path.join(lab_dir(st.name), "state.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st.to_json(), f, separators=(",", ":"))
    os.replace(tmp, path)


def load(name: str) -> LabState:
    path = os.path.join(lab_dir(name), "state.json")
    if not exists(name):
        raise LabError(f"no lab named {name} (see: netpol lab list)")
    try:
        with open(path) as f:
            return LabState.from_json(json.load(f))
    except FileNotFoundError:
        raise LabError(f"lab {name} was never completed (a crashed lab up?); remove it with: "
                       f"netpol lab down --name {name}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise LabError(f"lab {name}: unreadable state ({e}); remove it with: netpol lab down --name {name}") from e


def journal(name: str, netns_name: str) -> None:
    """Record a namespace we are about to create (before creating it)."""
    with open(os.path.join(lab_dir(name), "netns.journal"), "a") as f:
        f.write(netns_name + "\n")


def journaled(name: str) -> list[str]:
    try:
        with open(os.path.join(lab_dir(name), "netns.journal")) as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Serialise commands on one lab (an apply and a probe must not interleave)."""
    path = os.path.join(lab_dir(name), "lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        raise LabError(f"no lab named {name} (see: netpol lab list)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def forget(name: str) -> None:
    shutil.rmtree(lab_dir(name), ignore_errors=True)


def proc_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (/proc/PID/stat field 22): with
    the pid it names one process, never a later one that got the same pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def set_owner(name: str, pid: int | None, since: float | None = None) -> None:
    """Record the lab's owner; ``pid=None``: no owner (the lab outlives the command that
    made it, as ``lab up`` labs do)."""
    old = owner(name) or {}
    doc = {"pid": pid, "start": proc_start(pid) if pid else None,
           "since": since or old.get("since") or time.time()}
    path = os.path.join(lab_dir(name), "owner")
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
    os.replace(path + ".tmp", path)


def owner(name: str) -> dict | None:
    try:
        with open(os.path.join(lab_dir(name), "owner")) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def owner_alive(doc: dict) -> bool:
    pid = doc.get("pid")
    start = proc_start(int(pid)) if pid else None
    return start is not None and start == doc.get("start")


UNOWNED_GRACE = 60.0  # a directory without owner nor state younger than this is being claimed


def staleness(name: str, now: float | None = None) -> dict:
    """``{"stale", "owner_pid", "owner_alive", "age"}`` of lab ``name``. Stale: its owner
    process is gone, or it has neither owner nor state and is older than a claim takes.
    ``owner_pid`` None with ``owner_alive`` None: no owner (a ``lab up`` lab, or unknown)."""
    now = time.time() if now is None else now
    doc = owner(name)
    try:
        made = os.stat(lab_dir(name)).st_mtime
    except OSError:
        made = now
    if doc is None:
        has_state = os.path.exists(os.path.join(lab_dir(name), "state.json"))
        age = max(0.0, now - made)
        return {"stale": not has_state and age > UNOWNED_GRACE, "owner_pid": None,
                "owner_alive": None, "age": round(age, 1)}
    age = round(max(0.0, now - float(doc.get("since") or made)), 1)
    if not doc.get("pid"):
        return {"stale": False, "owner_pid": None, "owner_alive": None, "age": age}
    alive = owner_alive(doc)
    return {"stale": not alive, "owner_pid": int(doc["pid"]), "owner_alive": alive, "age": age}
