"""Polling a condition with a bound, for the lab, the tests and the benches."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `pred` until it is true (True) or `timeout` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
