"""netns.held_iproute: a Ctrl-C during a pyroute2 request is raised after the request, from
one of our frames, never inside pyroute2's asyncio coroutine (Python 3.11 then leaves a
traceback entry without a line number, and pytest crashed formatting it: exit code 1
instead of 2 for an interrupted run). No namespace is touched: the netlink socket only
runs our own coroutine on its loop."""
from __future__ import annotations

import asyncio
import inspect
import signal

import pytest

from enforcer import netns


def _interrupted_request(ipr):
    """Run, through the path every sync pyroute2 request takes, a coroutine that is hit by
    SIGINT in the middle; what it reached and the KeyboardInterrupt's traceback."""
    reached = []

    async def request():
        signal.raise_signal(signal.SIGINT)  # unheld, the handler raises right here
        await asyncio.sleep(0)
        reached.append("end of the request")
        return "reply"

    with pytest.raises(KeyboardInterrupt) as info:
        ipr._run_with_cleanup(request)
    return reached, info.value.__traceback__


def _frames(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


@pytest.fixture
def default_sigint():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_interrupt_lands_after_the_request_not_inside_its_coroutine(default_sigint):
    ipr = netns.held_iproute()
    try:
        reached, tb = _interrupted_request(ipr)
        assert reached == ["end of the request"]
        coroutines = [t.tb_frame.f_code.co_name for t in _frames(tb)
                      if t.tb_frame.f_code.co_flags & inspect.CO_COROUTINE]
        assert coroutines == []
        assert all(isinstance(t.tb_lineno, int) for t in _frames(tb))
        assert ipr.link_lookup(ifname="lo")  # the socket still answers afterwards
    finally:
        ipr.close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_holding_the_interrupt_is_raised_inside_the_coroutine(default_sigint):
    """The control for the test above: a plain IPRoute shows the hazard it guards against."""
    from pyroute2 import IPRoute

    ipr = IPRoute()
    try:
        reached, tb = _interrupted_request(ipr)
        assert reached == []
        assert "request" in [t.tb_frame.f_code.co_name for t in _frames(tb)]
    finally:
        ipr.close()


def test_dumps_are_read_whole_while_held(default_sigint):
    with netns.held_iproute() as ipr:
        links = ipr.link("dump")
        assert not inspect.isgenerator(links)
        assert any(link.get("ifname") == "lo" for link in links)
