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
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypedDict, TypeVar, Unpack, cast, overload

T = TypeVar("T")

_SHOWN = 2000  # characters of the last value a failure shows


class WaitTimeout(AssertionError):
    """The condition did not hold in time; ``last`` and ``error`` are what the check gave last."""

    def __init__(self, message: str, timeout: float, last: object, error: Exception | None) -> None:
        seen = f"last error: {error!r}" if error is not None else f"last value: {_short(last)}"
        super().__init__(f"timed out after {timeout}s waiting for {message}; {seen}")
        self.last = last
        self.error = error


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


class _Poll:
    """What both waits share: the deadline, and what the check gave last."""

    def __init__(self, message: str, timeout: float, ignoring: tuple[type[Exception], ...]) -> None:
        self.message = message
        self.timeout = timeout
        self.ignoring = ignoring
        self.deadline = time.monotonic() + timeout
        self.last: object = None
        self.error: Exception | None = None

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """Around one call of the check: an error of a type in ``ignoring`` means "not yet"."""
        try:
            yield
        except self.ignoring as exc:
            self.error = exc

    def seen(self, value: object) -> None:
        self.last, self.error = value, None

    def over(self) -> bool:
        """Whether the check has held; :class:`WaitTimeout` once the time has run out."""
        if self.error is None and self.last:
            return True
        if time.monotonic() > self.deadline:
            raise WaitTimeout(self.message, self.timeout, self.last, self.error)
        return False


class Options(TypedDict, total=False):
    """The keyword arguments of :func:`wait_until`, for its typed overloads."""

    timeout: float
    interval: float
    message: str
    ignoring: tuple[type[Exception], ...]
    pause: Callable[[float], Awaitable[object]]


@overload
async def wait_until(check: Callable[[], Awaitable[T | None]], **options: Unpack[Options]) -> T: ...
@overload
async def wait_until(check: Callable[[], T | None], **options: Unpack[Options]) -> T: ...


async def wait_until(
    check: Callable[[], object],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "the condition",
    ignoring: tuple[type[Exception], ...] = (),
    pause: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> object:
    """Call (and await) ``check`` every ``interval`` s until it returns a truthy value.

    ``pause`` is how to let time pass between checks (a Textual pilot's ``pause``, say).
    """
    poll = _Poll(message, timeout, ignoring)
    while True:
        with poll.attempt():
            value = check()
            poll.seen(await value if inspect.isawaitable(value) else value)
        if poll.over():
            return poll.last
        await pause(interval)


def wait_until_sync(
    check: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "the condition",
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """``wait_until`` for code outside an event loop: ``check`` is a plain function."""
    poll = _Poll(message, timeout, ignoring)
    while True:
        with poll.attempt():
            poll.seen(check())
        if poll.over():
            return cast(T, poll.last)
        time.sleep(interval)
