"""The tests' one wait: what it returns, and what its failure says."""

from __future__ import annotations

import itertools

import pytest

from tests.harness.wait import WaitTimeout, wait_until, wait_until_sync


async def test_returns_the_first_truthy_value_of_a_sync_or_async_check() -> None:
    counter = itertools.count()
    assert await wait_until(lambda: next(counter) >= 3 and "done", interval=0) == "done"

    answers = iter([None, [], ["x"]])

    async def check() -> list[str] | None:
        return next(answers)

    assert await wait_until(check, interval=0) == ["x"]


async def test_a_timeout_names_what_was_awaited_and_the_last_value() -> None:
    with pytest.raises(WaitTimeout) as caught:
        await wait_until(lambda: [], timeout=0.05, interval=0.01, message="the pods")
    assert str(caught.value).startswith("timed out after 0.05s waiting for the pods")
    assert str(caught.value).endswith("last value: []")
    assert isinstance(caught.value, AssertionError)


async def test_ignored_errors_are_retried_and_reported_other_errors_end_the_wait() -> None:
    def unreachable() -> bool:
        raise ConnectionRefusedError("no one listens")

    with pytest.raises(WaitTimeout, match="last error: ConnectionRefusedError"):
        await wait_until(unreachable, timeout=0.05, interval=0.01, ignoring=(OSError,))
    with pytest.raises(ConnectionRefusedError):
        await wait_until(unreachable, timeout=5)


def test_the_sync_twin() -> None:
    counter = itertools.count()
    assert wait_until_sync(lambda: next(counter) == 2, interval=0) is True
    with pytest.raises(WaitTimeout, match="waiting for nothing; last value: False") as caught:
        wait_until_sync(lambda: False, timeout=0.02, interval=0.01, message="nothing")
    assert caught.value.last is False
