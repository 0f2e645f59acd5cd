"""Make the kernel match the compiled firewalls, one pod namespace at a time, never failing open.

The reconciler owns the record of what it installed (``managed``: netns -> pod, firewall,
namespace inode) and is the only daemon code that calls the backend. Its rules:

* First contact with a namespace (start-up, a new pod, a re-created namespace): nothing is
  flushed. ``verify`` tells whether exactly the desired rules are there already (adopted
  as they are); otherwise the table is *swapped* in one transaction (the backend's full
  apply), so the namespace never goes without rules, not even for a moment.
* Later changes pass the firewall in force as ``previous``: set-element deltas where the
  structure is unchanged, an atomic full swap otherwise.
* Fail closed: when a pod's firewall cannot be installed (the backend refused it), a
  deny-only firewall for the directions the pod is isolated in is installed instead (the
  rules in force may allow what the new policy denies), and the real one is retried; when the firewalls cannot be computed at all the daemon calls
  ``isolate_only`` with isolation worked out from the policies alone.
* Errors never escape: a failing namespace is recorded with its own backoff and retried;
  a namespace that vanished mid-apply is forgotten (discovery notices it too).
* A namespace that stops holding its pod (pod deleted from the input, address moved) is
  released: its rules stay in place (fail-static), the daemon just stops managing it.
* Drift: ``repair`` reads back every managed namespace and restores what differs.

Applies run on a small thread pool when several namespaces change at once (libnftables
calls release the GIL and every namespace commits under its own lock in the kernel).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping

from enforcer import netns as nsmod
from enforcer.errors import ApplyError, NetnsError, NetpolError
from enforcer.ir import DirectionPolicy, PodFirewall
from enforcer.model import EGRESS, INGRESS, Cluster
from enforcer.compiler.selectors import matches

Clock = Callable[[], float]


@dataclass(frozen=True)
class Managed:
    pod: str
    fw: PodFirewall  # what is installed (may be a deny-only stand-in)
    inode: int | None
    wanted: PodFirewall | None = None  # set when ``fw`` is a stand-in for this one


@dataclass
class Failure:
    pod: str
    netns: str
    message: str
    count: int
    retry_at: float


@dataclass
class Outcome:
    """What one converge or repair did."""

    applied: dict[str, str] = field(default_factory=dict)  # netns -> none|delta|full|adopted|deny-only
    released: list[str] = field(default_factory=list)  # netns no longer managed (rules kept)
    vanished: list[str] = field(default_factory=list)  # managed netns that went away
    errors: dict[str, str] = field(default_factory=dict)  # netns -> message
    repaired: list[str] = field(default_factory=list)
    changed: dict[str, tuple[PodFirewall | None, PodFirewall]] = field(default_factory=dict)  # netns -> (before, after)
    gone_ips: set[str] = field(default_factory=set)  # addresses of pods that left this node


def deny_only(fw: PodFirewall) -> PodFirewall:
    """``fw`` with its isolation kept and every allow rule dropped: what an isolated pod
    gets while its real rules cannot be installed or computed."""
    return replace(fw, ingress=DirectionPolicy(fw.ingress.isolated, fw.ingress.isolated_by, ()),
                   egress=DirectionPolicy(fw.egress.isolated, fw.egress.isolated_by, ()), sets=())


def isolation_only(cluster: Cluster, key: str, node_ips: tuple[str, ...] = (),
                   legacy: bool = False) -> PodFirewall | None:
    """Which directions pod ``key`` is isolated in, from the policies alone (SEMANTICS 1),
    as a firewall without allow rules: the fail-closed stand-in when the compiler cannot
    produce the real firewall. None if the pod is unknown."""
    pod = cluster.pods.get(key)
    if pod is None:
        return None
    by: dict[str, list[str]] = {INGRESS: [], EGRESS: []}
    for pol in cluster.policies.values():
        if pol.namespace == pod.namespace and matches(pol.pod_selector, pod.labels):
            for t in pol.policy_types:
                if t in by:
                    by[t].append(pol.key)
    if legacy and cluster.namespace(pod.namespace).legacy_default_deny:
        by[INGRESS].append(f"{pod.namespace}/[legacy DefaultDeny annotation]")
    ing, eg = sorted(by[INGRESS]), sorted(by[EGRESS])
    return PodFirewall(key, pod.ips, tuple(node_ips), DirectionPolicy(bool(ing), tuple(ing)),
                       DirectionPolicy(bool(eg), tuple(eg)))


def isolated(fw: PodFirewall) -> bool:
    return fw.ingress.isolated or fw.egress.isolated


class Reconciler:
    def __init__(self, backend, *, clock: Clock = time.monotonic, workers: int = 1,
                 inode: Callable[[str], int | None] = nsmod.inode,
                 exists: Callable[[str], bool] = nsmod.exists, max_backoff: float = 30.0,
                 generation: Callable[[str], int | None] | None = None) -> None:
        self.backend = backend
        self.clock = clock
        self.workers = max(1, workers)
        self.inode = inode
        self.exists = exists
        self.max_backoff = max_backoff
        self.managed: dict[str, Managed] = {}
        self.failures: dict[str, Failure] = {}
        # Drift repair skips namespaces whose ruleset generation has not moved since their
        # last clean read-back (None: no such counter, always read back).
        self.generation = generation
        self._clean_gen: dict[str, int] = {}
        self._ours: dict[str, int] = {}  # our transactions in a namespace since its clean read
        # Called after every namespace applied or read back: a long sync (thousands of
        # namespaces) keeps systemd's watchdog fed while it makes progress.
        self.progress: Callable[[], None] = lambda: None
        # Host mode (the backend places every pod on its node): one transaction per node
        # for all the pods of a round, instead of one per pod.
        self.per_node = getattr(backend, "placement", "pod") == "host"
        self._pool: ThreadPoolExecutor | None = None
        self._inodes: dict[str, int | None] = {}  # this converge round's, of the managed namespaces

    # ------------------------------------------------------------------ converge

    def converge(self, local: Mapping[str, str], firewall: Callable[[str], PodFirewall],
                 candidates: Iterable[str] | None = None) -> Outcome:
        """Make every local pod's namespace (``local``: pod key -> netns) hold ``firewall(pod)``.

        ``candidates``: pods whose firewall may have changed (None: check all). Pods new to
        this node, re-created namespaces and failed namespaces are always checked."""
        out = Outcome()
        netns_of = dict(local)
        owner = {ns: key for key, ns in netns_of.items()}
        # 1. Namespaces we manage that no longer belong to the same pod: release them.
        # (The inodes read here serve this round's applies too: a stat a namespace.)
        self._inodes = {}
        for ns, m in list(self.managed.items()):
            ino = self._inodes[ns] = self.inode(ns)
            if owner.get(ns) != m.pod or ino != m.inode:
                del self.managed[ns]
                self._forget_clean(ns)
                out.gone_ips.update(m.fw.ips)
                (out.released if self.exists(ns) else out.vanished).append(ns)
        for ns in list(self.failures):
            if ns not in owner:
                del self.failures[ns]
        # 2. What to look at.
        check = set(netns_of) if candidates is None else set(candidates) & set(netns_of)
        check |= {key for key, ns in netns_of.items() if ns not in self.managed}
        check |= {self.failures[ns].pod for ns in self.failures if ns in owner}
        now = self.clock()
        jobs = []
        for key in check:
            ns = netns_of[key]
            fail = self.failures.get(ns)
            if fail is not None and fail.retry_at > now:
                continue
            try:
                fw = firewall(key)
            except KeyError:
                continue
            m = self.managed.get(ns)
            # A namespace in ``failures`` stays failed until a retry's read-back shows our
            # rules in force, even when the desired firewall equals the one recorded: the
            # record says what we meant to install, not what the kernel holds.
            if m is not None and m.fw == fw and m.wanted is None and fail is None:
                continue
            jobs.append((m is not None, key, ns, fw))
        # New namespaces first (fail closed: isolation before anything else), isolated first.
        jobs.sort(key=lambda j: (j[0], not isolated(j[3]), j[2]))
        try:
            for ns, result in self._run(jobs):
                self._record(out, ns, result)
        finally:
            self._inodes = {}
        return out

    def isolate_only(self, local: Mapping[str, str], isolation: Callable[[str], PodFirewall | None]) -> Outcome:
        """Fail closed when firewalls cannot be computed: every local pod not yet managed
        that ``isolation`` says is isolated gets a deny-only firewall."""
        jobs = []
        for key, ns in local.items():
            if ns in self.managed:
                continue
            fw = isolation(key)
            if fw is not None and isolated(fw):
                jobs.append((False, key, ns, deny_only(fw)))
        out = Outcome()
        for ns, result in self._run(jobs, standin=True):
            self._record(out, ns, result)
        return out

    def next_retry(self) -> float | None:
        return min((f.retry_at for f in self.failures.values()), default=None)

    # ------------------------------------------------------------------ repair

    def repair(self) -> Outcome:
        """Read back every managed namespace; restore anything changed or flushed."""
        out = Outcome()
        restores: list[tuple[str, Managed]] = []
        for ns, m in list(self.managed.items()):
            self.progress()
            if self.inode(ns) != m.inode:
                del self.managed[ns]
                out.vanished.append(ns)
                out.gone_ips.update(m.fw.ips)
                continue
            if ns in self.failures:
                continue  # converge retries it on its own backoff, with a read-back
            gen = self.generation(ns) if self.generation is not None else None
            clean = self._clean_gen.get(ns)
            if gen is not None and clean is not None and gen == (clean + self._ours.get(ns, 0)) & 0xFFFFFFFF:
                # No transaction in this namespace since it was last found right but our
                # own applies (each exactly what we sent): after a policy change the round
                # need not list every table again (110 tables through libnftables take
                # 0.1-0.5 s, and a change arriving meanwhile waits for them).
                continue
            stage = "read"
            try:
                if self.backend.verify(ns, m.fw):
                    if gen is not None:
                        self._clean_gen[ns] = gen
                        self._ours.pop(ns, None)
                    continue
                self._forget_clean(ns)
                stage = "restore"
                if self.per_node:
                    restores.append((ns, m))  # all of them in one transaction, below
                    continue
                self.backend.apply(ns, m.fw, None)
                out.repaired.append(ns)
                out.applied[ns] = "full"
            except Exception as e:  # retried by converge with backoff, read back each time
                if isinstance(e, NetnsError) and not self.exists(ns):
                    del self.managed[ns]
                    out.vanished.append(ns)
                    out.gone_ips.update(m.fw.ips)
                elif stage == "read":
                    self._fail(out, m.pod, ns, "cannot read our rules back: " + _message(e))
                else:
                    self._fail(out, m.pod, ns, "our rules were changed outside the daemon and "
                               "restoring them failed: " + _message(e, cause=True))
        if restores:
            results = self.backend.apply_many([(ns, m.fw, None) for ns, m in restores])
            for (ns, m), result in zip(restores, results):
                if isinstance(result, Exception):
                    self._fail(out, m.pod, ns, "our rules were changed outside the daemon and "
                               "restoring them failed: " + _message(result, cause=True))
                else:
                    out.repaired.append(ns)
                    out.applied[ns] = "full"
        return out

    # ------------------------------------------------------------------ cleanup

    def remove_all(self) -> dict[str, str]:
        """--cleanup-on-exit: remove our rules from every managed namespace."""
        errors = {}
        for ns in list(self.managed):
            try:
                self.backend.remove(ns)
            except Exception as e:
                errors[ns] = _message(e)
            self.managed.pop(ns, None)
        return errors

    def close(self) -> None:
        close = getattr(self.generation, "close", None)
        if close is not None:
            close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # ------------------------------------------------------------------ internals

    def _run(self, jobs, *, standin: bool = False):
        if self.per_node and jobs:
            pre = self._batch(jobs)
            out = [(j[2], self._apply_one(j, standin, pre)) for j in jobs]
            self.progress()
            return out
        if len(jobs) > 1 and self.workers > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="apply")
            # New namespaces (first in ``jobs``) are still submitted first.
            futures = [(j[2], self._pool.submit(self._apply_one, j, standin)) for j in jobs]
            out = []
            for ns, f in futures:
                out.append((ns, f.result()))
                self.progress()
            return out
        out = []
        for j in jobs:
            out.append((j[2], self._apply_one(j, standin)))
            self.progress()
        return out

    def _batch(self, jobs) -> dict[str, dict]:
        """Host mode: every pod of a node in one transaction (``apply_many``). First contacts
        are read back first (adopted when right), then every apply of the round goes in
        one call; ``_apply_one`` takes its answers from here (ns -> {"verify", "apply"})."""
        pre: dict[str, dict] = {}
        batch = []
        for known, key, ns, fw in jobs:
            if self.inode(ns) is None:
                continue
            m = self.managed.get(ns)
            entry = pre[ns] = {}
            previous = None
            if m is None or ns in self.failures:
                try:
                    entry["verify"] = ok = self.backend.verify(ns, fw)
                except Exception as e:
                    entry["verify"] = e
                    continue
                if ok:
                    continue
            else:
                previous = m.fw
            batch.append((ns, fw, previous))
        if batch:
            for (ns, _, _), result in zip(batch, self.backend.apply_many(batch)):
                pre[ns]["apply"] = result
        return pre

    def _verify(self, ns: str, fw: PodFirewall, pre: dict | None) -> bool:
        got = pre.get(ns, {}).pop("verify", None) if pre is not None else None
        if got is None:
            return self.backend.verify(ns, fw)
        if isinstance(got, Exception):
            raise got
        return got

    def _apply(self, ns: str, fw: PodFirewall, previous: PodFirewall | None, pre: dict | None):
        got = pre.get(ns, {}).pop("apply", None) if pre is not None else None
        if got is None:
            return self.backend.apply(ns, fw, previous)
        if isinstance(got, Exception):
            raise got
        return got

    def _apply_one(self, job, standin: bool, pre: dict | None = None) -> tuple:
        """Returns ("ok", kind, Managed, before) | ("gone",) | ("error", pod, message) |
        ("standin", Managed, message, before). Runs on a pool thread: touches nothing shared
        (``pre``: this round's answers from ``_batch``, host mode)."""
        known, key, ns, fw = job
        ino = self._inodes.get(ns) or self.inode(ns)
        if ino is None:
            return ("gone",)
        m = self.managed.get(ns)
        before = m.fw if m is not None else None
        retry = ns in self.failures
        clean = None  # the generation at which the namespace is known to hold ``fw``
        try:
            if m is None or retry:
                # First contact: adopt what is there if it is exactly right, else swap.
                # A retry after a failure is first contact again: what the kernel holds
                # is unknown (someone may have replaced our table), so no delta against
                # the record, and success only once a read-back shows our rules.
                # The generation read before (and after an apply) tells drift repair
                # that its first round need not read these tables back again: at start a
                # round of 110 read-backs is 0.2-2 s, and a change arriving meanwhile waits.
                gen0 = self.generation(ns) if self.generation is not None and pre is None else None
                if self._verify(ns, fw, pre):
                    kind = "adopted" if not retry else "verified"
                    clean = gen0
                else:
                    kind = self._apply(ns, fw, None, pre).kind
                    if retry and not self.backend.verify(ns, fw):
                        raise ApplyError("the rules read back after the apply are not ours "
                                         "(someone else holds or changes the table)")
                    gen1 = self.generation(ns) if gen0 is not None and kind == "full" else None
                    clean = gen1 if gen1 is not None and gen1 == (gen0 + 1) & 0xFFFFFFFF else None  # ours alone
                learn = getattr(self.backend, "learn", None)
                if learn is not None and pre is None:
                    learn(ns, fw)  # what the first rule change needs, read now (nftables: handles)
            else:
                kind = self._apply(ns, fw, m.fw, pre).kind
            managed = Managed(key, fw, ino, fw if standin else None)
            return ("ok", "deny-only" if standin else kind, managed, before, None if standin else clean)
        except NetnsError as e:
            if not self.exists(ns):
                return ("gone",)
            err = _message(e, cause=retry)
        except Exception as e:
            if self.inode(ns) is None:  # removed while we applied: not an error
                return ("gone",)
            err = _message(e, cause=retry)
        if standin or not isolated(fw):
            return ("error", key, err)
        # Fail closed: the real rules were refused. Whatever is in force now (nothing, or
        # the rules of an older policy) may allow what the new policy denies, so the
        # isolation goes in without allow rules until the real rules are accepted.
        stand = deny_only(fw)
        try:
            self.backend.apply(ns, stand, None)
        except Exception as e2:
            return ("error", key, f"{err}; deny-only fallback failed too: {_message(e2)}")
        return ("standin", Managed(key, stand, ino, fw), err, before)

    def _record(self, out: Outcome, ns: str, result: tuple) -> None:
        tag = result[0]
        if tag == "gone":
            m = self.managed.pop(ns, None)
            self.failures.pop(ns, None)
            if m is not None:
                out.vanished.append(ns)
                out.gone_ips.update(m.fw.ips)
            return
        if tag == "ok":
            _, kind, managed, before, clean = result
            # Every successful "full" or "delta" apply of a known namespace is exactly one
            # transaction (a refused batch commits nothing, its fallback is the one; nothing
            # to change is "none"): counted, so drift repair can tell our own transactions
            # from anyone else's by the generation. (Host mode: one transaction per node for
            # many pods; not counted, read back.)
            if clean is not None and not self.per_node:  # first contact, the generation known
                self._clean_gen[ns] = clean
                self._ours.pop(ns, None)
            elif kind in ("full", "delta") and before is not None and ns in self._clean_gen and not self.per_node:
                self._ours[ns] = self._ours.get(ns, 0) + 1
            elif kind not in ("none", "adopted"):
                self._forget_clean(ns)
            self.managed[ns] = managed
            if managed.wanted is None:
                self.failures.pop(ns, None)
            out.applied[ns] = kind
            if kind not in ("adopted", "none") and not (kind == "verified" and before == managed.fw):
                out.changed[ns] = (before, managed.fw)
            return
        self._forget_clean(ns)  # failed or stood in: a read-back decides again
        if tag == "standin":
            _, managed, err, before = result
            self.managed[ns] = managed
            out.applied[ns] = "deny-only"
            out.changed[ns] = (before, managed.fw)
            self._fail(out, managed.pod, ns, err)
            return
        _, pod, err = result
        self._fail(out, pod, ns, err)

    def _forget_clean(self, ns: str) -> None:
        self._clean_gen.pop(ns, None)
        self._ours.pop(ns, None)

    def _fail(self, out: Outcome, pod: str, ns: str, message: str) -> None:
        prev = self.failures.get(ns)
        count = prev.count + 1 if prev is not None else 1
        delay = min(self.max_backoff, 0.1 * (2 ** (count - 1)))
        self.failures[ns] = Failure(pod, ns, message, count, self.clock() + delay)
        out.errors[ns] = message


def _message(e: BaseException, *, cause: bool = False) -> str:
    """One line for a log field. A backend error's reason is on its later lines (nft's
    message): they are joined, never dropped. ``cause``: only the underlying reason (the
    backend's own wording, e.g. "the previous rules stay in force", is not true when
    the rules in force were not ours)."""
    if cause and e.__cause__ is not None:
        e = e.__cause__
    if isinstance(e, NetpolError) or cause:
        text = " ".join(line.strip() for line in str(e).strip().splitlines() if line.strip())
        return _short(text or type(e).__name__)
    return _short(f"{type(e).__name__}: {e}")


def _short(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
