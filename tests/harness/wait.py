"""Waiting for a condition, with a deadline instead of a guess, and a failure that says what.

``wait_until`` polls ``check`` (a plain function or a coroutine function) until it returns
something truthy, and returns that. When the time runs out it raises :class:`WaitTimeout`
(an ``AssertionError``) naming what was awaited and the last value or exception seen.
Exceptions from ``check`` propagate at once unless their type is listed in ``ignoring``:
those count as "not yet" (a daemon that does not answer while it starts, say).
``wait_until_sync`` is the same for code that runs outside an event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

_NOTHING = object()
_SHOWN = 2000  # characters of the last value a failure shows


class WaitTimeout(AssertionError):
    """The condition did not hold in time; ``last`` and ``error`` are what the check gave last."""

    def __init__(
        self, message: str, timeout: float, last: object, error: BaseException | None
    ) -> None:
        seen = (
            "no attempt"
            if last is _NOTHING and error is None
            else f"last error: {error!r}"
            if error is not None
            else f"last value: {_short(repr(last))}"
        )
        super().__init__(f"timed out after {timeout}s waiting for {message}; {seen}")
        self.last = None if last is _NOTHING else last
        self.error = error


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


class _Poll:
    """The bookkeeping both waits share: the deadline and what the check gave last."""

    def __init__(self, message: str, timeout: float) -> None:
        self.message = message
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.last: object = _NOTHING
        self.error: BaseException | None = None

    def failed(self, error: BaseException) -> None:
        self.error = error

    def returned(self, value: object) -> None:
        self.last, self.error = value, None

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise WaitTimeout(self.message, self.timeout, self.last, self.error)


@overload
async def wait_until(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = ...,
    interval: float = ...,
    message: str = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
    pause: Callable[[float], Awaitable[object]] = ...,
) -> T: ...


@overload
async def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float = ...,
    interval: float = ...,
    message: str = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
    pause: Callable[[float], Awaitable[object]] = ...,
) -> T: ...


async def wait_until(
    check: Callable[[], object],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "the condition",
    ignoring: tuple[type[BaseException], ...] = (),
    pause: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> object:
    """Call (and await) ``check`` every ``interval`` s until it returns a truthy value.

    ``pause`` is how to let time pass between checks (a Textual pilot's ``pause``, say).
    """
    poll = _Poll(message, timeout)
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as exc:  # () catches nothing: any other error propagates
            poll.failed(exc)
        else:
            poll.returned(value)
            if value:
                return value
        poll.check_deadline()
        await pause(interval)


def wait_until_sync(
    check: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "the condition",
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """``wait_until`` for code outside an event loop: ``check`` is a plain function."""
    poll = _Poll(message, timeout)
    while True:
        try:
            value = check()
        except ignoring as exc:  # () catches nothing: any other error propagates
            poll.failed(exc)
        else:
            poll.returned(value)
            if value:
                return value
        poll.check_deadline()
        time.sleep(interval)
