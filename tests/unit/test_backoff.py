"""Crash-loop and image-pull back-off, with the kubelet's numbers."""

from __future__ import annotations

import pytest

from minikubelet.backoff import Backoff


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_doubles_to_the_cap_and_first_retry_is_immediate() -> None:
    clock = FakeClock()
    b = Backoff(initial=10, maximum=300, reset_after=600, clock=clock)
    assert not b.in_backoff_since("c", clock.t)  # never failed: start at once
    delays = []
    for _ in range(7):
        delays.append(b.next("c", clock.t))
        clock.t += 1
    assert delays == [10, 20, 40, 80, 160, 300, 300]


def test_in_backoff_since_the_exit() -> None:
    clock = FakeClock()
    b = Backoff(initial=10, maximum=300, clock=clock)
    exited = clock.t
    b.next("c", exited)
    clock.t = exited + 9.9
    assert b.in_backoff_since("c", exited)
    assert b.remaining("c", exited) == pytest.approx(0.1)
    clock.t = exited + 10
    assert not b.in_backoff_since("c", exited)


def test_reset_after_a_long_clean_run() -> None:
    clock = FakeClock()
    b = Backoff(initial=10, maximum=300, reset_after=600, clock=clock)
    b.next("c", clock.t)
    b.next("c", clock.t + 1)
    assert b.delay("c") == 20
    later = clock.t + 1 + 601  # the next failure comes after 10 minutes of running
    assert b.next("c", later) == 10


def test_in_backoff_since_update_is_the_image_pull_rule() -> None:
    clock = FakeClock()
    b = Backoff(initial=10, maximum=300, clock=clock)
    assert not b.in_backoff_since_update("img")
    b.next("img", clock.t)
    assert b.in_backoff_since_update("img")
    clock.t += 10
    assert not b.in_backoff_since_update("img")


def test_gc_forgets_idle_entries_and_bad_settings_are_refused() -> None:
    clock = FakeClock()
    b = Backoff(initial=1, maximum=2, reset_after=5, clock=clock)
    b.next("a", clock.t)
    clock.t += 6
    b.gc()
    assert b.delay("a") == 0
    with pytest.raises(ValueError, match="initial <= maximum"):
        Backoff(initial=10, maximum=5)
