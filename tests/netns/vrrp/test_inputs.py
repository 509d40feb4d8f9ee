"""What drives an instance besides peers: track_file, sync groups, notify
scripts with keepalived's arguments, and the load balancer's health hook."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.netns.vrrp.conftest import (
    GLOBAL_DEFS,
    REPO,
    Daemon,
    VrrpLab,
    has_vip,
    instance_conf,
    wait_for,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def _notify_script(tmp: Path, log: Path) -> Path:
    script = tmp / "notify.sh"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(0o755)
    return script


def test_track_file_sync_group_and_notify_arguments(vlab: VrrpLab, tmp_path: Path) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    events = tmp_path / "events.log"
    notify = _notify_script(tmp_path, events)
    tf = tmp_path / "tf"
    tf.write_text("0\n")
    fast: dict[str, Any] = {"version": 3, "advert_int": 0.1}
    conf = (
        f"vrrp_track_file tf {{\n  file {tf}\n  weight 0\n}}\n"
        f"vrrp_sync_group G {{\n  group {{\n    v1\n    v2\n  }}\n  notify {notify}\n}}\n"
        + instance_conf(name="v1", vrid=61, vips=["10.77.0.101/24"],
                        extra=f"  track_file {{\n    tf\n  }}\n  notify {notify}", **fast)
        + instance_conf(name="v2", vrid=62, vips=["10.77.0.102/24"],
                        extra=f"  notify {notify}", **fast)
    )
    k = vlab.daemon("keeplb", a, conf)

    def both(present: bool) -> bool:
        return has_vip(a, "10.77.0.101") is present and has_vip(a, "10.77.0.102") is present

    def logged(line: str) -> bool:
        return events.exists() and line in events.read_text().splitlines()

    assert wait_for(lambda: both(True), 4), k.log()
    assert wait_for(lambda: logged("INSTANCE v1 MASTER 100") and logged("INSTANCE v2 MASTER 100"), 3)
    assert wait_for(lambda: logged("GROUP G MASTER 0"), 3), events.read_text()
    # A non-zero value with weight 0 is a fault; the sync group takes v2 along.
    tf.write_text("1\n")
    assert wait_for(lambda: both(False), 3), k.log()
    states = {i["name"]: i["state"] for i in k.status()["instances"]}
    assert states == {"v1": "FAULT", "v2": "FAULT"}, states
    assert wait_for(lambda: logged("INSTANCE v2 FAULT 100") and logged("GROUP G FAULT 0"), 3)
    tf.write_text("0\n")
    assert wait_for(lambda: both(True), 4), k.log()


LB_RUNNER = """
import sys
sys.path.insert(0, {repo!r})
from keeplb.vrrp.daemon import main
sys.exit(main({conf!r}, foreground=True, pidfile=None, lb_health_fd={fd}))
"""


def test_lb_health_hook_puts_the_instance_in_fault(vlab: VrrpLab, tmp_path: Path) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    conf = tmp_path / "keepalived.conf"
    conf.write_text(GLOBAL_DEFS % "a" + instance_conf(version=3, advert_int=0.1))
    rfd, wfd = os.pipe()
    d = Daemon("keeplb", a, conf, tmp_path / "work")
    d.workdir.mkdir()
    env = dict(os.environ, KEEPLB_VRRP_STATE_DIR=str(d.workdir))
    with open(d.log_path, "ab") as out:
        d.proc = a.popen(
            [sys.executable, "-c", LB_RUNNER.format(repo=str(REPO), conf=str(conf), fd=rfd)],
            pass_fds=(rfd,), stdout=out, stderr=out, env=env,
        )
    vlab.daemons.append(d)
    os.close(rfd)
    try:
        assert wait_for(lambda: has_vip(a, "10.77.0.100"), 4), d.log()
        os.write(wfd, b'{"lb": false, "backends": {}}\n')
        assert wait_for(lambda: not has_vip(a, "10.77.0.100"), 3), d.log()
        assert d.status()["instances"][0]["faults"] == ["track_lb"]
        os.write(wfd, b"true\n")
        assert wait_for(lambda: has_vip(a, "10.77.0.100"), 3), d.log()
        os.write(wfd, b"not json\n")
        assert d.status()["instances"][0]["state"] == "MASTER"
    finally:
        os.close(wfd)
