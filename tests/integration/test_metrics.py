"""/metrics: haproxy 2.6 exporter families from the runtime, keeplb_vrrp_*
from a VRRP status dict; names checked against a real haproxy's exporter."""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from keeplb.config.model import (
    Address,
    Balance,
    Bind,
    Mode,
    Proxy,
    ProxyKind,
    Server,
    ServerOptions,
)
from keeplb.lb.metrics import handle_metrics_http, render_metrics
from keeplb.lb.runtime import DirectControl
from keeplb.lb.server import (
    AdminState,
    BackendRuntime,
    FrontendRuntime,
    OpState,
    ProcessRuntime,
    ServerRuntime,
)
from keeplb.vrrp.metrics import render_vrrp_metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def make_runtime(mode: Mode = Mode.TCP) -> ProcessRuntime:
    servers = [
        Server("api1", Address("ipv4", "127.0.0.1", 16443, 16443),
               ServerOptions(check=True, rise=2, fall=3, weight=1)),
        Server("api2", Address("ipv4", "127.0.0.1", 16444, 16444),
               ServerOptions(check=True, rise=2, fall=3, weight=3)),
    ]
    fe_cfg = Proxy(ProxyKind.FRONTEND, "apiserver", mode=mode, default_backend="kube",
                   binds=[Bind(Address("ipv4", "127.0.0.1", 16000, 16000))])
    be_cfg = Proxy(ProxyKind.BACKEND, "kube", mode=mode, balance=Balance("roundrobin"),
                   servers=servers)
    rt = ProcessRuntime(pid=7, started=time.time() - 3, maxconn=1000, nbthread=1)
    rt.frontends.append(FrontendRuntime(fe_cfg, iid=1))
    be = BackendRuntime(be_cfg, iid=2, last_change=time.monotonic())
    for sid, cfg in enumerate(servers, start=1):
        s = ServerRuntime(config=cfg, backend="kube", sid=sid, host="127.0.0.1",
                          port=cfg.address.port_low, uweight=cfg.weight, eweight=cfg.weight,
                          check_enabled=True, health=4, last_change=time.monotonic())
        s.check_status, s.check_desc, s.check_duration_ms = "L4OK", "Layer4 check passed", 2
        be.servers.append(s)
    rt.backends.append(be)
    return rt


def scrape(rt: ProcessRuntime | None, vrrp: Mapping[str, Any] | None = None) -> Samples:
    text = render_metrics(rt, vrrp).decode()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_scrape_parses_and_carries_counters() -> None:
    rt = make_runtime()
    fe, be = rt.frontends[0], rt.backends[0]
    for _ in range(4):
        fe.counters.session_started()
        be.servers[1].counters.session_started()
    fe.counters.bytes_in = 4096
    samples = scrape(rt)
    assert value(samples, "haproxy_frontend_current_sessions", proxy="apiserver") == 4
    assert value(samples, "haproxy_frontend_sessions_total", proxy="apiserver") == 4
    assert value(samples, "haproxy_frontend_bytes_in_total", proxy="apiserver") == 4096
    assert value(samples, "haproxy_frontend_status", proxy="apiserver", state="UP") == 1
    assert value(samples, "haproxy_server_current_sessions", proxy="kube", server="api2") == 4
    assert value(samples, "haproxy_backend_active_servers", proxy="kube") == 2
    assert value(samples, "haproxy_backend_weight", proxy="kube") == 4
    assert value(samples, "haproxy_server_check_duration_seconds", proxy="kube", server="api1") == 0.002
    assert value(samples, "haproxy_server_check_status", proxy="kube", server="api1", state="L4OK") == 1
    assert value(samples, "haproxy_process_max_connections") == 1000
    assert math.isnan(value(samples, "haproxy_server_limit_sessions", proxy="kube", server="api1"))
    # http-only families are absent for a tcp proxy, present for an http one
    assert not any(k[0].startswith("haproxy_frontend_http_") for k in samples)
    http = scrape(make_runtime(Mode.HTTP))
    assert value(http, "haproxy_frontend_http_responses_total", proxy="apiserver", code="2xx") == 0


def test_server_status_follows_down_up_and_maint() -> None:
    rt = make_runtime()
    ctl = DirectControl()
    api1 = rt.backends[0].servers[0]

    def status(srv: str) -> dict[str, float]:
        s = scrape(rt)
        return {st: value(s, "haproxy_server_status", proxy="kube", server=srv, state=st)
                for st in ("DOWN", "UP", "MAINT", "DRAIN", "NOLB")}

    assert status("api1") == {"DOWN": 0, "UP": 1, "MAINT": 0, "DRAIN": 0, "NOLB": 0}
    ctl.set_health(api1, OpState.STOPPED)
    api1.check_status = "L4CON"
    assert status("api1")["DOWN"] == 1 and status("api1")["UP"] == 0
    s = scrape(rt)
    assert value(s, "haproxy_backend_active_servers", proxy="kube") == 1
    assert value(s, "haproxy_server_check_up_down_total", proxy="kube", server="api1") == 1
    assert value(s, "haproxy_backend_agg_server_status", proxy="kube", state="DOWN") == 1
    ctl.set_health(api1, OpState.RUNNING)
    assert status("api1")["UP"] == 1
    ctl.set_admin_state(rt.backends[0].servers[1], AdminState.DRAIN)
    assert status("api2")["DRAIN"] == 1
    ctl.set_admin_state(rt.backends[0].servers[1], AdminState.MAINT)
    assert status("api2")["MAINT"] == 1


STATUS = {
    "instances": [
        {"name": "VI_1", "vrid": 51, "interface": "eth0", "version": 2, "state": "MASTER",
         "base_priority": 101, "effective_priority": 99, "master_address": "10.77.0.2",
         "adverts_sent": 120, "adverts_received": 3, "drops": {"ttl": 2, "auth": 1},
         "transitions": 2},
        {"name": "VI_2", "state": "BACKUP", "base_priority": 100},
        {"state": "MASTER"},  # no name: skipped
    ],
    "drops": {"vrid": 4},
}


def test_vrrp_families_from_status_dict() -> None:
    samples = scrape(make_runtime(), STATUS)
    assert value(samples, "keeplb_vrrp_state", instance="VI_1", state="MASTER") == 1
    assert value(samples, "keeplb_vrrp_state", instance="VI_1", state="BACKUP") == 0
    assert value(samples, "keeplb_vrrp_state", instance="VI_2", state="BACKUP") == 1
    assert value(samples, "keeplb_vrrp_priority", instance="VI_1") == 99
    assert value(samples, "keeplb_vrrp_base_priority", instance="VI_1") == 101
    assert value(samples, "keeplb_vrrp_adverts_sent_total", instance="VI_1") == 120
    assert value(samples, "keeplb_vrrp_packets_dropped_total", instance="VI_1", reason="ttl") == 2
    assert value(samples, "keeplb_vrrp_transitions_total", instance="VI_2") == 0
    assert value(samples, "keeplb_vrrp_master_info", instance="VI_1", master_address="10.77.0.2") == 1
    assert value(samples, "keeplb_vrrp_unmatched_packets_dropped_total", reason="vrid") == 4
    assert not any(dict(k[1]).get("instance") == "" for k in samples)
    alone = render_vrrp_metrics(STATUS).decode()
    assert "keeplb_vrrp_state" in alone and "haproxy_" not in alone
    for junk in (None, {}, {"instances": "x"}, {"instances": [1, "a", {"name": "x", "drops": 3}]}):
        assert render_vrrp_metrics(junk)  # type: ignore[arg-type]


def test_metrics_http_handler() -> None:
    rt = make_runtime()
    resp = handle_metrics_http(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", rt)
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"text/plain; version=0.0.4" in head
    assert f"content-length: {len(body)}".encode() in head
    assert b"haproxy_server_status{" in body
    assert handle_metrics_http(b"POST /metrics HTTP/1.1\r\n\r\n", rt).startswith(b"HTTP/1.1 405 ")
    assert handle_metrics_http(b"\x00garbage", rt).startswith(b"HTTP/1.1 400 ")


# --------------------------------------------------------------------------
# names against haproxy 2.6's own exporter
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def haproxy_metrics(tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(exe).exists():
        pytest.skip("haproxy is not installed")
    port = free_port()
    cfg = tmp_path / "h.cfg"
    cfg.write_text(f"""\
global
    maxconn 1000
defaults
    timeout connect 1s
    timeout client 10s
    timeout server 10s
frontend apiserver
    mode tcp
    bind 127.0.0.1:{free_port()}
    default_backend kube
backend kube
    mode tcp
    server api1 127.0.0.1:{free_port()} check inter 60s
    server api2 127.0.0.1:{free_port()} check inter 60s weight 3
backend web
    mode http
    server w1 127.0.0.1:{free_port()} weight 2
frontend prom
    mode http
    bind 127.0.0.1:{port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
""")
    proc = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    yield r.read().decode()
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("haproxy did not start")
                time.sleep(0.05)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_family_names_and_labels_match_haproxy_exporter(haproxy_metrics: str) -> None:
    def families(text: str) -> dict[str, tuple[str, str, frozenset[str]]]:
        out = {}
        for fam in text_string_to_metric_families(text):
            # the exporter's own http frontend has no counterpart in make_runtime()
            samples = [s for s in fam.samples if s.labels.get("proxy") != "prom"]
            if samples and fam.name.startswith(
                    ("haproxy_frontend_", "haproxy_backend_", "haproxy_server_")):
                labels = frozenset(k for s in samples for k in s.labels)
                out[fam.name] = (fam.type, fam.documentation, labels)
        return out

    theirs = families(haproxy_metrics)
    rt = make_runtime()
    http = make_runtime(Mode.HTTP).backends[0]
    web_cfg = Proxy(ProxyKind.BACKEND, "web", mode=Mode.HTTP, servers=http.config.servers[:1])
    web = BackendRuntime(web_cfg, iid=3, servers=http.servers[:1])
    web.servers[0].check_enabled = False
    rt.backends.append(web)
    ours = families(render_metrics(rt).decode())
    assert sorted(set(theirs) - set(ours)) == []
    assert sorted(set(ours) - set(theirs)) == []
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}


# haproxy types it a counter without the _total suffix, which prometheus-client
# cannot write without renaming the samples; keeplb keeps the name, as a gauge.
PROCESS_TYPE_EXCEPTIONS = {"haproxy_process_failed_resolutions": ("counter", "gauge")}


def test_process_families_match_haproxy_exporter(haproxy_metrics: str) -> None:
    def families(text: str) -> list[tuple[str, str, str]]:
        return [(f.name, f.type, f.documentation) for f in text_string_to_metric_families(text)
                if f.name.startswith("haproxy_process_")]

    theirs = families(haproxy_metrics)
    ours = families(render_metrics(make_runtime()).decode())
    assert [n for n, _, _ in ours] == [n for n, _, _ in theirs]  # same families, same order
    for (name, their_type, their_help), (_, our_type, our_help) in zip(theirs, ours, strict=True):
        assert our_help == their_help, name
        assert (their_type, our_type) == PROCESS_TYPE_EXCEPTIONS.get(
            name, (their_type, their_type)), name


def test_process_families_follow_the_runtime_api() -> None:
    from keeplb.lb.runtime import CliSession

    rt = make_runtime()
    rt.cur_conns, rt.cum_conns, rt.maxconn = 3, 40, 1000
    sess = CliSession(rt, DirectControl())
    for line in ("set maxconn global 250", "set rate-limit connections global 30",
                 "set rate-limit http-compression global 2"):
        sess.closed = False
        assert sess.execute_line(line) == "\n"
    rt.stopping = True
    s = scrape(rt)
    assert value(s, "haproxy_process_max_connections") == 250
    assert value(s, "haproxy_process_hard_max_connections") == 1000
    assert value(s, "haproxy_process_limit_connection_rate") == 30
    assert value(s, "haproxy_process_limit_http_comp") == 2048
    assert value(s, "haproxy_process_current_connections") == 3
    assert value(s, "haproxy_process_connections_total") == 40
    assert value(s, "haproxy_process_requests_total") == 40
    assert value(s, "haproxy_process_stopping") == 1
    assert value(s, "haproxy_process_start_time_seconds") == int(rt.started)
    assert math.isnan(value(s, "haproxy_process_current_zlib_memory"))
