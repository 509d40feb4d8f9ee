"""The keepalived.conf lexer: files -> a tree of located statements.

keepalived 2.2.7's reading rules, which this module follows:

- A word is a run of non-blank characters; "double quotes" make one word of
  text with blanks in it (the quotes are dropped). `{` and `}` outside quotes
  are words of their own, so `virtual_ipaddress { 10.0.0.1 }` is one line.
- `#` or `!` outside quotes begins a comment, also inside a word
  (`priority 100#x` is `priority 100`).
- `$NAME=value` on a line of its own (no blank before '=') defines NAME.
  Later `${NAME}` anywhere and `$NAME` up to the next blank are replaced by
  the value; an undefined name is left as it is.
- `@id rest` keeps `rest` only when `id` is one of the config ids (keepalived
  -i), `@^id rest` only when it is not; also right after a brace, where
  keepalived starts a new line.
- `include PATTERN` reads the files matching the glob, relative to the
  directory of the including file, in sorted order. A pattern without glob
  characters that matches nothing is reported; a glob that matches nothing is
  not (keepalived says nothing either). An include of a file already being
  read is a loop, reported and skipped. keepalived -t passes a config whose
  includes are missing or loop, so these are warnings, not errors.

The lexer never raises on bad input: problems become diagnostics and it keeps
going, so that one run reports everything.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from keeplb.config.diagnostics import Diagnostics, Span

MAX_INCLUDE_DEPTH = 32
MAX_FILE_BYTES = 16 * 1024 * 1024

_DEFINITION = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_GLOB_CHARS = frozenset("*?[")


@dataclass
class Node:
    """One statement: its words, where it starts, and its `{ }` block if it has one.

    `children` is None for a plain line and a list (maybe empty) for a block.
    `cols` holds the 1-based column of each word, for precise diagnostics.
    """

    words: list[str]
    span: Span
    cols: list[int] = field(default_factory=list)
    children: list[Node] | None = None
    open_span: Span | None = None

    @property
    def keyword(self) -> str:
        return self.words[0] if self.words else ""

    @property
    def args(self) -> list[str]:
        return self.words[1:]

    def word_span(self, index: int) -> Span:
        """The span of word `index`, or of the statement when there is no such word."""
        if 0 <= index < len(self.cols):
            return Span(self.span.file, self.span.line, self.cols[index])
        return self.span


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    col: int
    quoted: bool


@dataclass
class _Line:
    tokens: list[_Token]
    file: str
    line: int


class _Reader:
    """Reads a main file and its includes into located token lines."""

    def __init__(self, defines: Sequence[str], diags: Diagnostics) -> None:
        self.defines = frozenset(defines)
        self.diags = diags
        self.definitions: dict[str, str] = {}
        self.stack: list[str] = []
        self.files: list[str] = []
        self.lines: list[_Line] = []

    def read_file(self, path: str, where: Span | None) -> bool:
        """Read `path` (and what it includes); False when it could not be opened."""
        real = os.path.realpath(path)
        if real in self.stack:
            chain = " -> ".join([*self.stack[self.stack.index(real) :], real])
            # keepalived only notices when it runs out of file descriptors, and then
            # skips the file without failing -t: a warning keeps the same verdict.
            self.diags.warning(where, f"include loop: {chain}; include skipped")
            return True
        if len(self.stack) >= MAX_INCLUDE_DEPTH:
            self.diags.error(
                where, f"includes nested deeper than {MAX_INCLUDE_DEPTH}; '{path}' skipped"
            )
            return True
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if where is None:
                self.diags.error(where, f"cannot open configuration file '{path}': {reason}")
            else:
                # keepalived -t reports "Config files missing" for an include and passes.
                self.diags.warning(where, f"cannot open included file '{path}': {reason}; skipped")
            return False
        if len(data) > MAX_FILE_BYTES:
            self.diags.error(
                where, f"configuration file '{path}' is larger than {MAX_FILE_BYTES} bytes"
            )
            return False
        text = data.decode("utf-8", errors="replace")
        if "\0" in text:
            self.diags.error(Span(path, 1), f"'{path}' is not a text file (it contains NUL bytes)")
            return False
        self.files.append(path)
        self.stack.append(real)
        try:
            # "\n" only, as keepalived reads lines: str.splitlines() would also cut
            # at \x0b, \x0c, \x85 or U+2028 and shift every later line number.
            for number, raw in enumerate(text.split("\n"), start=1):
                self._line(path, number, raw)
        finally:
            self.stack.pop()
        return True

    def _line(self, path: str, number: int, raw: str) -> None:
        col0 = len(raw) - len(raw.lstrip())
        body = raw.strip()
        if not body:
            return
        if body.startswith("@"):
            parts = body.split(None, 1)
            if not self._selected(parts[0]):
                return
            rest = parts[1] if len(parts) > 1 else ""
            col0 += len(body) - len(rest)
            body = rest.strip()
            if not body:
                return
        definition = _DEFINITION.match(body)
        if definition:
            self.definitions[definition.group(1)] = self._substitute(definition.group(2).strip())
            return
        if "$" in body:
            body = self._substitute(body)
        tokens = self._conditions_after_braces(self._tokenize(body, path, number, col0))
        if tokens and tokens[0].text == "include" and not tokens[0].quoted:
            self._include(tokens, path, number)
            return
        if tokens:
            self.lines.append(_Line(tokens, path, number))

    def _selected(self, marker: str) -> bool:
        """Whether an `@id` / `@^id` condition keeps what follows it."""
        negate = marker.startswith("@^")
        return ((marker[2:] if negate else marker[1:]) in self.defines) != negate

    def _conditions_after_braces(self, tokens: list[_Token]) -> list[_Token]:
        """keepalived reads the text after a brace as a new line, `@id` condition included."""
        out: list[_Token] = []
        start = False  # the previous token was a brace
        skipping = False
        for tok in tokens:
            brace = not tok.quoted and tok.text in "{}"
            if brace:
                skipping = False
                out.append(tok)
                start = True
                continue
            if start and not tok.quoted and tok.text.startswith("@"):
                skipping = not self._selected(tok.text)
                start = False
                continue
            start = False
            if not skipping:
                out.append(tok)
        return out

    def _substitute(self, text: str) -> str:
        text = _BRACED.sub(lambda m: self.definitions.get(m.group(1), m.group(0)), text)
        if "$" not in text:
            return text
        # `$NAME` runs to the next blank, as in keepalived: `$VIP/24` looks up 'VIP/24'.
        out = []
        for piece in re.split(r"(\s+)", text):
            if piece.startswith("$") and piece[1:] in self.definitions:
                out.append(self.definitions[piece[1:]])
                continue
            dollar = piece.find("$")
            if dollar > 0 and piece[dollar + 1 :] in self.definitions:
                out.append(piece[:dollar] + self.definitions[piece[dollar + 1 :]])
                continue
            out.append(piece)
        return "".join(out)

    def _tokenize(self, body: str, path: str, number: int, col0: int) -> list[_Token]:
        tokens: list[_Token] = []
        i = 0
        n = len(body)
        while i < n:
            c = body[i]
            if c.isspace():
                i += 1
                continue
            if c in "#!":
                break
            if c in "{}":
                tokens.append(_Token(c, col0 + i + 1, False))
                i += 1
                continue
            if c == '"':
                end = body.find('"', i + 1)
                if end < 0:
                    self.diags.error(
                        Span(path, number, col0 + i + 1),
                        f"unterminated quote in '{body}'; line ignored",
                        hint='close the string with "',
                    )
                    # keepalived drops the whole line, and so does keeplb.
                    return []
                tokens.append(_Token(body[i + 1 : end], col0 + i + 1, True))
                i = end + 1
                continue
            start = i
            while i < n and not body[i].isspace() and body[i] not in '{}"#!':
                i += 1
            tokens.append(_Token(body[start:i], col0 + start + 1, False))
        return tokens

    def _include(self, tokens: list[_Token], path: str, number: int) -> None:
        where = Span(path, number, tokens[0].col)
        if len(tokens) < 2:
            self.diags.error(where, "'include' needs a file name or pattern")
            return
        for token in tokens[1:]:
            pattern = token.text
            if not os.path.isabs(pattern):
                pattern = os.path.join(os.path.dirname(path) or ".", pattern)
            if any(ch in _GLOB_CHARS for ch in pattern):
                for match in sorted(glob.glob(pattern)):
                    self.read_file(match, where)
            else:
                self.read_file(pattern, Span(path, number, token.col))


class _TreeBuilder:
    """Turns token lines into nested statements; `{`/`}` may sit anywhere on a line."""

    def __init__(self, diags: Diagnostics) -> None:
        self.diags = diags
        self.root = Node([], Span("", 0), children=[])
        self.stack: list[Node] = [self.root]
        self.pending: Node | None = None  # a statement a `{` on the next line would open

    def _flush(self, words: list[_Token], line: _Line) -> Node | None:
        if not words:
            return None
        node = Node(
            [t.text for t in words],
            Span(line.file, line.line, words[0].col),
            [t.col for t in words],
        )
        children = self.stack[-1].children
        assert children is not None  # only blocks are ever pushed
        children.append(node)
        words.clear()
        return node

    def line(self, line: _Line) -> None:
        words: list[_Token] = []
        for tok in line.tokens:
            if tok.quoted or tok.text not in "{}":
                words.append(tok)
                continue
            brace = Span(line.file, line.line, tok.col)
            if tok.text == "{":
                owner = self._flush(words, line)
                if owner is None and self.pending is not None and self.pending.children is None:
                    owner = self.pending
                if owner is None or owner.children is not None:
                    self.diags.error(
                        brace, "unexpected '{' (no keyword opens this block); block ignored"
                    )
                    owner = Node(["{"], brace, [tok.col])  # absorbs the block's lines
                owner.children = []
                owner.open_span = brace
                self.stack.append(owner)
            else:
                self._flush(words, line)
                if len(self.stack) == 1:
                    self.diags.error(brace, "extra '}' (no block is open here)")
                else:
                    self.stack.pop()
            self.pending = None
        last = self._flush(words, line)
        if last is not None:
            self.pending = last

    def finish(self) -> list[Node]:
        while len(self.stack) > 1:
            node = self.stack.pop()
            self.diags.error(
                node.open_span or node.span,
                f"missing '}}': block '{' '.join(node.words[:2])}' opened here is never closed",
            )
        assert self.root.children is not None
        return self.root.children


def _build_tree(lines: list[_Line], diags: Diagnostics) -> list[Node]:
    builder = _TreeBuilder(diags)
    for line in lines:
        builder.line(line)
    return builder.finish()


def read(
    path: str,
    defines: Sequence[str],
    diags: Diagnostics,
    env: Mapping[str, str] | None = None,
) -> tuple[list[Node], list[str], bool]:
    """Read `path` and its includes into a tree of statements.

    Returns (top-level nodes, files read, whether the main file could be opened).
    Never raises on bad input; every problem is appended to `diags`.
    """
    del env  # keepalived does not expand environment variables in its config
    reader = _Reader(defines, diags)
    opened = reader.read_file(path, None)
    return _build_tree(reader.lines, diags), reader.files, opened
