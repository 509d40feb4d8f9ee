"""ACL pattern files: `acl allowed src -f /etc/haproxy/allow.lst`.

haproxy 2.6 reads a pattern file when it parses the ACL (pat_ref_read_from_file):
one pattern per line; a line whose first character is '#' is a comment; spaces
and tabs at the start of a line are dropped, the line ends at its first CR or
LF, and what is left empty is skipped. Spaces at the end stay part of the
pattern (haproxy then refuses '10.0.0.1 ' as an address, and so does keeplb).
A file is read again on every start and reload, as haproxy does.

keeplb expands the files into the ACL's own values at parse time, so every
later step (checks, the relay's matchers) sees one list of patterns; each
value keeps where it came from, for haproxy's "at line N of file 'F'".
"""

from __future__ import annotations

from dataclasses import replace

from keeplb.config.model import Acl

# A pattern file larger than this is refused rather than read into memory.
MAX_PATTERN_FILE_BYTES = 64 * 1024 * 1024


def pattern_lines(text: str) -> list[tuple[int, str]]:
    """(line number, pattern) of each pattern in a file's text."""
    found: list[tuple[int, str]] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if raw.startswith("#"):
            continue
        pattern = raw.lstrip(" \t").split("\r", 1)[0]
        if pattern:
            found.append((number, pattern))
    return found


def read_pattern_file(path: str) -> list[tuple[int, str]]:
    """The patterns of `path`; OSError when it cannot be read (or is too big)."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_PATTERN_FILE_BYTES + 1)
    if len(data) > MAX_PATTERN_FILE_BYTES:
        raise OSError(f"larger than {MAX_PATTERN_FILE_BYTES} bytes")
    return pattern_lines(data.decode("utf-8", "surrogateescape"))


def load_pattern_files(acl: Acl) -> tuple[Acl, list[str], str | None]:
    """`acl` with each `-f FILE` flag replaced by FILE's patterns (before the
    patterns written on the line), where each value came from (" at line N of
    file 'F'", or "" for a value on the line), and haproxy's error for a file
    it cannot open (then `acl` comes back unchanged)."""
    flags = list(acl.flags)
    if "-f" not in flags:
        return acl, [""] * len(acl.values), None
    kept: list[str] = []
    values: list[str] = []
    where: list[str] = []
    i = 0
    while i < len(flags):
        flag = flags[i]
        if flag == "-f" and i + 1 < len(flags):
            path = flags[i + 1]
            try:
                lines = read_pattern_file(path)
            except (OSError, ValueError):
                return acl, [""] * len(acl.values), f"failed to open pattern file <{path}>"
            values += [p for _, p in lines]
            where += [f" at line {n} of file '{path}'" for n, _ in lines]
            i += 2
            continue
        kept.append(flag)
        if flag in ("-m", "-M") and i + 1 < len(flags):
            kept.append(flags[i + 1])
            i += 1
        i += 1
    values += acl.values
    where += [""] * len(acl.values)
    return replace(acl, flags=tuple(kept), values=tuple(values)), where, None
