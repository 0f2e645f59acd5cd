"""The API server's validation rules, as pure functions on already-typed values.

decode.py (called by manifests.py) decodes objects strictly (structure, types, unknown fields) and calls these
for the rules the API server applies afterwards (pkg/apis/networking/validation,
apimachinery/pkg/util/validation, pkg/apis/core/validation). Each check returns a list of
error *bodies* worded as the API server words them (``Invalid value: "x": detail``,
``Required value: ...``, ``Unsupported value: ...``) so that a user who knows kubectl
recognises them; the caller adds the file, the object and the field path.

Per-field results for label keys and values are memoised: a large cluster repeats the same
few labels on every pod, and the checks are regular expressions.
"""
from __future__ import annotations

import ipaddress
import json
import re
import socket
from functools import lru_cache
from typing import Callable, Iterable, NamedTuple, Sequence

from enforcer.model import PROTOCOLS

# --- error bodies, as k8s.io/apimachinery/pkg/util/validation/field renders them --------


def quote(value: object) -> str:
    """A value as Go's field errors print it: strings quoted, numbers bare."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(quote(v) for v in value) + "]"
    return str(value)


def invalid(value: object, detail: str) -> str:
    return f"Invalid value: {quote(value)}: {detail}"


def required(detail: str = "") -> str:
    return f"Required value: {detail}" if detail else "Required value"


def forbidden(detail: str) -> str:
    return f"Forbidden: {detail}"


def unsupported(value: object, supported: Iterable[str]) -> str:
    values = ", ".join(quote(s) for s in supported)
    return f"Unsupported value: {quote(value)}: supported values: {values}"


def duplicate(value: object) -> str:
    return f"Duplicate value: {quote(value)}"


# --- names and labels (apimachinery/pkg/util/validation) ---------------------------------

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                      "characters or '-', and must start and end with an alphanumeric character")
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + r"(\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                          "characters, '-' or '.', and must start and end with an alphanumeric "
                          "character")
_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
              "with an alphanumeric character")
_LABEL_VALUE_FMT = "(" + _QNAME_FMT + ")?"
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, "
                    "'-', '_' or '.', and must start and end with an alphanumeric character")

_PORT_NAME_CHARSET_RE = re.compile("[-a-z0-9]+")
_HAS_LETTER_RE = re.compile("[a-z]")

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
PORT_NAME_MAX = 15
ANNOTATIONS_MAX_BYTES = 256 * 1024


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


class _Format(NamedTuple):
    """One of apimachinery's name formats (IsDNS1123Label, IsQualifiedName's name part,
    ...): a length limit and a pattern, and the words and examples its errors show."""

    max_len: int
    pattern: re.Pattern
    msg: str
    examples: tuple[str, ...]

    def regex_error(self) -> str:
        return _regex_error(self.msg, self.pattern.pattern, *self.examples)

    def errors(self, value: str, prefix: str = "") -> tuple[str, ...]:
        """Each broken rule's error body, in the API server's order, after ``prefix``."""
        errs = []
        if len(value) > self.max_len:
            errs.append(prefix + _max_len(self.max_len))
        # fullmatch on str: "$" would accept a trailing newline, which the API server does not.
        if not self.pattern.fullmatch(value):
            errs.append(prefix + self.regex_error())
        return tuple(errs)


def _format(max_len: int, fmt: str, msg: str, *examples: str) -> _Format:
    return _Format(max_len, re.compile(fmt), msg, examples)


_DNS1123_LABEL = _format(DNS1123_LABEL_MAX, _DNS1123_LABEL_FMT, _DNS1123_LABEL_MSG, "my-name", "123-abc")
_DNS1123_SUBDOMAIN = _format(DNS1123_SUBDOMAIN_MAX, _DNS1123_SUBDOMAIN_FMT, _DNS1123_SUBDOMAIN_MSG, "example.com")
_QNAME = _format(QUALIFIED_NAME_MAX, _QNAME_FMT, _QNAME_MSG, "MyName", "my.name", "123-abc")
_LABEL_VALUE = _format(LABEL_VALUE_MAX, _LABEL_VALUE_FMT, _LABEL_VALUE_MSG, "MyValue", "my_value", "12345")


def _memo(fmt: _Format, maxsize: int) -> Callable[[str], tuple[str, ...]]:
    """``fmt``'s errors, memoised for values that repeat (see the module docstring)."""
    return lru_cache(maxsize=maxsize)(fmt.errors)


# namespace names on every object; label keys (their prefixes) and values on every pod
dns1123_label_cached = _memo(_DNS1123_LABEL, 4096)
_dns1123_subdomain = _memo(_DNS1123_SUBDOMAIN, 65536)
_label_value = _memo(_LABEL_VALUE, 65536)


def dns1123_label(value: str) -> list[str]:
    """Namespace names (and DNS labels in general)."""
    return list(_DNS1123_LABEL.errors(value))


def dns1123_subdomain(value: str) -> list[str]:
    """Pod and NetworkPolicy names, label key prefixes."""
    return list(_dns1123_subdomain(value))


@lru_cache(maxsize=65536)
def _qualified_name(value: str) -> tuple[str, ...]:
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in _dns1123_subdomain(prefix))
    else:
        return ("a qualified name " + _QNAME.regex_error()
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",)
    if not name:
        errs.append("name part must be non-empty")
    return (*errs, *_QNAME.errors(name, "name part "))


def qualified_name(value: str) -> list[str]:
    """Label keys, annotation keys: optional DNS-subdomain prefix, '/', name of <= 63 chars."""
    return list(_qualified_name(value))


def label_value(value: str) -> list[str]:
    return list(_label_value(value))


def labels(values: dict[str, str]) -> list[str]:
    """ValidateLabels: every key a qualified name, every value a label value.

    The API server reports these at the labels path itself (not per key), so do we.
    """
    errs = []
    for k, v in values.items():
        for m in _qualified_name(k):
            errs.append(invalid(k, m))
        for m in _label_value(v):
            errs.append(invalid(v, m))
    return errs


def annotations(values: dict[str, str]) -> list[str]:
    """ValidateAnnotations: keys are qualified names (case-insensitive), total size bounded."""
    errs = []
    total = 0
    for k, v in values.items():
        for m in _qualified_name(k.lower()):
            errs.append(invalid(k, m))
        total += len(k.encode()) + len(v.encode())
    if total > ANNOTATIONS_MAX_BYTES:
        errs.append(f"Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes")
    return errs


# --- ports ---------------------------------------------------------------------------------

PORT_RANGE_MSG = "must be between 1 and 65535, inclusive"


def port_number(value: int) -> list[str]:
    return [] if 1 <= value <= 65535 else [PORT_RANGE_MSG]


def port_name(value: str) -> list[str]:
    """IANA_SVC_NAME as the API server checks it (IsValidPortName)."""
    errs = []
    if len(value) > PORT_NAME_MAX:
        errs.append(_max_len(PORT_NAME_MAX))
    if not _PORT_NAME_CHARSET_RE.fullmatch(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _HAS_LETTER_RE.search(value):
        errs.append("must contain at least one letter (a-z)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value and (value[0] == "-" or value[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def protocol(value: str) -> list[str]:
    return [] if value in PROTOCOLS else [unsupported(value, PROTOCOLS)]


def network_policy_port(proto: str | None, port: int | str | None, end_port: int | None
                        ) -> list[tuple[str, str]]:
    """ValidateNetworkPolicyPort: (relative field, error body) pairs."""
    errs: list[tuple[str, str]] = []
    if proto is not None:
        errs.extend(("protocol", m) for m in protocol(proto))
    if port is None:
        if end_port is not None:
            errs.append(("endPort", invalid(end_port, "may not be specified when `port` is not specified")))
    elif isinstance(port, int):
        errs.extend(("port", invalid(port, m)) for m in port_number(port))
        if end_port is not None:
            if end_port < port:
                errs.append(("endPort", invalid(end_port, "must be greater than or equal to `port`")))
            errs.extend(("endPort", invalid(end_port, m)) for m in port_number(end_port))
    else:
        if end_port is not None:
            errs.append(("endPort", invalid(end_port, "may not be specified when `port` is non-numeric")))
        errs.extend(("port", invalid(port, m)) for m in port_name(port))
    return errs


# --- label selectors (apimachinery/pkg/apis/meta/v1/validation) ----------------------------

SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def selector_requirement(key: str, operator: str, values: Sequence[str]) -> list[tuple[str, str]]:
    """ValidateLabelSelectorRequirement: (relative field, error body) pairs."""
    errs: list[tuple[str, str]] = []
    if operator in ("In", "NotIn"):
        if not values:
            errs.append(("values", required("must be specified when `operator` is 'In' or 'NotIn'")))
    elif operator in ("Exists", "DoesNotExist"):
        if values:
            errs.append(("values", forbidden("may not be specified when `operator` is 'Exists' or 'DoesNotExist'")))
    else:
        errs.append(("operator", invalid(operator, "not a valid selector operator")))
    errs.extend(("key", invalid(key, m)) for m in _qualified_name(key))
    for i, v in enumerate(values):
        errs.extend((f"values[{i}]", invalid(v, m)) for m in _label_value(v))
    return errs


# --- addresses -----------------------------------------------------------------------------

CIDR_MSG = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
IP_MSG = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
_SLOPPY_V4_RE = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")


class Parsed(NamedTuple):
    """A parsed address or network: value None when invalid; errors and warnings as bodies."""

    value: ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network | None
    errors: Sequence[str] = ()
    warnings: Sequence[str] = ()


def _sloppy_ip(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, bool]:
    """Parse an IP as Go's ParseIPSloppy does: IPv4 octets may carry leading zeros (decimal).

    Returns (address, had_leading_zeros). Zones ("fe80::1%eth0") are not IPs here.
    """
    try:  # the common case, ~4x faster than ipaddress.ip_address
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text)), False
    except (OSError, ValueError):
        pass
    if "%" in text:
        return None, False
    try:
        return ipaddress.ip_address(text), False
    except ValueError:
        pass
    if _SLOPPY_V4_RE.fullmatch(text):
        octets = [int(o, 10) for o in text.split(".")]
        if all(o <= 255 for o in octets):
            return ipaddress.IPv4Address(".".join(map(str, octets))), True
    return None, False


def _canonical_v6(text: str, canonical: str, what: str) -> list[str]:
    """The API server's warning for an IPv6 value not written as RFC 5952 prints it
    (ipaddress prints exactly that form: lower case, the longest zero run compressed)."""
    if text == canonical:
        return []
    return [f"IPv6 {what} {quote(text)} should be in RFC 5952 canonical format ({quote(canonical)})"]


def parse_ip(text: str) -> Parsed:
    """An IP for a legacy field (status.podIP): as the API server, leading zeros warn, and so
    does IPv6 not in canonical form.

    An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) is accepted with a warning and means
    the IPv4 address, as Kubernetes reads it (Go's net.IP is 4-in-6 internally, and the
    API server's warning says "use 10.0.0.1"): the model, and so the firewall, hold the IPv4
    address, never an IPv6 one that no IPv4 packet would match.
    """
    ip, sloppy = _sloppy_ip(text)
    if ip is None:
        return Parsed(None, [invalid(text, IP_MSG)])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip, sloppy = ip.ipv4_mapped, True
    if not sloppy:
        return Parsed(ip, [], _canonical_v6(text, str(ip), "address") if ip.version == 6 else [])
    return Parsed(ip, [], [f"non-standard IP address {quote(text)} will be considered invalid in a "
                           f"future Kubernetes release: use {quote(str(ip))}"])


def parse_cidr(text: str) -> Parsed:
    """A CIDR for a legacy field (ipBlock.cidr, except): as ParseCIDRSloppy, plus warnings.

    Host bits set ("10.0.0.5/24") are accepted, as the API server accepts them, and mean the
    network ("10.0.0.0/24"); the warning says so because the writer may have meant /32.
    """
    addr_text, slash, plen_text = text.partition("/")
    if not slash or not plen_text or not plen_text.isascii() or not plen_text.isdigit():
        return Parsed(None, [invalid(text, CIDR_MSG)])
    ip, sloppy = _sloppy_ip(addr_text)
    if ip is None:
        return Parsed(None, [invalid(text, CIDR_MSG)])
    plen = int(plen_text)
    if plen > ip.max_prefixlen:
        return Parsed(None, [invalid(text, CIDR_MSG)])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        # ::ffff:10.0.0.0/104 is 10.0.0.0/8 to Kubernetes (accepted, with a warning); a
        # prefix shorter than /96 would reach past the mapped range into plain IPv6, where
        # implementations disagree: refused (the API server accepts it, with a warning).
        if plen < 96:
            return Parsed(None, [invalid(text, "must not have an IPv4-mapped IPv6 address "
                                               "with a prefix shorter than /96")])
        ip, plen, sloppy = ip.ipv4_mapped, plen - 96, True
    net = ipaddress.ip_network((ip, plen), strict=False)
    warnings = []
    if net.network_address != ip:
        warnings.append(f"CIDR value {quote(text)} has bits set beyond the prefix length: it "
                        f"means the network {quote(str(net))} (for the single address write "
                        f"{quote(f'{ip}/{ip.max_prefixlen}')})")
    if sloppy or (len(plen_text) > 1 and plen_text[0] == "0"):
        warnings.append(f"non-standard CIDR value {quote(text)} will be considered invalid in a "
                        f"future Kubernetes release: use {quote(str(net))}")
    if not warnings and ip.version == 6:  # as the API server: only when nothing else warns
        warnings.extend(_canonical_v6(text, f"{ip}/{plen}", "CIDR value"))
    return Parsed(net, [], warnings)


def except_in_cidr(cidr: ipaddress.IPv4Network | ipaddress.IPv6Network,
                   exc: ipaddress.IPv4Network | ipaddress.IPv6Network, text: str) -> list[str]:
    """ValidateIPBlock: every except must be a strict subset of cidr (same family, longer prefix).

    Worded as SEMANTICS.md quotes it (the API server puts `cidr` in backticks).
    """
    if exc.version != cidr.version or exc.prefixlen <= cidr.prefixlen or not exc.subnet_of(cidr):  # type: ignore[arg-type]
        return [invalid(text, "must be a strict subset of cidr")]
    return []


def effective_pod_ips(pod_ip: str, entries: Sequence[tuple[str, str | None]]
                      ) -> tuple[list[tuple[str, str | None]], list[tuple[str, str]]]:
    """The addresses a Pod's status really gives it: (field path, text) entries of
    status.podIPs, or status.podIP's, as the API server's v1 conversion decides (what it
    validates and stores), and (field path, warning body) pairs.

    podIP alone stands for podIPs [podIP]. When podIP and podIPs[0] differ (as written:
    the conversion compares strings), podIP wins and podIPs is dropped whole, unchecked
    ("for compatibility with older kubelets"). The API server says nothing then; we warn,
    because the writer surely meant one of the two.
    """
    if not pod_ip:
        return list(entries), []
    if not entries:
        return [("status.podIP", pod_ip)], []
    if entries[0][1] == pod_ip:
        return list(entries), []
    return [("status.podIP", pod_ip)], [("status.podIPs", (
        f"ignored: status.podIP {quote(pod_ip)} differs from status.podIPs[0].ip, and the API "
        "server then keeps status.podIP alone"))]


def pod_ips(ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address], texts: Sequence[str]
            ) -> list[tuple[int | None, str]]:
    """validatePodIPs: at most one IP per family, no duplicates. (index or None, body)."""
    errs: list[tuple[int | None, str]] = []
    if len(ips) > 1:
        families = {ip.version for ip in ips}
        if len(ips) > 2 or len(families) != len(ips):
            errs.append((None, invalid(list(texts), "may specify no more than one IP for each IP family")))
        seen: set[object] = set()
        for i, ip in enumerate(ips):
            if ip in seen:
                errs.append((i, duplicate(texts[i])))
            seen.add(ip)
    return errs
