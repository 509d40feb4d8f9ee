"""keeplb_vrrp_* Prometheus families, from the VRRP daemon's status.

The VRRP daemon (daemon.py) exposes `status() -> dict` with this shape; this
module reads nothing else (it may come over a pipe from the VRRP process in
`keeplb run`, so it is plain JSON-able data):

    {
      "instances": [
        {
          "name": "VI_1",                  # vrrp_instance name (required)
          "vrid": 51,                      # optional
          "interface": "eth0",             # optional
          "version": 2,                    # optional, 2 or 3
          "state": "MASTER",               # INIT | BACKUP | MASTER | FAULT | STOP
          "base_priority": 100,            # configured priority
          "effective_priority": 98,        # after track_script/track_interface weights
          "master_address": "10.77.0.2",   # current master as seen here; None if unknown
          "adverts_sent": 1234,            # advertisements sent
          "adverts_received": 1200,        # advertisements received and accepted
          "drops": {"ttl": 0, "auth": 3},  # dropped packets by DropReason value
          "transitions": 5,                # state changes since start
        },
      ],
      "drops": {"vrid": 7},                # optional: dropped before an instance
                                           # could be found (unknown VRID, bad header)
    }

Missing counters count as 0; an instance without a name is skipped; unknown
keys are ignored, so the daemon may add fields freely.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

VRRP_STATES = ("INIT", "BACKUP", "MASTER", "FAULT", "STOP")

VrrpStatus = Mapping[str, Any]


def _int(value: object) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return 0.0


def _instances(status: VrrpStatus | None) -> list[Mapping[str, Any]]:
    if not status:
        return []
    raw = status.get("instances", [])
    if not isinstance(raw, list | tuple):
        return []
    return [i for i in raw if isinstance(i, Mapping) and i.get("name")]


def vrrp_families(status: VrrpStatus | None) -> Iterator[Metric]:
    """The keeplb_vrrp_* families for one status snapshot (see the module docstring)."""
    instances = _instances(status)
    state = GaugeMetricFamily(
        "keeplb_vrrp_state", "Current VRRP state of the instance, per state label value.",
        labels=["instance", "state"])
    prio = GaugeMetricFamily(
        "keeplb_vrrp_priority",
        "Effective priority of the instance (base priority adjusted by tracking weights).",
        labels=["instance"])
    base = GaugeMetricFamily(
        "keeplb_vrrp_base_priority", "Configured priority of the instance.",
        labels=["instance"])
    info = GaugeMetricFamily(
        "keeplb_vrrp_instance_info",
        "Static facts about the instance (always 1): VRID, interface, VRRP version.",
        labels=["instance", "vrid", "interface", "version"])
    master = GaugeMetricFamily(
        "keeplb_vrrp_master_info",
        "The router this instance sees as master (always 1 when known).",
        labels=["instance", "master_address"])
    sent = CounterMetricFamily(
        "keeplb_vrrp_adverts_sent", "Advertisements sent by the instance.",
        labels=["instance"])
    recv = CounterMetricFamily(
        "keeplb_vrrp_adverts_received", "Advertisements received and accepted by the instance.",
        labels=["instance"])
    drops = CounterMetricFamily(
        "keeplb_vrrp_packets_dropped", "VRRP packets dropped, by reason.",
        labels=["instance", "reason"])
    trans = CounterMetricFamily(
        "keeplb_vrrp_transitions", "State transitions of the instance since start.",
        labels=["instance"])
    unmatched = CounterMetricFamily(
        "keeplb_vrrp_unmatched_packets_dropped",
        "VRRP packets dropped before they could be matched to an instance, by reason.",
        labels=["reason"])
    daemon_drops = status.get("drops") if status else None
    if isinstance(daemon_drops, Mapping):
        for reason, n in sorted(daemon_drops.items(), key=lambda kv: str(kv[0])):
            unmatched.add_metric([str(getattr(reason, "value", reason))], _int(n))
    for inst in instances:
        name = str(inst["name"])
        cur = str(inst.get("state", "")).upper()
        for s in VRRP_STATES:
            state.add_metric([name, s], 1.0 if cur == s else 0.0)
        prio.add_metric([name], _int(inst.get("effective_priority", inst.get("base_priority"))))
        base.add_metric([name], _int(inst.get("base_priority")))
        info.add_metric([name, str(inst.get("vrid", "")), str(inst.get("interface", "") or ""),
                         str(inst.get("version", "") or "")], 1.0)
        if inst.get("master_address"):
            master.add_metric([name, str(inst["master_address"])], 1.0)
        sent.add_metric([name], _int(inst.get("adverts_sent")))
        recv.add_metric([name], _int(inst.get("adverts_received")))
        reasons = inst.get("drops") or {}
        if isinstance(reasons, Mapping):
            for reason, n in sorted(reasons.items(), key=lambda kv: str(kv[0])):
                drops.add_metric([name, str(getattr(reason, "value", reason))], _int(n))
        trans.add_metric([name], _int(inst.get("transitions")))
    yield from (state, prio, base, info, master, sent, recv, drops, trans, unmatched)


class VrrpCollector:
    """A prometheus-client collector calling `status_fn()` at each scrape."""

    def __init__(self, status_fn: Any) -> None:
        self.status_fn = status_fn

    def collect(self) -> Iterator[Metric]:
        yield from vrrp_families(self.status_fn())


def render_vrrp_metrics(status: VrrpStatus | None) -> bytes:
    """Text exposition of the keeplb_vrrp_* families alone (`keeplb vrrp`'s exporter)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VrrpCollector(lambda: status))
    return generate_latest(registry)


__all__ = ["VRRP_STATES", "VrrpCollector", "render_vrrp_metrics", "vrrp_families"]
