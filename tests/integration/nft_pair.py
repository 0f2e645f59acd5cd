"""Two namespaces to load the same nftables table into two ways and compare the kernel's
listings: the text through libnftables into ``<prefix>-text`` (the reference), raw netlink
batches through a TableSocket opened in ``<prefix>-nl``. Used by test_nft_netlink (whole
tables) and test_nft_swap (rule swaps, element deltas)."""
from __future__ import annotations

import contextlib
import pathlib
from dataclasses import dataclass, field

import pytest

from backends import nft_netlink
from backends.nftables import NftablesBackend
from enforcer import netns
from enforcer.compiler.frontend import prepare
from enforcer.errors import InputError
from enforcer.ir import TABLE, PodFirewall


@dataclass(repr=False)  # (hypothesis prints the arguments of a failing example)
class Pair:
    text_ns: str
    nl_ns: str
    text: NftablesBackend  # libnftables, text: the reference
    sock: nft_netlink.TableSocket  # opened in nl_ns
    seen: set = field(default_factory=set)

    def compare(self, what: str) -> None:
        """``nft list table`` and ``nft -j list table`` of the two, byte for byte."""
        for args in ((), ("-j",)):
            want, got = listing(self.text_ns, *args), listing(self.nl_ns, *args)
            assert got == want, f"{what}: nft {' '.join(args)} list table differs"


def listing(ns: str, *args: str) -> str:
    return netns.run(ns, ["nft", *args, "list", "table", "inet", TABLE]).stdout


@contextlib.contextmanager
def opened(prefix: str):
    """The pair of namespaces, made here and removed afterwards (nothing left by ``prefix``)."""
    made = []
    text = NftablesBackend("libnft")
    sock = None
    try:
        for n in names(prefix):
            netns.create(n)
            made.append(n)
        text.check()
        with netns.entered(made[1]):
            sock = nft_netlink.TableSocket()
        yield Pair(made[0], made[1], text, sock)
    finally:
        if sock is not None:
            sock.close()
        text.close()
        for n in made:
            netns.remove(n)
    assert not netns.list_names(prefix)


def names(prefix: str) -> tuple[str, str]:
    """The two namespaces' names: the text one, the netlink one."""
    return f"{prefix}-text", f"{prefix}-nl"


def fixture(prefix: str):
    """A module-scoped ``pair`` fixture for a test module: ``pair = nft_pair.fixture(PREFIX)``."""
    @pytest.fixture(scope="module")
    def pair():
        with opened(prefix) as p:
            yield p
    return pair


@pytest.fixture
def netlink_backend(pair):
    """The backend's "netlink" method (import it into a module that has a ``pair``)."""
    b = NftablesBackend("netlink")
    b.check()
    yield b
    b.close()


def firewalls_of(*paths) -> list[PodFirewall]:
    fws = prepare([str(p) for p in paths]).firewalls
    return [fws[k] for k in sorted(fws)]


# What the renderer emits for real clusters: the bundled examples and the golden e2e cluster.
ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ([[ROOT / "examples" / "three-tier"], [ROOT / "examples" / "shop"],
             [ROOT / "tests" / "conformance" / "base.yaml", ROOT / "tests" / "golden" / "e2e-policy.yaml"]]
            + [[d] for d in sorted((ROOT / "examples" / "recipes").iterdir()) if d.is_dir()]
            + [[ROOT / "examples" / "concepts" / "cluster.yaml", f]  # a concept's files are variants
               for f in sorted((ROOT / "examples" / "concepts").glob("*/*.yaml"))]
            + [[ROOT / "examples" / "concepts" / "cluster.yaml", ROOT / "examples" / "concepts" / "12-deny"]])
each_example = pytest.mark.parametrize("paths", EXAMPLES, ids=lambda p: "+".join(x.name for x in p))


def example_firewalls(paths) -> list[PodFirewall]:
    """Every pod's firewall of one example (skipped: an example of input the tool refuses)."""
    try:
        return firewalls_of(*paths)
    except InputError:
        pytest.skip("an example of input the tool refuses (concepts.md shows the error)")
