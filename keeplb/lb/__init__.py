"""The load balancer: pure balancers and health counter; the relay lives in proxy.py.

Only the pure parts are imported here: importing keeplb.lb never starts a loop.
"""

from keeplb.lb.balance import BALANCERS, BalancedServer, Balancer, make_balancer
from keeplb.lb.health import CheckStatus, Health, slowstart_weight

__all__ = [
    "BALANCERS",
    "BalancedServer",
    "Balancer",
    "CheckStatus",
    "Health",
    "make_balancer",
    "slowstart_weight",
]
