"""Workloads (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob,
ReplicationController) as the pods their controllers would make. Pure.

Applications ship workloads, not Pods with addresses. What NetworkPolicy sees of a workload
is its pods: the pod template's labels and container ports, ``replicas`` times. So a
workload is decoded strictly where we read it (metadata, replicas, selector, the template's
labels and ports, as the API server validates them) and the rest is ignored, then expanded
into ``model.Pod`` objects that carry their owner (``Deployment/web``) for grouping.

Pod names, stable (the same input always gives the same names, so a lab converges without
renaming pods) and close to what a cluster shows:

    Deployment web        web-<hash>-0, web-<hash>-1   (<hash>: 5 characters of ns/name, in
                                                         the place of pod-template-hash)
    ReplicaSet, ReplicationController, Job, CronJob     NAME-0, NAME-1, ...
    StatefulSet db        db-0, db-1 (from spec.ordinals.start)
    DaemonSet agent       agent-<node>: one per node (the lab has one node, ``node-0``)

The controllers' own labels are added as a cluster would (policies select on them):
``pod-template-hash`` (Deployment), ``statefulset.kubernetes.io/pod-name`` and
``apps.kubernetes.io/pod-index`` (StatefulSet), ``job-name`` and
``batch.kubernetes.io/job-name`` (Job, CronJob).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from enforcer.load import decode as D
from enforcer.load import validation as V
from enforcer.model import ContainerPort, LabelSelector, Pod
from enforcer.compiler.selectors import matches

API_VERSIONS = {
    "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "ReplicationController": "v1",
}
KINDS = frozenset(API_VERSIONS)
NODES = ("node-0",)  # the lab's node(s): a DaemonSet has one pod on each
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the characters Kubernetes uses in generated names

# spec fields per kind: unknown ones are refused (a mis-indented ``selector:``), known ones
# we do not read are ignored.
_SPEC = {
    "Deployment": ("replicas", "selector", "template", "strategy", "minReadySeconds",
                   "revisionHistoryLimit", "paused", "progressDeadlineSeconds"),
    "ReplicaSet": ("replicas", "selector", "template", "minReadySeconds"),
    "StatefulSet": ("replicas", "selector", "template", "volumeClaimTemplates", "serviceName",
                    "podManagementPolicy", "updateStrategy", "revisionHistoryLimit",
                    "minReadySeconds", "persistentVolumeClaimRetentionPolicy", "ordinals"),
    "DaemonSet": ("selector", "template", "updateStrategy", "minReadySeconds", "revisionHistoryLimit"),
    "ReplicationController": ("replicas", "selector", "template", "minReadySeconds"),
    "Job": ("parallelism", "completions", "activeDeadlineSeconds", "podFailurePolicy", "successPolicy",
            "backoffLimit", "backoffLimitPerIndex", "maxFailedIndexes", "selector", "manualSelector",
            "template", "ttlSecondsAfterFinished", "completionMode", "suspend", "podReplacementPolicy",
            "managedBy"),
    "CronJob": ("schedule", "timeZone", "startingDeadlineSeconds", "concurrencyPolicy", "suspend",
                "jobTemplate", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"),
}
_SPEC_SETS = {k: frozenset(v) for k, v in _SPEC.items()}
_TEMPLATE = frozenset(("metadata", "spec"))
_ORDINALS = frozenset(("start",))


@dataclass(frozen=True)
class Workload:
    kind: str
    namespace: str
    name: str
    labels: dict = field(hash=False)  # the pod template's labels
    ports: tuple[ContainerPort, ...]
    replicas: int
    host_network: bool = False
    ordinal_start: int = 0
    source: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def owner(self) -> str:
        return f"{self.kind}/{self.name}"


def name_hash(namespace: str, name: str, n: int = 5) -> str:
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:n])


def pods(w: Workload) -> list[Pod]:
    """The pods ``w``'s controller would run, in order."""
    out = []
    for pod_name, extra in _names(w):
        labels = dict(w.labels)
        labels.update(extra)
        out.append(Pod(w.namespace, pod_name, labels, (), w.ports, w.source, w.owner, w.host_network))
    return out


def _names(w: Workload) -> list[tuple[str, dict[str, str]]]:
    if w.kind == "StatefulSet":
        out = []
        for i in range(w.ordinal_start, w.ordinal_start + w.replicas):
            n = f"{w.name}-{i}"
            out.append((n, {"statefulset.kubernetes.io/pod-name": n, "apps.kubernetes.io/pod-index": str(i)}))
        return out
    if w.kind == "DaemonSet":
        return [(f"{w.name}-{node}", {}) for node in NODES]
    if w.kind == "Deployment":
        h = name_hash(w.namespace, w.name)
        return [(f"{w.name}-{h}-{i}", {"pod-template-hash": h}) for i in range(w.replicas)]
    extra = {"job-name": w.name, "batch.kubernetes.io/job-name": w.name} if w.kind in ("Job", "CronJob") else {}
    return [(f"{w.name}-{i}", dict(extra)) for i in range(w.replicas)]


def group_of(pod: Pod) -> str:
    """The id a pod is grouped under by ``--by workload``: ns/workload, or the pod's own id."""
    if pod.owner:
        return f"{pod.namespace}/{pod.owner.split('/', 1)[1]}"
    return pod.key


# ==== decoding ================================================================================


def decode(d: dict, kind: str, errs: D.Errs, warns: D.Errs, source: str) -> Workload:
    """A workload of the right apiVersion, decoded strictly where we read it."""
    D._struct(d, "", D._OBJECT, errs)
    meta = D._metadata(d.get("metadata"), errs, True, V.dns1123_subdomain)
    if kind == "CronJob" and len(meta.name) > 52:
        errs.append(("metadata.name", V.invalid(meta.name, "must be no more than 52 characters")))
    anc: D.Anc = (("", D._OBJECT),)
    spec = D._struct(d.get("spec"), "spec", _SPEC_SETS[kind], errs, anc)
    path = "spec"
    if spec is None:
        errs.append(("spec", V.required()))
        spec = {}
    if kind == "CronJob":
        jt = D._struct(spec.get("jobTemplate"), "spec.jobTemplate", _TEMPLATE, errs, (("spec", _SPEC_SETS[kind]),))
        if jt is None:
            errs.append(("spec.jobTemplate", V.required()))
            jt = {}
        path = "spec.jobTemplate.spec"
        spec = D._struct(jt.get("spec"), path, _SPEC_SETS["Job"], errs, (("spec.jobTemplate", _TEMPLATE),)) or {}
        kind_rules = "Job"
    else:
        kind_rules = kind
    replicas = _replicas(spec, path, kind_rules, errs)
    labels, ports, host_network = _template(spec.get("template"), f"{path}.template", errs, warns, source)
    _check_selector(spec, path, kind_rules, labels, errs)
    start = 0
    if kind == "StatefulSet" and spec.get("ordinals") is not None:
        o = D._struct(spec.get("ordinals"), "spec.ordinals", _ORDINALS, errs) or {}
        start = D._integer(o.get("start"), "spec.ordinals.start", errs) or 0
        if start < 0:
            errs.append(("spec.ordinals.start", V.invalid(start, "must be greater than or equal to 0")))
            start = 0
    return Workload(kind, meta.namespace, meta.name, labels, ports, replicas, host_network, start, source)


def _replicas(spec: dict, path: str, kind: str, errs: D.Errs) -> int:
    if kind == "DaemonSet":
        return len(NODES)
    fld = "parallelism" if kind == "Job" else "replicas"
    n = D._integer(spec.get(fld), f"{path}.{fld}", errs)
    if n is None:
        n = 1  # the API server's default
    if n < 0:
        errs.append((f"{path}.{fld}", V.invalid(n, "must be greater than or equal to 0")))
        return 0
    if kind == "Job":
        completions = D._integer(spec.get("completions"), f"{path}.completions", errs)
        if completions is not None:
            if completions < 0:
                errs.append((f"{path}.completions", V.invalid(completions, "must be greater than or equal to 0")))
            else:
                n = min(n, completions)  # never more pods at once than completions left
    return n


def _template(v: object, path: str, errs: D.Errs, warns: D.Errs, source: str
              ) -> tuple[dict, tuple[ContainerPort, ...], bool]:
    t = D._struct(v, path, _TEMPLATE, errs)
    if t is None:
        errs.append((path, V.required()))
        return {}, (), False
    meta = D._struct(t.get("metadata"), f"{path}.metadata", D._META, errs, ((path, _TEMPLATE),)) or {}
    labels = D._string_map(meta.get("labels"), f"{path}.metadata.labels", errs)
    errs.extend((f"{path}.metadata.labels", m) for m in V.labels(labels))
    # The template's pod spec is read exactly as a Pod's is: the same checks, the same paths
    # under the template.
    inner: D.Errs = []
    inner_warns: D.Errs = []
    pod = D._pod({"spec": t.get("spec")}, D._Meta("template", "default", labels, {}), inner, inner_warns, source)
    errs.extend((f"{path}.{p}", m) for p, m in inner)
    warns.extend((f"{path}.{p}", m) for p, m in inner_warns)
    return labels, pod.ports, pod.host_network


def _check_selector(spec: dict, path: str, kind: str, labels: dict, errs: D.Errs) -> None:
    """The selector must exist (apps/v1), be valid and non-empty, and match the template's
    labels: the API server refuses a controller that would not own its own pods."""
    raw = spec.get("selector")
    sel_path = f"{path}.selector"
    labels_path = f"{path}.template.metadata.labels"
    shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    mismatch = V.invalid(shown, "`selector` does not match template `labels`")
    if kind == "ReplicationController":
        # a plain map, defaulted from the template's labels
        sel = D._string_map(raw, sel_path, errs)
        errs.extend((sel_path, m) for m in V.labels(sel))
        if not sel:
            if not labels:
                errs.append((sel_path, V.required()))
            return
        if any(labels.get(k) != v for k, v in sel.items()):
            errs.append((labels_path, mismatch))
        return
    if kind == "Job":
        manual = spec.get("manualSelector")
        if manual is not None and manual.__class__ is not bool:
            D._type_error(errs, f"{path}.manualSelector", manual, "a boolean")
            manual = None
        if not manual:
            if raw is not None:
                errs.append((sel_path, V.invalid("selector", "`selector` will be auto-generated")))
            return  # the API server generates a selector on controller-uid
        if raw is None:
            errs.append((sel_path, V.required()))
            return
    elif raw is None:
        errs.append((sel_path, V.required()))
        return
    n = len(errs)
    sel: LabelSelector = D._selector(raw, sel_path, errs, ())
    if len(errs) > n:
        return
    if sel.is_empty:
        errs.append((sel_path, f"Invalid value: {{}}: empty selector is invalid for {kind.lower()}"))
    elif not matches(sel, labels):
        errs.append((labels_path, mismatch))


# ==== grouping (``--by workload``) ============================================================


def group_rows(cluster, rows: list[dict]) -> list[dict]:
    """Matrix rows of pods -> rows of workloads: one row per (source group, destination
    group, port), ``allowed`` when every replica pair is allowed, with ``pairs`` (how many
    pod pairs) and ``mixed`` (some allowed, some not: replicas differ, e.g. a StatefulSet
    pod selected by its pod-name label). A pod of no workload is its own group."""
    def group(ident: str) -> str:
        pod = cluster.pods.get(ident)
        return group_of(pod) if pod is not None else ident

    acc: dict[tuple, list[bool]] = {}
    for r in rows:
        key = (group(r["from"]), group(r["to"]), r["port"], r["protocol"])
        acc.setdefault(key, []).append(bool(r["allowed"]))
    out = []
    for (src, dst, port, proto), verdicts in acc.items():
        out.append({"from": src, "to": dst, "port": port, "protocol": proto, "allowed": all(verdicts),
                    "pairs": len(verdicts), "mixed": any(verdicts) and not all(verdicts)})
    return out


def groups(cluster) -> dict[str, list[str]]:
    """Group id -> its pods (sorted), for every pod of the cluster."""
    out: dict[str, list[str]] = {}
    everyone = {**cluster.host_network, **cluster.pods}
    for key in sorted(everyone):
        out.setdefault(group_of(everyone[key]), []).append(key)
    return out


def describe_group(cluster, group: str) -> str:
    """'Deployment shop/cart (2 pods)' or the pod id itself."""
    members = groups(cluster).get(group, [])
    if len(members) == 1 and members[0] == group:
        return group
    first = cluster.pods.get(members[0]) or cluster.host_network.get(members[0]) if members else None
    owner = first.owner.split("/", 1)[0] if first is not None else "workload"
    return f"{owner} {group} ({len(members)} pod{'s' if len(members) != 1 else ''})"


def resolve_name(cluster, ident: str) -> tuple[str, str]:
    """A workload's id (ns/name) -> (its first pod, a note saying so); anything else
    unchanged with no note. Lets ``trace --from shop/frontend`` name a Deployment."""
    if ident in cluster.pods:
        return ident, ""
    members = groups(cluster).get(ident)
    if not members or members == [ident]:
        return ident, ""
    note = f"{describe_group(cluster, ident)}: tracing its first pod, {members[0]}"
    return members[0], note


def host_network_endpoint(cluster, ident: str, node_ips: tuple[str, ...]):
    """A hostNetwork pod named in ``trace``: the node's addresses, and a note saying why.
    None when ``ident`` is no hostNetwork pod."""
    pod = cluster.host_network.get(ident)
    if pod is None:
        return None, ""
    from enforcer.views.verdict import Endpoint

    note = (f"{ident} is a hostNetwork pod: it uses its node's network namespace and address "
            f"({', '.join(node_ips)}); as far as policy goes it is the node: traffic between "
            "it and the node's pods is always allowed, and no policy isolates it")
    return Endpoint(ident, "node", tuple(node_ips), pod.ports), note


def trace_groups(cluster, firewalls, src: str, dst: str, port: int, protocol: str,
                 family: int = 4) -> tuple[list[str], dict, bool]:
    """``trace --by workload``: every replica of ``src`` to every replica of ``dst`` (a
    workload, a pod or an external host each). Allowed when every pod pair is; the reasons
    are given for the first pair, and for the first pair of the other verdict if they differ."""
    from enforcer.views import explain, verdict

    gs = groups(cluster)
    srcs, dsts = gs.get(src, [src]), gs.get(dst, [dst])
    vs = [verdict.verdict(firewalls, verdict.resolve(cluster, a), verdict.resolve(cluster, b), port, protocol, family)
          for a in srcs for b in dsts if a != b]
    ok = sum(1 for v in vs if v.allowed)
    allowed = ok == len(vs)
    word = "allowed" if allowed else ("denied" if ok == 0 else "partly allowed")
    lines = [f"{describe_group(cluster, src)} -> {describe_group(cluster, dst)} {port}/{protocol}: "
             f"{word} ({ok} of {len(vs)} pod pair{'s' if len(vs) != 1 else ''})."]
    shown = []
    for v in vs:
        if all(v.allowed != s.allowed for s in shown):
            shown.append(v)
    for v in shown:
        lines.append(f"  e.g. {v.src.id} -> {v.dst.id}:")
        lines.extend("    " + line for line in explain.trace_lines(cluster, v))
    doc = {"from": src, "to": dst, "port": port, "protocol": protocol, "allowed": allowed,
           "pairs": len(vs), "allowed_pairs": ok,
           "verdicts": [{"from": v.src.id, "to": v.dst.id, "allowed": v.allowed} for v in vs]}
    return lines, doc, allowed


# ==== ``kubectl get all -o yaml``: a workload and the objects it owns ==========================


def owner_refs(d: dict) -> tuple[tuple[str, str], ...]:
    """(kind, name) of each metadata.ownerReferences entry of a raw object."""
    meta = d.get("metadata")
    refs = meta.get("ownerReferences") if meta.__class__ is dict else None
    if not refs or refs.__class__ is not list:
        return ()
    return tuple((r["kind"], r["name"]) for r in refs
                 if r.__class__ is dict and r.get("kind").__class__ is str and r.get("name").__class__ is str)


def superseded(decoded) -> dict[tuple[str, str], str]:
    """Workloads whose own objects are in the input too (a dump of a running cluster has
    the Deployment, its ReplicaSet and their Pods): (kind, ns/name) -> one object that stands
    for it. Those workloads are not expanded, or every pod would be there two or three times."""
    out: dict[tuple[str, str], str] = {}
    for d in decoded:
        if d.obj is None or not d.owned_by:
            continue
        ns = d.key.split("/", 1)[0]
        for kind, name in d.owned_by:
            if kind in KINDS:
                out.setdefault((kind, f"{ns}/{name}"), f"{d.kind} {d.key}")
    return out
