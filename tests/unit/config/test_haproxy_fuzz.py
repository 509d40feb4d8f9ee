"""Random and mutated haproxy.cfg text never raises: the parser only returns diagnostics."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeplb.config.diagnostics import Diagnostic
from keeplb.config.haproxy import parse_text

CORPUS = Path(__file__).resolve().parents[2] / "corpus" / "haproxy"
SEEDS = [p.read_text() for p in sorted(CORPUS.glob("*.cfg"))]
WORDS = sorted({w for text in SEEDS for w in text.split()} | {
    '"', "'", "\\", "#", "${", "}", "\\x4", ".if", ".elif", ".else", ".endif", "(", ")", "&&",
    "||", "!", "{", "if", "unless", "from", "no", "default", ":", "@", ",", "-", "+", "%[",
})
ENV = {"HOME": "/root", "LIST": "a b c", "EMPTY": ""}


def check(text: str) -> None:
    _, diags = parse_text(text, env=ENV)
    assert all(isinstance(d, Diagnostic) for d in diags)
    for d in diags:
        str(d)  # every diagnostic prints


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=400))
def test_random_text_never_raises(text: str) -> None:
    check(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join), max_size=30))
def test_random_keyword_soup_never_raises(lines: list[str]) -> None:
    check("\n".join(lines) + "\n")


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(SEEDS)).split("\n")
    for _ in range(draw(st.integers(1, 4))):
        k = draw(st.integers(0, len(lines) - 1))
        op = draw(st.integers(0, 4))
        if op == 0:
            lines[k] += " " + draw(st.sampled_from(WORDS))
        elif op == 1:
            at = draw(st.integers(0, len(lines[k])))
            lines[k] = lines[k][:at] + draw(st.sampled_from(WORDS)) + lines[k][at:]
        elif op == 2:
            del lines[k]
            if not lines:
                lines = [""]
        elif op == 3:
            lines.insert(k, draw(st.sampled_from(draw(st.sampled_from(SEEDS)).split("\n"))))
        else:
            words = lines[k].split()
            if words:
                words[draw(st.integers(0, len(words) - 1))] = draw(st.sampled_from(WORDS))
                lines[k] = "    " + " ".join(words)
    return "\n".join(lines)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_corpus_never_raises(text: str) -> None:
    check(text)
