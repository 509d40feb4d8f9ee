"""Active health checks against real sockets on 127.0.0.1 only.

Small asyncio servers play the checked servers: a listening port, a closed
port, a tcp-check peer, HTTP and HTTPS (trustme certificates) servers. Every
test runs its own event loop with asyncio.run and closes what it opened.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import trustme

from keeplb.config.haproxy import parse_text
from keeplb.config.model import (
    SERVER_DEFAULTS,
    Address,
    Proxy,
    ProxyKind,
    Rule,
    Server,
    ServerOptions,
)
from keeplb.lb.checks import CheckKind, CheckResult, CheckSpec, HealthChecker, run_check
from keeplb.lb.health import CheckStatus, Transition
from keeplb.lb.server import AdminState, BackendRuntime, ServerRuntime
from keeplb.lb.stats import server_status

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LOCAL = "127.0.0.1"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        port: int = s.getsockname()[1]
    return port


async def _serve(handler: Handler, port: int = 0,
                 tls: ssl.SSLContext | None = None) -> asyncio.Server:
    async def wrapped(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await handler(r, w)
        except (ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()
            try:
                await w.wait_closed()
            except (ConnectionError, ssl.SSLError, OSError):
                pass

    return await asyncio.start_server(wrapped, LOCAL, port, ssl=tls)


def _port(srv: asyncio.Server) -> int:
    port: int = srv.sockets[0].getsockname()[1]
    return port


async def _accept_only(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.read(1)


async def _silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        # asyncio.run cancels handlers at exit; finishing quietly avoids
        # Python 3.11's "Exception in callback" log for a cancelled handler.
        return


async def _pong(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    line = await r.readline()
    w.write(b"+PONG\r\n" if line == b"PING\r\n" else b"-ERR unknown\r\n")
    await w.drain()


async def _http(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """GET /readyz -> 200 'ok'; GET /fail -> 500; anything else -> 404."""
    head = await r.readuntil(b"\r\n\r\n")
    target = head.split(b" ")[1]
    if target == b"/readyz":
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    elif target == b"/fail":
        w.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
    else:
        w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    await w.drain()


def _backend_from(cfg_lines: str, port: int) -> tuple[Proxy, Server]:
    text = f"backend b\n{cfg_lines}\n  server s1 {LOCAL}:{port} check\n"
    cfg, diags = parse_text(text)
    assert not [d for d in diags if d.is_error], diags
    be = cfg.backend("b")
    assert be is not None
    return be, be.servers[0]


async def _check(cfg_lines: str, port: int, inter: int = 1000) -> CheckResult:
    be, srv = _backend_from(cfg_lines, port)
    spec = CheckSpec.from_config(be, srv, LOCAL, port)
    return await run_check(spec, inter)


# -- plain TCP -------------------------------------------------------------


def test_tcp_connect_ok_and_refused() -> None:
    async def main() -> None:
        srv = await _serve(_accept_only)
        async with srv:
            ok = await _check("", _port(srv))
        assert (ok.ok, ok.status, ok.info) == (True, CheckStatus.L4OK, "")
        assert ok.duration_ms >= 0 and ok.code is None
        ko = await _check("", _closed_port())
        assert (ko.ok, ko.status, ko.info) == (False, CheckStatus.L4CON, "Connection refused")

    asyncio.run(main())


def test_check_port_and_addr_override_the_server_address() -> None:
    async def main() -> None:
        srv = await _serve(_accept_only)
        async with srv:
            opts = replace(SERVER_DEFAULTS, check=True, check_port=_port(srv), check_addr=LOCAL)
            server = Server("s1", Address("ipv4", "127.0.0.2", 1, 1), opts)
            be = Proxy(ProxyKind.BACKEND, "b", servers=[server])
            spec = CheckSpec.from_config(be, server, "127.0.0.2", _closed_port())
            assert (spec.host, spec.port) == (LOCAL, _port(srv))
            res = await run_check(spec, 1000)
        assert res.status is CheckStatus.L4OK

    asyncio.run(main())


# -- tcp-check ---------------------------------------------------------------

TCP_CHECK = """\
  option tcp-check
  tcp-check send PING\\r\\n
  tcp-check expect string +PONG"""


def test_tcp_check_send_expect() -> None:
    async def main() -> None:
        srv = await _serve(_pong)
        async with srv:
            ok = await _check(TCP_CHECK, _port(srv))
            bad = await _check(TCP_CHECK.replace("PING", "PINGX"), _port(srv))
            neg = await _check(TCP_CHECK.replace("expect string", "expect ! string"), _port(srv))
            rx = await _check(TCP_CHECK.replace("expect string +PONG", "expect rstring ^\\+PO"),
                              _port(srv))
            binary = await _check(TCP_CHECK.replace("expect string +PONG",
                                                    "expect binary 2b504f4e47"), _port(srv))
        assert (ok.status, ok.info) == (CheckStatus.L7OK, "(tcp-check)")
        assert (bad.status, bad.info) == (
            CheckStatus.L7RSP, "TCPCHK did not match content '+PONG' at step 2")
        assert (neg.status, neg.info) == (
            CheckStatus.L7RSP, "TCPCHK matched unwanted content '+PONG' at step 2")
        assert rx.status is CheckStatus.L7OK
        assert binary.status is CheckStatus.L7OK
        refused = await _check(TCP_CHECK, _closed_port())
        assert (refused.status, refused.info) == (
            CheckStatus.L4CON, "Connection refused at initial connection step of tcp-check")
        explicit = await _check("  tcp-check connect\n" + TCP_CHECK, _closed_port())
        assert explicit.info == "Connection refused at step 1 of tcp-check (connect)"

    asyncio.run(main())


def test_tcp_check_timeout_and_empty_response() -> None:
    async def main() -> None:
        silent = await _serve(_silent)
        closer = await _serve(_accept_only)  # reads one byte, then closes
        async with silent, closer:
            tout = await _check(TCP_CHECK + "\n  timeout check 200ms", _port(silent), inter=2000)
            empty = await _check(TCP_CHECK, _port(closer))
        # haproxy 2.6 writes this info with its leading space
        assert (tout.status, tout.info) == (
            CheckStatus.L7TOUT, " at step 2 of tcp-check (expect string '+PONG')")
        assert 150 <= tout.duration_ms < 1500
        assert empty.status in (CheckStatus.L7RSP, CheckStatus.SOCKERR)
        if empty.status is CheckStatus.L7RSP:
            assert empty.info == "TCPCHK got an empty response at step 2"

    asyncio.run(main())


def test_tcp_check_unsupported_parts_are_warned_not_fatal() -> None:
    be, srv = _backend_from("  option tcp-check\n  tcp-check send-lf %[date]\n"
                            "  tcp-check connect port 1 alpn h2", 1)
    spec = CheckSpec.from_config(be, srv, LOCAL, 1)
    assert spec.kind is CheckKind.TCP_CHECK
    assert any("send-lf" in w for w in spec.warnings)
    assert any("alpn" in w for w in spec.warnings)


# -- HTTP ------------------------------------------------------------------------


def test_httpchk_status() -> None:
    async def main() -> None:
        srv = await _serve(_http)
        async with srv:
            p = _port(srv)
            ok = await _check("  option httpchk GET /readyz", p)
            fail = await _check("  option httpchk GET /fail", p)
            nf = await _check("  option httpchk GET /nothere\n  http-check expect status 200", p)
            body = await _check("  option httpchk GET /readyz\n  http-check expect string ok", p)
            nobody = await _check("  option httpchk GET /readyz\n  http-check expect string no",
                                  p)
            send = await _check("  option httpchk\n  http-check send meth GET uri /readyz "
                                "ver HTTP/1.1 hdr Host example.org\n"
                                "  http-check expect rstatus ^2", p)
            d404 = await _check("  option httpchk GET /x\n  http-check disable-on-404", p)
        assert (ok.ok, ok.status, ok.code, ok.info) == (True, CheckStatus.L7OK, 200, "")
        assert (fail.ok, fail.status, fail.code, fail.info) == (
            False, CheckStatus.L7STS, 500, "Internal Server Error")
        assert (nf.status, nf.code, nf.info) == (CheckStatus.L7STS, 404, "Not Found")
        assert body.status is CheckStatus.L7OK
        assert (nobody.status, nobody.info) == (
            CheckStatus.L7RSP, "HTTP content check did not match")
        assert (send.status, send.code) == (CheckStatus.L7OK, 200)
        assert (d404.ok, d404.status) == (True, CheckStatus.L7OKC)

    asyncio.run(main())


def test_httpchk_timeout_has_no_info() -> None:
    async def main() -> None:
        srv = await _serve(_silent)
        async with srv:
            res = await _check("  option httpchk GET /readyz", _port(srv), inter=300)
        assert (res.status, res.info) == (CheckStatus.L7TOUT, "")

    asyncio.run(main())


def test_httpchk_sends_the_configured_request() -> None:
    seen: list[bytes] = []

    async def record(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(await r.readuntil(b"\r\n\r\n"))
        w.write(b"HTTP/1.0 200 OK\r\n\r\n")
        await w.drain()

    async def main() -> None:
        srv = await _serve(record)
        async with srv:
            res = await _check("  option httpchk HEAD /healthz HTTP/1.1\\r\\nHost:\\ lb", _port(srv))
        assert res.status is CheckStatus.L7OK

    asyncio.run(main())
    assert seen[0] == b"HEAD /healthz HTTP/1.1\r\nhost: lb\r\nconnection: close\r\n\r\n"


# -- HTTPS (kube-apiserver /readyz) ----------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", LOCAL)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    d = tmp_path_factory.mktemp("pki")
    ca_file = d / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other = d / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    return ctx, ca_file, other


def _tls_spec(port: int, **opts: object) -> CheckSpec:
    o = replace(SERVER_DEFAULTS, check=True, check_ssl=True, **opts)  # type: ignore[arg-type]
    server = Server("api1", Address("ipv4", LOCAL, port, port), o)
    be = Proxy(ProxyKind.BACKEND, "kube-apiserver", servers=[server],
               options={"httpchk": True}, option_args={"httpchk": ("GET", "/readyz")},
               rules=[Rule("http-check", "expect", ("status", "200"))])
    return CheckSpec.from_config(be, server, LOCAL, port)


def test_https_readyz(pki: tuple[ssl.SSLContext, Path, Path]) -> None:
    ctx, ca_file, other = pki

    async def main() -> dict[str, CheckResult]:
        srv = await _serve(_http, tls=ctx)
        async with srv:
            p = _port(srv)
            return {
                "none": await run_check(_tls_spec(p, verify="none"), 2000),
                "ca": await run_check(_tls_spec(p, verify="required", ca_file=str(ca_file)),
                                      2000),
                "sni": await run_check(_tls_spec(p, verify="required", ca_file=str(ca_file),
                                                 check_sni="localhost"), 2000),
                "wrong_ca": await run_check(_tls_spec(p, verify="required",
                                                      ca_file=str(other)), 2000),
                "wrong_sni": await run_check(_tls_spec(p, verify="required",
                                                       ca_file=str(ca_file),
                                                       check_sni="other.example"), 2000),
            }

    res = asyncio.run(main())
    for key in ("none", "ca", "sni"):
        assert (res[key].status, res[key].code) == (CheckStatus.L7OK, 200), (key, res[key])
    for key in ("wrong_ca", "wrong_sni"):
        assert res[key].status is CheckStatus.L6RSP, (key, res[key])
        assert res[key].info.startswith("SSL handshake failure")


async def _plain_reply(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.read(1000)
    w.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
    await w.drain()


def test_ssl_check_against_plain_server_is_l6rsp() -> None:
    async def main() -> CheckResult:
        srv = await _serve(_plain_reply)
        async with srv:
            o = replace(SERVER_DEFAULTS, check=True, check_ssl=True, verify="none")
            server = Server("s", Address("ipv4", LOCAL, _port(srv), _port(srv)), o)
            spec = CheckSpec.from_config(Proxy(ProxyKind.BACKEND, "b", servers=[server]),
                                         server, LOCAL, _port(srv))
            return await run_check(spec, 1000)

    res = asyncio.run(main())
    assert (res.status, res.info) == (CheckStatus.L6RSP, "SSL handshake failure")


# -- HealthChecker: rise, fall, inter, fastinter, downinter, MAINT -------------------


def _runtime(port: int, **opts: object) -> tuple[BackendRuntime, ServerRuntime]:
    o = replace(SERVER_DEFAULTS, check=True, **opts)  # type: ignore[arg-type]
    server = Server("s1", Address("ipv4", LOCAL, port, port), o)
    be = Proxy(ProxyKind.BACKEND, "b", servers=[server])
    srt = ServerRuntime(server, "b", 1, LOCAL, port, uweight=1)
    return BackendRuntime(be, 1, [srt]), srt


async def _until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.01)
    return cond()


def test_checker_down_after_fall_up_after_rise() -> None:
    inter, fastinter, downinter, rise, fall = 1000, 40, 250, 2, 3
    log: list[tuple[float, CheckStatus, Transition | None]] = []
    transitions: list[tuple[bool, CheckStatus]] = []

    async def main() -> None:
        srv = await _serve(_accept_only)
        port = _port(srv)
        brt, srt = _runtime(port, inter=inter, fastinter=fastinter, downinter=downinter,
                            rise=rise, fall=fall)
        checker = HealthChecker(
            [brt], lambda s, up, r: transitions.append((up, r.status)),
            on_check=lambda s, r, t: log.append((time.monotonic(), r.status, t)))
        assert srt.check_enabled and srt.health == rise and srt.check_status == "INI"
        checker.start()
        try:
            # health = rise at start: the first check comes after fastinter and passes
            assert await _until(lambda: len(log) >= 1, 2.0)
            assert log[0][1] is CheckStatus.L4OK and server_status(srt) == "UP"
            srv.close()
            await srv.wait_closed()
            t_kill = time.monotonic()
            assert await _until(lambda: bool(transitions), 3.0)
            fails = [e for e in log if e[0] > t_kill]
            # DOWN exactly at the fall-th failed check, the later ones at fastinter:
            # well before a second `inter` could have passed
            assert [e[1] for e in fails] == [CheckStatus.L4CON] * fall
            assert fails[-1][2] is Transition.DOWN and transitions == [
                (False, CheckStatus.L4CON)]
            assert fails[-1][0] - fails[0][0] < inter / 1000
            assert srt.check_status == "L4CON" and srt.check_info == "Connection refused"
            assert srt.health == 0 and srt.check_fails == fall
            # fully down: checks every downinter, not inter nor fastinter
            n0 = len(log)
            await asyncio.sleep(1.0)
            down_checks = len(log) - n0
            assert 2 <= down_checks <= 6, down_checks
            # back: UP after exactly `rise` passed checks
            srv2 = await _serve(_accept_only, port)
            try:
                t_back = time.monotonic()
                assert await _until(lambda: len(transitions) == 2, 3.0)
                ups = [e for e in log if e[0] > t_back]
                # a check whose connect was refused just before the server came
                # back may be recorded just after t_back: not one of the rise
                if ups and ups[0][1] is CheckStatus.L4CON:
                    ups.pop(0)
                assert [e[1] for e in ups] == [CheckStatus.L4OK] * rise
                assert transitions[1] == (True, CheckStatus.L4OK)
                assert srt.health == rise + fall - 1
            finally:
                srv2.close()
                await srv2.wait_closed()
        finally:
            await checker.stop()

    asyncio.run(main())


def test_checker_skips_maint_and_wakes() -> None:
    count: list[int] = [0]

    async def main() -> None:
        srv = await _serve(_accept_only)
        async with srv:
            brt, srt = _runtime(_port(srv), inter=100, rise=1, fall=1)
            checker = HealthChecker([brt], lambda s, up, r: None,
                                    on_check=lambda s, r, t: count.__setitem__(0, count[0] + 1))
            srt.admin = AdminState.MAINT
            checker.start()
            try:
                await asyncio.sleep(0.5)
                assert count[0] == 0
                srt.admin = AdminState.READY
                checker.wake(srt)
                assert await _until(lambda: count[0] >= 1, 1.0)
                srt.check_enabled = False  # `disable health`
                await asyncio.sleep(0.15)
                frozen = count[0]
                await asyncio.sleep(0.4)
                assert count[0] == frozen
            finally:
                await checker.stop()

    asyncio.run(main())


def test_checker_accepts_servers_without_check_option() -> None:
    srt_opts = ServerOptions(check=False)
    server = Server("s", Address("ipv4", LOCAL, 1, 1), srt_opts)
    srt = ServerRuntime(server, "b", 1, LOCAL, 1, uweight=1)
    brt = BackendRuntime(Proxy(ProxyKind.BACKEND, "b", servers=[server]), 1, [srt])
    assert HealthChecker([brt], lambda s, up, r: None).servers == []


def test_checks_under_uvloop(pki: tuple[ssl.SSLContext, Path, Path]) -> None:
    """The app runs on uvloop: connect errors, start_tls and timeouts must map the same."""
    uvloop = pytest.importorskip("uvloop")
    ctx, ca_file, _ = pki

    async def main() -> list[CheckResult]:
        tls = await _serve(_http, tls=ctx)
        pong = await _serve(_pong)
        silent = await _serve(_silent)
        async with tls, pong, silent:
            return [
                await run_check(_tls_spec(_port(tls), verify="required", ca_file=str(ca_file)),
                                2000),
                await _check(TCP_CHECK, _port(pong)),
                await _check("", _closed_port()),
                await _check("  option httpchk GET /readyz", _port(silent), inter=200),
            ]

    res = uvloop.run(main())
    assert [r.status for r in res] == [CheckStatus.L7OK, CheckStatus.L7OK, CheckStatus.L4CON,
                                       CheckStatus.L7TOUT]
    assert res[2].info == "Connection refused"


# -- haproxy 2.6 as the oracle ---------------------------------------------------------

_ORACLE_BACKENDS = """\
backend plain_refused
  server s1 127.0.0.1:{closed} check
backend tcpchk_mismatch
{tcp_check_bad}
  server s1 127.0.0.1:{pong} check
backend tcpchk_refused
{tcp_check}
  server s1 127.0.0.1:{closed} check
backend tcpchk_connect_refused
  tcp-check connect
{tcp_check}
  server s1 127.0.0.1:{closed} check
backend tcpchk_timeout
  timeout check 200ms
{tcp_check}
  server s1 127.0.0.1:{silent} check
backend http_500
  option httpchk GET /fail
  server s1 127.0.0.1:{http} check
backend http_404_expect
  option httpchk GET /x
  http-check expect status 200
  server s1 127.0.0.1:{http} check
backend http_string
  option httpchk GET /readyz
  http-check expect string nothere
  server s1 127.0.0.1:{http} check
backend http_timeout
  option httpchk GET /readyz
  server s1 127.0.0.1:{silent} check
"""

_DOWN = re.compile(r'Server (\S+)/s1 is DOWN, reason: ([^,]+)(?:, code: (\d+))?'
                   r'(?:, info: "(.*)")?, check duration')


async def _haproxy_lines(cfg_file: Path, pattern: re.Pattern[str], count: int,
                         timeout: float = 8.0) -> list[str]:
    """Run `haproxy -db -f cfg_file` (logging to stdout) until `count` distinct
    lines match `pattern` or `timeout` passes; kill it and return those lines."""
    proc = await asyncio.create_subprocess_exec(
        "haproxy", "-db", "-f", str(cfg_file), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while len(lines) < count and time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(proc.stdout.readline(),
                                             deadline - time.monotonic())
            except TimeoutError:
                break
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip("\n")
            if pattern.search(line) and not line.startswith("[") and line not in lines:
                lines.append(line)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    return lines


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (the oracle)")
def test_status_and_info_match_haproxy(tmp_path: Path) -> None:
    """Run haproxy 2.6 and keeplb's checks on the same backends and compare the
    'reason', 'code' and 'info' parts of haproxy's "Server ... is DOWN" lines."""

    async def main() -> tuple[dict[str, tuple[str, str, str]], dict[str, tuple[str, str, str]]]:
        servers = {name: await _serve(h) for name, h in
                   (("pong", _pong), ("silent", _silent), ("http", _http))}
        ports = {name: _port(s) for name, s in servers.items()}
        backends = _ORACLE_BACKENDS.format(
            closed=_closed_port(), tcp_check=TCP_CHECK,
            tcp_check_bad=TCP_CHECK.replace("PING", "PINGX"), **ports)
        text = ("global\n  log stdout format raw local0\n"
                "defaults\n  mode tcp\n  log global\n  timeout connect 1s\n"
                "  timeout client 5s\n  timeout server 5s\n"
                "  default-server inter 300 rise 1 fall 1\n"
                f"frontend fe\n  bind 127.0.0.1:{_closed_port()}\n"
                "  default_backend plain_refused\n" + backends)
        cfg_file = tmp_path / "haproxy.cfg"
        cfg_file.write_text(text)
        cfg, diags = parse_text(text)
        assert not [d for d in diags if d.is_error], diags
        names = [b.name for b in cfg.backends]

        ours: dict[str, tuple[str, str, str]] = {}
        for be in cfg.backends:
            srv = be.servers[0]
            port = srv.address.port_low or 0
            r = await run_check(CheckSpec.from_config(be, srv, LOCAL, port), 300)
            ours[be.name] = (r.status.description, str(r.code or ""), r.info)

        theirs: dict[str, tuple[str, str, str]] = {}
        try:
            for line in await _haproxy_lines(cfg_file, _DOWN, len(names)):
                m = _DOWN.search(line)
                assert m is not None
                theirs[m.group(1)] = (m.group(2), m.group(3) or "", m.group(4) or "")
        finally:
            for s in servers.values():
                s.close()
                await s.wait_closed()
        return ours, theirs

    ours, theirs = asyncio.run(main())
    assert set(theirs) == set(ours), theirs
    for name in ours:
        assert ours[name] == theirs[name], name


def test_checker_follows_runtime_changes() -> None:
    """`set server addr` moves the checks; `set server health down` (a write to
    ServerRuntime.health) makes the next passed checks count from 0 again."""
    transitions: list[bool] = []

    async def main() -> None:
        srv = await _serve(_accept_only)
        async with srv:
            brt, srt = _runtime(_closed_port(), inter=50, rise=2, fall=1)
            checker = HealthChecker([brt], lambda s, up, r: transitions.append(up))
            checker.start()
            try:
                assert await _until(lambda: transitions == [False], 2.0)
                srt.port = _port(srv)  # `set server b/s1 addr 127.0.0.1 port N`
                assert await _until(lambda: transitions == [False, True], 2.0)
                assert srt.check_status == "L4OK"
                n = checker.checks_run(srt)
                srt.health = 0  # `set server b/s1 health down`, as runtime.py writes it
                assert await _until(lambda: len(transitions) == 3, 2.0)
                assert transitions[2] is True
                assert checker.checks_run(srt) - n >= 2  # rise passed checks again
                checker.resume(srt)
                assert srt.health == 2
            finally:
                await checker.stop()

    asyncio.run(main())


@pytest.mark.parametrize(("opts", "expect_ssl"), [
    ({"ssl": True}, True),  # checks inherit `ssl` ...
    ({"ssl": True, "check_port": 8443}, False),  # ... unless `port` moves them
    ({"ssl": True, "check_addr": "127.0.0.2"}, False),
    ({"check_ssl": True, "check_port": 8443}, True),
    ({}, False),
])
def test_check_ssl_inheritance(opts: dict[str, object], expect_ssl: bool) -> None:
    o = replace(SERVER_DEFAULTS, check=True, **opts)  # type: ignore[arg-type]
    server = Server("s", Address("ipv4", LOCAL, 6443, 6443), o)
    spec = CheckSpec.from_config(Proxy(ProxyKind.BACKEND, "b", servers=[server]), server,
                                 LOCAL, 6443)
    assert spec.ssl is expect_ssl
    assert spec.tls.verify  # haproxy 2.6: ssl-server-verify defaults to required


_HEALTH_LOG = re.compile(r"^Health check for .*server (\S+)/(\S+) ")


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (the oracle)")
def test_log_health_checks_lines_match_haproxy(tmp_path: Path) -> None:
    """`option log-health-checks`: the first line per server, keeplb vs haproxy 2.6."""

    async def main() -> tuple[dict[str, str], dict[str, str]]:
        http = await _serve(_http)
        p = _port(http)
        text = ("global\n  log stdout format raw local0\n"
                "defaults\n  mode tcp\n  log global\n  timeout connect 1s\n"
                "  timeout client 5s\n  timeout server 5s\n"
                f"frontend fe\n  bind 127.0.0.1:{_closed_port()}\n  default_backend b\n"
                "backend b\n  option httpchk GET /readyz\n  option log-health-checks\n"
                "  default-server inter 300 rise 2 fall 2\n"
                "  http-check expect status 200\n"
                f"  server ok 127.0.0.1:{p} check\n"
                f"  server bad 127.0.0.1:{p} check\n"
                f"  server gone 127.0.0.1:{_closed_port()} check backup\n")
        # 'bad' is checked in a second run where the URI answers 500
        text_bad = text.replace("GET /readyz", "GET /fail")
        cfg_file = tmp_path / "haproxy.cfg"
        ours: dict[str, str] = {}
        theirs: dict[str, str] = {}
        try:
            for variant, keep in ((text, ("ok", "gone")), (text_bad, ("bad",))):
                cfg, diags = parse_text(variant)
                assert not [d for d in diags if d.is_error], diags
                be = cfg.backend("b")
                assert be is not None
                srts = [ServerRuntime(s, "b", i + 1, LOCAL, s.address.port_low, uweight=1)
                        for i, s in enumerate(be.servers)]
                brt = BackendRuntime(be, 1, [x for x in srts if x.name in keep])

                def record(s: ServerRuntime, line: str) -> None:
                    ours.setdefault(s.name, line)

                checker = HealthChecker([brt], lambda s, up, r: None, on_health_log=record)
                checker.start()
                try:
                    await _until(lambda keep=keep: all(k in ours for k in keep),  # type: ignore[misc]
                                 3.0)
                finally:
                    await checker.stop()
                cfg_file.write_text(variant)
                for line in await _haproxy_lines(cfg_file, _HEALTH_LOG, 3):
                    m = _HEALTH_LOG.search(line)
                    assert m is not None
                    if m.group(2) in keep:
                        theirs.setdefault(m.group(2), line)
        finally:
            http.close()
            await http.wait_closed()
        return ours, theirs

    ours, theirs = asyncio.run(main())
    assert set(ours) == set(theirs) == {"ok", "bad", "gone"}, (ours, theirs)
    duration = re.compile(r"check duration: \d+ms")
    for name in ours:
        assert duration.sub("", ours[name] + ".") == duration.sub("", theirs[name]), name
