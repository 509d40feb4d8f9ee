"""Tracking: how track_script, track_interface and track_file move the priority.

The pure core only: results come in as arguments (`on_result(ok)`), and
`effective_priority` computes what keepalived's vrrp_set_effective_priority
would. Running the scripts, watching links and reading files is the daemon's
job.

keepalived's rules, as keeplb implements them:

* a tracker starts in an *init* state that counts neither way (keepalived
  logs "VRRP_Script(x) succeeded" and only then "Changing effective priority
  from 100 to 102"); `init_fail` starts it failed instead;
* `rise` consecutive successes make a failed tracker OK, `fall` consecutive
  failures make an OK tracker fail (one saturating counter, as haproxy's);
* weight 0: a failing tracker puts the instance in FAULT;
* weight > 0: added while OK; weight < 0: added (so subtracted) while failing;
  `reverse` flips the sign of the adjustment;
* the sum is clamped to 1..254; an address owner (255) never moves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

PRIO_OWNER = 255


class TrackKind(Enum):
    SCRIPT = "script"
    INTERFACE = "interface"
    FILE = "file"


class Contributor(Protocol):
    """Anything that adjusts an instance's priority."""

    def contribution(self) -> tuple[int, bool]:
        """(priority delta, fault) as of the last result."""
        ...


@dataclass
class Tracker:
    """A script or interface tracker with rise/fall hysteresis.

    `ok` is None until the first result (keepalived's init state).
    `health` counts 0..rise+fall-1; the tracker is OK iff health >= rise.
    """

    name: str
    weight: int = 0
    reverse: bool = False
    rise: int = 1
    fall: int = 1
    kind: TrackKind = TrackKind.SCRIPT
    init_fail: bool = False
    ok: bool | None = None
    health: int = field(default=0)

    def __post_init__(self) -> None:
        self.rise = max(1, self.rise)
        self.fall = max(1, self.fall)
        if self.init_fail:
            self.ok = False
            self.health = self.rise - 1
        else:
            self.health = self.rise  # the first result decides, either way

    @property
    def _top(self) -> int:
        return self.rise + self.fall - 1

    def on_result(self, ok: bool) -> bool:
        """Record one result (script exit 0, link up); True when `ok` changed.

        Called by the runner after each run of the script or each link event.
        """
        before = self.ok
        if ok:
            if self.health < self.rise - 1:
                self.health += 1
            else:
                self.health = self._top
                self.ok = True
        else:
            if self.health > self.rise:
                self.health -= 1
            else:
                self.health = 0
                self.ok = False
        return self.ok != before

    def contribution(self) -> tuple[int, bool]:
        """(delta, fault): what this tracker adds to the base priority now."""
        if self.ok is None:
            return 0, False
        sign = -1 if self.reverse else 1
        if self.weight == 0:
            return 0, not self.ok
        if self.weight > 0:
            return (sign * self.weight if self.ok else 0), False
        return (0 if self.ok else sign * self.weight), False


@dataclass
class FileTracker:
    """track_file: the number in the file, times the weight (keepalived's vrrp_track_file)."""

    name: str
    weight: int = 1
    reverse: bool = False
    value: int = 0

    def on_value(self, value: int) -> bool:
        """Record the number just read from the file; True when it changed."""
        changed = value != self.value
        self.value = value
        return changed

    def contribution(self) -> tuple[int, bool]:
        if self.weight == 0:
            return 0, self.value != 0
        delta = self.value * self.weight * (-1 if self.reverse else 1)
        # keepalived: a tracked value of -254 or below means "fault".
        return (0, True) if delta <= -254 else (delta, False)


def effective_priority(
    base: int, trackers: Iterable[Contributor], owner: bool | None = None
) -> tuple[int, bool]:
    """The priority keepalived would advertise, and whether the instance is in fault.

    `owner` defaults to base == 255. Feed the result to the machine as
    PriorityChanged(priority) and FaultRaised/FaultCleared("track").
    """
    if owner is None:
        owner = base == PRIO_OWNER
    total, fault = base, False
    for tracker in trackers:
        delta, failed = tracker.contribution()
        total += delta
        fault = fault or failed
    if owner:
        return PRIO_OWNER, fault
    return max(1, min(PRIO_OWNER - 1, total)), fault


def holds_in_init(trackers: Iterable[Contributor]) -> bool:
    """True while a weight-0 script or interface has not reported yet.

    keepalived keeps such an instance in INIT (no Startup) until the first
    result, so a failing check sends it to FAULT without a detour via BACKUP.
    """
    return any(isinstance(t, Tracker) and t.weight == 0 and t.ok is None for t in trackers)
