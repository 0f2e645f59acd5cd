"""The ClusterNetworkPolicy conformance scenarios (cases/*.yaml), ported from
kubernetes-sigs/network-policy-api conformance/tests/*standard*.go as data; format in
README.md. One loader for every runner (the model in tests/unit/test_cnp_conformance.py,
real packets in tests/integration/test_cnp_lab.py).

    for case in load_cases():
        for step in case.steps:          # mutations accumulate, as upstream
            text = step.manifests_text() # base model + the case's objects, mutated
            for p in step.probes: ...    # Probe(src, dst, port, protocol, allowed)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
BASE = HERE / "base.yaml"
CASES = HERE / "cases"
PREFIX = "network-policy-conformance-"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the same YAML, ~12x faster


@dataclass(frozen=True)
class Probe:
    src: str  # "ns/pod" with the full namespace name
    dst: str
    port: int
    protocol: str
    allowed: bool

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst} {self.port}/{self.protocol} {'allow' if self.allowed else 'deny'}"


@dataclass
class Step:
    name: str
    objects: list[dict]
    probes: list[Probe]

    def manifests_text(self) -> str:
        """The base model with the step's objects; a step's Namespace (a relabel) replaces
        the base's."""
        items = yaml.load(BASE.read_text(), Loader=_LOADER)["items"]
        mine = {_key(o) for o in self.objects}
        items = [o for o in items if _key(o) not in mine] + self.objects
        return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items})


def _key(o: dict) -> tuple:
    return (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])


@dataclass
class Case:
    name: str
    path: Path
    steps: list[Step]


def _probe(text: str, where: str) -> Probe:
    try:
        src, arrow, dst, port, verdict = text.split()
        num, proto = port.split("/")
        assert arrow == "->" and verdict in ("allow", "deny") and proto in ("TCP", "UDP", "SCTP")
        return Probe(PREFIX + src, PREFIX + dst, int(num), proto, verdict == "allow")
    except (ValueError, AssertionError):
        raise ValueError(f"{where}: bad probe {text!r}: expected 'ns/pod -> ns/pod PORT/PROTO allow|deny'") from None


def _find(objects: list[dict], name: str, where: str) -> dict:
    for o in objects:
        if o["kind"] == "ClusterNetworkPolicy" and o["metadata"]["name"] == name:
            return o
    raise ValueError(f"{where}: no ClusterNetworkPolicy {name!r} to mutate")


def _mutate(objects: list[dict], m: dict, where: str) -> None:
    [(op, args)] = m.items()
    if op == "labels":
        # A merge patch that sets the namespace's labels; the API server keeps its own
        # kubernetes.io/metadata.name label.
        ns = PREFIX + args["namespace"]
        objects[:] = [o for o in objects if _key(o) != ("Namespace", None, ns)]
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": ns, "labels": {**args["labels"], "kubernetes.io/metadata.name": ns}}})
        return
    if op == "prepend":
        spec = _find(objects, args["policy"], where)["spec"]
        spec[args["direction"]] = [args["rule"]] + list(spec.get(args["direction"]) or [])
        return
    if op == "delete":
        key = (args["kind"], args.get("namespace"), args["name"])
        kept = [o for o in objects if (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) != key]
        if len(kept) == len(objects):
            raise ValueError(f"{where}: nothing to delete: {key}")
        objects[:] = kept
        return
    spec = _find(objects, args["policy"], where)["spec"]
    if op == "swap":
        rules = spec[args["direction"]]
        i, j = args["rules"]
        rules[i], rules[j] = rules[j], rules[i]
    elif op == "action":
        spec[args["direction"]][args["rule"]]["action"] = args["to"]
    elif op == "priority":
        spec["priority"] = args["to"]
    else:
        raise ValueError(f"{where}: unknown mutation {op!r}")


def load_case(path: Path) -> Case:
    data = yaml.load(path.read_text(), Loader=_LOADER)
    objects = copy.deepcopy(data["manifests"])
    steps = []
    for k, s in enumerate(data["steps"]):
        where = f"{path.name}: steps[{k}]"
        for m in s.get("mutate", ()):
            _mutate(objects, m, where)
        steps.append(Step(s["name"], copy.deepcopy(objects), [_probe(p, where) for p in s["probes"]]))
    return Case(data["name"], path, steps)


def load_cases() -> list[Case]:
    return [load_case(p) for p in sorted(CASES.glob("*.yaml"))]
