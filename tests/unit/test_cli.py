import pytest

from keeplb import cli


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("a.txt", "global\n  daemon\nfrontend f\n  bind :80\n", "haproxy"),
        ("a.txt", "global_defs {\n router_id x\n}\nvrrp_instance v {\n}\n", "keepalived"),
        ("haproxy.cfg", "", "haproxy"),
        ("keepalived.conf", "", "keepalived"),
    ],
)
def test_detect_format(tmp_path, name, text, fmt):
    p = tmp_path / name
    p.write_text(text)
    assert cli.detect_format(str(p)) == fmt


def test_missing_file_is_a_clear_error(capsys):
    assert cli.main(["lb", "-c", "-f", "/nonexistent/haproxy.cfg"]) == 1
    err = capsys.readouterr().err
    assert "/nonexistent/haproxy.cfg: error: no such file or directory" in err
    assert "Traceback" not in err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 1
    assert "usage: keeplb" in capsys.readouterr().out


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), name=st.sampled_from(["haproxy.cfg", "keepalived.conf", "x"]))
def test_any_bytes_give_diagnostics_never_a_traceback(tmp_path, capsys, data, name):
    p = tmp_path / name
    p.write_bytes(data)
    for argv in (["check", str(p)], ["lb", "-c", "-f", str(p)], ["vrrp", "-t", "-f", str(p)]):
        rc = cli.main(argv)
        out = capsys.readouterr()
        assert rc in (0, 1, 2, 4, 5, 6), (argv, rc)
        assert "Traceback" not in out.err and "internal error" not in out.err


def test_lb_check_like_haproxy_for_files_that_cannot_serve(tmp_path, capsys):
    empty_dir = tmp_path / "d"
    empty_dir.mkdir()
    assert cli.main(["lb", "-c", "-f", str(empty_dir)]) == 1
    assert "no configuration file found" in capsys.readouterr().err
    empty = tmp_path / "empty.cfg"
    empty.write_text("")
    # haproxy -c 2.6 exits 2 for a valid file without any listener
    assert cli.main(["lb", "-c", "-f", str(empty)]) == 2
    assert "will not start (no listener)" in capsys.readouterr().out
