"""Test helpers for keeplb's sans-IO cores, as a public package (like trio.testing).

FakeClock: virtual monotonic time. SimNet: N VRRP machines on one simulated
segment, driven by a FakeClock, with latency, drops and partitions.
"""

from keeplb.testing.clock import FakeClock
from keeplb.testing.simnet import Delivery, Router, SimNet, vip_addresses

__all__ = ["Delivery", "FakeClock", "Router", "SimNet", "vip_addresses"]
