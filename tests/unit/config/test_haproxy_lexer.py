"""haproxy 2.6's line lexer: words, quotes, escapes, variables, conditional blocks."""

from __future__ import annotations

import pytest

from keeplb.config.diagnostics import Diagnostics
from keeplb.config.lexer import CondError, Lexer, LexError, eval_condition, split_words


def words(text: str, env: dict[str, str] | None = None) -> list[str]:
    return split_words(text, env or {})[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  bind   :80  ", ["bind", ":80"]),
        ("global#comment", ["global"]),
        ("mode http # or tcp", ["mode", "http"]),
        ('log-format "%t %s"', ["log-format", "%t %s"]),
        ("log-format '%t %s'", ["log-format", "%t %s"]),
        (r"log-format %t\ %s", ["log-format", "%t %s"]),
        # the five equivalent spellings of configuration.txt §2.2
        (r"""x "%{+Q}o %t"' %s'\ %{-Q}r""", ["x", "%{+Q}o %t %s %{-Q}r"]),
        ('x "a # not a comment"', ["x", "a # not a comment"]),
        (r"x a\#b", ["x", "a#b"]),
        (r'x "\x41\x42"', ["x", "AB"]),
        (r"x a\nb\tc\rd", ["x", "a\nb\tc\rd"]),
        (r"x '\n'", ["x", r"\n"]),  # nothing is interpreted in single quotes
        (r"x a\qb", ["x", r"a\qb"]),  # an unknown escape keeps its backslash
        (r"x \\", ["x", "\\"]),
        ('x ""', ["x", ""]),
        ("x '$HOME'", ["x", "$HOME"]),
        ("x $HOME", ["x", "$HOME"]),  # variables only expand within double quotes
        ('x "a"b\'c\'', ["x", "abc"]),
    ],
)
def test_split_words(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_word_columns_are_one_based() -> None:
    assert split_words("  bind :80 v4v6", {})[1] == [3, 8, 12]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('x "$V"', ["x", "val"]),
        ('x "${V}"', ["x", "val"]),
        ('x "${V}s"', ["x", "vals"]),
        ('x "${UNSET}"', ["x", ""]),
        ('x "${UNSET-dflt}"', ["x", "dflt"]),
        ('x "${EMPTY-dflt}"', ["x", ""]),  # a default replaces a missing variable only
        ('x "${LIST[*]}"', ["x", "a", "b", "c"]),
        ('x "pre${LIST[*]}"', ["x", "prea", "b", "c"]),
        (r'x "\$V"', ["x", "$V"]),
        ('x "a$b"', ["x", "a"]),
        ('x "$_b"', ["x", ""]),
        ('x "${.LINE}:${.FILE}"', ["x", "7:f.cfg"]),
    ],
)
def test_environment_expansion(text: str, expected: list[str]) -> None:
    env = {"V": "val", "EMPTY": "", "LIST": "a b c"}
    got, _ = split_words(text, env, {".LINE": "7", ".FILE": "f.cfg"})
    assert got == expected


@pytest.mark.parametrize(
    ("text", "message", "col"),
    [
        ('bind "abc', "unmatched quote", 6),
        ("bind 'abc", "unmatched quote", 6),
        # columns point where haproxy's caret does: at the 'x', at the name
        (r'x "\xZZ"', "truncated or invalid hexadecimal sequence", 5),
        (r"x \x4", "truncated or invalid hexadecimal sequence", 4),
        ('x "${UNCLOSED"', "unmatched brace in environment variable name", 6),
        ('x "a$"', "forbidden first char in environment variable name", 6),
        ('x "$1"', "forbidden first char in environment variable name", 5),
        ('x "${}"', "forbidden first char in environment variable name", 6),
        ('x "$.LINE"', "forbidden first char in environment variable name", 5),
    ],
)
def test_lex_errors(text: str, message: str, col: int) -> None:
    with pytest.raises(LexError, match=message) as info:
        split_words(text, {})
    assert info.value.col == col


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("", False),
        ("0", False),
        ("1", True),
        ("-3", True),
        ("!0", True),
        ("1 && 0", False),
        ("1 && 0 || 1", True),  # && binds tighter than ||
        ("0 || 1 && 0", False),
        ("!(0 || 0) && 1", True),
        ("defined(HOME)", True),
        ("defined(NOPE)", False),
        ("feature(OPENSSL)", True),
        ("feature(QUIC)", False),
        ("streq(a,a)", True),
        ("streq(a,b)", False),
        ("strneq(a,b)", True),
        ("streq('a b',\"a b\")", True),
        ("version_atleast(2.6)", True),
        ("version_atleast(2.6.12)", True),
        ("version_atleast(2.7)", False),
        ("version_atleast(2.4-dev19)", True),
        ("version_before(2.7)", True),
        ("version_before(2.6)", False),
    ],
)
def test_conditions(expr: str, value: bool) -> None:
    assert eval_condition(expr, {"HOME": "/root"}) is value


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("bogus(1)", "unparsable conditional expression"),
        ("2.5", "unexpected character '.'"),
        ("defined(HOME) x", "unexpected character 'x'"),
        ("streq(a)", "expects 2 argument"),
        ("(1", r"expected '\)'"),
        ("defined(X", r"missing closing '\)'"),
        ("1 &&", "unparsable"),
    ],
)
def test_condition_errors(expr: str, message: str) -> None:
    with pytest.raises(CondError, match=message):
        eval_condition(expr, {})


def lex(text: str, env: dict[str, str] | None = None) -> tuple[list[list[str]], Diagnostics]:
    diags = Diagnostics()
    lines = [list(line.words) for line in Lexer(text, "t.cfg", env or {}, diags).lines()]
    return lines, diags


def test_conditional_blocks_select_lines() -> None:
    text = """\
.if defined(A)
  .if defined(B)
a-and-b
  .elif defined(C)
a-and-c
  .else
a-only
  .endif
.elif 1
not-a
.else
never
.endif
always
"""
    assert lex(text, {"A": ""})[0] == [["a-only"], ["always"]]
    assert lex(text, {"A": "", "C": ""})[0] == [["a-and-c"], ["always"]]
    assert lex(text, {"A": "", "B": "", "C": ""})[0] == [["a-and-b"], ["always"]]
    assert lex(text, {})[0] == [["not-a"], ["always"]]


def test_condition_uses_expanded_words() -> None:
    text = '.if streq("$MODE",prod)\nprod-line\n.endif\n'
    assert lex(text, {"MODE": "prod"})[0] == [["prod-line"]]
    assert lex(text, {"MODE": "dev"})[0] == []


def test_skipped_block_is_not_evaluated() -> None:
    # the bad condition sits in a branch that is never taken: no error
    lines, diags = lex(".if 0\n.if bogus(\n.endif\n.endif\nx\n")
    assert lines == [["x"]]
    assert not diags.has_errors


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        (".else\n", "lone '.else'", 1),
        (".endif\n", "lone '.endif'", 1),
        (".elif 1\n", "lone '.elif'", 1),
        ("x\n.if 1\n", "non-terminated '.if' block", 2),
        (".if 1\n.else\n.else\n.endif\n", "'.else' after '.else'", 3),
        (".if bogus(1)\n.endif\n", "unparsable conditional expression", 1),
        (".endif x\n", "unexpected argument 'x'", 1),
        ('.warning "a" b\n', "use quotes", 1),
        (".foo\n", "unknown directive", 1),
    ],
)
def test_directive_errors(text: str, message: str, line: int) -> None:
    _, diags = lex(text)
    errors = diags.errors
    assert errors, diags
    assert message in errors[0].message
    assert errors[0].span is not None and errors[0].span.line == line


def test_messages_directives() -> None:
    lines, diags = lex('.notice "n"\n.warning "w"\n.diag "d"\nx\n.alert "stop"\ny\n')
    assert lines == [["x"]]  # an alert ends the file, as haproxy does
    assert [(d.severity.value, d.message) for d in diags] == [
        ("note", "n"), ("warning", "w"), ("error", "stop")]


def test_bad_line_is_reported_and_skipped() -> None:
    lines, diags = lex('a "b\nc\n')
    assert lines == [["c"]]
    assert str(diags[0]) == "t.cfg:1:3: error: unmatched quote"


def test_too_many_words() -> None:
    lines, diags = lex("w " * 70 + "\n")
    assert len(lines[0]) == 64
    assert "too many words" in diags.errors[0].message
