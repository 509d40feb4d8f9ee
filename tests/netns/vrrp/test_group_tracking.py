"""A sync group's own track_file / track_interface, init_file and
vrrp_notify_fifo, with real keepalived 2.2.7 as the oracle: the same config
and the same steps must give the same states, file and FIFO lines."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.netns.vrrp.conftest import VrrpLab, has_vip, instance_conf, read_fifo, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]



@pytest.mark.parametrize("kind", ["keepalived", "keeplb"])
def test_group_trackers_fault_every_member(vlab: VrrpLab, tmp_path: Path, kind: str) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    # A veth pair inside the host (no dummy module everywhere): klbd0 is tracked.
    made = a.run(["ip", "link", "add", "klbd0", "type", "veth", "peer", "name", "klbd1"])
    assert made.returncode == 0, made.stderr
    for link in ("klbd0", "klbd1"):
        a.run(["ip", "link", "set", link, "up"])
    tf = tmp_path / "tf"  # missing: init_file creates it
    fifo = tmp_path / "vrrp.fifo"  # missing: the daemon creates it
    fast: dict[str, Any] = {"version": 3, "advert_int": 0.1}
    conf = (
        f"track_file tf {{\n  file {tf}\n  weight 0\n  init_file 0\n}}\n"
        "vrrp_sync_group G {\n  group {\n    v1\n    v2\n  }\n"
        "  track_file {\n    tf\n  }\n  track_interface {\n    klbd0\n  }\n}\n"
        + instance_conf(name="v1", vrid=61, vips=["10.77.0.101/24"], **fast)
        + instance_conf(name="v2", vrid=62, vips=["10.77.0.102/24"], **fast)
    )
    d = vlab.daemon(kind, a, conf, global_extra=f"  vrrp_notify_fifo {fifo}\n")

    def both(present: bool) -> bool:
        return has_vip(a, "10.77.0.101") is present and has_vip(a, "10.77.0.102") is present

    assert wait_for(lambda: both(True), 6), vlab.logs()
    assert tf.read_text().strip() == "0"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    # Opened only now: the lines written before wait in the pipe (the daemon
    # holds it open read-write).
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        lines = read_fifo(reader)
        for line in ('INSTANCE "v1" MASTER 100', 'INSTANCE "v2" MASTER 100', 'GROUP "G" MASTER 0'):
            assert line in lines, (lines, vlab.logs())
        # The group's track_file has weight 0: a non-zero value faults every member.
        tf.write_text("1\n")
        assert wait_for(lambda: both(False), 4), vlab.logs()
        tf.write_text("0\n")
        assert wait_for(lambda: both(True), 6), vlab.logs()
        a.run(["ip", "link", "set", "klbd0", "down"])
        assert wait_for(lambda: both(False), 4), vlab.logs()
        a.run(["ip", "link", "set", "klbd0", "up"])
        assert wait_for(lambda: both(True), 6), vlab.logs()
        lines = read_fifo(reader)
        for line in ('INSTANCE "v1" FAULT 100', 'INSTANCE "v2" FAULT 100', 'GROUP "G" FAULT 0'):
            assert line in lines, (lines, vlab.logs())
    finally:
        os.close(reader)
    d.stop()
    assert not fifo.exists(), "a FIFO the daemon created is removed at stop"
