"""The VRRP shell's pieces that need neither root nor a namespace: frames,
script runners, the status files, config tolerance and the LB-health hook."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from pathlib import Path

import pytest

from keeplb.config.model import (
    KeepalivedConfig,
    TrackFileDef,
    VirtualAddress,
    VrrpInstance,
    VrrpScript,
)
from keeplb.vrrp import daemon as vrrp_daemon
from keeplb.vrrp.net import garp_frame, na_message
from keeplb.vrrp.scripts import FileWatcher, ScriptRunner, read_track_file, run_command

SEED = Path("/work/shared/seed/keepalived.conf")
MAC = bytes.fromhex("020000000001")


def test_garp_frame_is_a_broadcast_arp_request_for_the_vip() -> None:
    vip = ipaddress.IPv4Address("10.77.0.100")
    f = garp_frame(MAC, vip)
    assert len(f) == 42
    assert f[:6] == b"\xff" * 6 and f[6:12] == MAC and f[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", f[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert f[22:28] == MAC and f[28:32] == vip.packed and f[38:42] == vip.packed


def test_unsolicited_na_has_override_flag_target_and_lladdr() -> None:
    vip = ipaddress.IPv6Address("fd77::100")
    m = na_message(MAC, vip)
    assert m[0] == 136 and m[1] == 0
    assert struct.unpack("!I", m[4:8])[0] & 0x20000000
    assert m[8:24] == vip.packed and m[24:26] == b"\x02\x01" and m[26:32] == MAC


def test_run_command_status_and_timeout() -> None:
    assert asyncio.run(run_command(["/bin/sh", "-c", "exit 3"], timeout=5)) == 3
    assert asyncio.run(run_command(["/bin/sleep", "5"], timeout=0.2)) is None
    assert asyncio.run(run_command(["/nonexistent/script"], timeout=1)) is None


def test_script_runner_reports_bad_quoting_as_failure() -> None:
    runner = ScriptRunner(VrrpScript("chk", script='"unbalanced'), lambda *a: None)
    ok, detail = asyncio.run(runner.run_once())
    assert not ok and "quoting" in detail


def test_track_file_values_and_init_file(tmp_path: Path) -> None:
    f = tmp_path / "tf"
    assert read_track_file(str(f)) is None
    f.write_text("  -42 trailing\n")
    assert read_track_file(str(f)) == -42
    f.write_text("garbage\n")
    assert read_track_file(str(f)) == 0
    g = tmp_path / "created"
    w = FileWatcher(TrackFileDef("g", file=str(g), init_file=7), lambda n, v: None)
    assert w.current() == 7 and g.read_text().strip() == "7"


def test_seed_config_runs_as_keepalived_would_run_it() -> None:
    """keepalived -t exits 5/6 on the seed, yet keepalived runs it: so does keeplb."""
    cfg, errors, messages = vrrp_daemon.parse_config(str(SEED), log_warnings=False)
    assert cfg is not None and cfg.instances[0].name == "haproxy-vip"
    assert len(errors) == len(messages) >= 1


def test_unreadable_config_is_refused(tmp_path: Path) -> None:
    cfg, errors, _ = vrrp_daemon.parse_config(str(tmp_path / "missing.conf"))
    assert cfg is None and errors


def _config(track_lb: list[str] | None) -> KeepalivedConfig:
    inst = VrrpInstance(
        "vi", interface="klb-none0", virtual_router_id=60, track_lb=track_lb,
        virtual_ipaddresses=[VirtualAddress(ipaddress.ip_interface("10.77.0.100/24"))],
    )
    return KeepalivedConfig(instances=[inst])


@pytest.mark.parametrize(
    ("track_lb", "down", "up"),
    [
        (None, False, True),
        (None, {"lb": False, "backends": {}}, {"lb": True}),
        (["api"], {"lb": True, "backends": {"api": False}}, {"lb": True, "backends": {"api": True}}),
    ],
)
def test_lb_health_drives_fault(track_lb: list[str] | None, down: object, up: object) -> None:
    async def scenario() -> list[str]:
        d = vrrp_daemon.VrrpDaemon(_config(track_lb), "unused.conf")
        inst = vrrp_daemon.Instance(d, d.cfg.instances[0])
        d.instances[inst.name] = inst
        inst.start()
        seen = [inst.machine.state.value]
        d.on_lb_health(down)  # type: ignore[arg-type]
        seen.append(inst.machine.state.value)
        d.on_lb_health(up)  # type: ignore[arg-type]
        seen.append(inst.machine.state.value)
        await inst.addresses_settled()
        return seen

    assert asyncio.run(scenario()) == ["BACKUP", "FAULT", "BACKUP"]


def test_lb_health_ignored_when_track_lb_is_off() -> None:
    async def scenario() -> str:
        d = vrrp_daemon.VrrpDaemon(_config([]), "unused.conf")
        inst = vrrp_daemon.Instance(d, d.cfg.instances[0])
        d.instances[inst.name] = inst
        inst.start()
        d.on_lb_health(False)
        return inst.machine.state.value

    assert asyncio.run(scenario()) == "BACKUP"


def test_stats_file_layout() -> None:
    st = {
        "instances": [{
            "name": "vi",
            "counters": {"adverts_received": 4, "adverts_sent": 9, "became_master": 1,
                         "released_master": 0, "pri_zero_received": 0, "pri_zero_sent": 1},
            "drops": {"ttl": 2, "auth": 3},
        }]
    }
    text = vrrp_daemon.render_stats(st)
    assert "VRRP Instance: vi\n  Advertisements:\n    Received: 4\n    Sent: 9\n" in text
    assert "    TTL: 2\n" in text and "    Failure: 3\n" in text


def test_status_feeds_the_prometheus_families() -> None:
    """daemon.status() in the shape keeplb.vrrp.metrics documents."""
    from keeplb.vrrp.metrics import render_vrrp_metrics

    async def scenario() -> dict[str, object]:
        d = vrrp_daemon.VrrpDaemon(_config(None), "unused.conf")
        inst = vrrp_daemon.Instance(d, d.cfg.instances[0])
        d.instances[inst.name] = inst
        inst.start()
        d.on_lb_health(False)
        return d.status()

    text = render_vrrp_metrics(asyncio.run(scenario())).decode()  # type: ignore[arg-type]
    assert 'keeplb_vrrp_transitions_total{instance="vi"} 2.0' in text
    assert 'keeplb_vrrp_state{instance="vi",state="FAULT"} 1.0' in text


def test_notify_fifo_lines(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        cfg = _config(None)
        cfg.global_defs.vrrp_notify_fifo = str(fifo)

        async def scenario() -> None:
            d = vrrp_daemon.VrrpDaemon(cfg, "unused.conf")
            inst = vrrp_daemon.Instance(d, d.cfg.instances[0])
            d.instances[inst.name] = inst
            inst.start()
            d.on_lb_health(False)

        asyncio.run(scenario())
        lines = os.read(reader, 4096).decode().splitlines()
    finally:
        os.close(reader)
    assert lines == ['INSTANCE "vi" BACKUP 100', 'INSTANCE "vi" FAULT 100']
