"""The load balancer: pure balancers and health counter; the relay lives in proxy.py.

Only the pure parts are imported here: importing keeplb.lb never starts a loop.
"""

from keeplb.lb import native

native.load()  # before anything imports the relay: never a stale compiled one

from keeplb.lb.balance import BALANCERS  # noqa: E402, BalancedServer, Balancer, make_balancer
from keeplb.lb.health import CheckStatus  # noqa: E402, Health, slowstart_weight

__all__ = [
    "BALANCERS",
    "BalancedServer",
    "Balancer",
    "CheckStatus",
    "Health",
    "make_balancer",
    "slowstart_weight",
]
