"""Fixtures for the lab and demo tests: skip without root or iproute2."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from keeplb.lab.netns import Lab


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (ip)")


@pytest.fixture
def lab() -> Iterator[Lab]:
    _need_root()
    with Lab(prefix="klb", subnet="10.77.0.0/24") as lb:
        yield lb
