"""Located diagnostics, printed the way a compiler prints them."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum


class Severity(Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Span:
    """Where a config node came from: file name as given, 1-based line and column."""

    file: str
    line: int
    col: int = 0

    def __str__(self) -> str:
        if self.col:
            return f"{self.file}:{self.line}:{self.col}"
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    span: Span | None
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.span}: " if self.span else ""
        text = f"{where}{self.severity.value}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


class Diagnostics(list[Diagnostic]):
    """A collector parsers append to; they keep going after an error and never print."""

    def error(self, span: Span | None, message: str, hint: str | None = None) -> None:
        self.append(Diagnostic(Severity.ERROR, span, message, hint))

    def warning(self, span: Span | None, message: str, hint: str | None = None) -> None:
        self.append(Diagnostic(Severity.WARNING, span, message, hint))

    def note(self, span: Span | None, message: str, hint: str | None = None) -> None:
        self.append(Diagnostic(Severity.NOTE, span, message, hint))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self if d.severity is Severity.WARNING]

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' suffix for an unknown keyword, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f"did you mean '{close[0]}'?" if close else None
