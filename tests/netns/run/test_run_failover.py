"""`keeplb run` on two balancers: the balancer's health moves the address.

The seed's two files, moved into a lab (bench/_lab.py, the same setup as
bench/run_failover.py): lb1 and lb2 both priority 100, state BACKUP, no
nopreempt, advert_int 1, VIP 10.77.0.10, three backends api1..api3.  Stopping
the master's balancer must move the address to the other balancer within
about one advertisement interval plus skew (priority-0 advertisement on
FAULT), and so must the master losing every one of its backends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._lab import haproxy_cfg
from bench.run_failover import (
    BACKENDS3,
    PY,
    Proc,
    Testbed,
    Vrrp,
    balancer_pid,
    keepalived_conf,
    keeplb_works,
    setup_pair,
    stop_balancer,
    wait_for,
    wait_single_holder,
)
from tests.netns.conftest import need_root

pytestmark = [pytest.mark.netns, pytest.mark.slow]


class Pair:
    def __init__(self, tb: Testbed, procs: dict[str, Proc]) -> None:
        self.tb = tb
        self.procs = procs

    def logs(self) -> str:
        return "\n".join(f"==== keeplb run on {lb}\n{p.tail(3000)}" for lb, p in self.procs.items())


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    need_root()
    why = keeplb_works("run")
    if why:
        pytest.skip(f"`keeplb run` is not usable here: {why}")
    with Testbed(root=tmp_path, backends=dict(BACKENDS3)) as tb:
        tb.start_backends()
        for name in BACKENDS3:
            assert tb.wait_listening(name), f"backend {name} does not listen"
        yield Pair(tb, setup_pair(tb, "keeplb"))


def test_balancer_stop_then_dead_backends_move_the_address(pair: Pair) -> None:
    tb = pair.tb
    master = wait_single_holder(tb, 15.0)
    assert master is not None, f"no single holder: {tb.holders()}\n{pair.logs()}"
    other = "lb2" if master == "lb1" else "lb1"
    assert tb.wait_listening("lb1") and tb.wait_listening("lb2"), pair.logs()
    # The backup must have heard the master for a while, or "moved" would be an election.
    time.sleep(2.0)
    assert tb.holders() == [master], pair.logs()

    # 1. The balancer on the master stops: FAULT at once, priority 0, the other takes over.
    assert stop_balancer(tb, master, pair.procs[master]), f"no balancer on {master}\n{pair.logs()}"
    assert wait_for(lambda: tb.holders() == [other], 3.0), f"holders {tb.holders()}\n{pair.logs()}"
    assert pair.procs[master].alive(), "the supervisor must outlive its balancer"

    # The supervisor restarts the balancer; the old master comes back as backup
    # (equal priorities: no preemption) and the address stays where it is.
    assert wait_for(lambda: balancer_pid(tb, master, pair.procs[master]) is not None, 5.0), pair.logs()
    assert tb.wait_listening(master), pair.logs()
    time.sleep(2.0)
    assert tb.holders() == [other], pair.logs()

    # 2. Every backend becomes unreachable from the new master only: its
    # balancer marks them DOWN (inter 1s, fall 2), VRRP goes to FAULT.
    tb.isolate([other, *BACKENDS3])
    assert wait_for(lambda: tb.holders() == [master], 10.0), f"holders {tb.holders()}\n{pair.logs()}"
    time.sleep(1.5)
    assert tb.holders() == [master], pair.logs()


def test_tracker_change_while_the_balancer_restarts_does_not_stick_in_fault(tmp_path: Path) -> None:
    """A vrrp_script (weight 2) that starts failing while the balancer is down
    lowers the priority; once the balancer is back the instance must leave
    FAULT again.  Alone on the link, it must end up MASTER with the VIP."""
    need_root()
    why = keeplb_works("run")
    if why:
        pytest.skip(f"`keeplb run` is not usable here: {why}")
    with Testbed(root=tmp_path, backends={"api1": BACKENDS3["api1"]}) as tb:
        tb.start_backends()
        assert tb.wait_listening("api1")
        d = tb.dir("lb1")
        flag = d / "service-up"
        flag.write_text("1\n")
        cfg = d / "haproxy.cfg"
        cfg.write_text(haproxy_cfg(d, {"api1": BACKENDS3["api1"]}))
        conf = d / "keepalived.conf"
        conf.write_text(keepalived_conf("lb1", Vrrp(2, 1.0), priority=100, state="BACKUP",
                                        script=f"/usr/bin/test -f {flag}", script_interval=1, weight=2))
        run = tb.start("lb1", [PY, "-m", "keeplb", "run", "-f", str(cfg), "-k", str(conf)], "keeplb-run.log")
        assert wait_for(lambda: tb.holders() == ["lb1"], 10.0), run.tail(3000)
        assert stop_balancer(tb, "lb1", run), run.tail(3000)
        # The script's next run (interval 1 s) falls inside the restart delay.
        flag.unlink()
        assert wait_for(lambda: tb.holders() == [], 2.0), run.tail(3000)
        assert wait_for(lambda: balancer_pid(tb, "lb1", run) is not None, 5.0), run.tail(3000)
        assert tb.wait_listening("lb1"), run.tail(3000)
        # Back to BACKUP, then MASTER after the master-down interval (~3.6 s).
        assert wait_for(lambda: tb.holders() == ["lb1"], 8.0), run.tail(3000)
