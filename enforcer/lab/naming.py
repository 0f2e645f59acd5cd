"""Names of everything a lab creates, and how to tell which lab owns a namespace.

Every object carries the lab's name (ACCEPTANCE "Safety of the lab"):

    netpol-<lab>                  the lab's node namespace (bridge, gateway, routes)
    netpol-<lab>-<ns>-<pod>       one namespace per pod
    netpol-<lab>-ext.<name>       one namespace per ExternalHost

Kubernetes namespace names cannot contain a dot, so ``ext.<name>`` never looks like a pod.
Link names must fit in 15 bytes, so they carry the lab's first five characters:
``<lab5>-br`` (the bridge), ``<lab5>-<n>`` (a pod's veth, node side), ``<lab5>-x<n>`` (an
external host's veth, node side). Links live only inside the lab's own namespaces (the pod
side is always ``eth0``), so two labs never collide on a link name even when their first
five characters agree.

Lab names may contain dashes, so ``netpol-a-`` is also a prefix of lab ``a-b``'s names.
``owned_by`` settles it: a namespace belongs to the lab with the longest name whose prefix
it carries, among the labs that exist. Pure functions only.
"""
from __future__ import annotations

import hashlib
import re

from enforcer.errors import LabError

NETNS_PREFIX = "netpol-"
IFNAMSIZ = 15
_LAB_RE = re.compile(r"[a-z0-9]([a-z0-9_.-]{0,38}[a-z0-9])?")
_MAX_NETNS = 200  # well under NAME_MAX (255): pod names may be 253 characters long


def check_lab_name(name: str) -> str:
    """A lab name: lowercase letters, digits, '-', '_', '.', at most 40 characters."""
    if not isinstance(name, str) or not _LAB_RE.fullmatch(name):  # "$" would let "a\n" through
        raise LabError(f"invalid lab name {name!r}: use 1-40 lowercase letters, digits, '-', '_' "
                       "or '.', starting and ending with a letter or digit")
    return name


def node_netns(lab: str) -> str:
    return f"{NETNS_PREFIX}{lab}"


def _fit(name: str) -> str:
    if len(name) <= _MAX_NETNS:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[:_MAX_NETNS - 11]}~{digest}"


def pod_netns(lab: str, pod_key: str) -> str:
    ns, _, pod = pod_key.partition("/")
    return _fit(f"{NETNS_PREFIX}{lab}-{ns}-{pod}")


def external_netns(lab: str, name: str) -> str:
    return _fit(f"{NETNS_PREFIX}{lab}-ext.{name}")


def short(lab: str) -> str:
    return lab[:5]


def bridge_link(lab: str) -> str:
    return f"{short(lab)}-br"


def pod_link(lab: str, index: int) -> str:
    return _check_ifname(f"{short(lab)}-{index}")


def external_link(lab: str, index: int) -> str:
    return _check_ifname(f"{short(lab)}-x{index}")


def _check_ifname(name: str) -> str:
    if len(name.encode()) > IFNAMSIZ:
        raise LabError(f"link name {name} is longer than {IFNAMSIZ} bytes (too many endpoints)")
    return name


def carries(lab: str, netns_name: str) -> bool:
    """Whether a namespace name carries lab ``lab``'s prefix (maybe a longer lab's too)."""
    base = node_netns(lab)
    return netns_name == base or netns_name.startswith(base + "-")


def owned_by(lab: str, netns_name: str, labs: set[str] | frozenset[str] | list[str]) -> bool:
    """Whether ``netns_name`` belongs to ``lab``, given the names of the labs that exist.

    A name of lab ``a-b`` also carries lab ``a``'s prefix; it belongs to ``a-b`` when that
    lab exists, because the longest matching lab wins.
    """
    if not carries(lab, netns_name):
        return False
    return not any(len(other) > len(lab) and carries(other, netns_name)
                   for other in labs if other != lab)
