"""The exception tree of netpol-enforcer.

    NetpolError                      anything the tool reports to a user (never a traceback)
    ├── InputError                   bad input: a file we cannot read or parse, or objects
    │   │                            the API server would refuse; carries every Problem found
    │   └── (raised once per load with *all* problems, so a user fixes them in one pass)
    ├── BackendError                 the kernel or a userspace tool refused what we asked
    │   ├── BackendUnavailable       the backend's tools or kernel features are missing
    │   └── ApplyError               one apply failed; the previous rules stay in force
    ├── NetnsError                   a network namespace is missing or cannot be entered
    └── LabError                     lab state problems (exists already, not found, ...)

The CLI catches NetpolError at the top, prints ``str(err)`` and exits non-zero.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One validation finding: where it is and what is wrong.

    Rendered as ``FILE: Kind namespace/name: field.path: message`` (the parts that are
    known), the format SEMANTICS.md asks for.
    """

    file: str
    obj: str  # "NetworkPolicy prod/db", or "" when the object is unknown
    field: str  # "spec.ingress[0].from[1].ipBlock.except[0]", or ""
    message: str
    warning: bool = False

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.obj, self.field) if p]
        prefix = ": ".join(parts)
        text = f"{prefix}: {self.message}" if prefix else self.message
        return f"warning: {text}" if self.warning else text


class NetpolError(Exception):
    """Base of every error the tool reports to a user."""

    exit_code = 2


class InputError(NetpolError):
    """Input that cannot be loaded or that the API server would reject."""

    exit_code = 1

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem("", "", "", problems)]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class BackendError(NetpolError):
    pass


class BackendUnavailable(BackendError):
    pass


class ApplyError(BackendError):
    pass


class NetnsError(NetpolError):
    pass


class LabError(NetpolError):
    pass
