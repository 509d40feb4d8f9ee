"""Which notify script runs, with which arguments, for each state, for an
instance and for a sync group: keepalived 2.2.7's behaviour as
tests/netns/vrrp/test_notify_args.py observed it by running keepalived."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from keeplb.config.model import KeepalivedConfig
from keeplb.vrrp.daemon import VrrpDaemon
from keeplb.vrrp.machine import State
from keeplb.vrrp.scripts import NotifyRunner

SCRIPTS = {State.MASTER: "m", State.BACKUP: "b", State.FAULT: "f", State.STOP: "s"}


class Recorder(NotifyRunner):
    """Records what would be started instead of starting it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def run(self, line: str, args: Sequence[str] = ()) -> None:
        self.calls.append((line, tuple(args)))


@pytest.mark.parametrize("state", list(SCRIPTS))
@pytest.mark.parametrize(
    ("kind", "name", "priority", "fourth"),
    [("INSTANCE", "VI_1", 105, "105"), ("GROUP", "G", 0, "0")],
)
def test_state_script_gets_no_argument_and_notify_gets_four(
    state: State, kind: str, name: str, priority: int, fourth: str
) -> None:
    d = VrrpDaemon(KeepalivedConfig(), "keepalived.conf")
    d.notifier = rec = Recorder()
    d._run_notify("n", "m", "b", "f", "s", kind, name, state, priority)
    assert rec.calls == [
        (SCRIPTS[state], ()),
        ("n", (kind, name, state.value, fourth)),
    ]


def test_without_a_state_script_only_notify_runs() -> None:
    d = VrrpDaemon(KeepalivedConfig(), "keepalived.conf")
    d.notifier = rec = Recorder()
    d._run_notify("n", None, None, None, None, "GROUP", "G", State.MASTER, 0)
    d._run_notify(None, None, "b", None, None, "INSTANCE", "VI_1", State.MASTER, 100)
    assert rec.calls == [("n", ("GROUP", "G", "MASTER", "0"))]
