"""etcd + kube-apiserver on 127.0.0.1, started and stopped by tests (and by hand in the lab).

The binaries are built from the Go module proxy by ``make k8s`` (scripts/build-k8s.sh) into a
per-user cache; this module only finds and runs them. Everything listens on loopback ports
picked at start, every file lives in the work directory the caller hands over, and the host's
network configuration is never touched.

What a real cluster has and this one has not: no controller-manager, scheduler or kubelet.
So the ``default`` ServiceAccount is not created per namespace (the ServiceAccount admission
plugin is disabled, pods need none), a deleted namespace would stay Terminating
(``delete_namespace`` does the namespace controller's job), and a pod bound to a node is only
removed at once with ``--grace-period=0 --force`` (what the kubelet would confirm).

Certificates come from the ``openssl`` CLI, present on every Debian system (ca-certificates
depends on it): no Python dependency for a test-only need. Keys are P-256, which openssl
generates in milliseconds where RSA takes a noticeable part of a second each.
"""
from __future__ import annotations

import atexit
import base64
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass
from pathlib import Path

from ..errors import NetpolError

#: The Kubernetes release scripts/build-k8s.sh builds (controlplane/go.mod pins the same one;
#: tests/api/test_controlplane.py checks they agree).
K8S_VERSION = "v1.34.4"
BINARIES = ("kube-apiserver", "etcd", "kubectl")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
_REPO = Path(__file__).resolve().parents[2]


class ControlPlaneError(NetpolError):
    """The control plane could not be started or driven (the message carries its log tail)."""


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call; unlike its base class, its message shows kubectl's stderr."""

    def __str__(self) -> str:
        return f"kubectl {' '.join(self.cmd[5:])} exited {self.returncode}: {(self.stderr or '').strip()}"


@dataclass(frozen=True)
class ApiReply:
    """The answer to ``ControlPlane.api``: HTTP status, decoded body, Warning headers."""

    status: int
    body: dict
    warnings: list[str]
    text: str = ""  # the raw body (a watch stream is several JSON documents, one per line)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def cache_dir(version: str = K8S_VERSION) -> Path:
    """Where scripts/build-k8s.sh puts the binaries of *version* (shared by every clone)."""
    root = os.environ.get("NETPOL_K8S_CACHE")
    if root:
        return Path(root) / version
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "netpol-enforcer" / "k8s" / version


def _complete(directory: Path) -> bool:
    return all(os.access(directory / b, os.X_OK) and (directory / b).is_file() for b in BINARIES)


def binary_dir() -> Path | None:
    """The first directory holding all three binaries, or None.

    Looked up in order: $NETPOL_K8S_BIN, this interpreter's bin directory (the .venv that
    ``make k8s`` links into), the repository's .venv/bin, the per-user cache.
    """
    candidates = []
    if os.environ.get("NETPOL_K8S_BIN"):
        candidates.append(Path(os.environ["NETPOL_K8S_BIN"]))
    candidates += [Path(sys.prefix) / "bin", _REPO / ".venv" / "bin", cache_dir()]
    for directory in candidates:
        if _complete(directory):
            return directory
    return None


def missing_binaries() -> str | None:
    """None when the control plane can run here, else a one-line reason (a skip reason)."""
    if shutil.which("openssl") is None:
        return "openssl is not installed (apt-get install openssl): it makes the control plane's certificates"
    if binary_dir() is not None:
        return None
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        return "Go is not installed: install Go 1.24+ and run make k8s to build kube-apiserver, etcd and kubectl"
    return f"kube-apiserver, etcd and kubectl {K8S_VERSION} are not built: run make k8s"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # A SIGKILLed test run must not leave an API server behind: the kernel kills the child
    # when its parent dies (PR_SET_PDEATHSIG = 1).
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


_LIVE: "weakref.WeakSet[ControlPlane]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for cp in list(_LIVE):
        cp.stop()


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def make_certificates(directory: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1, an admin client certificate, SA keys."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "7",
             "-subj", "/CN=netpol-test-ca", cwd=directory)
    sans = ("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
            "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1")
    leaves = {
        "serving": ("/CN=kube-apiserver", sans + "\nextendedKeyUsage=serverAuth\n"),
        # O=system:masters: the group RBAC's cluster-admin binding is made for.
        "admin": ("/O=system:masters/CN=netpol-admin", "extendedKeyUsage=clientAuth\n"),
    }
    for name, (subject, ext) in leaves.items():
        (directory / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n" + ext)
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=directory)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "7", "-extfile", f"{name}.ext",
                 "-out", f"{name}.crt", cwd=directory)
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", "sa.key", cwd=directory)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, ca: Path, *, user: str,
                     cert: Path | None = None, key: Path | None = None,
                     token: str | None = None) -> Path:
    """A one-context kubeconfig with everything embedded (no paths to resolve)."""
    creds: dict[str, str] = {}
    if cert and key:
        creds = {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}
    if token:
        creds["token"] = token
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": user, "preferences": {},
        "clusters": [{"name": "netpol-test",
                      "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": user, "context": {"cluster": "netpol-test", "user": user}}],
    }
    # JSON is YAML: every kubeconfig reader takes it, and it needs no YAML writer.
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


class ControlPlane:
    """etcd and kube-apiserver as children in their own process groups; see the module doc."""

    def __init__(self, workdir: Path, binaries: Path | None = None, *, watch_cache: bool = True,
                 detached: bool = False):
        self.workdir = Path(workdir)
        # Detached: the processes outlive this Python process (a lab's control plane lives
        # until ``netpol lab down``, which kills them by pid): no PDEATHSIG, no atexit stop.
        self.detached = detached
        self._bin = binaries
        # On, as in every real cluster: watches are served from the API server's cache, with
        # bookmarks. Off: every watch is an etcd watch (cheaper compaction tests).
        self.watch_cache = watch_cache
        self.server = ""
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.certs = self.workdir / "pki"
        self.apiserver_pid: int | None = None
        self.etcd_pid: int | None = None
        self.etcd_url = ""
        self.start_seconds: float | None = None  # start() to /readyz answering ok, measured
        self._procs: dict[str, subprocess.Popen] = {}
        self._port = 0
        self._paused = False

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> "ControlPlane":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 90) -> None:
        if self._procs:
            raise ControlPlaneError("control plane already started")
        if self._bin is None:
            self._bin = binary_dir()
        reason = missing_binaries() if self._bin is None else None
        if self._bin is None:
            raise ControlPlaneError(reason or "control plane binaries not found: run make k8s")
        begin = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.detached:
            _LIVE.add(self)
        try:
            if not (self.certs / "admin.crt").exists():
                make_certificates(self.certs)
            self._start_etcd(begin + timeout)
            self._port = _free_port()
            self.server = f"https://127.0.0.1:{self._port}"
            write_kubeconfig(self.kubeconfig, self.server, self.certs / "ca.crt", user="admin",
                             cert=self.certs / "admin.crt", key=self.certs / "admin.key")
            self.start_apiserver(timeout=max(1.0, begin + timeout - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - begin

    def stop(self) -> None:
        """Kill both processes (the API server first) and wait for them; idempotent."""
        for name in ("kube-apiserver", "etcd"):
            self._kill(name)
        self.apiserver_pid = self.etcd_pid = None
        shutil.rmtree(self.workdir / "etcd-data", ignore_errors=True)
        _LIVE.discard(self)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        try:
            proc = subprocess.Popen(
                [str(self._bin / name), *args], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True,
                preexec_fn=None if self.detached else _die_with_parent, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        finally:
            log.close()
        self._procs[name] = proc
        return proc

    def _kill(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
                os.killpg(proc.pid, signal.SIGCONT)  # a paused process must see the signal
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait(self, name: str, deadline: float, ready) -> None:
        proc = self._procs[name]
        while True:
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {proc.returncode} while starting; its log "
                    f"({self.workdir / (name + '.log')}) ends:\n{self._log_tail(name)}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{name} not ready in time; its log ends:\n{self._log_tail(name)}")
            time.sleep(0.1)

    # -- etcd -----------------------------------------------------------------------------
    def _start_etcd(self, deadline: float) -> None:
        client, peer = _free_port(), _free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        data = self.workdir / "etcd-data"
        shutil.rmtree(data, ignore_errors=True)
        self.etcd_pid = self._spawn("etcd", [
            "--name", "netpol-test", "--data-dir", str(data),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"netpol-test={peer_url}",
            # A throw-away store on a shared machine: no fsync, and no 64 MB WAL files.
            "--unsafe-no-fsync", "--log-level", "warn",
        ]).pid
        self._wait("etcd", deadline, self._etcd_healthy)

    def _etcd_call(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.etcd_url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.load(resp)

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as resp:
                return json.load(resp).get("health") == "true"
        except (OSError, ValueError):
            return False

    def etcd_revision(self) -> int:
        """etcd's current revision (what a new object's resourceVersion would follow)."""
        reply = self._etcd_call("/v3/kv/range", {"key": base64.b64encode(b"/").decode(),
                                                 "limit": 1, "keys_only": True})
        return int(reply["header"]["revision"])

    def compact_etcd(self) -> None:
        """Compact etcd to its current revision, so that a watch from an older resourceVersion
        gets 410 Gone ("too old resource version"), then a relist is the only way on.

        With the watch cache on, the API server answers such a watch from its cache for as
        long as the cache holds the events (minutes, whatever etcd did), as a real one does.
        Real API servers lose that history when they restart, so this restarts the API server
        (same port, same etcd): open watches are cut, and their resumption gets the 410.
        """
        self._etcd_call("/v3/kv/compaction", {"revision": str(self.etcd_revision()),
                                              "physical": True})
        if self.watch_cache and "kube-apiserver" in self._procs:
            self.stop_apiserver()
            self.start_apiserver()

    # -- kube-apiserver ------------------------------------------------------------------------
    def _apiserver_args(self) -> list[str]:
        pki = self.certs
        return [
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self._port),
            "--tls-cert-file", str(pki / "serving.crt"), "--tls-private-key-file", str(pki / "serving.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--authorization-mode", "Node,RBAC",
            "--service-account-issuer", SERVICE_ACCOUNT_ISSUER,
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", "10.96.0.0/16",
            # Pods need no ServiceAccount object (no controller-manager creates "default").
            "--disable-admission-plugins", "ServiceAccount",
            # What kubeadm sets: DaemonSets with hostNetwork (deploy/) must validate.
            "--allow-privileged=true",
            "--profiling=false", "--v=1",
        ] + ([] if self.watch_cache else ["--watch-cache=false"])

    def start_apiserver(self, timeout: float = 90) -> None:
        """(Re)start the API server on the same port against the same etcd."""
        if "kube-apiserver" in self._procs:
            raise ControlPlaneError("kube-apiserver already running")
        if not self.etcd_url or "etcd" not in self._procs:
            raise ControlPlaneError("etcd is not running: call start() first")
        deadline = time.monotonic() + timeout
        self.apiserver_pid = self._spawn("kube-apiserver", self._apiserver_args()).pid
        self._paused = False
        self._wait("kube-apiserver", deadline, self._ready)

    def stop_apiserver(self) -> None:
        """Stop the API server only (etcd and its data stay); start_apiserver() brings it back."""
        self._kill("kube-apiserver")
        self.apiserver_pid = None

    def pause_apiserver(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung API server)."""
        if self.apiserver_pid is None:
            raise ControlPlaneError("kube-apiserver is not running")
        os.kill(self.apiserver_pid, signal.SIGSTOP)
        self._paused = True

    def resume_apiserver(self) -> None:
        if self.apiserver_pid is not None:
            os.kill(self.apiserver_pid, signal.SIGCONT)
        self._paused = False

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        ctx.load_cert_chain(str(self.certs / "admin.crt"), str(self.certs / "admin.key"))
        return ctx

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.server + "/readyz", timeout=2,
                                        context=self._ssl_context()) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def ready(self) -> bool:
        """Whether /readyz answers ok now (False while paused or stopped)."""
        return not self._paused and self.apiserver_pid is not None and self._ready()

    # -- clients --------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run kubectl against this API server (admin unless *kubeconfig* is given)."""
        if self._bin is None:
            raise ControlPlaneError("control plane not started")
        cmd = [str(self._bin / "kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig),
               "--cache-dir", str(self.workdir / "kubectl-cache"), *args]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def api(self, method: str, path: str, body: bytes | str | None = None,
            content_type: str = "application/json", timeout: float = 30) -> ApiReply:
        """One raw HTTPS request as the admin (``path`` with its query string).

        For what kubectl would change before sending (it parses YAML itself, and rejects
        duplicate keys on its own): the API server's verdict on exactly these bytes.
        """
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.server + path, data=data, method=method,
                                     headers={"Content-Type": content_type,
                                              "Accept": "application/json"})
        try:
            resp = urllib.request.urlopen(req, timeout=timeout, context=self._ssl_context())
        except urllib.error.HTTPError as err:
            resp = err
        with resp:
            raw = resp.read()
            warnings = resp.headers.get_all("Warning") or []
            status = resp.status if hasattr(resp, "status") else resp.code
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"message": raw.decode(errors="replace")}
        return ApiReply(status, parsed, warnings, raw.decode(errors="replace"))

    def kubeconfig_for_service_account(self, namespace: str, name: str,
                                       duration: str = "2h") -> Path:
        """A token kubeconfig for ServiceAccount *namespace/name* (created if missing).

        The token is a real bound token from the TokenRequest API (``kubectl create token``),
        so RBAC sees ``system:serviceaccount:NS:NAME``.
        """
        made = self.kubectl("create", "serviceaccount", name, "-n", namespace, check=False)
        if made.returncode != 0 and "already exists" not in made.stderr:
            raise KubectlError(made.returncode, made.args, made.stdout, made.stderr)
        token = self.kubectl("create", "token", name, "-n", namespace,
                             "--duration", duration).stdout.strip()
        path = self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        return write_kubeconfig(path, self.server, self.certs / "ca.crt",
                                user=f"{namespace}-{name}", token=token)

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace and its objects now, doing the namespace controller's and the
        kubelet's part (there are none here): pods force-deleted, then the finalizer removed."""
        self.kubectl("delete", "pods,networkpolicies,services,configmaps,serviceaccounts,"
                     "roles,rolebindings", "--all", "-n", name, "--grace-period=0", "--force",
                     "--ignore-not-found", "--wait=false", check=False)
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
        got = self.kubectl("get", "namespace", name, "-o", "json", check=False)
        if got.returncode != 0:
            return  # already gone
        ns = json.loads(got.stdout)
        ns.setdefault("spec", {})["finalizers"] = []
        self.kubectl("replace", "--raw", f"/api/v1/namespaces/{name}/finalize", "-f", "-",
                     input=json.dumps(ns))
