"""VRRP (RFC 3768 v2, RFC 5798 v3): the pure codec, timers and state machine.

The IO shell (net.py, daemon.py) is not imported here: importing keeplb.vrrp
never opens a socket.
"""

from keeplb.vrrp.machine import InstanceParams, State, VrrpMachine
from keeplb.vrrp.packet import Advertisement, DropReason, decode, encode, validate
from keeplb.vrrp.timers import master_down_interval, skew_time

__all__ = [
    "Advertisement",
    "DropReason",
    "InstanceParams",
    "State",
    "VrrpMachine",
    "decode",
    "encode",
    "master_down_interval",
    "skew_time",
    "validate",
]
