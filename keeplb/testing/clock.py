"""A virtual monotonic clock for driving sans-IO machines in tests."""

from __future__ import annotations


class FakeClock:
    """Monotonic seconds that only move when a test says so.

    Calling the clock returns the current time, so it can stand in for
    time.monotonic where a callable is expected.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    @property
    def now(self) -> float:
        return self._now

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds` (never backward); returns the new time."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self._now += seconds
        return self._now

    def jump_to(self, when: float) -> float:
        """Move forward to `when`; a time in the past is an error."""
        if when < self._now:
            raise ValueError(f"a monotonic clock cannot go back to {when} from {self._now}")
        self._now = float(when)
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"
