"""haproxy 2.6's line lexer: words, quotes, escapes, environment variables and
the `.if/.elif/.else/.endif` preprocessor (configuration.txt §2.2-2.4).

Pure: the environment is an argument, nothing is read from os.environ here.
`Lexer.lines()` yields one `Line` per statement that survives the conditional
blocks; every problem becomes a located diagnostic, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from keeplb.config.diagnostics import Diagnostics, Span

# The version `version_atleast()` / `version_before()` compare against: keeplb
# reads the 2.6 grammar, so a config written for 2.6 selects its 2.6 branches.
HAPROXY_VERSION = (2, 6, 12)

# The '+' entries of Debian 12's `haproxy -vv` feature list, so `.if feature(X)`
# picks the same branch as the haproxy keeplb replaces.
FEATURES = frozenset(
    "ACCEPT4 BACKTRACE CPU_AFFINITY CRYPT_H DL EPOLL GETADDRINFO LIBCRYPT LINUX_SPLICE "
    "LINUX_TPROXY LUA NETFILTER NS OPENSSL OT PCRE2 PCRE2_JIT POLL PRCTL PROMEX RT SLZ "
    "SYSTEMD TFO THREAD THREAD_DUMP TPROXY".split()
)

MAX_LINE_ARGS = 64  # haproxy's MAX_LINE_ARGS: more words are an error

# parse_line()'s isspace() in the C locale: a vertical tab or form feed separates words too
_BLANKS = " \t\r\n\x0b\x0c"
_NAME_START = re.compile(r"[A-Za-z_]")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_.]")


@dataclass(frozen=True, slots=True)
class Line:
    """One statement: its words after unquoting and expansion, and where each began."""

    words: tuple[str, ...]
    cols: tuple[int, ...]  # 1-based column of each word in the raw line
    span: Span  # the line, at its first word
    raw: str = ""

    def at(self, index: int) -> Span:
        """Span of word `index` (the line's span when out of range)."""
        if 0 <= index < len(self.cols):
            return Span(self.span.file, self.span.line, self.cols[index])
        return self.span

    def __len__(self) -> int:
        return len(self.words)


class LexError(Exception):
    """Internal: a line that cannot be split; `col` is 1-based. Never leaves this module."""

    def __init__(self, message: str, col: int) -> None:
        super().__init__(message)
        self.message = message
        self.col = col


def split_words(
    text: str,
    env: Mapping[str, str],
    pseudo: Mapping[str, str] | None = None,
) -> tuple[list[str], list[int]]:
    """Cut one raw line into words as haproxy's parse_line() does.

    Called for every physical line. Raises LexError for an unmatched quote, a bad
    \\x escape or an unclosed `${`. `pseudo` holds .FILE/.LINE/.SECTION.
    """
    words: list[str] = []
    cols: list[int] = []
    cur: list[str] = []
    in_word = False
    start = 0
    squote = dquote = False
    quote_col = 0
    i, n = 0, len(text)

    def begin(pos: int) -> None:
        nonlocal in_word, start
        if not in_word:
            in_word = True
            start = pos

    while i < n:
        c = text[i]
        if squote:
            if c == "'":
                squote = False
            else:
                cur.append(c)
            i += 1
            continue
        if c in _BLANKS and not dquote:
            if in_word:
                words.append("".join(cur))
                cols.append(start + 1)
                cur = []
                in_word = False
            i += 1
            continue
        if c == "#" and not dquote:
            break
        begin(i)
        if c == "\\":
            nxt = text[i + 1] if i + 1 < n else ""
            if nxt in ("\\", " ", "\t", "#", "'", '"'):
                cur.append(nxt)
                i += 2
            elif nxt == "$" and dquote:
                cur.append("$")
                i += 2
            elif nxt in ("r", "n", "t"):
                cur.append({"r": "\r", "n": "\n", "t": "\t"}[nxt])
                i += 2
            elif nxt == "x":
                hexa = text[i + 2 : i + 4]
                if len(hexa) != 2 or not all(h in "0123456789abcdefABCDEF" for h in hexa):
                    raise LexError("truncated or invalid hexadecimal sequence", i + 2)
                cur.append(chr(int(hexa, 16)))
                i += 4
            else:
                # haproxy keeps a backslash that escapes nothing it knows
                cur.append("\\")
                i += 1
            continue
        if c == "'" and not dquote:
            squote = True
            quote_col = i + 1
            i += 1
            continue
        if c == '"':
            dquote = not dquote
            quote_col = i + 1
            i += 1
            continue
        if c == "$" and dquote:
            i, parts = _expand(text, i, env, pseudo or {})
            if len(parts) > 1:
                # ${VAR[*]}: the first value joins the current word, others become words
                cur.append(parts[0])
                for part in parts[1:]:
                    words.append("".join(cur))
                    cols.append(start + 1)
                    cur = [part]
            elif parts:
                cur.append(parts[0])
            continue
        cur.append(c)
        i += 1
    if squote or dquote:
        raise LexError("unmatched quote", quote_col)
    if in_word:
        words.append("".join(cur))
        cols.append(start + 1)
    return words, cols


def _expand(
    text: str, i: int, env: Mapping[str, str], pseudo: Mapping[str, str]
) -> tuple[int, list[str]]:
    """Expand the variable at text[i] == '$' inside double quotes; returns (next index, values)."""
    n = len(text)
    j = i + 1
    braces = j < n and text[j] == "{"
    if braces:
        j += 1
    pseudo_name = braces and text.startswith(".", j) and j + 1 < n and bool(
        _NAME_START.match(text[j + 1]))
    if j >= n or not (_NAME_START.match(text[j]) or pseudo_name):
        raise LexError("forbidden first char in environment variable name", j + 1)
    k = j + 1
    while k < n and _NAME_CHAR.match(text[k]):
        k += 1
    name = text[j:k]
    default: str | None = None
    split = False
    if braces:
        if text.startswith("[*]", k):
            split = True
            k += 3
        if k < n and text[k] == "-":
            # documented for 2.6 (§2.3); note that 2.6.12 itself refuses it on a line
            # it has to parse twice (its first pass cuts the default in place)
            end = text.find("}", k)
            if end < 0:
                raise LexError("unmatched brace in environment variable name", j + 1)
            default = text[k + 1 : end]
            k = end
        if k >= n or text[k] != "}":
            raise LexError("unmatched brace in environment variable name", j + 1)
        k += 1
    if name.startswith("."):
        value: str | None = pseudo.get(name)
    else:
        value = env.get(name)
    if value is None:
        value = default if default is not None else ""
    if split:
        return k, value.split() or [""]
    return k, [value]


# --------------------------------------------------------------------------
# conditional expressions (.if / .elif), cfgcond.c of haproxy 2.6
# --------------------------------------------------------------------------


class CondError(Exception):
    """Internal: an unparsable condition; `pos` is 0-based in the expression text."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for chunk in re.split(r"[.-]", text):
        m = re.match(r"\d+", chunk)
        if not m:
            break
        parts.append(int(m.group()))
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


_PREDICATES: dict[str, int] = {
    "defined": 1,
    "feature": 1,
    "streq": 2,
    "strneq": 2,
    "version_atleast": 1,
    "version_before": 1,
}


class _CondParser:
    """Recursive descent over `A && B || !(C)`: && binds tighter than ||."""

    def __init__(self, text: str, env: Mapping[str, str]) -> None:
        self.text = text
        self.pos = 0
        self.env = env

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def expr(self) -> bool:
        value = self.and_expr()
        self.skip()
        if self.text.startswith("||", self.pos):
            self.pos += 2
            right = self.expr()
            return value or right
        return value

    def and_expr(self) -> bool:
        value = self.term()
        self.skip()
        if self.text.startswith("&&", self.pos):
            self.pos += 2
            right = self.and_expr()
            return value and right
        return value

    def term(self) -> bool:
        self.skip()
        t = self.text
        if self.pos >= len(t):
            raise CondError("unparsable conditional expression", self.pos)
        c = t[self.pos]
        if c == "!":
            self.pos += 1
            return not self.term()
        if c == "(":
            self.pos += 1
            value = self.expr()
            self.skip()
            if self.pos >= len(t) or t[self.pos] != ")":
                raise CondError("expected ')' in conditional expression", self.pos)
            self.pos += 1
            return value
        m = re.compile(r"-?\d+").match(t, self.pos)
        if m:
            self.pos = m.end()
            return int(m.group()) != 0
        m = re.compile(r"[a-z_]+").match(t, self.pos)
        if not m or m.group() not in _PREDICATES or not t.startswith("(", m.end()):
            raise CondError("unparsable conditional expression", self.pos)
        name = m.group()
        self.pos = m.end() + 1
        args = self.arguments(name)
        return self.evaluate(name, args)

    def arguments(self, name: str) -> list[str]:
        """Comma-separated arguments up to ')', quotes allowed (make_arg_list)."""
        t = self.text
        args: list[str] = []
        cur: list[str] = []
        quote = ""
        while self.pos < len(t):
            c = t[self.pos]
            if quote:
                if c == quote:
                    quote = ""
                else:
                    cur.append(c)
            elif c in "'\"":
                quote = c
            elif c == ",":
                args.append("".join(cur))
                cur = []
            elif c == ")":
                args.append("".join(cur))
                self.pos += 1
                break
            else:
                cur.append(c)
            self.pos += 1
        else:
            raise CondError(f"missing closing ')' after arguments to predicate '{name}'", self.pos)
        if args == [""]:
            args = []
        want = _PREDICATES[name]
        if len(args) != want:
            raise CondError(
                f"predicate '{name}' expects {want} argument(s), got {len(args)}", self.pos - 1
            )
        return args

    def evaluate(self, name: str, args: list[str]) -> bool:
        if name == "defined":
            return args[0] in self.env
        if name == "feature":
            return args[0] in FEATURES
        if name == "streq":
            return args[0] == args[1]
        if name == "strneq":
            return args[0] != args[1]
        if name == "version_atleast":
            return HAPROXY_VERSION >= _version_tuple(args[0])
        return HAPROXY_VERSION < _version_tuple(args[0])


def eval_condition(text: str, env: Mapping[str, str]) -> bool:
    """Evaluate a `.if` condition as haproxy 2.6 does; raises CondError when unparsable.

    An empty condition is false (configuration.txt §2.4).
    """
    if not text.strip():
        return False
    parser = _CondParser(text, env)
    value = parser.expr()
    parser.skip()
    if parser.pos < len(text):
        raise CondError(
            f"unexpected character '{text[parser.pos]}' at the end of conditional expression",
            parser.pos,
        )
    return value


# --------------------------------------------------------------------------
# the lexer over a whole file
# --------------------------------------------------------------------------


@dataclass
class _Block:
    taken: bool  # a branch of this .if was already taken (or the parent is skipped)
    active: bool  # lines in the current branch are used
    seen_else: bool
    span: Span


class Lexer:
    """Yields the statements of one file; `section` is kept current by the parser
    so that "${.SECTION}" expands to the section being read."""

    def __init__(self, text: str, file: str, env: Mapping[str, str], diags: Diagnostics) -> None:
        self.text = text
        self.file = file
        self.env = env
        self.diags = diags
        self.section = ""
        self.stopped = False  # an .alert ends the file, as in haproxy

    def lines(self) -> Iterator[Line]:
        """Yield each active statement; preprocessor lines are consumed here."""
        blocks: list[_Block] = []
        # "\n" only, as haproxy's fgets(): str.splitlines() would also cut at \x0b,
        # \x0c, \x1c-\x1e, \x85 and U+2028/9, shifting every later line number and
        # turning the end of a comment into a statement.
        for lineno, raw in enumerate(self.text.split("\n"), start=1):
            raw = raw.removesuffix("\r")
            if self.stopped:
                return
            span = Span(self.file, lineno, 1)
            pseudo = {".FILE": self.file, ".LINE": str(lineno), ".SECTION": self.section}
            try:
                words, cols = split_words(raw, self.env, pseudo)
            except LexError as exc:
                self.diags.error(Span(self.file, lineno, exc.col), exc.message)
                continue
            if not words:
                continue
            first_col = cols[0]
            span = Span(self.file, lineno, first_col)
            line = Line(tuple(words), tuple(cols), span, raw)
            active = all(b.active for b in blocks)
            head = words[0]
            if head.startswith(".") and self._directive(line, blocks, active):
                continue
            if not active:
                continue
            if len(words) > MAX_LINE_ARGS:
                self.diags.error(
                    line.at(MAX_LINE_ARGS),
                    f"too many words, truncating after word {MAX_LINE_ARGS}",
                )
                line = Line(line.words[:MAX_LINE_ARGS], line.cols[:MAX_LINE_ARGS], span, raw)
            yield line
        for block in blocks:
            self.diags.error(block.span, "non-terminated '.if' block")

    def _directive(self, line: Line, blocks: list[_Block], active: bool) -> bool:
        """Handle a preprocessor line; False when `line` is not one."""
        head = line.words[0]
        span = line.span
        if head in (".if", ".elif"):
            text = " ".join(line.words[1:])
            cond = False
            parent_active = all(b.active for b in blocks[:-1]) if head == ".elif" else active
            if parent_active:
                try:
                    cond = eval_condition(text, self.env)
                except CondError as exc:
                    col = line.cols[1] + exc.pos if len(line.cols) > 1 else span.col
                    self.diags.error(
                        Span(self.file, span.line, col),
                        f"{exc.message} '{text}' in '{head}'",
                    )
            if head == ".if":
                blocks.append(_Block(taken=cond or not active, active=cond and active,
                                     seen_else=False, span=span))
                return True
            if not blocks or blocks[-1].seen_else:
                what = "lone '.elif' with no matching '.if'" if not blocks else "'.elif' after '.else'"
                self.diags.error(span, what)
                return True
            block = blocks[-1]
            block.active = cond and not block.taken
            block.taken = block.taken or cond
            return True
        if head in (".else", ".endif") and len(line.words) > 1:
            self.diags.error(line.at(1), f"unexpected argument '{line.words[1]}' for '{head}'")
            return True
        if head in (".diag", ".notice", ".warning", ".alert") and len(line.words) > 2:
            self.diags.error(line.at(2), f"unexpected argument '{line.words[2]}' for '{head}'; "
                             "use quotes if the message should contain spaces")
            return True
        if head == ".else":
            if not blocks or blocks[-1].seen_else:
                what = "lone '.else' with no matching '.if'" if not blocks else "'.else' after '.else'"
                self.diags.error(span, what)
                return True
            block = blocks[-1]
            block.active = not block.taken
            block.taken = True
            block.seen_else = True
            return True
        if head == ".endif":
            if not blocks:
                self.diags.error(span, "lone '.endif' with no matching '.if'")
            else:
                blocks.pop()
            return True
        if head in (".diag", ".notice", ".warning", ".alert"):
            if not active:
                return True
            message = " ".join(line.words[1:])
            if head == ".warning":
                self.diags.warning(span, message)
            elif head == ".notice":
                self.diags.note(span, message)
            elif head == ".alert":
                self.diags.error(span, message)
                self.stopped = True
            return True
        if not active:
            return True
        self.diags.error(span, f"unknown directive '{head}'")
        return True
