"""Real keepalived 2.2.7 as the oracle: `keepalived -t` and keeplb agree on every file.

keepalived is only ever run with -t (config test): it reads the file, prints
its complaints on stderr and exits; nothing is started and no address is used.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from keeplb.config.keepalived import parse

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus" / "keepalived"
SEED = Path("/work/shared/seed/keepalived.conf")
KEEPALIVED = shutil.which("keepalived") or (
    "/usr/sbin/keepalived" if os.path.exists("/usr/sbin/keepalived") else None
)

pytestmark = [
    pytest.mark.skipif(KEEPALIVED is None, reason="keepalived is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="keepalived -t needs root"),
    pytest.mark.skipif(not os.path.exists("/sys/class/net/eth0"), reason="the corpus names eth0"),
]

FILES = sorted(CORPUS.glob("*.conf")) + sorted((ROOT / "examples").glob("keepalived*.conf"))
if SEED.exists():
    FILES.append(SEED)


def keepalived_test(path: Path, tmp_path: Path, timeout: float = 30) -> tuple[int, list[str]]:
    """Run `keepalived -t` on `path`; returns its exit code and its distinct messages.

    Raises subprocess.TimeoutExpired when keepalived does not finish (2.2.7 loops
    forever on some broken files, e.g. a track_file block left open).
    """
    assert KEEPALIVED is not None
    proc = subprocess.run(
        [KEEPALIVED, "-t", "-l", "-G", "-f", str(path)],
        capture_output=True,
        text=True,
        errors="replace",  # keepalived can print bytes that are not UTF-8
        timeout=timeout,
        cwd=tmp_path,  # includes must resolve against the file, not the cwd
    )
    # keepalived parses the file once per child process: the same line repeats.
    lines = list(dict.fromkeys(line for line in proc.stderr.splitlines() if line.strip()))
    return proc.returncode, lines


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_same_verdict_and_exit_code_as_keepalived(path: Path, tmp_path: Path) -> None:
    code, messages = keepalived_test(path, tmp_path)
    _, diags = parse(str(path))
    ours = [str(d) for d in diags]
    assert (code == 0) == (not diags.has_errors), f"keepalived {code}: {messages}\nkeeplb: {ours}"
    assert diags.exit_code() == code, f"keepalived: {messages}\nkeeplb: {ours}"


# keepalived's complaint -> the words keeplb uses for it, and how keeplb's line
# relates to keepalived's (keepalived reports an empty block at its closing
# brace; keeplb at the keyword that opens it).
SEED_MAP = [
    (r"Warning - empty notification_email block", "empty notification_email block", -1),
    (
        r"number '0' outside range \[0\.000001, 4294\.967295\]",
        "is invalid: it must be between 0.000001",
        0,
    ),
    (r"vrrp_garp_interval '0' is invalid", "vrrp_garp_interval '0' is invalid", 0),
    (r"vrrp_gna_interval '0' is invalid", "vrrp_gna_interval '0' is invalid", 0),
    (
        r"SECURITY VIOLATION - scripts are being executed but script_security not enabled",
        "SECURITY VIOLATION",
        None,
    ),
]
_LINE = re.compile(r"^\((?:[^:]*: )?Line (\d+)\) ")


@pytest.mark.skipif(not SEED.exists(), reason="seed not present")
def test_seed_each_keepalived_complaint_is_reproduced_with_its_line(tmp_path: Path) -> None:
    code, messages = keepalived_test(SEED, tmp_path)
    assert code == 6 and messages, messages
    _, diags = parse(str(SEED))
    for message in messages:
        entry = next((e for e in SEED_MAP if re.search(e[0], message)), None)
        assert entry is not None, f"keepalived says something keeplb does not know: {message!r}"
        _, needle, offset = entry
        ours = [d for d in diags.errors if needle in d.message]
        assert ours, f"no keeplb error for {message!r}: {[str(d) for d in diags]}"
        m = _LINE.match(message)
        if m and offset is not None:
            expected = int(m.group(1)) + offset
            assert any(d.span is not None and d.span.line == expected for d in ours), (
                message,
                [str(d) for d in ours],
            )
    assert len(diags.errors) == 4  # one each; keepalived's range complaints are folded in


# --------------------------------------------------------------------------
# differential: mutate valid configs, keepalived -t and keeplb must agree
# --------------------------------------------------------------------------

_BASES = [
    p
    for p in sorted(CORPUS.glob("ok-*.conf"))
    if "include" not in p.read_text() and "virtual_server" not in p.read_text()
]
_WORDS = [
    "0",
    "1",
    "3",
    "255",
    "256",
    "-1",
    "1.5",
    "abc",
    "MASTER",
    "BACKUP",
    "10.77.0.1",
    "fd00::1",
    "10.77.0.1/24",
    "eth0",
    "lo",
    '"x y"',
    "{",
    "}",
    "300",
    "nopreempt",
    "priority",
    "state",
    "weight",
    "notify",
    "advert_int",
    "interface",
]
_OPS = ["delete", "duplicate", "last-word", "first-word", "append", "shuffle"]


def _mutate(text: str, edits: list[tuple[str, int, str, int]]) -> str:
    lines = text.splitlines()
    for op, index, word, seed in edits:
        if not lines:
            break
        i = index % len(lines)
        words = lines[i].split()
        if op == "delete":
            del lines[i]
            continue
        if op == "duplicate":
            lines.insert(i, lines[i])
            continue
        if op == "last-word" and words:
            words[-1] = word
        elif op == "first-word" and words:
            words[0] = word
        elif op == "append":
            words.append(word)
        elif op == "shuffle" and words:
            words = words[seed % len(words) :] + words[: seed % len(words)]
        lines[i] = "    " + " ".join(words)
    return "\n".join(lines) + "\n"


_EDIT = st.tuples(
    st.sampled_from(_OPS), st.integers(0, 200), st.sampled_from(_WORDS), st.integers(0, 9)
)


@pytest.mark.slow
@settings(
    max_examples=60,
    derandomize=True,  # the same configs on every run: a failure is a real difference
    phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time, the example is printed
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(base=st.sampled_from(_BASES), edits=st.lists(_EDIT, min_size=1, max_size=3))
def test_mutated_configs_get_the_same_verdict(
    tmp_path: Path, base: Path, edits: list[tuple[str, int, str, int]]
) -> None:
    path = tmp_path / "mutant.conf"
    path.write_text(_mutate(base.read_text(), edits))
    try:
        code, messages = keepalived_test(path, tmp_path, timeout=1)
    except subprocess.TimeoutExpired:
        return  # keepalived hung (see keepalived_test): no verdict to compare
    if code < 0:
        return  # keepalived crashed (it does, on some broken files): no verdict to compare
    _, diags = parse(str(path))
    assert (code == 0) == (not diags.has_errors), (
        path.read_text(),
        messages,
        [str(d) for d in diags],
    )
