"""The namespace lab itself: hosts reach each other, faults cut them, close cleans up."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from keeplb.lab.netns import Host, Lab, LabError, cleanup_stale, list_labs

pytestmark = pytest.mark.netns


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _ping(host: Host, addr: str) -> bool:
    return host.ping(addr, timeout=1.0)


def test_two_hosts_ping_and_cleanup_leaves_nothing() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    lab = Lab(prefix="klb", subnet="10.77.0.0/24")
    try:
        a = lab.add_host("a", "10.77.0.1/24")
        b = lab.add_host("b", "10.77.0.2/24")
        ours = {lab.switch_ns, a.netns, b.netns}
        assert ours <= _netns_names()
        assert "10.77.0.1/24" in a.addresses()
        assert _ping(a, "10.77.0.2")
        assert _ping(b, "10.77.0.1")
        # A process that detaches from its session must still die with the lab.
        b.run(["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 &"], timeout=5)
        sleeper = a.popen(["sleep", "300"])
    finally:
        lab.close()
    lab.close()  # idempotent
    assert not (ours & _netns_names())
    assert sleeper.poll() is not None
    assert not lab.state_file.exists()


def test_link_down_and_partition(lab: Lab) -> None:
    a = lab.add_host("a", "10.77.0.1/24")
    b = lab.add_host("b", "10.77.0.2/24")
    c = lab.add_host("c", "10.77.0.3/24")
    b.link_down()
    assert not _ping(a, "10.77.0.2")
    b.link_up()
    # The port needs a moment to forward again after carrier returns.
    deadline = time.monotonic() + 5
    while not _ping(a, "10.77.0.2") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _ping(a, "10.77.0.2")

    lab.partition([a], [b])
    assert not _ping(a, "10.77.0.2")
    assert _ping(a, "10.77.0.3") and _ping(b, "10.77.0.3")
    lab.heal()
    assert _ping(a, "10.77.0.2")

    lab.partition([a, c], [b])
    assert not _ping(a, "10.77.0.2")
    assert _ping(a, "10.77.0.3")
    lab.heal()
    assert _ping(c, "10.77.0.2")


def test_bad_host_names_and_addresses_are_refused(lab: Lab) -> None:
    with pytest.raises(LabError, match="outside the lab subnet"):
        lab.add_host("x", "10.78.0.1/24")
    with pytest.raises(LabError, match="host name"):
        lab.add_host("Bad-Name", "10.77.0.5/24")


def test_cleanup_stale_removes_only_abandoned_labs() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    live = Lab(prefix="klbt")
    kept = Lab(prefix="klbt", keep=True)
    try:
        live.add_host("a", "10.77.0.1/24")
        kept.add_host("a", "10.77.0.1/24")
        kept.close()  # left up on purpose, like `keeplb demo --keep`
        ids = {s["id"] for s in list_labs("klbt")}
        assert {live.id, kept.id} <= ids
        assert cleanup_stale("klbt") == []  # live owner, and kept is kept
        removed = cleanup_stale("klbt", include_kept=True)
        assert set(removed) == {kept.switch_ns, f"klbt{kept.id}-a"}
        assert live.switch_ns in _netns_names()
    finally:
        live.close()
        cleanup_stale("klbt", include_kept=True)
    assert not any(n.startswith(f"klbt{kept.id}") for n in _netns_names())
