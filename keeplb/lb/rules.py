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
`-f` pattern files, ...) is left out; the config check warns about it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from keeplb.config.haproxy import (
    anonymous_acl,
    condition_acls,
    connection_fetch,
    l4_unsupported,
)
from keeplb.config.model import Acl, Condition, Proxy, TcpRequestConnection

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
    if ref.startswith("{") and not connection_fetch(anonymous_acl(ref).criterion):
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


__all__ = [
    "Address",
    "CompiledRule",
    "ConnectionRules",
    "address",
    "compile_rule",
    "compile_rules",
    "connection_view",
]
