"""JSON for the frozen model and IR dataclasses, so a lab's state survives between commands.

``lab apply`` runs in a new process and needs the cluster in force and the firewall each
pod has installed (to ask the backend for deltas only). Pickle would do, but a JSON file a
user can read (and that does not execute anything when loaded) is kinder.

Encoding: a dataclass becomes ``{"__t": ClassName, field: value, ...}``, a frozenset
``{"__fs": [...]}``, a dict ``{"__d": {...}}``, a tuple or list a JSON list (decoded as a
tuple: every sequence in these types is a tuple).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from enforcer import ir, model
from enforcer.cnp import model as cnp_model

_TYPES: dict[str, type] = {}
for _mod in (model, ir, cnp_model):
    for _name in dir(_mod):
        _obj = getattr(_mod, _name)
        if isinstance(_obj, type) and dataclasses.is_dataclass(_obj) and _obj.__module__ == _mod.__name__:
            _TYPES[_name] = _obj


def encode(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {"__t": type(obj).__name__}
        for f in dataclasses.fields(obj):
            if f.init:  # derived fields (a set's digest) are recomputed on decode
                out[f.name] = encode(getattr(obj, f.name))
        return out
    if isinstance(obj, (frozenset, set)):
        return {"__fs": sorted((encode(x) for x in obj), key=repr)}
    if isinstance(obj, (tuple, list)):
        return [encode(x) for x in obj]
    if isinstance(obj, dict) or (hasattr(obj, "items") and hasattr(obj, "keys")):
        return {"__d": {str(k): encode(v) for k, v in obj.items()}}
    return obj


def decode(data: Any) -> Any:
    if isinstance(data, list):
        return tuple(decode(x) for x in data)
    if isinstance(data, dict):
        if "__fs" in data:
            return frozenset(decode(x) for x in data["__fs"])
        if "__d" in data:
            return {k: decode(v) for k, v in data["__d"].items()}
        cls = _TYPES.get(data.get("__t", ""))
        if cls is None:
            raise ValueError(f"unknown type in lab state: {data.get('__t')!r}")
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        kwargs = {k: decode(v) for k, v in data.items() if k in names}
        if cls is model.Cluster:  # its fields are plain (mutable) dicts
            kwargs = {k: dict(v) for k, v in kwargs.items()}
        return cls(**kwargs)
    return data
