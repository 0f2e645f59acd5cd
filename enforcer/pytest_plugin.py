"""pytest plugin (entry point ``pytest11: netpol``): the ``netpol_lab`` fixture.

    def test_db_only_from_api(netpol_lab):
        lab = netpol_lab("examples/shop/", backend="nftables")
        lab.assert_matches("model")                 # the kernel does what the model says
        lab.apply(["examples/shop/", "deny-all.yaml"])
        rows = lab.probe(ports=["5432/TCP"])        # [{"from", "to", "port", ..., "allowed"}]
        r = Reachability(["shop/api", "shop/db", "shop/web"], ports=["5432/TCP"])
        r.expect_all_ingress("shop/db", False)
        lab.assert_matches(r)                       # names the wrong cells and why if not

``netpol_lab(manifests, backend="nftables", ipv6=False)`` brings up a lab with a unique
name (``pyt-<hex>``; the prefix is the ini option ``netpol_lab_prefix``) and returns a
:class:`LabHandle`; every lab the test made is torn down when the test ends, passed or
failed, also when the run is stopped by Ctrl-C, SIGTERM (a CI cancel) or SIGHUP.
``manifests`` is a path (file or directory), a list of paths, YAML/JSON text, a list of
Kubernetes objects as dicts, or an ``enforcer.model.Cluster``. Objects the loader skips
become pytest warnings; manifests that give no pod at all fail the test (a lab of nothing
tests nothing). Tests using the fixture are skipped when not run as root.

A test's own programs: ``netpol_lab(..., servers=False)`` starts no servers (``lab up
--no-servers``); ``lab.popen("ns/srv", [...])`` starts a program in a pod's network
namespace (stopped when the lab goes) and ``lab.exec("ns/cli", [...])`` runs one and
returns its ``CompletedProcess``. They meet the pods' firewalls as the lab's servers do.

Several nodes and a real API server (docs/lab.md): ``netpol_lab(..., nodes=3)`` spreads
the pods over three node namespaces; ``netpol_api_lab(manifests, backend, nodes=3)`` (and
``netpol_api_lab_module``) also runs the lab's own API server and one agent per node, and
``lab.kubectl("apply", "-f", path)`` drives it as a user would (skipped without
kube-apiserver: ``make k8s``).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pytest

from enforcer import interrupts

DEFAULT_PREFIX = "pyt"  # users' labs; the project's own suite uses "npt" (pyproject.toml)
_live: dict[str, int] = {}  # lab -> pid of the process that made it and has not removed it
_stopping = False  # an interrupt is ending the run: a second one must not cut teardown short
_saved_handlers: dict[int, Any] = {}


class NetpolLabWarning(UserWarning):
    """Something in a lab's manifests was skipped or looks wrong."""


def _down_leftovers() -> None:
    """Safety net at exit, for labs a teardown could not reach. Only in the process that
    made them: a forked child must never remove its parent's labs."""
    from enforcer.lab import control

    with interrupts.deferred(drop=True):
        for name, pid in list(_live.items()):
            if pid != os.getpid():
                continue
            try:
                control.down(name)
            except Exception:
                pass
            _live.pop(name, None)


atexit.register(_down_leftovers)


# ---------------------------------------------------------------- signals


def _on_signal(signum: int, _frame) -> None:
    global _stopping
    _stopping = True
    raise KeyboardInterrupt(f"{signal.Signals(signum).name}: netpol_lab removes its labs")


def _catch_signals() -> None:
    """SIGTERM (what a CI cancel or ``timeout`` sends) and SIGHUP (a closed terminal) end
    the run the way Ctrl-C does, so teardown removes the labs. Installed when the first
    lab is made; a handler somebody else installed is left alone."""
    if _saved_handlers or threading.current_thread() is not threading.main_thread():
        return
    for s in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(s) is signal.SIG_DFL:
            _saved_handlers[s] = signal.signal(s, _on_signal)


def _release_signals() -> None:
    for s, h in list(_saved_handlers.items()):
        if signal.getsignal(s) is _on_signal:
            signal.signal(s, h)
        del _saved_handlers[s]


# ---------------------------------------------------------------- manifests


def _load(manifests: Any, workdir: Path):
    """Turn what a test passed into (cluster, notes about what was skipped or odd)."""
    from enforcer.model import Cluster

    if isinstance(manifests, Cluster):
        return manifests, []
    paths = _paths(manifests, workdir)
    from enforcer.load import manifests as loader

    result = loader.load(paths)
    return result.cluster, [str(w) for w in result.warnings] + [str(n) for n in result.notes]


def _raw(manifests: Any, workdir: Path) -> tuple[dict, list]:
    """Each pod's spec.nodeName and the NetworkPolicy objects as written (multi-node and
    API labs: enforcer/lab/multinode.py)."""
    from enforcer.lab import multinode
    from enforcer.model import Cluster

    if isinstance(manifests, Cluster):
        return {}, []
    return multinode.raw_inputs(_paths(manifests, workdir))


def _paths(manifests: Any, workdir: Path) -> list[str]:
    paths: list[str]
    if isinstance(manifests, (str, os.PathLike)) and not _looks_like_text(manifests):
        paths = [os.fspath(manifests)]
    elif isinstance(manifests, str):
        paths = [_write(workdir, manifests)]
    elif isinstance(manifests, dict) or (isinstance(manifests, (list, tuple)) and manifests
                                         and all(isinstance(m, dict) for m in manifests)):
        import yaml

        docs = [manifests] if isinstance(manifests, dict) else list(manifests)
        paths = [_write(workdir, yaml.safe_dump_all(docs, sort_keys=False))]
    elif isinstance(manifests, (list, tuple)):
        paths = []
        for m in manifests:
            if isinstance(m, str) and _looks_like_text(m):
                paths.append(_write(workdir, m))
            else:
                paths.append(os.fspath(m))
    else:
        raise TypeError(f"netpol_lab: cannot use {type(manifests).__name__} as manifests")
    return paths


def _cluster(manifests: Any, workdir: Path, what: str):
    """Load, warn about everything skipped, and refuse a lab without pods."""
    cluster, notes = _load(manifests, workdir)
    if notes:
        shown = "; ".join(notes[:10]) + (f"; and {len(notes) - 10} more" if len(notes) > 10 else "")
        warnings.warn(NetpolLabWarning(f"netpol_lab: {what}: {shown}"), stacklevel=3)
    if not cluster.pods:
        why = (f" The loader skipped: {'; '.join(notes[:5])}" + (" ..." if len(notes) > 5 else "")
               if notes else " The input has no Pod objects.")
        pytest.fail(f"netpol_lab: {what}: the manifests give no pods, so the lab would test "
                    f"nothing.{why}", pytrace=False)
    return cluster


def _looks_like_text(value: Any) -> bool:
    return isinstance(value, str) and ("\n" in value or value.lstrip().startswith(("{", "[", "apiVersion", "kind")))


def _write(workdir: Path, text: str) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"manifests-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(text)
    return str(path)


def _ports(ports: Iterable[Any] | None) -> list[tuple[int, str]] | None:
    from enforcer.views.reachability import parse_port

    if ports is None:
        return None
    if isinstance(ports, (str, int)):
        ports = str(ports).split(",")
    return [parse_port(p) for p in ports]


# ---------------------------------------------------------------- the handle


class DropWatch:
    """``with lab.drops() as drops: ...``: the lab's dropped packets seen meanwhile, as
    dicts (``netpol lab drops -o json``). Read ``drops`` after the block."""

    def __init__(self, name: str, settle: float):
        self.name, self.settle = name, settle
        self.drops: list[dict] = []
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._reader = None

    def __enter__(self) -> list[dict]:
        from enforcer.lab import observe

        self._reader = observe.DropReader(self.name)  # errors (no lab, group busy) here
        self._thread = threading.Thread(target=self._run, name=f"drops-{self.name}", daemon=True)
        self._thread.start()
        return self.drops

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for d in self._reader.stream(timeout=0.1, poll=0.05):  # type: ignore[union-attr]
                    self.drops.append(d.to_json())
        except BaseException as e:  # handed to the test on exit
            self._error = e

    def __exit__(self, *exc) -> None:
        import time

        time.sleep(self.settle)  # the last packets' log messages are still on their way
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._reader.close()  # type: ignore[union-attr]
        if self._error is not None and exc[0] is None:
            raise self._error


def _in_family(rows: list[dict], cluster, family: int) -> list[dict]:
    """Rows whose endpoints have an address of ``family``; an endpoint the lab does not
    know stays (its cells then fail as missing, naming the typo)."""
    from enforcer.views import verdict

    has = {e.id: e.ip(family) is not None for e in verdict.endpoints(cluster)}
    return [r for r in rows if has.get(r["from"], True) and has.get(r["to"], True)]


class LabHandle:
    """A running lab, for one test. Methods raise enforcer.errors.NetpolError on failure."""

    def __init__(self, name: str, backend: str, workdir: Path, verbosity: int = 0, *,
                 nodes: int = 1, api: bool = False):
        self.name, self.backend, self.nodes, self.api = name, backend, nodes, api
        self._workdir, self._verbosity = workdir, verbosity
        self._procs: list = []  # lab.popen's processes, stopped before the lab goes

    @property
    def kubeconfig(self) -> str:
        """An API lab's admin kubeconfig."""
        from enforcer.lab import apilab

        return apilab.kubeconfig(self.name)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True):
        """Run kubectl against an API lab; its ``CompletedProcess`` (text). With ``check``,
        a failure raises AssertionError with kubectl's stderr."""
        import subprocess
        import sys

        kubectl = os.path.join(os.path.dirname(sys.executable), "kubectl")
        if not os.path.exists(kubectl):
            from enforcer.k8s.controlplane import binary_dir

            kubectl = str((binary_dir() or Path("/nonexistent")) / "kubectl")
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        proc = subprocess.run([kubectl, "--kubeconfig", self.kubeconfig, *args], input=input,
                              capture_output=True, text=True, env=env, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def agent_pid(self, node: str) -> int | None:
        """The pid of node ``node``'s agent (API labs), None when it is not running."""
        from enforcer.lab import apilab, state

        st = state.load(self.name)
        rec = ((st.api or {}).get("agents") or {}).get(node) or {}
        return int(rec["pid"]) if rec and apilab._alive(rec) else None

    def restart_agent(self, node: str) -> int:
        """Start node ``node``'s agent again (after a test killed it); waits until it enforces."""
        from enforcer.lab import apilab

        return apilab.restart_agent(self.name, node)

    @property
    def cluster(self):
        """The cluster in force (pods with their lab addresses)."""
        from enforcer.lab import control

        return control.cluster_of(self.name)

    def apply(self, manifests: Any):
        """Make ``manifests`` the lab's whole desired state (incremental, like ``lab apply``)."""
        from enforcer.lab import control

        cluster = _cluster(manifests, self._workdir, f"lab.apply on {self.name}")
        node_of, policies = _raw(manifests, self._workdir) if (self.api or self.nodes > 1) else ({}, [])
        return control.apply(self.name, cluster, node_of=node_of, policies=policies)

    def probe(self, ports: Iterable[Any] | str | None = None, *, timeout: float = 1.0,
              family: int = 4) -> list[dict]:
        """Real probes between every ordered pair; rows as ``netpol probe -o json``."""
        from enforcer.lab import control

        return control.probe(self.name, _ports(ports), family=family, timeout=timeout).rows

    def expected(self, ports: Iterable[Any] | str | None = None, *, family: int = 4) -> list[dict]:
        """The model's verdicts for the lab as it is now (what ``--expect model`` compares)."""
        from enforcer.lab import control

        return control.expected(self.name, _ports(ports), family=family)

    def stats(self, pod: str | None = None, *, nonzero: bool = False) -> list[dict]:
        """Per-rule packet counters (``netpol lab stats -o json``'s ``counters``)."""
        from enforcer.lab import observe

        _backend, rows = observe.stats(self.name, pod)
        return [r.to_json() for r in rows if r.packets or not nonzero]

    def drops(self, settle: float = 0.2) -> DropWatch:
        """Watch dropped packets while a block runs: ``with lab.drops() as seen: lab.probe()``."""
        return DropWatch(self.name, settle)

    def families(self) -> list[int]:
        """4, 6 or both: the address families of the lab's pods."""
        from enforcer.lab import control

        return control.families(self.name)

    def assert_matches(self, expected: Any = "model", *, ports: Iterable[Any] | str | None = None,
                       timeout: float = 1.0, family: int | None = None) -> None:
        """Probe and compare with ``expected``: "model", rows (a list of dicts or a
        ``{"results": [...]}`` document), a path to such a JSON file, a ``Reachability`` or a
        list of them. Every family of the lab unless ``family`` is given (dual-stack: both).
        Fails when a cell is wrong (naming the wrong cells and the model's reason) and when
        nothing at all was compared."""
        __tracebackhide__ = True
        from enforcer.views import reachability
        from enforcer.lab import control, report

        fams = [family] if family else self.families()
        for fam in fams:
            v = f"IPv{fam}"
            if isinstance(expected, str) and expected == "model":
                want = self.expected(ports, family=fam)
            elif isinstance(expected, (str, os.PathLike)):
                want = reachability.load_rows(os.fspath(expected))
            else:
                want = reachability.rows_of(expected)
            if len(fams) > 1:  # one expectation for both families: not for v4-only endpoints in v6
                want = _in_family(want, self.cluster, fam)
            sctp = [r for r in want if r["protocol"] not in control.PROBE_PROTOCOLS]
            want = [r for r in want if r["protocol"] in control.PROBE_PROTOCOLS]
            want_ports = _ports(ports) if ports is not None else \
                sorted({(r["port"], r["protocol"]) for r in want}) or None
            got = self.probe(want_ports, timeout=timeout, family=fam) if want else []
            result = reachability.compare(want, got, title=f"lab {self.name} ({self.backend}, {v})")
            if result.vacuous:
                pytest.fail(f"0 cells compared, so nothing was checked ({v}, lab {self.name}): "
                            f"{self._why_empty(expected, ports, fam, sctp)}", pytrace=False)
            if result.wrong:
                raise AssertionError(report.failure_text(
                    result, want, got, context=f"lab {self.name} ({self.backend}, {v})",
                    reasons=report.model_reasons(self.name, fam), verbose=self._verbosity >= 2))

    def _why_empty(self, expected: Any, ports: Any, family: int, sctp: list) -> str:
        from enforcer.views import verdict

        cluster = self.cluster
        eps = [e for e in verdict.endpoints(cluster) if e.ip(family)]
        if len(eps) < 2:
            return (f"the lab has {len(eps)} endpoint(s) with an IPv{family} address, so there is no "
                    "pair to probe")
        if sctp:
            return f"the expectation's {len(sctp)} cell(s) are all SCTP, which this kernel cannot probe"
        if isinstance(expected, str) and expected == "model" and ports is None:
            return ("no pod or external host declares a port (containerPort, ExternalHost "
                    "spec.ports) and no ports= was given")
        return "the expectation has no cell (no pair of distinct endpoints on any port)"

    def exec(self, pod: str, argv: Sequence[str], *, timeout: float | None = 30.0, check: bool = False,
             capture_output: bool = True, text: bool = True, **kwargs):
        """Run ``argv`` in ``pod``'s network namespace (``NS/POD`` or an external host's
        name) and wait: a ``subprocess.CompletedProcess`` (output captured as text unless
        told otherwise). The program meets the pod's firewall as the lab's servers do."""
        from enforcer.lab import exec as lab_exec

        return lab_exec.run(self.name, pod, list(argv), timeout=timeout, check=check,
                            capture_output=capture_output, text=text, **kwargs)

    def popen(self, pod: str, argv: Sequence[str], **kwargs):
        """Start ``argv`` in ``pod``'s network namespace (a test's own server): a
        ``subprocess.Popen``, stopped (SIGTERM, then SIGKILL) when the lab goes down."""
        from enforcer.lab import exec as lab_exec

        proc = lab_exec.popen(self.name, pod, list(argv), **kwargs)
        self._procs.append(proc)
        return proc

    def _stop_procs(self) -> None:
        import subprocess

        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()

    def down(self) -> None:
        from enforcer.lab import control

        try:
            self._stop_procs()  # a socket of theirs would keep the pod's namespace alive
            control.down(self.name)
        finally:
            _live.pop(self.name, None)

    def __repr__(self) -> str:
        return f"LabHandle({self.name!r}, backend={self.backend!r})"


# ---------------------------------------------------------------- fixtures


def _factory(workdir: Path, prefix: str = DEFAULT_PREFIX, verbosity: int = 0):
    """The lab factory both fixtures hand out, and the teardown they share."""
    from enforcer.lab import control

    with interrupts.deferred():  # at fixture set-up, not inside the test's lab up
        control._preload()
    made: list[LabHandle] = []
    me = os.getpid()

    def factory(manifests: Any, backend: str = "nftables", *, ipv6: bool = False,
                name: str | None = None, servers: bool = True, nodes: int = 1,
                api: bool = False, enforce_at: str = "pod") -> LabHandle:
        from enforcer.lab import control, naming

        lab_name = naming.check_lab_name(name or f"{prefix}-{uuid.uuid4().hex[:8]}")
        handle = LabHandle(lab_name, backend, workdir / lab_name, verbosity, nodes=nodes, api=api)
        cluster = _cluster(manifests, handle._workdir, f"lab {lab_name}")
        node_of, policies = _raw(manifests, handle._workdir) if (api or nodes > 1) else ({}, [])
        _catch_signals()
        made.append(handle)
        _live[lab_name] = me
        try:
            control.up(lab_name, cluster, backend, ipv6=ipv6, owned=True, servers=servers,
                       nodes=nodes, api=api, node_of=node_of, policies=policies, enforce_at=enforce_at)
        except BaseException:
            # up removed what it built; a name that was taken is another lab, not ours
            made.remove(handle)
            _live.pop(lab_name, None)
            raise
        return handle

    def teardown() -> None:
        if os.getpid() != me:  # a forked child must never tear down its parent's labs
            return
        errors = []
        # Held interrupts: a second Ctrl-C or SIGTERM must not leave half a lab behind.
        with interrupts.deferred(drop=_stopping):
            for handle in made:
                try:
                    handle.down()
                except Exception as e:  # remove the others anyway, then report
                    errors.append(f"{handle.name}: {e}")
        if errors:
            raise RuntimeError("netpol_lab: teardown failed: " + "; ".join(errors))

    return factory, teardown


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("netpol_lab needs root: the lab creates network namespaces")


def _settings(config) -> tuple[str, int]:
    prefix = config.getini("netpol_lab_prefix") or DEFAULT_PREFIX
    return prefix, int(config.getoption("verbose", 0) or 0)


@contextlib.contextmanager
def _labs(workdir: Path, config, *, api: bool = False) -> Iterator:
    """Every fixture's body: the factory for the test (API labs: ``api=True`` and three
    nodes unless told), and its labs removed at the end whatever happened."""
    _need_root()
    if api:
        _need_api()
    factory, teardown = _factory(workdir, *_settings(config))
    if api:
        plain = factory

        def factory(manifests: Any, backend: str = "nftables", *, nodes: int = 3, **kw) -> LabHandle:
            return plain(manifests, backend, nodes=nodes, api=True, **kw)
    try:
        yield factory
    finally:
        teardown()


def _need_api() -> None:
    from enforcer.k8s.controlplane import missing_binaries

    reason = missing_binaries()
    if reason:
        pytest.skip(f"netpol_api_lab: {reason}")


@pytest.fixture
def netpol_lab(tmp_path: Path, request):
    """Factory: ``lab = netpol_lab(manifests, backend="nftables")``. Labs are always removed
    at the end of the test."""
    with _labs(tmp_path, request.config) as factory:
        yield factory


@pytest.fixture(scope="module")
def netpol_lab_module(tmp_path_factory, request):
    """The same factory, with labs kept for the whole test module (bringing up pods costs
    more than a test: share one lab and drive it with ``lab.apply``)."""
    with _labs(tmp_path_factory.mktemp("netpol-lab"), request.config) as factory:
        yield factory


@pytest.fixture
def netpol_api_lab(tmp_path: Path, request):
    """Factory of API labs: ``lab = netpol_api_lab(manifests, backend, nodes=3)``: the lab's
    own API server, objects made through it, one agent per node; drive it with
    ``lab.kubectl("apply", "-f", path)``. Skipped without kube-apiserver (make k8s)."""
    with _labs(tmp_path, request.config, api=True) as factory:
        yield factory


@pytest.fixture(scope="module")
def netpol_api_lab_module(tmp_path_factory, request):
    """``netpol_api_lab`` with labs kept for the whole module (one control plane per
    module, not per test)."""
    with _labs(tmp_path_factory.mktemp("netpol-api-lab"), request.config, api=True) as factory:
        yield factory


def pytest_addoption(parser) -> None:
    parser.addini("netpol_lab_prefix", f"name prefix of the netpol_lab fixture's labs "
                  f"(default {DEFAULT_PREFIX}: labs are named {DEFAULT_PREFIX}-<hex>)",
                  default=DEFAULT_PREFIX)


def pytest_configure(config) -> None:
    global _stopping
    _stopping = False  # a new session (pytester runs sessions in one process)
    config.addinivalue_line("markers", "netpol_lab: a test that brings up a netpol-enforcer lab (root)")


def pytest_keyboard_interrupt(excinfo) -> None:
    global _stopping
    _stopping = True  # teardown follows; further interrupts are dropped, not obeyed


def pytest_unconfigure(config) -> None:
    _release_signals()


__all__: Sequence[str] = ["LabHandle", "NetpolLabWarning", "netpol_lab", "netpol_lab_module"]
