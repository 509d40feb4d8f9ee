"""keepalived's external inputs as keeplb runs them: sync-group trackers, the
user scripts run as (script_user), track_file init_file, vrrp_notify_fifo.

The tests that switch users need root (they skip otherwise) but no namespace:
they run /bin/sh and id(1), nothing that touches the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from keeplb.config import keepalived
from keeplb.config.model import (
    GlobalDefs,
    KeepalivedConfig,
    TrackFileDef,
    TrackRef,
    VrrpInstance,
    VrrpScript,
    VrrpSyncGroup,
)
from keeplb.vrrp.daemon import Instance, VrrpDaemon
from keeplb.vrrp.machine import State
from keeplb.vrrp.scripts import (
    DEFAULT_SCRIPT_USER,
    FileWatcher,
    NotifyFifo,
    NotifyRunner,
    ScriptIdentity,
    ScriptRunner,
    fifo_line,
    init_file_value,
    resolve_identity,
)

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


NOBODY = pwd.getpwnam("nobody") if _has_user("nobody") else None
NEEDS_NOBODY = pytest.mark.skipif(NOBODY is None, reason="no user 'nobody' here")


# --------------------------------------------------------------------------
# 1. track_interface / track_file on a vrrp_sync_group
# --------------------------------------------------------------------------


def _group_config(file_weight: int = 0, iface_weight: int = 0) -> KeepalivedConfig:
    return KeepalivedConfig(
        track_files={"tf": TrackFileDef(name="tf", file="/nonexistent/tf", weight=file_weight)},
        scripts={"chk": VrrpScript("chk", script="/bin/true", weight=7)},
        instances=[
            VrrpInstance(name="v1", interface="klb-none0", virtual_router_id=61),
            VrrpInstance(name="v2", interface="klb-none0", virtual_router_id=62),
        ],
        sync_groups=[
            VrrpSyncGroup(
                name="G", group=["v1", "v2"], track_scripts=[TrackRef("chk")],
                track_interfaces=[TrackRef("klb-up0", iface_weight or None)],
                track_files=[TrackRef("tf")],
            )
        ],
    )


def test_group_trackers_reach_every_member_with_their_weights(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # keepalived 2.2.7 (checked in a namespace): a sync group's own trackers move
    # every member's priority by their weights, with no 'ignoring' warning.
    cfg = _group_config(file_weight=3, iface_weight=5)
    d = VrrpDaemon(cfg, "keepalived.conf")
    for icfg in cfg.instances:
        inst = Instance(d, icfg)
        assert [t.weight for t in inst.script_trackers["chk"]] == [7]
        assert [t.weight for t in inst.iface_trackers["klb-up0"]] == [5]
        assert [t.weight for t in inst.file_trackers["tf"]] == [3]
    assert "ignoring" not in caplog.text


def test_a_weighted_group_file_moves_every_members_priority() -> None:
    async def scenario() -> list[int]:
        cfg = _group_config(file_weight=3)
        cfg.scripts.clear()
        cfg.sync_groups[0].track_scripts = []
        d = VrrpDaemon(cfg, "keepalived.conf")
        members = [Instance(d, icfg) for icfg in cfg.instances]
        for inst in members:
            d.instances[inst.name] = inst
            for t in inst.iface_trackers["klb-up0"]:
                t.on_result(True)
            inst.start()
        d.on_file_value("tf", 1)
        for inst in members:
            await inst.addresses_settled()
        return [m.machine.effective_priority for m in members]

    assert asyncio.run(scenario()) == [103, 103]


@pytest.mark.parametrize("what", ["interface", "file"])
def test_a_failing_weight_zero_group_tracker_faults_the_whole_group(what: str) -> None:
    async def scenario() -> list[tuple[str, ...]]:
        cfg = _group_config()  # weight 0: a failure is a fault
        cfg.scripts.clear()
        cfg.sync_groups[0].track_scripts = []
        d = VrrpDaemon(cfg, "keepalived.conf")
        members = [Instance(d, icfg) for icfg in cfg.instances]
        for inst in members:
            d.instances[inst.name] = inst
            for t in inst.iface_trackers["klb-up0"]:
                t.on_result(True)  # the link is up at start
            inst.start()
        seen = [tuple(m.machine.state.value for m in members)]
        if what == "interface":
            d.on_link("klb-up0", False)
        else:
            d.on_file_value("tf", 1)  # non-zero with weight 0: fault
        seen.append(tuple(m.machine.state.value for m in members))
        if what == "interface":
            d.on_link("klb-up0", True)
        else:
            d.on_file_value("tf", 0)
        seen.append(tuple(m.machine.state.value for m in members))
        for inst in members:
            await inst.addresses_settled()
        return seen

    assert asyncio.run(scenario()) == [
        ("BACKUP", "BACKUP"), ("FAULT", "FAULT"), ("BACKUP", "BACKUP"),
    ]


def _check(tmp_path: Path, text: str) -> tuple[KeepalivedConfig, keepalived.KeepalivedDiagnostics]:
    path = tmp_path / "keepalived.conf"
    path.write_text(text)
    return keepalived.parse(str(path))


GROUP_CONF = """\
track_file tf1 {
  file /tmp/klb-tf1
}
vrrp_sync_group G1 {
  group {
    VI_1
    VI_2
  }
  track_file {
    tf1
    nosuchfile
  }
  track_interface {
    lo
    klb-nosuchif
  }
}
vrrp_instance VI_1 {
  interface lo
  virtual_router_id 51
  virtual_ipaddress {
    10.77.0.100
  }
}
vrrp_instance VI_2 {
  interface lo
  virtual_router_id 52
  virtual_ipaddress {
    10.77.0.101
  }
}
"""


def test_group_track_file_and_interface_names_are_checked(tmp_path: Path) -> None:
    # keepalived 2.2.7 -t: "(G1) track file nosuchfile not found, ignoring..." and
    # "(G1) tracked interface klb-nosuchif doesn't exist", both errors (exit 5).
    cfg, diags = _check(tmp_path, GROUP_CONF)
    errors = {(d.span.line if d.span else 0, d.message) for d in diags.errors}
    assert (11, "vrrp_sync_group G1: track file nosuchfile not found; ignored") in errors
    assert (15, "vrrp_sync_group G1: track_interface klb-nosuchif does not exist on this host") in errors
    assert [r.name for r in cfg.sync_groups[0].track_files] == ["tf1"]


# --------------------------------------------------------------------------
# 2. script_user: who scripts run as
# --------------------------------------------------------------------------


def test_identity_rules() -> None:
    me = (os.geteuid(), os.getegid())
    if not _has_user(DEFAULT_SCRIPT_USER):
        # No keepalived_script: keepalived runs scripts as itself...
        ident = resolve_identity(None)
        assert ident is not None and (ident.uid, ident.gid) == me
        # ...unless enable_script_security is on: then nothing runs.
        assert resolve_identity(None, script_security=True) is None
    assert resolve_identity("klb-no-such-user") is None
    assert resolve_identity(None, default_user="klb-no-such-user") is None
    root = resolve_identity(None, default_user="root", default_group="daemon")
    assert root == ScriptIdentity(0, grp.getgrnam("daemon").gr_gid, "root:daemon")
    # The script's own user wins over script_user, and brings its primary group.
    own = resolve_identity("root", default_user="klb-no-such-user")
    assert own == ScriptIdentity(0, pwd.getpwnam("root").pw_gid, "root")
    assert resolve_identity("root", "klb-no-such-group") is None


@contextlib.contextmanager
def _world_writable_dir() -> Iterator[Path]:
    # pytest's tmp_path sits under 0700 directories another user cannot enter.
    d = Path(tempfile.mkdtemp(prefix="klb-ids-", dir="/tmp"))
    try:
        d.chmod(0o1777)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


ID_SCRIPT = '/bin/sh -c "{ id -u; id -g; id -G; } > {out}"'


def _ids(out: Path) -> list[str]:
    return out.read_text().split("\n")[:3]


@ROOT_ONLY
@NEEDS_NOBODY
def test_vrrp_script_and_notify_run_as_script_user_with_its_group_only() -> None:
    assert NOBODY is not None
    with _world_writable_dir() as d:
        cfg = KeepalivedConfig(
            global_defs=GlobalDefs(enable_script_security=True, script_user="nobody"),
            scripts={"chk": VrrpScript("chk", script=ID_SCRIPT.replace("{out}", str(d / "chk")))},
        )
        daemon = VrrpDaemon(cfg, "keepalived.conf")

        async def scenario() -> bool:
            runner = ScriptRunner(cfg.scripts["chk"], lambda *a: None,
                                  identity=daemon.script_identity(cfg.scripts["chk"]))
            ok, _ = await runner.run_once()
            daemon.notifier.run(ID_SCRIPT.replace("{out}", str(d / "notify")))
            await daemon.notifier.drain()
            return ok

        assert asyncio.run(scenario())
        want = [str(NOBODY.pw_uid), str(NOBODY.pw_gid), str(NOBODY.pw_gid)]
        # No gid 0, no root's supplementary groups: only the user's primary group.
        assert _ids(d / "chk") == want
        assert _ids(d / "notify") == want


@ROOT_ONLY
@NEEDS_NOBODY
def test_script_user_group_and_a_scripts_own_user() -> None:
    daemon_gid = grp.getgrnam("daemon").gr_gid
    with _world_writable_dir() as d:
        gd = GlobalDefs(enable_script_security=True, script_user="nobody", script_group="daemon")
        own = VrrpScript("own", script=ID_SCRIPT.replace("{out}", str(d / "own")), user="root")
        byglobal = VrrpScript("g", script=ID_SCRIPT.replace("{out}", str(d / "g")))
        daemon = VrrpDaemon(KeepalivedConfig(global_defs=gd), "keepalived.conf")

        async def scenario() -> None:
            for s in (own, byglobal):
                runner = ScriptRunner(s, lambda *a: None, identity=daemon.script_identity(s))
                assert (await runner.run_once())[0]

        asyncio.run(scenario())
        assert NOBODY is not None
        assert _ids(d / "g") == [str(NOBODY.pw_uid), str(daemon_gid), str(daemon_gid)]
        # Even a root script loses root's extra groups (keepalived's setgroups(1, &gid)).
        assert _ids(d / "own") == ["0", "0", "0"]


def test_an_unknown_script_user_runs_no_notify_script(caplog: pytest.LogCaptureFixture) -> None:
    cfg = KeepalivedConfig(global_defs=GlobalDefs(script_user="klb-no-such-user"))
    daemon = VrrpDaemon(cfg, "keepalived.conf")
    assert not daemon.notifier.runnable

    async def scenario() -> None:
        daemon.notifier.run("/bin/true")
        await daemon.notifier.drain()

    asyncio.run(scenario())
    assert "notify scripts are not run: the script user does not exist" in caplog.text


def test_a_track_script_whose_user_is_missing_is_ignored() -> None:
    # keepalived drops such a script, so an instance tracking it is not held by it.
    cfg = KeepalivedConfig(
        scripts={"chk": VrrpScript("chk", script="/bin/true", user="klb-no-such-user")},
        instances=[VrrpInstance(name="v1", interface="klb-none0", virtual_router_id=61,
                                track_scripts=[TrackRef("chk")])],
    )
    inst = Instance(VrrpDaemon(cfg, "keepalived.conf"), cfg.instances[0])
    assert inst.script_trackers == {}


def test_notify_runner_without_identity_runs_as_us(tmp_path: Path) -> None:
    out = tmp_path / "ids"

    async def scenario() -> None:
        runner = NotifyRunner()
        runner.run(ID_SCRIPT.replace("{out}", str(out)))
        await runner.drain()

    asyncio.run(scenario())
    assert _ids(out)[:2] == [str(os.geteuid()), str(os.getegid())]


# --------------------------------------------------------------------------
# 3. track_file init_file [VALUE] [overwrite]
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("init_file", "overwrite", "exists", "written"),
    [
        (None, False, False, None),
        (None, False, True, None),
        (0, False, False, 0),
        (7, False, False, 7),
        (7, False, True, None),
        (7, True, True, 7),
        (-3, True, False, -3),
    ],
)
def test_init_file_value(
    init_file: int | None, overwrite: bool, exists: bool, written: int | None
) -> None:
    track = TrackFileDef("t", file="/x", init_file=init_file, init_file_overwrite=overwrite)
    assert init_file_value(track, exists) == written


def _watch(track: TrackFileDef) -> list[int]:
    seen: list[int] = []

    async def scenario() -> None:
        w = FileWatcher(track, lambda _n, v: seen.append(v))
        w.start()
        await w.stop()

    asyncio.run(scenario())
    return seen


def test_init_file_is_written_only_when_missing_unless_overwrite(tmp_path: Path) -> None:
    f = tmp_path / "tf"
    assert _watch(TrackFileDef("t", file=str(f), init_file=0)) == [0]
    assert f.read_text() == "0\n"
    f.write_text("5\n")
    assert _watch(TrackFileDef("t", file=str(f), init_file=9)) == [5]
    assert f.read_text() == "5\n"
    assert _watch(TrackFileDef("t", file=str(f), init_file=9, init_file_overwrite=True)) == [9]
    assert f.read_text() == "9\n"


def test_init_file_applies_at_start_only(tmp_path: Path) -> None:
    # keepalived writes it at startup; a file removed later reads as 0, not VALUE.
    f = tmp_path / "tf"
    w = FileWatcher(TrackFileDef("t", file=str(f), init_file=4), lambda _n, _v: None)
    assert w.current() == 4
    f.unlink()
    assert w.current() == 0 and not f.exists()


def test_without_init_file_a_missing_file_is_not_created(tmp_path: Path) -> None:
    f = tmp_path / "tf"
    assert _watch(TrackFileDef("t", file=str(f))) == [0]
    assert not f.exists()


# --------------------------------------------------------------------------
# 4. vrrp_notify_fifo FILE [user [group]]
# --------------------------------------------------------------------------


def test_fifo_is_created_and_lines_wait_for_a_late_reader(tmp_path: Path) -> None:
    path = tmp_path / "notify.fifo"
    fifo = NotifyFifo(str(path))
    assert fifo.open()
    st = os.stat(path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644 & ~umask
    # No reader yet: keepalived's O_RDWR descriptor keeps the write from failing.
    fifo.write(fifo_line("INSTANCE", "VI_1", "MASTER", 100))
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        fifo.write(fifo_line("GROUP", "G", "MASTER", 0))
        assert os.read(reader, 4096) == b'INSTANCE "VI_1" MASTER 100\nGROUP "G" MASTER 0\n'
    finally:
        os.close(reader)
    fifo.close()
    assert not path.exists()  # created by us, removed by us


def test_an_existing_fifo_is_kept_and_a_regular_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "theirs.fifo"
    os.mkfifo(path)
    fifo = NotifyFifo(str(path))
    assert fifo.open()
    fifo.close()
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    plain = tmp_path / "plain"
    plain.write_text("precious\n")
    refused = NotifyFifo(str(plain))
    assert not refused.open()
    refused.write("INSTANCE \"x\" MASTER 100\n")
    assert plain.read_text() == "precious\n"


def test_a_full_fifo_drops_lines_without_raising(tmp_path: Path) -> None:
    fifo = NotifyFifo(str(tmp_path / "full.fifo"))
    assert fifo.open()
    try:
        line = fifo_line("INSTANCE", "VI_1", "BACKUP", 100)
        for _ in range(100_000 // len(line) + 10):  # more than a pipe holds
            fifo.write(line)
    finally:
        fifo.close()


def test_daemon_writes_keepalived_lines_and_creates_the_fifo(tmp_path: Path) -> None:
    path = tmp_path / "vrrp.fifo"
    cfg = KeepalivedConfig(global_defs=GlobalDefs(vrrp_notify_fifo=str(path)))
    d = VrrpDaemon(cfg, "keepalived.conf")
    d._open_fifo()
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        d._run_notify(None, None, None, None, None, "INSTANCE", "VI_1", State.MASTER, 100)
        d._run_notify(None, None, None, None, None, "GROUP", "G", State.FAULT, 0)
        assert os.read(reader, 4096).decode().splitlines() == [
            'INSTANCE "VI_1" MASTER 100', 'GROUP "G" FAULT 0',
        ]
    finally:
        os.close(reader)
        d._close_fifo()
    assert not path.exists()


def test_fifo_owner_words_are_warned(tmp_path: Path) -> None:
    cfg, diags = _check(tmp_path, "global_defs {\n vrrp_notify_fifo /tmp/klb.fifo nobody nogroup\n}\n")
    assert not diags.has_errors, [str(d) for d in diags]
    assert [d.message for d in diags.warnings] == [
        "vrrp_notify_fifo: owner 'nobody nogroup' is not supported by keeplb"
    ]
    assert cfg.global_defs.vrrp_notify_fifo == "/tmp/klb.fifo"
