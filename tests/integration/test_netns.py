"""enforcer.netns: a namespace's identity (inode) and the handles kept per namespace."""
from __future__ import annotations

import os
import socket
import threading

import pytest

from enforcer import netns
from enforcer.errors import NetnsError

pytestmark = pytest.mark.root

NAME = f"npt-ns{os.getpid()}"


def _netns_id_of_socket() -> int:
    # The namespace the calling thread is in (where a socket opened now would live).
    return os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino


def test_a_namespace_made_again_under_its_name_gets_a_new_handle():
    made: list[int] = []

    def make() -> socket.socket:
        made.append(_netns_id_of_socket())  # called inside the namespace
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    handles: netns.Handles[socket.socket] = netns.Handles(make)
    try:
        assert netns.inode(NAME) is None
        with pytest.raises(NetnsError, match="does not exist"):
            handles.get(NAME)
        netns.create(NAME)
        first_ino = netns.inode(NAME)
        assert made == []  # nothing made while the namespace did not exist
        first = handles.get(NAME)
        assert handles.get(NAME) is first and len(made) == 1
        assert made[0] == first_ino != os.stat("/proc/self/ns/net").st_ino
        # Keep the old namespace alive (an open fd) so the new one cannot reuse its inode.
        keep = os.open(netns.path(NAME), os.O_RDONLY)
        try:
            netns.remove(NAME)
            with pytest.raises(NetnsError):
                handles.get(NAME)
            assert first.fileno() == -1  # the stale handle was closed
            netns.create(NAME)
            second = handles.get(NAME)
            assert second is not first and len(made) == 2
            assert made[1] == netns.inode(NAME) != first_ino
        finally:
            os.close(keep)
    finally:
        handles.close()
        netns.remove(NAME)
    assert not netns.exists(NAME)
