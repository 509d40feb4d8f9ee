"""Load-balancing algorithms, one class per algorithm behind one interface
(haproxy's `struct lb_ops`, include/haproxy/backend-t.h).

Pure: no socket, no clock. Servers are identified by name. Every balancer
starts with all its servers DOWN; the caller marks them up (`set_up`) when a
check says so, or at start for servers without checks.

Weights are integers in whatever unit the caller picks, as long as it is the
same for every server of one balancer: only the ratios matter. The app uses
haproxy's scale (`uweight * BE_WEIGHT_SCALE`, see health.py) so that a
slowstart ramp of a weight-1 server has steps finer than 0 and 1.

Backup servers (`backup`) are used only when no active server is usable; then
only the first usable backup in server order, or all of them with
`option allbackups` (haproxy's `fbck` / PR_O_USE_ALL_BK).

Call order on the hot path: `pick()` when a connection needs a server,
`take_conn()` once it is assigned to that server, `drop_conn()` when it ends.
Only leastconn and first read the connection counts.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from keeplb.config import model

# Ring points per unit of weight for `hash-type consistent`. haproxy uses
# BE_WEIGHT_SCALE (16) per unit; more points give a smoother share per server
# (the fraction of keys that move when one server leaves stays close to 1/N).
CHASH_POINTS_PER_WEIGHT = 64


@dataclass(frozen=True, slots=True)
class BalancedServer:
    """What a balancer needs to know about one server, in server (id) order."""

    name: str
    weight: int
    backup: bool = False
    maxconn: int = 0  # 0: no limit (read by `balance first` only)


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Balancer:
    """haproxy's lb_ops, the operations the relay and the checks call, and the
    bookkeeping all algorithms share: up/down, weights, counts, backups. A base
    class, not a Protocol: compiled, the relay's calls go straight to it."""

    algorithm: ClassVar[str] = ""
    _dynamic: ClassVar[bool] = True

    @property
    def dynamic(self) -> bool:
        """True when weights may change at run time (slowstart, `set server weight`).
        A static balancer only accepts 0 or the initial weight (haproxy's BE_LB_PROP_DYN)."""
        return self._dynamic

    def __init__(self, servers: Sequence[BalancedServer], *, allbackups: bool = False) -> None:
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError("duplicate server names in one balancer")
        self._order: list[str] = names
        self._pos: dict[str, int] = {s.name: i for i, s in enumerate(servers)}
        self._initial: dict[str, int] = {s.name: max(0, s.weight) for s in servers}
        self._weight: dict[str, int] = dict(self._initial)
        self._backup: dict[str, bool] = {s.name: s.backup for s in servers}
        self._maxconn: dict[str, int] = {s.name: s.maxconn for s in servers}
        self._conns: dict[str, int] = {s.name: 0 for s in servers}
        self._up: set[str] = set()
        self._allbackups = allbackups
        self._pool: list[str] | None = None

    # -- lb_ops ----------------------------------------------------------

    def set_up(self, name: str) -> None:
        """The server may be selected (its check passed, or it has no check)."""
        self._known(name)
        if name not in self._up:
            self._up.add(name)
            self._changed()

    def set_down(self, name: str) -> None:
        """The server must not be selected any more (check failed, MAINT, DRAIN)."""
        self._known(name)
        if name in self._up:
            self._up.discard(name)
            self._changed()

    def update_weight(self, name: str, weight: int) -> None:
        """New effective weight, applied at once; 0 makes the server not selectable."""
        self._known(name)
        weight = max(0, weight)
        if not self.dynamic and weight != 0:
            # haproxy: a static algorithm only knows 0% and 100% of the initial weight.
            weight = self._initial[name]
        if self._weight[name] != weight:
            self._weight[name] = weight
            self._changed()

    def take_conn(self, name: str) -> None:
        """A connection was assigned to the server."""
        self._known(name)
        self._conns[name] += 1

    def drop_conn(self, name: str) -> None:
        """A connection to the server ended."""
        self._known(name)
        if self._conns[name] > 0:
            self._conns[name] -= 1

    def pick(self, key: bytes | None = None, avoid: str | None = None) -> str | None:
        """The server for a new connection, or None when no server is usable.

        `key` is the hashed input (client address bytes for `balance source`).
        `avoid` is a server that just failed (redispatch): it is chosen only
        when it is the one usable server left.
        """
        pool = self.usable()
        if not pool:
            return None
        if avoid is not None and len(pool) > 1 and avoid in pool:
            return self._choose(pool, key, avoid)
        return self._choose(pool, key, None)

    def usable(self) -> list[str]:
        """The servers pick() currently chooses among, in server order."""
        if self._pool is None:
            self._pool = self._compute_pool()
        return self._pool

    # -- helpers ---------------------------------------------------------

    def weight(self, name: str) -> int:
        """The effective weight the balancer uses for `name`."""
        self._known(name)
        return self._weight[name]

    def conns(self, name: str) -> int:
        self._known(name)
        return self._conns[name]

    def _known(self, name: str) -> None:
        if name not in self._pos:
            raise KeyError(f"no server '{name}' in this balancer")

    def _compute_pool(self) -> list[str]:
        ok = [n for n in self._order if n in self._up and self._weight[n] > 0]
        active = [n for n in ok if not self._backup[n]]
        if active:
            return active
        backups = [n for n in ok if self._backup[n]]
        if self._allbackups:
            return backups
        return backups[:1]

    def _changed(self) -> None:
        self._pool = None
        self._pool_changed()

    def _pool_changed(self) -> None:
        """Hook: the usable set or a weight changed."""

    def _choose(self, pool: list[str], key: bytes | None, avoid: str | None) -> str:
        raise NotImplementedError


class RoundRobin(Balancer):
    """`balance roundrobin`: smooth weighted round-robin, dynamic.

    haproxy's fwrr (src/lb_fwrr.c) spreads each server's turns evenly over a
    cycle of sum(weights) picks. The smooth WRR used here has the same
    properties: over every cycle each server is picked exactly `weight` times,
    and the picks of a heavy server are interleaved with the others. Any
    change of the usable set or of a weight starts a new cycle at once.
    """

    algorithm = "roundrobin"
    _dynamic = True

    def __init__(self, servers: Sequence[BalancedServer], *, allbackups: bool = False) -> None:
        super().__init__(servers, allbackups=allbackups)
        self._current: dict[str, int] = {}

    def _pool_changed(self) -> None:
        self._current = {}

    def _choose(self, pool: list[str], key: bytes | None, avoid: str | None) -> str:
        current = self._current
        total = 0
        best: str | None = None
        best_val = 0
        for name in pool:
            w = self._weight[name]
            total += w
            val = current.get(name, 0) + w
            current[name] = val
            if name != avoid and (best is None or val > best_val):
                best, best_val = name, val
        assert best is not None  # pool is non-empty and avoid leaves at least one
        current[best] = best_val - total
        return best


class StaticRoundRobin(RoundRobin):
    """`balance static-rr`: the same turns as roundrobin, static weights.

    haproxy: "changing a server's weight on the fly will have no effect";
    `set server weight` accepts only 0% and 100% of the initial weight, and
    slowstart does not apply.
    """

    algorithm = "static-rr"
    _dynamic = False


class LeastConn(Balancer):
    """`balance leastconn`: fewest current connections per unit of weight.

    Among servers with the same load the one picked least recently wins, so
    equal servers take turns (haproxy's fwlc requeues a server behind its
    equals each time it is used).
    """

    algorithm = "leastconn"
    _dynamic = True

    def __init__(self, servers: Sequence[BalancedServer], *, allbackups: bool = False) -> None:
        super().__init__(servers, allbackups=allbackups)
        self._seq = 0
        self._last: dict[str, int] = {s.name: 0 for s in servers}

    def _choose(self, pool: list[str], key: bytes | None, avoid: str | None) -> str:
        best: str | None = None
        best_key: tuple[int, int, int] = (0, 0, 0)
        for name in pool:
            if name == avoid:
                continue
            w = self._weight[name]
            c = self._conns[name]
            if best is None:
                best, best_key = name, (c, w, self._last[name])
                continue
            bc, bw, blast = best_key
            # c/w < bc/bw without floats
            lhs, rhs = c * bw, bc * w
            if lhs < rhs or (lhs == rhs and self._last[name] < blast):
                best, best_key = name, (c, w, self._last[name])
        assert best is not None
        self._seq += 1
        self._last[best] = self._seq
        return best


class First(Balancer):
    """`balance first`: the first server in id order that has a free slot.

    A server is full when its connection count reached its `maxconn`
    (0: never full). When every usable server is full, pick() returns None
    and the caller queues, as haproxy does in the backend queue.
    """

    algorithm = "first"
    _dynamic = True

    def _choose(self, pool: list[str], key: bytes | None, avoid: str | None) -> str:
        for name in pool:
            if name == avoid:
                continue
            limit = self._maxconn[name]
            if limit <= 0 or self._conns[name] < limit:
                return name
        raise _AllFull

    def pick(self, key: bytes | None = None, avoid: str | None = None) -> str | None:
        try:
            return super().pick(key, avoid)
        except _AllFull:
            return None


class _AllFull(Exception):
    pass


class Source(Balancer):
    """`balance source`: a hash of the client address picks the server.

    `hash-type map-based` (the default): the hash modulo the weighted server
    table; static, and any change of the usable set remaps most keys.
    `hash-type consistent`: a ring where each server owns points in
    proportion to its weight; when a server leaves only its own keys move
    (about 1/N of them). Consistent hashing is dynamic.
    Without a key (a UNIX socket client) it falls back to round-robin, as
    haproxy does.
    """

    algorithm = "source"

    def __init__(
        self,
        servers: Sequence[BalancedServer],
        *,
        allbackups: bool = False,
        hash_type: str = "map-based",
    ) -> None:
        super().__init__(servers, allbackups=allbackups)
        if hash_type not in ("map-based", "consistent"):
            raise ValueError(f"unknown hash-type '{hash_type}'")
        self.hash_type = hash_type
        self._rr = RoundRobin(servers, allbackups=allbackups)
        self._table: list[str] | None = None
        self._ring_keys: list[int] = []
        self._ring_names: list[str] = []
        self._ring_ok = False
        self._points: dict[tuple[str, int], list[int]] = {}

    @property
    def dynamic(self) -> bool:
        return self.hash_type == "consistent"

    # The fallback round-robin follows the same states.
    def set_up(self, name: str) -> None:
        super().set_up(name)
        self._rr.set_up(name)

    def set_down(self, name: str) -> None:
        super().set_down(name)
        self._rr.set_down(name)

    def update_weight(self, name: str, weight: int) -> None:
        super().update_weight(name, weight)
        self._rr.update_weight(name, self._weight[name])

    def _pool_changed(self) -> None:
        self._table = None
        self._ring_ok = False

    def _choose(self, pool: list[str], key: bytes | None, avoid: str | None) -> str:
        if key is None:
            picked = self._rr.pick(None, avoid)
            assert picked is not None
            return picked
        h = _hash64(key)
        if self.hash_type == "consistent":
            return self._ring_lookup(pool, h, avoid)
        table = self._map_table(pool)
        i = h % len(table)
        for step in range(len(table)):
            name = table[(i + step) % len(table)]
            if name != avoid:
                return name
        return table[i]

    def _map_table(self, pool: list[str]) -> list[str]:
        if self._table is None:
            # The smooth WRR order interleaves heavy servers, like haproxy's lb_map.
            rr = RoundRobin([BalancedServer(n, self._weight[n]) for n in pool])
            for n in pool:
                rr.set_up(n)
            total = sum(self._weight[n] for n in pool)
            self._table = [rr.pick() or pool[0] for _ in range(total)]
        return self._table

    def _server_points(self, name: str, weight: int) -> list[int]:
        cached = self._points.get((name, weight))
        if cached is None:
            seed = name.encode()
            cached = [
                _hash64(seed + b"#" + i.to_bytes(4, "big"))
                for i in range(weight * CHASH_POINTS_PER_WEIGHT)
            ]
            self._points[(name, weight)] = cached
        return cached

    def _ring_lookup(self, pool: list[str], h: int, avoid: str | None) -> str:
        if not self._ring_ok:
            ring: list[tuple[int, str]] = []
            for n in pool:
                ring.extend((p, n) for p in self._server_points(n, self._weight[n]))
            ring.sort()
            self._ring_keys = [p for p, _ in ring]
            self._ring_names = [n for _, n in ring]
            self._ring_ok = True
        keys, names = self._ring_keys, self._ring_names
        i = bisect.bisect_left(keys, h) % len(keys)
        for step in range(len(keys)):
            name = names[(i + step) % len(keys)]
            if name != avoid:
                return name
        return names[i]


class Random(Balancer):
    """`balance random[(draws)]`: weighted random choice, dynamic.

    Each draw takes a server with a probability proportional to its weight;
    with `draws` > 1 (haproxy's default is 2, "power of two choices") the
    least loaded of the drawn servers (connections per unit of weight) wins,
    as in haproxy's get_server_rnd(). The random source is an argument so
    tests can seed it.
    """

    algorithm = "random"
    _dynamic = True

    def __init__(self, servers: Sequence[BalancedServer], *, allbackups: bool = False,
                 draws: int = 2, rng: random.Random | None = None) -> None:
        super().__init__(servers, allbackups=allbackups)
        self.draws = max(1, draws)
        self._rng = rng or random.Random()

    def _choose(self, pool: list[str], key: bytes | None, avoid: str | None) -> str:
        cands = [n for n in pool if n != avoid]
        weights = [self._weight[n] for n in cands]
        best: str | None = None
        for _ in range(self.draws):
            cur = self._rng.choices(cands, weights)[0]
            if best is not None and best != cur and (
                    self._conns[cur] * self._weight[best] > self._conns[best] * self._weight[cur]):
                continue
            best = cur
        assert best is not None
        return best


BALANCERS: dict[str, type[Balancer]] = {
    "roundrobin": RoundRobin,
    "static-rr": StaticRoundRobin,
    "leastconn": LeastConn,
    "first": First,
    "source": Source,
    "random": Random,
}


def make_balancer(
    balance: model.Balance,
    servers: Sequence[BalancedServer],
    *,
    allbackups: bool = False,
    rng: random.Random | None = None,
) -> Balancer:
    """The balancer for a backend's `balance` line.

    Raises ValueError for an algorithm keeplb does not implement; the config
    checker reports those as warnings and the app falls back to roundrobin
    (`make_balancer(model.Balance(), ...)`).
    """
    algo, _, inline = balance.algorithm.partition("(")
    if algo == "source":
        return Source(servers, allbackups=allbackups, hash_type=balance.hash_type)
    if algo == "random":
        arg = (balance.argument or inline.rstrip(")") or "2").strip()
        draws = int(arg) if arg.isdigit() else 2
        return Random(servers, allbackups=allbackups, draws=draws, rng=rng)
    cls = BALANCERS.get(algo)
    if cls is None:
        raise ValueError(f"balance algorithm '{algo}' is not supported by keeplb")
    return cls(servers, allbackups=allbackups)


def weight_change_error(balancer: Balancer, initial: int, weight: int) -> str | None:
    """haproxy's refusal for `set server B/S weight W` on a static algorithm, or None.

    `initial` is the server's configured weight (iweight).
    """
    if not balancer.dynamic and weight != 0 and weight != initial:
        return (
            "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'."
        )
    return None


def servers_of(names_weights: Iterable[tuple[str, int]]) -> list[BalancedServer]:
    """Shorthand for tests and tools: active servers from (name, weight) pairs."""
    return [BalancedServer(n, w) for n, w in names_weights]


__all__ = [
    "BALANCERS",
    "BalancedServer",
    "Balancer",
    "First",
    "LeastConn",
    "Random",
    "RoundRobin",
    "Source",
    "StaticRoundRobin",
    "make_balancer",
    "servers_of",
    "weight_change_error",
]
