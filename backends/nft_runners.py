"""How the nftables backend (backends/nftables.py) reaches the kernel of a namespace: the
runners. Each applies a buffer of nft commands as one transaction inside a namespace, a
whole pod table (``full``) and set element deltas (``change_elements``):

    CliRunner      ``nft -f -`` run inside the namespace (a process per call)
    LibnftRunner   libnftables in-process, one context and one element socket kept per
                   namespace, made inside it (backends/libnft.py)
    NetlinkRunner  LibnftRunner, but a whole table as ONE raw netlink batch
                   (backends/nft_netlink.py): the default

The rendering they apply is backends.nftables' (imported when used: that module imports
this one).
"""
from __future__ import annotations

import functools

from enforcer import netns as nsmod
from enforcer.ir import TABLE, PodFirewall


def _nft():
    from backends import nftables

    return nftables


class _Runner:
    """Runs a buffer of nft commands as one transaction inside a namespace."""

    method = "?"
    tables = "text"  # how a whole table goes in: "text" (nft commands) or "netlink"

    def run(self, netns: str, commands: str) -> str:  # raises _Refused
        raise NotImplementedError

    def full(self, netns: str, fw: PodFirewall) -> str:
        """Swap the namespace's table for ``fw``'s in one transaction (raises _Refused);
        returns a note when it went another way than asked ("" otherwise)."""
        self.run(netns, _nft().full_transaction(fw))
        return ""

    def change_elements(self, netns: str, d) -> None:
        """Apply a delta in one transaction (raises _Refused)."""
        self.run(netns, d.commands())

    def swap(self, netns: str, swap) -> str:
        """Apply a rule swap (backends/nft_swap.py) in one transaction (raises _Refused);
        returns a note when it went another way than asked ("" otherwise)."""
        self.run(netns, swap.text)
        return ""

    def forget(self, netns: str) -> None:
        pass

    def close(self) -> None:
        pass


class _Refused(Exception):
    """nft refused the commands; the message is nft's."""


class CliRunner(_Runner):
    method = "cli"

    def run(self, netns: str, commands: str) -> str:
        proc = nsmod.run(netns, ["nft", "-f", "-"], input=commands, check=False)
        if proc.returncode != 0:
            raise _Refused(proc.stderr.strip() or f"nft exited {proc.returncode}")
        return proc.stdout


class LibnftRunner(_Runner):
    """One libnftables context (and one element socket) per namespace, made inside it and
    kept (enforcer.netns.Handles: a namespace removed and made again under the same name is
    a new namespace, and is never reached through the old context)."""

    method = "libnft"

    def __init__(self) -> None:
        from backends import libnft

        libnft._load()
        self._libnft = libnft
        self._ctxs = nsmod.Handles(self._new_context)
        self._socks = nsmod.Handles(libnft.ElementSocket)

    def _new_context(self):
        ctx = self._libnft.Context()
        # Opens the netlink socket here, inside the namespace, in versions that would
        # otherwise open it lazily on the first command (wherever the thread is then).
        ctx.run("list tables")
        return ctx

    def _context(self, netns: str):
        return self._ctxs.get(netns)

    def change_elements(self, netns: str, d) -> None:
        if d.interval:
            self.run(netns, d.commands())
            return
        sock = self._socks.get(netns)
        with sock.lock:
            try:
                sock.change(TABLE, [(v, n, list(e)) for v, n, e in d.changes])
            except (self._libnft.NftError, OSError) as e:
                raise _Refused(str(e)) from e

    def run(self, netns: str, commands: str) -> str:
        ctx = self._context(netns)
        with ctx.lock:
            try:
                return ctx.run(commands)
            except self._libnft.NftError as e:
                raise _Refused(str(e)) from e

    def forget(self, netns: str) -> None:
        self._ctxs.forget(netns)
        self._socks.forget(netns)

    def close(self) -> None:
        self._ctxs.close()
        self._socks.close()


class NetlinkRunner(LibnftRunner):
    """LibnftRunner, but a whole table (a cold create, a full swap) goes to the kernel as
    ONE raw nf_tables netlink batch encoded from the rendered blocks (backends/
    nft_netlink.py) through a socket kept per namespace, without libnftables' parser and
    evaluator (~72% of a cold apply's time through libnftables). The fallback is the text
    through libnftables: for a table that says something the encoder does not know
    (nft_netlink.Unsupported; none of what the renderer emits today, tested), and for a
    batch the kernel refused or whose answers were lost (the note says so; a refused batch
    changed nothing, and a full swap is safe to repeat). A rule swap (backends/nft_swap.py)
    goes the same way, with the same fallback; so do element deltas (a refused one is the
    caller's to handle: the kernel's sets are not what it thought), through the same
    socket, open since the namespace's first table: the first delta after start opens
    nothing (an element socket a namespace cost 0.3-2.5 ms then). Reads and removals stay
    with libnftables."""

    tables = "netlink"

    def __init__(self) -> None:
        super().__init__()
        from backends import nft_netlink

        self._nl = nft_netlink
        self._tables = nsmod.Handles(nft_netlink.TableSocket)
        # What our last rule edit left in each namespace (backends/nft_edit.py): dropped by
        # any other transaction of ours there; anyone else's is caught by its generation.
        self._installed: dict[str, object] = {}

    def full(self, netns: str, fw: PodFirewall) -> str:
        self._installed.pop(netns, None)
        return self._batch_or_text(
            netns, lambda: self._nl.encode_table(TABLE, _nft().table_comment(fw), _nft().table_blocks(fw)),
            lambda: super(NetlinkRunner, self).full(netns, fw))

    def swap(self, netns: str, swap) -> str:
        from backends import nft_edit, nft_swap

        known = self._installed.pop(netns, None)
        if swap.blocks:  # rules changed: only those that differ, by handle, if it can be done
            sock = self._tables.get(netns)
            try:
                with sock.lock:
                    now = nft_edit.apply(sock, swap, known)
                if now is not None:
                    self._installed[netns] = now
                    return ""
            except (self._nl.Refused, self._nl.Unsupported, OSError):
                pass  # nothing applied (a commit in between, a handle gone): the flush swap goes
        return self._batch_or_text(
            netns, lambda: nft_swap.encode_swap(swap.table, swap.comment, swap.blocks, swap.delta.changes, swap.set_types),
            lambda: super(NetlinkRunner, self).swap(netns, swap))

    def _batch_or_text(self, netns: str, encode, as_text) -> str:
        """One transaction as a netlink batch; as text through libnftables when the encoder
        does not know a word, or when the kernel refuses the batch (a refused batch changed
        nothing, so the same transaction goes again as text and its refusal, if any, names
        both). Returns a note when it went as text after a refusal ("" otherwise)."""
        try:
            msgs = encode()
        except self._nl.Unsupported:
            return as_text()
        try:
            self._commit(netns, msgs)
            return ""
        except self._nl.Refused as e:
            refused = str(e)
        try:
            as_text()
        except _Refused as e:
            raise _Refused(f"{e}\n(as one netlink batch: {refused})") from e
        return f"netlink batch refused, applied as text: {refused.strip().splitlines()[0]}"

    def learn(self, netns: str, fw: PodFirewall) -> None:
        """Read the handles of ``fw``'s chains, which the namespace holds (just applied or
        adopted), so that its first rule change goes as edits at once (backends/
        nft_edit.py; a few hundred microseconds a pod, off any change's path)."""
        from backends import nft_edit

        sock = self._tables.get(netns)
        try:
            with sock.lock:
                known = nft_edit.read(sock, TABLE, _nft().chain_blocks(fw))
        except (self._nl.Refused, OSError):
            known = None
        if known is None:
            self._installed.pop(netns, None)
        else:
            self._installed[netns] = known

    def change_elements(self, netns: str, d) -> None:
        known = self._installed.pop(netns, None)
        try:
            msgs = _element_batch(d.changes)
        except self._nl.Unsupported:
            return super().change_elements(netns, d)
        try:
            self._commit(netns, msgs)
        except self._nl.Refused as e:
            raise _Refused(str(e)) from e
        if known is not None and msgs:  # one transaction of ours, rules untouched
            known.gen = (known.gen + 1) & 0xFFFFFFFF  # type: ignore[attr-defined]
            self._installed[netns] = known

    def _commit(self, netns: str, msgs) -> None:
        if not msgs:
            return  # (a swap of chains and elements that all stay as they are)
        sock = self._tables.get(netns)
        with sock.lock:
            sock.commit(msgs)

    def run(self, netns: str, commands: str) -> str:
        if not commands.startswith("list "):  # a transaction by text (a removal, a fallback)
            self._installed.pop(netns, None)
        return super().run(netns, commands)

    def forget(self, netns: str) -> None:
        super().forget(netns)
        self._tables.forget(netns)
        self._installed.pop(netns, None)

    def close(self) -> None:
        super().close()
        self._tables.close()


@functools.lru_cache(maxsize=16)
def _element_batch(changes: tuple) -> tuple:
    """``encode_elements`` of a delta, kept: a peer change is the same delta in every pod
    its policy selects (the same sets by name), encoded once for all of them."""
    from backends import nft_swap

    return tuple(nft_swap.encode_elements(TABLE, changes))
