"""Per-key exponential back-off, as the kubelet's ``flowcontrol.Backoff`` keeps it.

Used for crash loops (key: pod + container + spec hash) and image pulls (key: pod +
image). The first retry after a failure is immediate; each failure that follows
waits twice as long as the one before, up to ``maximum``. An entry whose last
failure is older than ``reset_after`` starts again from ``initial``.
"""

from __future__ import annotations

from dataclasses import dataclass

from minikubelet.clock import Clock, RealClock

#: The kubelet's container restart back-off: 10 s doubling to 5 minutes.
CRASH_LOOP_INITIAL = 10.0
CRASH_LOOP_MAX = 300.0
#: A container that ran this long without failing starts its back-off afresh.
CRASH_LOOP_RESET = 600.0


@dataclass(slots=True)
class _Entry:
    backoff: float
    last_update: float


class Backoff:
    def __init__(
        self,
        *,
        initial: float = CRASH_LOOP_INITIAL,
        maximum: float = CRASH_LOOP_MAX,
        reset_after: float = CRASH_LOOP_RESET,
        clock: Clock | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError(f"back-off needs 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self.reset_after = reset_after
        self.clock: Clock = clock or RealClock()
        self._entries: dict[str, _Entry] = {}

    def _live(self, key: str, event_time: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and event_time - entry.last_update > self.reset_after:
            return None
        return entry

    def next(self, key: str, event_time: float) -> float:
        """Record a failure at ``event_time`` (seconds); returns the delay now in force."""
        entry = self._live(key, event_time)
        if entry is None:
            entry = self._entries[key] = _Entry(self.initial, event_time)
        else:
            entry.backoff = min(entry.backoff * 2, self.maximum)
            entry.last_update = event_time
        return entry.backoff

    def in_backoff_since(self, key: str, event_time: float) -> bool:
        """True while less than the current delay has passed since ``event_time``."""
        entry = self._live(key, event_time)
        if entry is None:
            return False
        return self.clock.now() - event_time < entry.backoff

    def in_backoff_since_update(self, key: str) -> bool:
        """True while less than the current delay has passed since the last failure."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        return self.clock.now() - entry.last_update < entry.backoff

    def remaining(self, key: str, event_time: float) -> float:
        entry = self._live(key, event_time)
        if entry is None:
            return 0.0
        return max(0.0, event_time + entry.backoff - self.clock.now())

    def delay(self, key: str) -> float:
        entry = self._entries.get(key)
        return entry.backoff if entry else 0.0

    def reset(self, key: str) -> None:
        self._entries.pop(key, None)

    def gc(self, keep: set[str] | None = None) -> None:
        """Forget entries idle for longer than ``reset_after`` (or not in ``keep``)."""
        now = self.clock.now()
        self._entries = {
            k: e
            for k, e in self._entries.items()
            if now - e.last_update <= self.reset_after and (keep is None or k in keep)
        }
