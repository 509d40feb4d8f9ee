"""Shared fixtures for tests that need root and network namespaces.

Every test gets its own `Lab` (unique namespace names with prefix `klb`, a
private bridge, 10.77.0.0/24); the lab is torn down, processes included,
whatever the test's outcome.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from keeplb.lab.netns import Lab


def need_root() -> None:
    """Skips the calling test when namespaces cannot be made here."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (ip)")


@pytest.fixture
def lab() -> Iterator[Lab]:
    need_root()
    with Lab(prefix="klb", subnet="10.77.0.0/24") as made:
        yield made
