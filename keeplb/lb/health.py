"""Health of a checked server, as haproxy's check.c models it.

Pure: results and times are arguments. One saturating counter per server
(`health`, 0 .. rise+fall-1): the server is UP while health >= rise.

- A passed check adds one; reaching `rise` jumps to rise+fall-1 (fully up).
- A failed check takes one; dropping below `rise` falls to 0 (fully down).

So a fully up server goes DOWN after `fall` consecutive failures, and a down
server comes UP after `rise` consecutive successes. haproxy 2.6 starts a
checked server UP with health = rise (`srv->check.health = srv->check.rise`
in server.c): until its first check passes it is "UP 1/fall", and one failed
check takes it DOWN (check.c `set_server_check_status`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# haproxy's scale of effective weights for dynamic algorithms (backend-t.h):
# eweight = uweight * BE_WEIGHT_SCALE at full throttle.
BE_WEIGHT_SCALE = 16


class Outcome(Enum):
    """haproxy's CHK_RES_*: what a status means for the health counter."""

    UNKNOWN = "unknown"
    NEUTRAL = "neutral"
    FAILED = "failed"
    PASSED = "passed"
    CONDPASS = "condpass"


class CheckStatus(Enum):
    """haproxy's check_statuses[] (src/check.c): (code, result, description).

    `code` is what `show stat` prints in check_status, `description` is the
    text of log lines ("reason: Layer4 connection problem") and check_desc.
    """

    UNK = ("UNK", Outcome.UNKNOWN, "Unknown")
    INI = ("INI", Outcome.UNKNOWN, "Initializing")
    CHECKED = ("CHECKED", Outcome.NEUTRAL, "No status change")
    HANA = ("HANA", Outcome.FAILED, "Health analyze")
    SOCKERR = ("SOCKERR", Outcome.FAILED, "Socket error")
    L4OK = ("L4OK", Outcome.PASSED, "Layer4 check passed")
    L4TOUT = ("L4TOUT", Outcome.FAILED, "Layer4 timeout")
    L4CON = ("L4CON", Outcome.FAILED, "Layer4 connection problem")
    L6OK = ("L6OK", Outcome.PASSED, "Layer6 check passed")
    L6TOUT = ("L6TOUT", Outcome.FAILED, "Layer6 timeout")
    L6RSP = ("L6RSP", Outcome.FAILED, "Layer6 invalid response")
    L7TOUT = ("L7TOUT", Outcome.FAILED, "Layer7 timeout")
    L7RSP = ("L7RSP", Outcome.FAILED, "Layer7 invalid response")
    L7OK = ("L7OK", Outcome.PASSED, "Layer7 check passed")
    L7OKC = ("L7OKC", Outcome.CONDPASS, "Layer7 check conditionally passed")
    L7STS = ("L7STS", Outcome.FAILED, "Layer7 wrong status")
    PROCERR = ("PROCERR", Outcome.FAILED, "External check error")
    PROCTOUT = ("PROCTOUT", Outcome.FAILED, "External check timeout")
    PROCOK = ("PROCOK", Outcome.PASSED, "External check passed")

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def result(self) -> Outcome:
        return self.value[1]

    @property
    def description(self) -> str:
        return self.value[2]

    @property
    def passed(self) -> bool:
        return self.result in (Outcome.PASSED, Outcome.CONDPASS)

    @property
    def failed(self) -> bool:
        return self.result is Outcome.FAILED

    @property
    def has_code(self) -> bool:
        """Statuses after which haproxy shows the response code in logs and stats
        (those after HCHK_STATUS_L57DATA: L7OK, L7OKC, L7STS)."""
        return self in (CheckStatus.L7OK, CheckStatus.L7OKC, CheckStatus.L7STS)


class Transition(Enum):
    UP = "UP"
    DOWN = "DOWN"


class Health:
    """haproxy's `struct check` health counter for one server.

    `on_result` is called once per finished check; it returns the transition
    the server makes (UP or DOWN) or None. A neutral or unknown result leaves
    the counter alone, like CHK_RES_NEUTRAL in haproxy.
    """

    __slots__ = ("rise", "fall", "health")

    def __init__(self, rise: int = 2, fall: int = 3, health: int | None = None) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be >= 1")
        self.rise = rise
        self.fall = fall
        top = rise + fall - 1
        self.health = rise if health is None else min(max(health, 0), top)

    @property
    def top(self) -> int:
        return self.rise + self.fall - 1

    @property
    def up(self) -> bool:
        return self.health >= self.rise

    @property
    def fully_up(self) -> bool:
        return self.health == self.top

    @property
    def fully_down(self) -> bool:
        return self.health == 0

    def on_result(self, ok: bool) -> Transition | None:
        """Apply one check result; return UP/DOWN when the server changes side."""
        was_up = self.up
        if ok:
            if self.health < self.top:
                self.health += 1
                if self.health >= self.rise:
                    self.health = self.top
        elif self.health > 0:
            self.health -= 1
            if self.health < self.rise:
                self.health = 0
        if self.up and not was_up:
            return Transition.UP
        if was_up and not self.up:
            return Transition.DOWN
        return None

    def on_status(self, status: CheckStatus) -> Transition | None:
        """Apply a finished check's status (neutral/unknown statuses change nothing)."""
        if status.passed:
            return self.on_result(True)
        if status.failed:
            return self.on_result(False)
        return None

    def force(self, up: bool) -> None:
        """An operator's `set server ... health up|down` (or agent): jump to an extreme."""
        self.health = self.top if up else 0

    def interval(self, inter: int, fastinter: int | None = None,
                 downinter: int | None = None) -> int:
        """Milliseconds until the next check (haproxy's srv_getinter()).

        `inter` when fully up, `downinter` (or inter) when fully down,
        `fastinter` (or inter) while the counter is between the extremes.
        """
        if self.fully_up:
            return inter
        if self.fully_down:
            return downinter or inter
        return fastinter or inter


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """What the stats page needs from a Health without holding the object."""

    rise: int
    fall: int
    health: int


def slowstart_weight(uweight: int, elapsed_ms: int, slowstart_ms: int, *,
                     scale: int = 1) -> int:
    """Effective weight of a server `elapsed_ms` after it came UP (server.c
    `server_recalc_eweight`).

    haproxy ramps in steps of 1/BE_WEIGHT_SCALE: w = (16*elapsed + slowstart)
    // slowstart, capped at 16, eweight = ceil(uweight * w * scale / 16). It
    starts at the first step (never 0 for a server with a weight) and reaches
    `uweight * scale` when elapsed_ms >= slowstart_ms. haproxy counts seconds;
    milliseconds give the same ramp, only smoother. With `scale` =
    BE_WEIGHT_SCALE the result is in haproxy's internal units, where even a
    weight-1 server has 16 steps.
    """
    full = uweight * scale
    if uweight <= 0:
        return 0
    if slowstart_ms <= 0 or elapsed_ms >= slowstart_ms:
        return full
    elapsed_ms = max(0, elapsed_ms)
    step = (BE_WEIGHT_SCALE * elapsed_ms + slowstart_ms) // slowstart_ms
    step = min(max(step, 1), BE_WEIGHT_SCALE)
    return max(1, (full * step + BE_WEIGHT_SCALE - 1) // BE_WEIGHT_SCALE)


__all__ = [
    "BE_WEIGHT_SCALE",
    "CheckStatus",
    "Health",
    "HealthSnapshot",
    "Outcome",
    "Transition",
    "slowstart_weight",
]
