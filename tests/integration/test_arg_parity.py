"""Argument counts, keyword by keyword, against `haproxy -c` (Debian's 2.6).

For every keyword of keyword_table() in the global and proxy sections, a
minimal valid config uses it with an example argument, then three variants:
(a) an extra empty argument `""`, (b) an extra word `x`, (c) no argument where
the example has one, and (d) `""` then `x` in place of the argument.
haproxy -c and keeplb's parser (what `keeplb lb -c`
prints and exits with: it errs exactly when the diagnostics hold an error)
must give the same verdict (error / warning / clean) on each; for (b) the error
text too, where haproxy's is its alertif_too_many_args() wording.

haproxy's too_many_args() looks at one word only, the first one past the
allowed count, and an empty word there is no argument: `daemon ""`,
`maxconn 10 "" x` pass while `maxconn "" 10` fails. Its "expects an argument"
checks test `*args[N] == 0`, so `maxconn ""` is a missing argument.

Each case is its own file and its own haproxy run (a shared file would let one
keyword's error hide or change another's); the runs go in parallel. Only `-c`
runs: nothing listens, nothing is sent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from keeplb.config.haproxy import keyword_table, parse

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)

pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")

# A valid example argument per keyword ("" for a keyword taking none, or whose
# argument is optional). {dir} is the case's directory (files written there).
EXAMPLES: dict[str, str] = {
    # ---- global
    "busy-polling": "", "ca-base": "/tmp", "chroot": "/tmp", "close-spread-time": "1s",
    "cluster-secret": "abc", "cpu-map": "1 0", "crt-base": "/tmp", "daemon": "",
    "default-path": "current", "description": "hello", "expose-experimental-directives": "",
    "external-check": "", "fd-hard-limit": "1000", "gid": "0", "grace": "1s", "group": "root",
    "h1-accept-payload-with-any-method": "", "h1-case-adjust": "content-length Content-Length",
    "h1-case-adjust-file": "{dir}/empty", "h2-workaround-bogus-websocket-clients": "",
    "hard-stop-after": "10s", "httpclient.resolvers.id": "default",
    "httpclient.resolvers.prefer": "ipv4",
    "httpclient.ssl.ca-file": "/etc/ssl/certs/ca-certificates.crt",
    "httpclient.ssl.verify": "none", "insecure-fork-wanted": "", "insecure-setuid-wanted": "",
    "issuers-chain-path": "{dir}/chain", "localpeer": "p1", "log": "127.0.0.1:514 local0",
    "log-send-hostname": "", "log-tag": "foo", "lua-load": "{dir}/empty.lua",
    "lua-load-per-thread": "{dir}/empty.lua", "lua-prepend-path": "/tmp/?.lua",
    "master-worker": "", "max-spread-checks": "1s", "maxcompcpuusage": "50",
    "maxcomprate": "100", "maxconn": "100", "maxconnrate": "100", "maxpipes": "100",
    "maxsessrate": "100", "maxsslconn": "100", "maxsslrate": "100", "maxzlibmem": "10",
    "mworker-max-reloads": "5", "nbthread": "1", "no-memory-trimming": "", "node": "n1",
    "noepoll": "", "noevports": "", "nogetaddrinfo": "", "nokqueue": "", "nopoll": "",
    "noreuseport": "", "nosplice": "", "numa-cpu-mapping": "", "pidfile": "{dir}/pid",
    "pp2-never-send-local": "", "presetenv": "FOO bar", "profiling.tasks": "on", "quiet": "",
    "resetenv": "", "server-state-base": "/tmp", "server-state-file": "{dir}/state",
    "set-dumpable": "", "set-var": "proc.x int(1)", "set-var-fmt": "proc.x abc",
    "setenv": "FOO bar", "spread-checks": "5", "ssl-default-bind-ciphers": "HIGH",
    "ssl-default-bind-ciphersuites": "TLS_AES_128_GCM_SHA256",
    "ssl-default-bind-curves": "X25519", "ssl-default-bind-options": "no-sslv3",
    "ssl-default-server-ciphers": "HIGH",
    "ssl-default-server-ciphersuites": "TLS_AES_128_GCM_SHA256",
    "ssl-default-server-options": "no-sslv3", "ssl-load-extra-del-ext": "",
    "ssl-load-extra-files": "none", "ssl-mode-async": "", "ssl-propquery": "provider=default",
    "ssl-provider": "default", "ssl-provider-path": "/tmp", "ssl-server-verify": "none",
    "ssl-skip-self-issued-ca": "", "stats": "timeout 10s", "strict-limits": "",
    "thread-group": "1 1", "thread-groups": "1",
    "tune.buffers.limit": "10", "tune.buffers.reserve": "2", "tune.bufsize": "16384",
    "tune.comp.maxlevel": "1", "tune.fail-alloc": "0", "tune.fd.edge-triggered": "on",
    "tune.h2.header-table-size": "4096", "tune.h2.initial-window-size": "65535",
    "tune.h2.max-concurrent-streams": "100", "tune.h2.max-frame-size": "16384",
    "tune.http.cookielen": "63", "tune.http.logurilen": "1024", "tune.http.maxhdr": "101",
    "tune.idle-pool.shared": "on", "tune.idletimer": "1000", "tune.listener.multi-queue": "on",
    "tune.lua.forced-yield": "10000", "tune.lua.maxmem": "100",
    "tune.lua.service-timeout": "4s", "tune.lua.session-timeout": "4s",
    "tune.lua.task-timeout": "4s", "tune.maxaccept": "64", "tune.maxpollevents": "200",
    "tune.maxrewrite": "1024", "tune.pattern.cache-size": "10000",
    "tune.peers.max-updates-at-once": "200", "tune.pipesize": "65536",
    "tune.pool-high-fd-ratio": "25", "tune.pool-low-fd-ratio": "20",
    "tune.rcvbuf.client": "65536", "tune.rcvbuf.server": "65536", "tune.recv_enough": "10000",
    "tune.runqueue-depth": "200", "tune.sched.low-latency": "on",
    "tune.sndbuf.client": "65536", "tune.sndbuf.server": "65536",
    "tune.ssl.cachesize": "20000", "tune.ssl.capture-buffer-size": "0",
    "tune.ssl.capture-cipherlist-size": "0", "tune.ssl.default-dh-param": "2048",
    "tune.ssl.force-private-cache": "", "tune.ssl.hard-maxrecord": "16384",
    "tune.ssl.keylog": "on", "tune.ssl.lifetime": "300", "tune.ssl.maxrecord": "0",
    "tune.ssl.ssl-ctx-cache-size": "1000", "tune.vars.global-max-size": "100",
    "tune.vars.proc-max-size": "100", "tune.vars.reqres-max-size": "100",
    "tune.vars.sess-max-size": "100", "tune.vars.txn-max-size": "100",
    "tune.zlib.memlevel": "8", "tune.zlib.windowsize": "15",
    "uid": "0", "ulimit-n": "1000", "unix-bind": "prefix /tmp", "unsetenv": "FOO",
    "user": "root", "zero-warning": "",
    # ---- proxies
    "acl": "a1 src 127.0.0.1", "backlog": "10", "balance": "roundrobin",
    "bind": "127.0.0.1:8090", "bind-process": "all", "capture cookie": "c len 10",
    "capture request": "header Host len 10", "capture response": "header Server len 10",
    "clitcpka-cnt": "3", "clitcpka-idle": "10s", "clitcpka-intvl": "10s",
    "compression": "algo gzip", "cookie": "SRV insert", "declare capture": "request len 10",
    "default-server": "inter 2s", "default_backend": "be", "disabled": "",
    "dispatch": "127.0.0.1:80", "email-alert from": "a@b.c", "email-alert level": "alert",
    "email-alert myhostname": "h", "email-alert to": "a@b.c", "enabled": "",
    "error-log-format": "%ci", "errorfile": "503 {dir}/503.http", "errorloc": "503 http://x/",
    "errorloc302": "503 http://x/", "errorloc303": "503 http://x/",
    "external-check command": "/bin/true", "external-check path": "/bin",
    "filter": "trace", "force-persist": "if TRUE", "fullconn": "100",
    "hash-type": "consistent", "http-after-response": "set-header X y",
    "http-check": "send meth GET", "http-error": "status 503 content-type text/plain string foo",
    "http-request": "deny", "http-response": "deny", "http-reuse": "safe",
    "http-send-name-header": "X-Srv", "id": "10", "ignore-persist": "if TRUE",
    "load-server-state-from-file": "none", "log-format": "%ci", "log-format-sd": "%ci",
    "max-keep-alive-queue": "10", "mode": "http", "monitor fail": "if TRUE",
    "monitor-uri": "/m", "persist rdp-cookie": "", "rate-limit sessions": "10",
    "redirect": "location /", "retries": "3", "retry-on": "conn-failure",
    "server": "s2 127.0.0.1:81", "server-state-file-name": "foo",
    "server-template": "srv 1-2 127.0.0.1:80", "source": "127.0.0.1", "srvtcpka-cnt": "3",
    "srvtcpka-idle": "10s", "srvtcpka-intvl": "10s", "stats admin": "if TRUE",
    "stats auth": "u:p", "stats enable": "", "stats hide-version": "",
    "stats http-request": "deny", "stats realm": "r", "stats refresh": "10s",
    "stats scope": ".", "stats show-desc": "", "stats show-legends": "", "stats show-node": "",
    "stats uri": "/s", "stick match": "src", "stick on": "src", "stick store-request": "src",
    "stick store-response": "src", "stick-table": "type ip size 1k", "tcp-check": "connect",
    "tcp-request connection": "accept", "tcp-request content": "accept",
    "tcp-request inspect-delay": "1s", "tcp-request session": "accept",
    "tcp-response content": "accept", "tcp-response inspect-delay": "1s",
    "timeout check": "5s", "timeout client": "5s", "timeout client-fin": "5s",
    "timeout connect": "5s", "timeout http-keep-alive": "5s", "timeout http-request": "5s",
    "timeout queue": "5s", "timeout server": "5s", "timeout server-fin": "5s",
    "timeout tarpit": "5s", "timeout tunnel": "5s", "transparent": "",
    "unique-id-format": "%ci", "unique-id-header": "X-Id", "use-server": "s1 if TRUE",
    "use_backend": "be",
    "option http-restrict-req-hdr-names": "preserve", "option pgsql-check": "user u",
}
# Lines a keyword needs before it in its section.
PREAMBLE: dict[str, tuple[str, ...]] = {
    "thread-group": ("nbthread 1",),  # else the machine's other CPUs are left out: an error
    # haproxy refuses it without this line; keeplb does not check (a known difference)
    "tune.fd.edge-triggered": ("expose-experimental-directives",),
    "stick match": ("stick-table type ip size 1k",),
    "stick on": ("stick-table type ip size 1k",),
    "stick store-request": ("stick-table type ip size 1k",),
    "stick store-response": ("stick-table type ip size 1k",),
}
# Keywords with no valid example in a self-contained file, and why.
SKIPPED: dict[str, str] = {
    "ssl-dh-param-file": "needs a DH parameters file",
    "email-alert mailers": "needs a mailers section, which keeplb does not read",
    "errorfiles": "needs an http-errors section, which keeplb does not read",
    "use-fcgi-app": "needs an fcgi-app section, which keeplb does not read",
    # haproxy refuses every line of these, so their arguments cannot be compared
    "tune.zlib.memlevel": "Debian's haproxy is built with SLZ, not zlib, and does not know it "
                          "(keeplb accepts it: a known difference, not an argument count)",
    "tune.zlib.windowsize": "as tune.zlib.memlevel",
    "option external-check": "haproxy also wants 'external-check' in global and an "
                             "'external-check command' (keeplb does not check either)",
}

# Known differences that are not about argument counts: haproxy warns on the
# example itself where keeplb does not. For these only error / no error is compared.
WARNS_ONLY_IN_HAPROXY: dict[str, str] = {
    "default_backend": "in a listen with servers: 'the default_backend rule always has "
                       "precedence over the servers'",
    "email-alert from": "'email-alert' will be ignored ... requires each of 'email-alert "
                        "from', 'email-alert mailers' and 'email-alert to'",
    "email-alert myhostname": "as email-alert from",
    "email-alert to": "as email-alert from",
    "external-check command": "'will be ignored ... (requires 'option external-check')'",
    "log-format-sd": "'log format ignored ... since it has no log address'",
    "option httpslog": "'log format ignored ... since it has no log address'",
    "stats show-desc": "''show-desc' requires a parameter or 'desc' to be set in the global "
                       "section'",
}

# (keyword, variant): known differences in what follows the argument count, each
# keyword's own grammar of options that keeplb does not model for keywords it
# does not act on. Each must still differ (test_known_differences_are_current).
KNOWN: dict[tuple[str, str], str] = {
    ("thread-group", "extra"): "keeplb does not parse thread-group's thread ranges",
    ("filter", "extra"): "keeplb does not read the options of each filter",
    ("http-error", "extra"): "keeplb does not read http-error's reply options",
    ("redirect", "extra"): "keeplb does not read redirect's options",
    ("server-template", "extra"): "keeplb does not read server-template's server options",
    ("stick-table", "extra"): "keeplb does not read stick-table's options",
}

GLOBAL_SECTION = "global"
PROXY_SECTION_ORDER = ("listen", "frontend", "backend", "defaults")
_DEFAULTS = ("defaults d", "    mode http", "    timeout connect 5s", "    timeout client 5s",
             "    timeout server 5s")


@dataclass(frozen=True)
class Case:
    section: str
    keyword: str
    variant: str  # base, empty, extra, missing, empty-first
    args: str

    @property
    def id(self) -> str:
        return f"{self.section}:{self.keyword}:{self.variant}"

    def statement(self) -> str:
        return " ".join(w for w in (self.keyword, self.args) if w)

    def text(self, directory: Path) -> str:
        stmt = "    " + self.statement().replace("{dir}", str(directory))
        pre = tuple("    " + p for p in PREAMBLE.get(self.keyword, ()))
        if self.section == GLOBAL_SECTION:
            lines: tuple[str, ...] = ("global", *pre, stmt)
        elif self.section == "defaults":
            lines = (*_DEFAULTS, *pre, stmt)
        elif self.section == "frontend":
            lines = (*_DEFAULTS, "frontend fe", "    bind 127.0.0.1:8080", *pre, stmt,
                     "backend be", "    server s1 127.0.0.1:80")
        elif self.section == "listen":
            lines = (*_DEFAULTS, "listen li", "    bind 127.0.0.1:8081",
                     "    server s1 127.0.0.1:80", *pre, stmt, "backend be",
                     "    server s1 127.0.0.1:80")
        else:
            lines = (*_DEFAULTS, "backend be", "    server s1 127.0.0.1:80", *pre, stmt)
        return "\n".join(lines) + "\n"


def sections_of(keyword: str, rows: list[tuple[str, str, str]]) -> list[str]:
    return [s for s, k, _ in rows if k == keyword]


def cases() -> Iterator[Case]:
    """Each global keyword in global; each proxy keyword in one of its sections,
    taken in turn (listen, frontend, backend, defaults) so that all four are used."""
    rows = [r for r in keyword_table() if r[0] in (GLOBAL_SECTION, *PROXY_SECTION_ORDER)]
    seen: list[str] = []
    for _section, kw, _status in rows:
        if kw not in seen:
            seen.append(kw)
    turn = 0
    for kw in seen:
        if kw in SKIPPED:
            continue
        mine = sections_of(kw, rows)
        if GLOBAL_SECTION in mine:
            sections = [GLOBAL_SECTION]
            if len(mine) > 1:  # description, log, log-tag, maxconn: proxies too
                sections.append([s for s in PROXY_SECTION_ORDER if s in mine][0])
        else:
            allowed = [s for s in PROXY_SECTION_ORDER if s in mine]
            sections = [allowed[turn % len(allowed)]]
            turn += 1
        args = EXAMPLES.get(kw, "")
        for section in sections:
            yield Case(section, kw, "base", args)
            yield Case(section, kw, "empty", f'{args} ""'.strip())
            yield Case(section, kw, "extra", f"{args} x".strip())
            if args:
                yield Case(section, kw, "missing", "")
                # too_many_args() looks past the empty word, the other checks stop at it
                yield Case(section, kw, "empty-first", '"" x')


@dataclass(frozen=True)
class Verdict:
    kind: str  # error, warning, clean
    errors: tuple[str, ...]
    warnings: tuple[str, ...]


_HAPROXY_MSG = re.compile(r"^\[(ALERT|WARNING)\]\s+\(\d+\) : (?:config : )?(?:parsing \[[^]]*\] ?: )?(.*)$")


def run_haproxy(case: Case, directory: Path) -> Verdict:
    assert HAPROXY is not None
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "empty").write_text("")
    (directory / "chain").mkdir(exist_ok=True)
    (directory / "empty.lua").write_text("")
    (directory / "503.http").write_text("HTTP/1.0 503 Service Unavailable\r\n\r\n")
    path = directory / "haproxy.cfg"
    path.write_text(case.text(directory))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True,
                          errors="replace", timeout=30, env=env)
    msgs = [m for line in proc.stderr.splitlines() if (m := _HAPROXY_MSG.match(line))]
    errors: list[str] = []
    warnings: list[str] = []
    for m in msgs:
        text = m.group(2)
        if text.startswith(("Error(s) found in configuration file", "Fatal errors found")):
            continue
        (errors if m.group(1) == "ALERT" and proc.returncode == 1 else warnings).append(text)
    kind = "error" if proc.returncode == 1 else "warning" if warnings else "clean"
    return Verdict(kind, tuple(errors), tuple(warnings))


def run_keeplb(case: Case, directory: Path) -> Verdict:
    # parse() on the same file is what `keeplb lb -c -f` runs (cli._parse_haproxy);
    # the CLI exits 1 exactly when the diagnostics hold an error
    _, diags = parse([str(directory / "haproxy.cfg")], env={})
    errors = tuple(d.message for d in diags.errors)
    warnings = tuple(d.message for d in diags.warnings if "not supported by keeplb" not in d.message)
    kind = "error" if errors else "warning" if warnings else "clean"
    return Verdict(kind, errors, warnings)


def run_all(tmp: Path) -> list[tuple[Case, Verdict, Verdict]]:
    all_cases = list(cases())
    dirs = [tmp / f"c{i}" for i in range(len(all_cases))]
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) * 2) as pool:
        theirs = list(pool.map(run_haproxy, all_cases, dirs))
    return [(c, t, run_keeplb(c, d)) for c, t, d in zip(all_cases, theirs, dirs, strict=True)]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Case, Verdict, Verdict]]:
    return run_all(tmp_path_factory.mktemp("arg-parity"))


def _differs(case: Case, theirs: Verdict, ours: Verdict) -> bool:
    if case.keyword in WARNS_ONLY_IN_HAPROXY:
        return (theirs.kind == "error") != (ours.kind == "error")
    return theirs.kind != ours.kind


def test_every_keyword_has_a_case() -> None:
    # the table above follows keyword_table(): a new keyword needs an example
    # (or a reason to skip it), not silently an empty argument
    kws = {k for s, k, _ in keyword_table() if s in (GLOBAL_SECTION, *PROXY_SECTION_ORDER)}
    assert set(EXAMPLES) <= kws, set(EXAMPLES) - kws
    covered = {c.keyword for c in cases()}
    assert covered == kws - set(SKIPPED)
    assert {c.section for c in cases()} == {GLOBAL_SECTION, *PROXY_SECTION_ORDER}


def test_same_verdict_as_haproxy(results: list[tuple[Case, Verdict, Verdict]]) -> None:
    wrong = [f"{c.id} `{c.statement()}`: haproxy {t.kind} {(t.errors or t.warnings)[:1]}, "
             f"keeplb {k.kind} {(k.errors or k.warnings)[:1]}"
             for c, t, k in results
             if (c.keyword, c.variant) not in KNOWN and _differs(c, t, k)]
    assert not wrong, f"{len(wrong)} of {len(results)} differ:\n" + "\n".join(wrong)


def test_too_many_args_same_text(results: list[tuple[Case, Verdict, Verdict]]) -> None:
    """Where haproxy says alertif_too_many_args()'s words (or the timeouts' own), keeplb
    says the same; an error past the count in a file of its own is the first one."""
    checked = 0
    wrong = []
    for c, t, k in results:
        if t.kind == "error" and ("cannot handle unexpected argument" in t.errors[0]
                                  or "unexpected extra argument" in t.errors[0]):
            checked += 1
            if not k.errors or k.errors[0] != t.errors[0].removesuffix("."):
                wrong.append(f"{c.id}: haproxy {t.errors[0]!r}, keeplb {k.errors[:1]}")
    assert checked > 100 and not wrong, "\n".join(wrong)


def test_known_differences_are_current(results: list[tuple[Case, Verdict, Verdict]]) -> None:
    """Each KNOWN entry is still a difference: a fix must remove it from the list."""
    differing = {(c.keyword, c.variant) for c, t, k in results if t.kind != k.kind}
    assert set(KNOWN) <= differing, set(KNOWN) - differing
    warned = {c.keyword for c, t, k in results if c.variant == "base" and t.kind != k.kind}
    assert set(WARNS_ONLY_IN_HAPROXY) <= warned, set(WARNS_ONLY_IN_HAPROXY) - warned


# The brief's lines and their neighbours, run through the CLI itself: the
# verdict above comes from parse(); `keeplb lb -c` must exit as haproxy -c does.
CLI_LINES = [
    'daemon ""', 'daemon "" x', "daemon x", 'maxconn 10 ""', 'maxconn 10 "" x',
    'maxconn "" 10', 'maxconn ""', '"" daemon', 'stats socket /tmp/klb-none.sock "" level x',
    'setenv FOO bar x', 'tune.ssl.force-private-cache ""', "tune.ssl.force-private-cache x",
]


@pytest.mark.parametrize("statement", CLI_LINES)
def test_cli_exit_code_as_haproxy(statement: str, tmp_path: Path) -> None:
    assert HAPROXY is not None
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"global\n    {statement}\n")
    theirs = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True,
                            errors="replace", timeout=30)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    ours = subprocess.run([sys.executable, "-m", "keeplb", "lb", "-c", "-f", str(cfg)],
                          capture_output=True, text=True, errors="replace", timeout=60, env=env)
    assert "Traceback" not in ours.stderr, ours.stderr
    assert (theirs.returncode == 1) == (ours.returncode == 1), (theirs.stderr, ours.stdout,
                                                                ours.stderr)
    if "cannot handle unexpected argument" in theirs.stderr:
        word = re.search(r"(cannot handle unexpected argument '[^']*')", theirs.stderr)
        assert word is not None and word.group(1) in ours.stderr
