import os
import socket

import pytest

from keeplb.proc import notify
from keeplb.proc.pidfile import pid_alive, read_pidfile, remove_pidfile, write_pidfile


def test_sd_notify_messages_arrive_on_the_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(path)
        srv.settimeout(2)
        env = {"NOTIFY_SOCKET": path}
        assert notify.sd_notify("READY=1", "STATUS=up", env=env)
        assert srv.recv(4096) == b"READY=1\nSTATUS=up"
        assert notify.sd_notify("RELOADING=1", env=env)
        assert srv.recv(4096) == b"RELOADING=1"


def test_sd_notify_abstract_socket():
    name = f"keeplb-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind("\0" + name)
        srv.settimeout(2)
        assert notify.sd_notify("STOPPING=1", env={"NOTIFY_SOCKET": "@" + name})
        assert srv.recv(4096) == b"STOPPING=1"


def test_sd_notify_outside_systemd_does_nothing():
    assert notify.sd_notify("READY=1", env={}) is False


def test_pidfile_roundtrip_and_remove_only_ours(tmp_path):
    path = str(tmp_path / "x.pid")
    write_pidfile(path)
    assert read_pidfile(path) == os.getpid()
    remove_pidfile(path, pid=1)  # not ours: must stay
    assert os.path.exists(path)
    remove_pidfile(path)
    assert not os.path.exists(path)


@pytest.mark.parametrize("content", ["", "abc", "\n"])
def test_pidfile_garbage_reads_as_none(tmp_path, content):
    path = tmp_path / "bad.pid"
    path.write_text(content)
    assert read_pidfile(str(path)) is None


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(2**22 + 12345)


def test_lb_state_from_health():
    from keeplb.proc.supervisor import lb_state_from_health

    assert lb_state_from_health({"be": [2, 0]}) == {"lb": True, "backends": {"be": True}}
    assert lb_state_from_health({"be": [0, 1]}) == {"lb": True, "backends": {"be": True}}
    assert lb_state_from_health({"be": [0, 0], "x": [1, 0]}) == {
        "lb": False, "backends": {"be": False, "x": True}}
    assert lb_state_from_health({}) == {"lb": True, "backends": {}}


def test_maxconn_beyond_the_fd_limit_is_a_clear_startup_error(tmp_path, capsys):
    from keeplb import cli

    cfg = tmp_path / "fd.cfg"
    cfg.write_text(
        "global\n    maxconn 1000000000\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n"
        "frontend f\n    bind 127.0.0.1:1\n    default_backend b\n"
        "backend b\n    server s 127.0.0.1:9\n"
    )
    assert cli.main(["lb", "-f", str(cfg)]) == cli.STARTUP_FAILURE
    err = capsys.readouterr().err
    assert "Cannot raise FD limit to 2000000200" in err
    assert "Traceback" not in err
