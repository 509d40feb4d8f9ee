"""`tcp-request connection accept|reject` rules: the decision on a connection
right after accept(), before it becomes a session.

    rules = compile_rules(frontend_config, compile_condition)   # once, None if none apply
    rules.decide(src, dst) -> bool                               # True: accept

Pure: addresses come in as (host, port) tuples, the decision goes out as a
bool; the relay (proxy.py) does the accounting and closes a rejected
connection. Conditions are compiled by the relay's layer-4 ACLs (the
`compile_condition` of keeplb.lb.proxy, the one use_backend uses), passed in
so that this module imports no IO.

haproxy 2.6 semantics (tcp_exec_l4_rules): rules run in declaration order,
those inherited from a defaults section first; the first accept or reject
whose condition holds decides; none: accept. An ACL on a fetch haproxy cannot
evaluate at that point (a payload, a header, ...) never matches (haproxy
warns), so `reject unless { req.len gt 0 }` rejects everything, as there. A
rule keeplb cannot evaluate as haproxy would (src_is_local, stick counters,
`-M` map files, ...) is left out; the config check warns about it. Pattern
files (`-f`) are read into the ACL's values when the config is parsed
(keeplb.config.patterns).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from keeplb.config.haproxy import (
    anonymous_acl,
    condition_acls,
    connection_fetch,
    fetch_keyword,
    int_patterns,
    l4_unsupported,
    written_anonymous_acl,
)
from keeplb.config.model import (
    Acl,
    Condition,
    Proxy,
    TcpRequestConnection,
    UseBackend,
)
from keeplb.lb.sni import Sample, payload, req_len, ssl_hello_type, ssl_sni

Address = tuple[str, int]
Matcher = Callable[[Address, Address], bool]
Terms = tuple[tuple[tuple[bool, Matcher], ...], ...]
"""An OR of ANDs of (negated, matcher), as keeplb.lb.proxy.compile_condition makes them."""
CompileCondition = Callable[[Condition | None, Sequence[Acl]], tuple[Terms, bool] | None]

_NEVER = "{ always_false }"


def holds(terms: Terms, negate: bool, src: Address, dst: Address) -> bool:
    """A compiled `if` (negate False) or `unless` condition, on one connection."""
    hit = any(all(m(src, dst) != neg for neg, m in conj) for conj in terms)
    return hit != negate


@dataclass(frozen=True, slots=True)
class CompiledRule:
    accept: bool
    terms: Terms
    negate: bool  # 'unless'

    def matches(self, src: Address, dst: Address) -> bool:
        return holds(self.terms, self.negate, src, dst)


class ConnectionRules:
    """The compiled rules of one frontend."""

    __slots__ = ("rules",)

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules = tuple(rules)

    def decide(self, src: Address, dst: Address) -> bool:
        """Called once per accepted connection with its client and local addresses:
        True to accept it, False to reject it."""
        for rule in self.rules:
            if rule.matches(src, dst):
                return rule.accept
        return True


def address(sockaddr: object, default: Address) -> Address:
    """(host, port) of a socket address as accept() / getsockname() give it
    (IPv6 ones have four items); `default` for anything else (a UNIX socket)."""
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return str(sockaddr[0]), int(sockaddr[1])
    return default


def connection_view(cond: Condition, acls: Sequence[Acl]) -> tuple[Condition, list[Acl]] | None:
    """The condition as haproxy evaluates it when a connection is accepted, and the
    named ACLs it uses: an ACL expression on a fetch not available then becomes
    always_false. None when keeplb cannot evaluate it as haproxy does."""
    named: list[Acl] = []
    for name, exprs in condition_acls(cond, acls):
        if not exprs:
            return None
        for e in exprs:
            if connection_fetch(e.criterion) and l4_unsupported(e) is not None:
                return None
        if name and not any(a.name == name for a in named):
            named += [e if connection_fetch(e.criterion) else Acl(name, "always_false", (), ())
                      for e in exprs]
    terms = tuple(tuple(_anonymous_at_accept(word) for word in conj) for conj in cond.terms)
    return Condition(cond.negate, terms, cond.text), named


def _anonymous_at_accept(word: str) -> str:
    """A condition word, its anonymous ACL made always_false if haproxy cannot
    evaluate its fetch when a connection is accepted."""
    ref = word.lstrip("!")
    if ref.startswith("{") and not connection_fetch(written_anonymous_acl(ref).criterion):
        return word[: len(word) - len(ref)] + _NEVER
    return word


def compile_rule(rule: TcpRequestConnection, acls: Sequence[Acl],
                 compile_condition: CompileCondition) -> CompiledRule | None:
    """One rule, with the ACLs of the section it was written in; None if keeplb
    cannot evaluate it (the config check has warned)."""
    cond: Condition | None = None
    used: Sequence[Acl] = ()
    if rule.condition is not None:
        view = connection_view(rule.condition, rule.acls if rule.acls is not None else acls)
        if view is None:
            return None
        cond, used = view
    compiled = compile_condition(cond, used)
    if compiled is None:
        return None
    return CompiledRule(rule.action == "accept", compiled[0], compiled[1])


def compile_rules(cfg: Proxy, compile_condition: CompileCondition) -> ConnectionRules | None:
    """Called once when a frontend is built: its rules, or None when it has none that
    keeplb applies (the relay then tests one attribute per connection)."""
    out = []
    for rule in cfg.tcp_request_connection:
        compiled = compile_rule(rule, cfg.acls, compile_condition)
        if compiled is not None:
            out.append(compiled)
    return ConnectionRules(out) if out else None


# --------------------------------------------------------------------------
# `tcp-request content` rules and the use_backend rules evaluated after them
# --------------------------------------------------------------------------
#
# haproxy 2.6 (tcp_inspect_request, acl_exec_cond): a condition on the request's
# content is three-valued. A fetch that cannot answer yet (too little data, the
# sample "may change") makes its ACL MISS instead of FAIL while the inspection
# is not final; the rule then waits for more data. The inspection is final once
# `tcp-request inspect-delay` has expired (or none is set), the client has shut
# its side, or the buffer is full; then MISS cannot happen and a fetch that
# still cannot answer is false. AND and OR are bitwise on FAIL=0, MISS=1,
# PASS=3, '!' swaps PASS and FAIL and keeps MISS. Rules run in order from the
# first one every time data comes in; the first accept or reject whose
# condition holds decides; none: the request goes on (accept). use_backend
# comes after, with the same data, always final (process_switching_rules).

FAIL, MISS, PASS = 0, 1, 3
_NEG = (PASS, MISS, 0, FAIL)

ContentMatcher = Callable[[Address, Address, bytes, bool], int]
"""(client address, local address, data so far, final) -> FAIL, MISS or PASS."""
ContentTerms = tuple[tuple[tuple[bool, ContentMatcher], ...], ...]
CompileL4 = Callable[[Acl], Matcher | None]
"""keeplb.lb.proxy's compiler of one layer-4 ACL expression."""


def content_result(terms: ContentTerms, src: Address, dst: Address, data: bytes,
                   final: bool) -> int:
    """The three-valued result of a condition's terms, before if/unless (acl_exec_cond)."""
    cond = FAIL
    for conj in terms:
        suite = PASS
        for neg, m in conj:
            r = m(src, dst, data, final)
            suite &= _NEG[r] if neg else r
            if suite == FAIL:
                break
        cond |= suite
        if cond == PASS:
            break
    return cond


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

Fetch = Callable[[bytes], Sample]

# fetch keyword -> (fetch, its sample type: its default match method)
_INT_FETCHES: dict[str, Fetch] = {
    "req.len": req_len, "req_len": req_len,
    "req.ssl_hello_type": ssl_hello_type, "req_ssl_hello_type": ssl_hello_type,
}
_STR_FETCHES: dict[str, Fetch] = {"req.ssl_sni": ssl_sni, "req_ssl_sni": ssl_sni}
CONTENT_FETCHES = frozenset({*_INT_FETCHES, *_STR_FETCHES, "req.payload", "payload"})
"""The fetches keeplb evaluates on a request's content (besides the layer-4 ones)."""
_PAYLOAD = re.compile(r"(req\.payload|payload)\((\d+),(\d+)\)")

Predicate = Callable[[object], bool]


def _match_flags(flags: Sequence[str]) -> tuple[str | None, bool] | None:
    """(match method or None for the fetch's default, -i) of an ACL's flags; None
    for a flag keeplb does not apply (-f, -M, -u, ...)."""
    method: str | None = None
    icase = False
    i = 0
    while i < len(flags):
        f = flags[i]
        if f == "-i":
            icase = True
        elif f == "-m" and i + 1 < len(flags):
            method = flags[i + 1]
            i += 1
        elif f != "--":
            return None
        i += 1
    return method, icase


def _str_predicate(method: str, icase: bool, values: Sequence[str]) -> Predicate | None:
    fold: Callable[[str], str] = (lambda v: v.translate(_ASCII_LOWER)) if icase else str
    pats = [fold(v) for v in values]
    if method == "str":
        return lambda v: isinstance(v, str) and fold(v) in pats
    if method == "beg":
        return lambda v: isinstance(v, str) and any(fold(v).startswith(p) for p in pats)
    if method == "end":
        return lambda v: isinstance(v, str) and any(fold(v).endswith(p) for p in pats)
    if method == "sub":
        return lambda v: isinstance(v, str) and any(p in fold(v) for p in pats)
    if method == "reg":
        try:
            regs = [re.compile(v, re.IGNORECASE if icase else 0) for v in values]
        except re.error:
            return None
        return lambda v: isinstance(v, str) and any(r.search(v) for r in regs)
    return None


def _int_predicate(values: Sequence[str]) -> Predicate | None:
    ranges, err = int_patterns(values)
    if err is not None:
        return None
    bounds = [(-(1 << 63) if lo is None else lo, 1 << 63 if hi is None else hi)
              for lo, hi in ranges]
    return lambda v: isinstance(v, int) and any(lo <= v <= hi for lo, hi in bounds)


def _bin_predicate(values: Sequence[str]) -> Predicate | None:
    try:
        pats = [bytes.fromhex(v) for v in values]
    except ValueError:
        return None
    return lambda v: isinstance(v, bytes) and v in pats


def _found(value: object) -> bool:
    return True


def _sample_matcher(fetch: Fetch, test: Predicate) -> ContentMatcher:
    def match(src: Address, dst: Address, data: bytes, final: bool) -> int:
        value, may_change = fetch(data)
        if value is not None and test(value):
            return PASS
        return MISS if may_change and not final else FAIL
    return match


def content_expr(acl: Acl, compile_l4: CompileL4) -> ContentMatcher | None:
    """One ACL expression in a content condition, or None when keeplb cannot
    evaluate it as haproxy does (a fetch, converter or flag it lacks)."""
    base = fetch_keyword(acl.criterion)
    if base not in CONTENT_FETCHES:
        m = compile_l4(acl)
        if m is None:
            return None
        return lambda s, d, data, final: PASS if m(s, d) else FAIL
    got = _match_flags(acl.flags)
    if got is None:
        return None
    method, icase = got
    fetch: Fetch
    if base in _INT_FETCHES:
        if acl.criterion != base:
            return None  # a converter
        fetch, default = _INT_FETCHES[base], "int"
    elif base in _STR_FETCHES:
        if acl.criterion != base:
            return None
        fetch, default = _STR_FETCHES[base], "str"
    else:
        pm = _PAYLOAD.fullmatch(acl.criterion)
        if pm is None:
            return None
        off, ln = int(pm.group(2)), int(pm.group(3))
        fetch, default = (lambda data: payload(data, off, ln)), "bin"
    method = method or default
    test: Predicate | None
    if method == "found":
        test = _found  # a fetched sample is a match
    elif method == "int" and default == "int":
        test = _int_predicate(acl.values)
    elif method == "bin" and default == "bin":
        test = _bin_predicate(acl.values)
    elif default == "str":
        test = _str_predicate(method, icase, acl.values)
    else:
        test = None
    return None if test is None else _sample_matcher(fetch, test)


def _any_content(ms: Sequence[ContentMatcher]) -> ContentMatcher:
    def match(src: Address, dst: Address, data: bytes, final: bool) -> int:
        r = FAIL
        for m in ms:
            r |= m(src, dst, data, final)
            if r == PASS:
                break
        return r
    return match



M = TypeVar("M")


def condition_terms(cond: Condition, named: Mapping[str, M],
                    compile_anon: Callable[[Acl], M | None]
                    ) -> tuple[tuple[tuple[bool, M], ...], ...] | None:
    """A condition's OR of ANDs as (negated, matcher) pairs: a named ACL from
    `named`, an anonymous `{ ... }` one compiled by `compile_anon`; each '!'
    negates, as in haproxy. None when an anonymous ACL cannot be compiled."""
    out: list[tuple[tuple[bool, M], ...]] = []
    for conj in cond.terms:
        items: list[tuple[bool, M]] = []
        for word in conj:
            ref = word.lstrip("!")
            neg = (len(word) - len(ref)) % 2 == 1
            if ref.startswith("{"):
                anon = compile_anon(anonymous_acl(ref))
                if anon is None:
                    return None
                items.append((neg, anon))
            else:
                items.append((neg, named[ref]))
        out.append(tuple(items))
    return tuple(out)

def compile_content_condition(cond: Condition | None, acls: Sequence[Acl],
                              compile_l4: CompileL4) -> tuple[ContentTerms, bool] | None:
    """(terms, negate) of a condition on a request's content, or None when keeplb
    cannot evaluate it (the config check has warned that the rule is ignored)."""
    if cond is None:
        return (((False, lambda s, d, data, final: PASS),),), False
    named: dict[str, ContentMatcher] = {}
    for name, exprs in condition_acls(cond, acls):
        if not name or name in named:
            continue
        ms = [content_expr(e, compile_l4) for e in exprs]
        if not ms or any(m is None for m in ms):
            return None
        # several `acl` lines with one name are OR-ed (haproxy)
        named[name] = _any_content([m for m in ms if m is not None])
    terms = condition_terms(cond, named, lambda acl: content_expr(acl, compile_l4))
    return None if terms is None else (terms, cond.negate)


def content_unsupported(cond: Condition, acls: Sequence[Acl],
                        compile_l4: CompileL4) -> bool:
    """Whether keeplb cannot evaluate a content condition (for the config check)."""
    return compile_content_condition(cond, acls, compile_l4) is None


@dataclass(frozen=True, slots=True)
class ContentRule:
    accept: bool
    terms: ContentTerms
    negate: bool


@dataclass(frozen=True, slots=True)
class ContentRoute:
    backend: str
    terms: ContentTerms
    negate: bool


class ContentRules:
    """The `tcp-request content` rules of one frontend, its `tcp-request
    inspect-delay` (seconds, 0: none), and its use_backend rules as they are
    evaluated after the content rules."""

    __slots__ = ("rules", "inspect_delay", "routes")

    def __init__(self, rules: Sequence[ContentRule], inspect_delay: float,
                 routes: Sequence[ContentRoute]) -> None:
        self.rules = tuple(rules)
        self.inspect_delay = inspect_delay
        self.routes = tuple(routes)

    def decide(self, src: Address, dst: Address, data: bytes, final: bool) -> bool | None:
        """Called when a session starts and each time data comes in while it waits:
        True to go on (accept), False to reject, None to wait for more data (never
        when `final`)."""
        for rule in self.rules:
            r = content_result(rule.terms, src, dst, data, final)
            if r == MISS:
                return None
            if (r == PASS) != rule.negate:
                return rule.accept
        return True

    def route(self, src: Address, dst: Address, data: bytes) -> str | None:
        """The backend of the first use_backend rule that matches, or None."""
        for r in self.routes:
            if (content_result(r.terms, src, dst, data, True) == PASS) != r.negate:
                return r.backend
        return None


def compile_content_rules(cfg: Proxy, compile_l4: CompileL4,
                          backends: Sequence[str]) -> ContentRules | None:
    """Called once when a frontend is built: its content rules, or None when it
    has none that keeplb applies (the session then starts as without them)."""
    rules: list[ContentRule] = []
    for rule in cfg.tcp_request_content:
        got = compile_content_condition(rule.condition, rule.acls if rule.acls is not None
                                        else cfg.acls, compile_l4)
        if got is not None:
            rules.append(ContentRule(rule.action == "accept", got[0], got[1]))
    if not rules:
        return None
    routes: list[ContentRoute] = []
    for ub in cfg.use_backends:
        routed = _content_route(ub, cfg.acls, compile_l4)
        if routed is not None and ub.backend in backends:
            routes.append(routed)
    return ContentRules(rules, cfg.timeouts.get("inspect-delay", 0) / 1000, routes)


def _content_route(ub: UseBackend, acls: Sequence[Acl], compile_l4: CompileL4
                   ) -> ContentRoute | None:
    got = compile_content_condition(ub.condition, acls, compile_l4)
    return None if got is None else ContentRoute(ub.backend, got[0], got[1])


__all__ = [
    "CONTENT_FETCHES",
    "FAIL",
    "MISS",
    "PASS",
    "Address",
    "CompiledRule",
    "ConnectionRules",
    "ContentRoute",
    "ContentRule",
    "ContentRules",
    "address",
    "compile_content_condition",
    "compile_content_rules",
    "compile_rule",
    "compile_rules",
    "connection_view",
    "content_expr",
    "content_result",
    "content_unsupported",
]
