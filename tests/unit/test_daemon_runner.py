"""The bounded-frequency runner, driven by a fake clock (no threads, no sleeps)."""
from __future__ import annotations

import pytest

from enforcer.daemon.runner import BoundedRunner, FakeClock, Periodic


class Recorder:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[float, bool]] = []
        self.fail = 0  # fail this many next calls
        self.again: float | None = None
        self.cost = 0.0  # seconds each run takes

    def __call__(self, full: bool):
        self.calls.append((self.clock.now, full))
        self.clock.advance(self.cost)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("backend down")
        return self.again


def make(min_interval=0.05, resync=60.0, max_backoff=10.0):
    clock = FakeClock()
    rec = Recorder(clock)
    return clock, rec, BoundedRunner(rec, clock=clock, min_interval=min_interval, resync=resync,
                                     max_backoff=max_backoff)


def test_first_run_is_immediate_and_full():
    clock, rec, r = make()
    info = r.run_if_due()
    assert info is not None and info.full and info.ok
    assert rec.calls == [(1000.0, True)]


def test_burst_of_requests_coalesces_into_one_run():
    clock, rec, r = make()
    r.run_if_due()
    clock.advance(1.0)
    for i in range(50):
        r.request(at=clock.now)
        clock.advance(0.0001)
    info = r.run_if_due()
    assert info is not None and not info.full
    assert len(rec.calls) == 2
    assert r.run_if_due() is None  # nothing left pending


def test_min_interval_bounds_the_frequency():
    clock, rec, r = make(min_interval=0.05)
    r.run_if_due()
    r.request()
    assert r.run_if_due() is None  # too soon after the last start
    assert r.due() == pytest.approx(1000.05)
    clock.advance(0.049)
    assert r.run_if_due() is None
    clock.advance(0.001)
    assert r.run_if_due() is not None
    assert len(rec.calls) == 2


def test_first_request_after_idle_runs_at_once():
    clock, rec, r = make(min_interval=0.05)
    r.run_if_due()
    clock.advance(5)
    assert r.run_if_due() is None  # idle: nothing to do before the resync
    r.request()
    assert r.due() <= clock.now
    assert r.run_if_due() is not None


def test_delay_is_measured_from_the_oldest_request():
    clock, rec, r = make()
    r.run_if_due()
    clock.advance(1)
    r.request(at=clock.now)
    first = clock.now
    clock.advance(0.01)
    r.request(at=clock.now)
    info = r.run_if_due()
    assert info.first_request == first


def test_not_before_postpones_only_its_own_request():
    clock, rec, r = make()
    r.run_if_due()
    clock.advance(1)
    r.request(not_before=clock.now + 1.0)  # a file being written
    assert r.run_if_due() is None
    assert r.due() == pytest.approx(clock.now + 1.0)
    r.request()  # something complete: runs now, and serves both
    assert r.run_if_due() is not None
    clock.advance(2)
    assert r.run_if_due() is None


def test_failure_retries_with_backoff_and_keeps_the_request():
    clock, rec, r = make(min_interval=0.05, max_backoff=0.3)
    r.run_if_due()
    clock.advance(1)
    r.request(at=clock.now)
    event = clock.now
    rec.fail = 4
    delays = []
    for _ in range(4):
        info = r.run_if_due()
        assert info is not None and not info.ok
        assert info.first_request == event  # the retry still serves the original event
        delays.append(round(r.due() - clock.now, 3))
        assert r.run_if_due() is None  # not before the backoff
        clock.advance(r.due() - clock.now)
    assert delays == [0.05, 0.1, 0.2, 0.3]  # doubling, capped
    info = r.run_if_due()
    assert info.ok and info.first_request == event
    assert r.failures == 0
    clock.advance(1)
    assert r.run_if_due() is None  # healthy again: nothing pending


def test_periodic_full_resync_even_when_busy():
    clock, rec, r = make(min_interval=0.05, resync=10.0)
    r.run_if_due()
    fulls = []
    for _ in range(305):  # a request every 0.1 s for 30.5 s
        clock.advance(0.1)
        r.request()
        info = r.run_if_due()
        if info is not None and info.full:
            fulls.append(round(info.started - 1000.0, 1))
    assert [round(f / 10) * 10 for f in fulls] == [10, 20, 30]
    assert all(abs(f - round(f / 10) * 10) <= 0.11 for f in fulls)  # float steps


def test_idle_runner_resyncs_on_schedule():
    clock, rec, r = make(resync=60.0)
    r.run_if_due()
    assert r.due() == pytest.approx(1060.0)
    clock.advance(60)
    info = r.run_if_due()
    assert info is not None and info.full


def test_fn_can_ask_to_run_again_at_a_time():
    clock, rec, r = make()
    rec.again = 1000.5  # an item failed and retries at that time
    r.run_if_due()
    rec.again = None
    assert r.due() == pytest.approx(1000.5)
    clock.advance(0.5)
    assert r.run_if_due() is not None
    assert r.due() == pytest.approx(clock.now + 60 - 0.5)


def test_requests_during_a_run_trigger_the_next_run():
    clock, rec, r = make(min_interval=0.05)

    def fn(full):
        rec.calls.append((clock.now, full))
        if len(rec.calls) == 2:
            r.request()  # arrives while the run is working
        clock.advance(0.01)

    r.fn = fn
    r.run_if_due()
    r.request()
    clock.advance(1)
    r.run_if_due()
    assert r.due() == pytest.approx(clock.now - 0.01 + 0.05)


def test_full_request_is_remembered():
    clock, rec, r = make()
    r.run_if_due()
    clock.advance(1)
    r.request(full=True)
    r.request()
    info = r.run_if_due()
    assert info.full


def test_periodic_timer():
    clock = FakeClock()
    p = Periodic(10, clock=clock)
    assert not p.is_due()
    clock.advance(10)
    assert p.is_due()
    p.done()
    assert p.due() == pytest.approx(clock.now + 10)
    assert Periodic(5, clock=clock, start_now=True).is_due()


def test_bad_arguments():
    with pytest.raises(ValueError):
        BoundedRunner(lambda full: None, clock=FakeClock(), resync=0)


def test_urgent_request_skips_the_min_interval_but_not_a_backoff():
    clock, rec, r = make(min_interval=0.05)
    r.run_if_due()
    r.request(urgent=True)
    assert r.due() == pytest.approx(clock.now)  # a new pod's namespace: now
    assert r.run_if_due() is not None
    r.request()
    assert r.due() == pytest.approx(clock.now + 0.05)  # ordinary again
    clock.advance(1)
    rec.fail = 1
    r.run_if_due()
    r.request(urgent=True)
    assert r.due() > clock.now  # a failing sync backs off even for urgent requests
