"""`show stat` CSV, `show servers state`, and the stats page, for a runtime
built by hand; and the CSV header and row shapes compared with a real
haproxy 2.6 on a loopback-only config."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keeplb.config.model import (
    Address,
    Balance,
    Bind,
    Condition,
    Mode,
    Proxy,
    ProxyKind,
    Server,
    ServerOptions,
    StatsPage,
)
from keeplb.lb import stats
from keeplb.lb.runtime import DirectControl
from keeplb.lb.server import (
    AdminState,
    BackendRuntime,
    FrontendRuntime,
    OpState,
    ProcessRuntime,
    ServerRuntime,
)

NOW = 1000.0


def _server(name: str, port: int, *, weight: int = 1, check: bool = False,
            backup: bool = False) -> Server:
    return Server(name, Address("ipv4", "127.0.0.1", port, port),
                  ServerOptions(check=check, rise=2, fall=3, weight=weight, backup=backup))


def make_runtime() -> ProcessRuntime:
    """fe1 (tcp) -> be1 {s1 checked, s2 weight 5, s3 backup}; be1 is iid 2."""
    fe_cfg = Proxy(ProxyKind.FRONTEND, "fe1", mode=Mode.TCP, default_backend="be1",
                   binds=[Bind(Address("ipv4", "127.0.0.1", 19001, 19001))])
    be_cfg = Proxy(ProxyKind.BACKEND, "be1", mode=Mode.TCP, balance=Balance("roundrobin"),
                   servers=[_server("s1", 19101, check=True), _server("s2", 19102, weight=5),
                            _server("s3", 19103, backup=True)])
    rt = ProcessRuntime(pid=4242, started=time.time() - 65, maxconn=1000, nbthread=1)
    rt.frontends.append(FrontendRuntime(fe_cfg, iid=1))
    be = BackendRuntime(be_cfg, iid=2, last_change=NOW - 30)
    for sid, cfg in enumerate(be_cfg.servers, start=1):
        be.servers.append(ServerRuntime(
            config=cfg, backend="be1", sid=sid, host="127.0.0.1", port=cfg.address.port_low,
            uweight=cfg.weight, eweight=cfg.weight, check_enabled=bool(cfg.options.check),
            last_change=NOW - 10))
    s1 = be.servers[0]
    s1.health = 4
    s1.check_status, s1.check_desc, s1.check_duration_ms = "L4OK", "Layer4 check passed", 0
    rt.backends.append(be)
    return rt


def rows_by_name(csv_text: str) -> dict[tuple[str, str], dict[str, str]]:
    lines = csv_text.rstrip("\n").split("\n")
    header = lines[0][2:].split(",")
    out = {}
    for line in lines[1:]:
        cells = line.split(",")
        row = dict(zip(header, cells, strict=True))
        out[(row["pxname"], row["svname"])] = row
    return out


def test_header_is_haproxy_26_and_each_row_has_every_column() -> None:
    text = stats.render_show_stat(make_runtime(), NOW)
    assert text.startswith("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,")
    assert "agg_check_status,-,ssl_sess," in text.split("\n")[0]
    lines = text.rstrip("\n").split("\n")
    assert all(line.endswith(",") for line in lines)
    assert {line.count(",") for line in lines} == {len(stats.STAT_FIELDS)}
    assert [tuple(line.split(",")[:2]) for line in lines[1:]] == [
        ("fe1", "FRONTEND"), ("be1", "s1"), ("be1", "s2"), ("be1", "s3"), ("be1", "BACKEND")]


def test_values_follow_the_counters() -> None:
    rt = make_runtime()
    fe, be = rt.frontends[0], rt.backends[0]
    for _ in range(3):
        fe.counters.session_started()
        be.counters.session_started()
        be.servers[1].counters.session_started()
    fe.counters.session_ended()
    fe.counters.bytes_in, fe.counters.bytes_out = 1234, 98765
    be.servers[1].counters.lbtot = 3
    be.servers[1].maxconn = 10
    rows = rows_by_name(stats.render_show_stat(rt, NOW))
    f = rows[("fe1", "FRONTEND")]
    assert (f["scur"], f["smax"], f["stot"], f["bin"], f["bout"]) == ("2", "3", "3", "1234", "98765")
    assert (f["slim"], f["status"], f["mode"], f["type"]) == ("1000", "OPEN", "tcp", "0")
    s2 = rows[("be1", "s2")]
    assert (s2["scur"], s2["stot"], s2["lbtot"], s2["slim"], s2["weight"]) == ("3", "3", "3", "10", "5")
    assert (s2["status"], s2["chkfail"], s2["addr"], s2["lastchg"]) == ("no check", "", "127.0.0.1:19102", "10")
    s1 = rows[("be1", "s1")]
    assert (s1["status"], s1["check_status"], s1["check_desc"]) == ("UP", "L4OK", "Layer4 check passed")
    assert (s1["check_rise"], s1["check_fall"], s1["check_health"], s1["downtime"]) == ("2", "3", "4", "0")
    b = rows[("be1", "BACKEND")]
    # active s1 (1) + s2 (5); the backup does not weigh while actives are up
    assert (b["status"], b["weight"], b["act"], b["bck"], b["slim"]) == ("UP", "6", "2", "1", "100")
    assert (b["algo"], b["lastchg"], b["stot"]) == ("roundrobin", "30", "3")


@pytest.mark.parametrize(("state", "status", "act", "weight"), [
    (AdminState.MAINT, "MAINT", "1", "1"),
    (AdminState.DRAIN, "DRAIN", "1", "1"),
    (AdminState.READY, "no check", "2", "6"),
])
def test_admin_state_shows_as_haproxy(state: AdminState, status: str, act: str, weight: str) -> None:
    rt = make_runtime()
    DirectControl(clock=lambda: NOW).set_admin_state(rt.backends[0].servers[1], state)
    rows = rows_by_name(stats.render_show_stat(rt, NOW))
    # haproxy 2.6 keeps the server's own weight column; the backend drops it
    assert rows[("be1", "s2")]["status"] == status
    assert rows[("be1", "s2")]["weight"] == "5"
    assert (rows[("be1", "BACKEND")]["act"], rows[("be1", "BACKEND")]["weight"]) == (act, weight)


def test_backend_down_when_no_server_usable_and_backup_takes_over() -> None:
    rt = make_runtime()
    be = rt.backends[0]
    be.servers[0].op = OpState.STOPPED
    be.servers[0].health = 0
    be.servers[1].admin = AdminState.MAINT
    rows = rows_by_name(stats.render_show_stat(rt, NOW))
    assert rows[("be1", "s1")]["status"] == "DOWN"
    assert (rows[("be1", "BACKEND")]["act"], rows[("be1", "BACKEND")]["bck"],
            rows[("be1", "BACKEND")]["weight"]) == ("0", "1", "1")
    be.servers[2].op = OpState.STOPPED
    rows = rows_by_name(stats.render_show_stat(rt, NOW))
    assert rows[("be1", "BACKEND")]["status"] == "DOWN"


def test_filters_and_user_level_hides_addresses() -> None:
    rt = make_runtime()
    text = stats.render_show_stat(rt, NOW, stats.StatFilter(proxy=2, types=stats.StatType.SERVER,
                                                            sid=2))
    assert list(rows_by_name(text)) == [("be1", "s2")]
    rt.backends[0].servers[2].admin = AdminState.MAINT
    text = stats.render_show_stat(rt, NOW, stats.StatFilter(no_maint=True), show_legends=False)
    rows = rows_by_name(text)
    assert ("be1", "s3") not in rows
    assert rows[("be1", "s2")]["addr"] == "" and rows[("be1", "BACKEND")]["algo"] == ""


def test_check_info_with_comma_is_quoted() -> None:
    rt = make_runtime()
    rt.backends[0].servers[0].check_info = 'refused, "twice"'
    line = stats.render_show_stat(rt, NOW).split("\n")[2]
    assert ',"refused, ""twice""",' in line


def test_servers_state() -> None:
    rt = make_runtime()
    rt.backends[0].servers[1].admin = AdminState.MAINT
    text = stats.render_servers_state(rt, "be1", NOW)
    lines = text.split("\n")
    assert lines[0] == "1" and lines[1].startswith("# be_id be_name srv_id srv_name srv_addr")
    assert lines[2].split() == ["2", "be1", "1", "s1", "127.0.0.1", "2", "0", "1", "1", "10",
                                "6", "3", "4", "6", "0", "0", "0", "-", "19101", "-", "0", "0",
                                "-", "-", "0"]
    assert lines[3].split()[5:7] == ["2", "1"]  # running, SRV_ADMF_FMAINT
    assert stats.render_show_backend(rt) == "# name\nbe1\n"


def test_show_info_fields() -> None:
    rt = make_runtime()
    info = dict(line.split(": ", 1) for line in stats.render_show_info(rt).splitlines())
    assert info["Pid"] == "4242" and info["Maxconn"] == "1000" and info["Nbproc"] == "1"
    assert info["Uptime_sec"] in ("65", "66")
    assert info["Version"].startswith("2.6.")


# --------------------------------------------------------------------------
# the stats page
# --------------------------------------------------------------------------

PAGE = StatsPage(enabled=True, uri="/stats", refresh=5000, auth=(("admin", "s3cret"),))


def _get(target: str, *, auth: tuple[str, str] | None = ("admin", "s3cret")) -> bytes:
    head = f"GET {target} HTTP/1.1\r\nHost: x\r\n"
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        head += f"Authorization: Basic {token}\r\n"
    return (head + "\r\n").encode()


def test_stats_page_auth_html_and_csv() -> None:
    rt = make_runtime()
    denied = stats.handle_stats_http(_get("/stats", auth=None), PAGE, rt)
    assert denied.startswith(b"HTTP/1.1 401 ") and b'www-authenticate: Basic realm=' in denied
    wrong = stats.handle_stats_http(_get("/stats", auth=("admin", "nope")), PAGE, rt)
    assert wrong.startswith(b"HTTP/1.1 401 ")
    page = stats.handle_stats_http(_get("/stats"), PAGE, rt)
    assert page.startswith(b"HTTP/1.1 200 OK") and b"text/html" in page
    body = page.split(b"\r\n\r\n", 1)[1]
    assert b'<meta http-equiv="refresh" content="5">' in body
    assert b">be1<" in body and b">s3<" in body and b"<form" not in body
    csv = stats.handle_stats_http(_get("/stats;csv"), PAGE, rt)
    assert csv.split(b"\r\n\r\n", 1)[1].startswith(b"# pxname,svname,")
    assert stats.handle_stats_http(_get("/other"), PAGE, rt).startswith(b"HTTP/1.1 404 ")
    for junk in (b"", b"\x00\xff garbage\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/1.1\r\nbad\r\n\r\n"):
        assert stats.handle_stats_http(junk, PAGE, rt).startswith(b"HTTP/1.1 400 ")


def test_stats_page_admin_action_goes_through_control() -> None:
    rt = make_runtime()
    body = b"s=s2&action=maint&b=be1"
    req = (f"POST /stats HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    page = StatsPage(enabled=True, uri="/stats")
    assert stats.handle_stats_http(req, page, rt, DirectControl()).startswith(b"HTTP/1.1 403 ")
    resp = stats.handle_stats_http(req, page, rt, DirectControl(), admin=True)
    assert resp.startswith(b"HTTP/1.1 303 ") and b"location: /stats;st=DONE" in resp
    assert rt.backends[0].servers[1].admin is AdminState.MAINT
    html = stats.handle_stats_http(_get("/stats", auth=None), page, rt, admin=True)
    assert b"<form" in html and b'class="maint"' in html


# --------------------------------------------------------------------------
# real haproxy 2.6 as the oracle
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def haproxy_query(path: Path, cmd: str, timeout: float = 5.0) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(cmd.encode() + b"\n")
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks).decode()


ORACLE_CFG = """\
global
    maxconn 1000
    stats socket {sock} level admin
defaults
    timeout connect 1s
    timeout client 10s
    timeout server 10s
frontend fe1
    mode tcp
    bind 127.0.0.1:{p1}
    default_backend be1
backend be1
    mode tcp
    balance roundrobin
    server s1 127.0.0.1:{p3}
    server s2 127.0.0.1:{p4} weight 5 maxconn 10
    server s3 127.0.0.1:{p5} backup
listen st
    mode http
    bind 127.0.0.1:{p2}
    stats enable
    stats uri /stats
    server w1 127.0.0.1:{p6} weight 2
"""


@pytest.fixture
def real_haproxy(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(exe).exists():
        pytest.skip("haproxy is not installed")
    sock = tmp_path / "h.sock"
    cfg_text = ORACLE_CFG.format(sock=sock, p1=free_port(), p2=free_port(), p3=free_port(),
                                 p4=free_port(), p5=free_port(), p6=free_port())
    cfg = tmp_path / "h.cfg"
    cfg.write_text(cfg_text)
    proc = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.skip(f"haproxy did not start: {err[-300:]}")
            time.sleep(0.05)
        yield sock, cfg_text
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_show_stat_header_equals_real_haproxy(real_haproxy: tuple[Path, str]) -> None:
    sock, _ = real_haproxy
    theirs = haproxy_query(sock, "show stat")
    assert theirs.split("\n", 1)[0] + "\n" == stats.STAT_HEADER


def test_show_stat_rows_have_haproxy_shape(real_haproxy: tuple[Path, str]) -> None:
    """Same config through keeplb's parser: same rows, same empty/non-empty
    cells per row, same values where they do not depend on time or ids."""
    from keeplb.config.haproxy import parse_text
    from keeplb.lb.app import build_runtime

    sock, cfg_text = real_haproxy
    theirs = rows_by_name(haproxy_query(sock, "show stat").rstrip("\n") + "\n")
    cfg, diags = parse_text(cfg_text)
    assert not diags.has_errors, [str(d) for d in diags]
    ours = rows_by_name(stats.render_show_stat(build_runtime(cfg)))
    assert list(ours) == list(theirs)
    stable = ("pxname", "svname", "qcur", "scur", "smax", "slim", "stot", "status", "weight",
              "act", "bck", "pid", "sid", "type", "mode", "algo", "addr", "uweight", "lastsess")
    for key, row in theirs.items():
        mine = ours[key]
        assert [f for f in stats.STAT_FIELDS if (row[f] == "") != (mine[f] == "")] == [], key
        assert {f: mine[f] for f in stable} == {f: row[f] for f in stable}, key


def test_servers_state_header_equals_real_haproxy(real_haproxy: tuple[Path, str]) -> None:
    sock, _ = real_haproxy
    theirs = haproxy_query(sock, "show servers state be1").split("\n")
    assert theirs[0] == "1"
    assert theirs[1] + "\n" == stats.SERVERS_STATE_HEADER
    assert theirs[2].split()[5:9] == ["2", "0", "1", "1"]


@pytest.mark.parametrize(("op", "admin", "health", "checked", "expected"), [
    (OpState.RUNNING, AdminState.READY, 4, True, "UP"),
    (OpState.RUNNING, AdminState.READY, 3, True, "UP 2/3"),
    (OpState.RUNNING, AdminState.READY, 2, True, "UP 1/3"),  # a checked server's start
    (OpState.RUNNING, AdminState.READY, 0, False, "no check"),
    (OpState.RUNNING, AdminState.DRAIN, 4, True, "DRAIN"),
    (OpState.RUNNING, AdminState.DRAIN, 2, True, "DRAIN 1/3"),
    (OpState.STOPPED, AdminState.DRAIN, 0, True, "DOWN"),  # read from haproxy 2.6
    (OpState.STOPPED, AdminState.READY, 1, True, "DOWN 1/2"),
    (OpState.STOPPED, AdminState.READY, 0, False, "DOWN"),  # 'disable health' on a DOWN server
    (OpState.STOPPING, AdminState.READY, 4, True, "NOLB"),
    (OpState.STOPPED, AdminState.MAINT, 0, True, "MAINT"),
])
def test_server_status_words(op: OpState, admin: AdminState, health: int, checked: bool,
                             expected: str) -> None:
    s = make_runtime().backends[0].servers[0]
    s.op, s.admin, s.health, s.check_enabled = op, admin, health, checked
    assert stats.server_status(s) == expected


@pytest.mark.parametrize(("rise", "fall"), [(1, 1), (2, 3), (3, 2), (5, 4)])
def test_server_status_words_every_health_counter(rise: int, fall: int) -> None:
    """A checked READY server whose side follows its counter (Health.up), at
    every counter value: the words health.py's status_text gave before
    server_status became their one source."""
    rt = make_runtime()
    s = rt.backends[0].servers[0]
    s.config = Server("s1", Address("ipv4", "127.0.0.1", 19101, 19101),
                      ServerOptions(check=True, rise=rise, fall=fall, weight=1))
    top = rise + fall - 1
    seen = []
    for health in range(top + 1):
        s.health = health
        s.op = OpState.RUNNING if health >= rise else OpState.STOPPED
        seen.append(stats.server_status(s))
    assert seen == ["DOWN"] + [f"DOWN {h}/{rise}" for h in range(1, rise)] + [
        f"UP {h - rise + 1}/{fall}" for h in range(rise, top)] + ["UP"]


def test_disabled_health_empties_check_columns() -> None:
    rt = make_runtime()
    s1 = rt.backends[0].servers[0]
    DirectControl().disable_health(s1)
    row = rows_by_name(stats.render_show_stat(rt, NOW))[("be1", "s1")]
    assert (row["chkfail"], row["check_status"], row["check_rise"], row["downtime"]) == ("", "", "", "")
    assert stats.render_servers_state(rt, "be1", NOW).split("\n")[2].split()[13] == "2"


def test_show_info_names_and_order_equal_real_haproxy(real_haproxy: tuple[Path, str]) -> None:
    sock, _ = real_haproxy
    theirs = [ln.split(":", 1)[0] for ln in haproxy_query(sock, "show info").splitlines() if ln]
    ours = [ln.split(":", 1)[0] for ln in stats.render_show_info(make_runtime()).splitlines()]
    assert ours == theirs


def test_typed_and_json_match_real_haproxy(real_haproxy: tuple[Path, str]) -> None:
    """Same config: same typed lines (object, sid, position, name, tags, type)
    with the proxy ids left out; json carries the same fields."""
    import json

    from keeplb.config.haproxy import parse_text
    from keeplb.lb.app import build_runtime

    sock, cfg_text = real_haproxy

    def shape(text: str) -> list[str]:
        out = []
        for line in text.splitlines():
            if not line:
                continue
            head, tags, typ, _ = line.split(":", 3)
            obj, _iid, sid, pos, name, proc = head.split(".")
            out.append(f"{obj}.{sid}.{pos}.{name}.{proc}:{tags}:{typ}")
        return out

    cfg, _ = parse_text(cfg_text)
    rt = build_runtime(cfg)
    ours = stats.stat_rows(rt)
    assert shape(stats.render_stat_typed(ours)) == shape(haproxy_query(sock, "show stat typed"))
    theirs_json = json.loads(haproxy_query(sock, "show stat json"))
    ours_json = json.loads(stats.render_stat_json(ours))

    def strip(doc: list[list[dict[str, object]]]) -> list[list[tuple[object, ...]]]:
        return [[(f["objType"], f["id"], json.dumps(f["field"]), json.dumps(f["tags"]),
                  f["value"]["type"]) for f in obj] for obj in doc]  # type: ignore[index]

    assert strip(ours_json) == strip(theirs_json)
    info_theirs = [ln.rsplit(":", 1)[0] for ln in haproxy_query(sock, "show info typed").splitlines()
                   if ln]
    info_ours = [ln.rsplit(":", 1)[0] for ln in stats.render_info_typed(rt).splitlines()]
    # values differ (pid, uptime...); positions, names, tags and types must not
    assert [ln.split(":", 3)[:3] for ln in info_ours] == [ln.split(":", 3)[:3] for ln in info_theirs]
    assert json.loads(stats.render_info_json(rt))[0]["value"] == {"type": "str", "value": "HAProxy"}


@pytest.mark.parametrize(("terms", "negate", "client", "expected"), [
    ((("LOCALHOST",),), False, "127.0.0.1", True),
    ((("LOCALHOST",),), False, "10.77.0.5", False),
    ((("LOCALHOST",),), True, "10.77.0.5", True),
    ((("TRUE",),), False, None, True),
    ((("!TRUE",), ("LOCALHOST",)), False, "::1", True),
    ((("my_acl",),), False, "127.0.0.1", False),
])
def test_stats_admin_condition(terms: tuple[tuple[str, ...], ...], negate: bool,
                               client: str | None, expected: bool) -> None:
    page = StatsPage(enabled=True, uri="/stats", admin=Condition(negate, terms))
    assert stats.admin_condition_true(page, client) is expected


def test_desc_variants_match_real_haproxy(real_haproxy: tuple[Path, str]) -> None:
    """`desc`: the same description after every field as haproxy 2.6; ignored by
    the CSV and json outputs, as haproxy does."""
    from keeplb.config.haproxy import parse_text
    from keeplb.lb.app import build_runtime
    from keeplb.lb.runtime import CliSession, DirectControl

    sock, cfg_text = real_haproxy
    cfg, _ = parse_text(cfg_text)
    sess = CliSession(build_runtime(cfg), DirectControl())

    def ask(line: str) -> str:
        sess.closed = False
        return sess.execute_line(line)

    def descs(text: str, sep: str) -> list[tuple[str, str]]:
        """(field, description) of each line: '<head><sep><value>:"<desc>"'."""
        out = []
        for line in text.splitlines():
            if line:
                body, _, desc = line[:-1].rpartition(':"')
                out.append((body.split(sep, 1)[0], desc))
        return out

    for line, sep in (("show stat typed desc", ":"), ("show info typed desc", ":"),
                      ("show info desc", ": ")):
        ours, theirs = descs(ask(line), sep), descs(haproxy_query(sock, line), sep)
        # stat heads carry proxy ids, info values differ: compare per field name
        assert [(h.split(".")[-2] if sep == ":" and "stat" in line else h, d) for h, d in ours] == \
            [(h.split(".")[-2] if sep == ":" and "stat" in line else h, d) for h, d in theirs], line
        assert all(d for _, d in ours), line
    assert ask("show stat desc").split("\n", 1)[0] == haproxy_query(sock, "show stat desc").split(
        "\n", 1)[0]
    assert '"desc' not in ask("show info json desc")
