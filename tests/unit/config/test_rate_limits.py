"""Global `maxsessrate` and `maxconnrate`: parsed as haproxy 2.6 parses them
(cfgparse-global.c: too many arguments and a missing one are fatal, a second
non-zero line only alerts and keeps the first value, the number is read with
atol()), each case checked against `haproxy -c` on the same file."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from keeplb.config.haproxy import parse_text

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

# (global lines, the value keeplb stores, keeplb's first error or warning text:
# haproxy's without its final '.'; None: silent). haproxy alerts where keeplb
# errors, and where keeplb warns "already specified" it alerts but stays valid.
CASES: list[tuple[str, int | None, str | None]] = [
    ("{kw} 10", 10, None),
    ("{kw} 0", 0, None),
    ("{kw} -5", -5, None),  # atol(): stored, and a negative limit never limits
    ("{kw}", None, "error: '{kw}' expects an integer argument"),
    ("{kw} 10 20", None, "error: '{kw}' cannot handle unexpected argument '20'"),
    ("{kw} abc", 0, "warning: '{kw}' value 'abc' is not a number; haproxy reads it as 0"),
    ("{kw} 10x", 10, "warning: '{kw}' value '10x' is not a number; haproxy reads it as 10"),
    ("{kw} 10\n    {kw} 20", 10, "warning: '{kw}' already specified. Continuing"),
    # the second line is checked for being already set before its argument
    ("{kw} 10\n    {kw}", 10, "warning: '{kw}' already specified. Continuing"),
    ("{kw} 0\n    {kw} 20", 20, None),  # 0 is "not set" to haproxy
]
KEYWORDS = ("maxsessrate", "maxconnrate")
PARAMS = [(kw, lines.format(kw=kw), value, None if text is None else text.format(kw=kw))
          for kw in KEYWORDS for lines, value, text in CASES]


def config(lines: str) -> str:
    return (f"global\n    {lines}\ndefaults\n    mode tcp\n    timeout client 1s\n"
            "    timeout server 1s\n    timeout connect 1s\nlisten a\n    bind 127.0.0.1:1\n"
            "    server s 127.0.0.1:2\n")


@pytest.mark.parametrize(("kw", "lines", "value", "text"), PARAMS,
                         ids=[p[1].replace("\n    ", " / ") for p in PARAMS])
def test_parsed_as_haproxy_does(kw: str, lines: str, value: int | None, text: str | None) -> None:
    cfg, diags = parse_text(config(lines))
    got = [f"{d.severity.value}: {d.message}" for d in diags]
    assert "not supported by keeplb" not in " ".join(got), got
    if text is None:
        assert not got, got
    else:
        assert got and got[0].lower().startswith(text.lower()), got
    if text is None or not text.startswith("error"):
        assert getattr(cfg.global_, kw) == value


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed")
@pytest.mark.parametrize(("kw", "lines", "value", "text"), PARAMS,
                         ids=[p[1].replace("\n    ", " / ") for p in PARAMS])
def test_same_verdict_and_message_as_haproxy(kw: str, lines: str, value: int | None,
                                             text: str | None, tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(config(lines))
    proc = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30)
    _, diags = parse_text(config(lines))
    assert (proc.returncode == 1) == diags.has_errors, proc.stderr
    if text is not None and "is not a number" not in text:
        # keeplb's own note on atol()'s reading has no haproxy counterpart
        message = text.split(": ", 1)[1]
        assert "[ALERT]" in proc.stderr and f"{message}." in proc.stderr, proc.stderr
    elif proc.returncode == 0:
        assert "[ALERT]" not in proc.stderr and "[WARNING]" not in proc.stderr, proc.stderr
