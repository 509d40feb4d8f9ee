"""What the demo measured, as numbers, a PNG timeline and a markdown page.

Pure functions over plain records (client attempts, VIP samples, scenario
bands) so that they can be tested without a lab.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from keeplb.lab.client import Attempt

__all__ = ["Band", "BandSummary", "holder_at", "render_markdown", "render_png", "summarize"]


@dataclass
class Band:
    """One scenario's time span (monotonic seconds)."""

    name: str
    start: float
    end: float = 0.0
    note: str = ""


@dataclass(frozen=True)
class BandSummary:
    """The numbers the summary table shows for one scenario."""

    name: str
    seconds: float
    attempts: int
    failed: int
    longest_gap_ms: float
    master_start: str
    master_end: str
    moved_at: float | None  # seconds after the band start when the VIP first moved
    failed_after_move: int
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def holder_at(samples: Sequence[tuple[float, str]], t: float) -> str:
    """Who held the VIP at time ``t``, from time-ordered ``(t, holder)`` samples."""
    i = bisect.bisect_right([s[0] for s in samples], t) - 1
    return samples[i][1] if i >= 0 else "none"


def summarize(
    bands: Sequence[Band],
    attempts: Sequence[Attempt],
    samples: Sequence[tuple[float, str]],
) -> list[BandSummary]:
    """Per band: attempts and failures started in it; the longest time in
    which no attempt succeeded (between two successive successful
    completions: the outage a client sees), counted in the band that holds
    the gap's midpoint; the VIP holder at both ends, when it first moved and
    how many attempts failed that started after that moment."""
    ok_ends = sorted(a.t + a.d for a in attempts if a.ok)
    gaps = list(zip(ok_ends, ok_ends[1:], strict=False))
    out: list[BandSummary] = []
    for band in bands:
        end = band.end or (samples[-1][0] if samples else band.start)
        in_band = [a for a in attempts if band.start <= a.t < end]
        band_gaps = [b - a for a, b in gaps if band.start <= (a + b) / 2 < end]
        start_holder = holder_at(samples, band.start)
        moved: float | None = None
        for t, h in samples:
            if band.start <= t < end and h != start_holder and h not in ("none", ""):
                moved = t
                break
        after = [a for a in in_band if not a.ok and moved is not None and a.t >= moved]
        out.append(
            BandSummary(
                name=band.name,
                seconds=round(end - band.start, 1),
                attempts=len(in_band),
                failed=sum(not a.ok for a in in_band),
                longest_gap_ms=round(max(band_gaps, default=0.0) * 1000, 1),
                master_start=start_holder,
                master_end=holder_at(samples, end),
                moved_at=None if moved is None else round(moved - band.start, 2),
                failed_after_move=len(after),
                note=band.note,
            )
        )
    return out


def render_png(
    path: Path,
    t0: float,
    bands: Sequence[Band],
    attempts: Sequence[Attempt],
    samples: Sequence[tuple[float, str]],
    title: str,
) -> None:
    """Timeline: client successes/failures per 100 ms, the VIP holder, and
    the scenarios as shaded bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max([b.end for b in bands] + [s[0] for s in samples[-1:]] + [t0 + 1.0])
    nbins = max(1, int((end - t0) / 0.1) + 1)
    ok = [0] * nbins
    slow = [0] * nbins
    bad = [0] * nbins
    for a in attempts:
        i = int((a.t - t0) / 0.1)
        if 0 <= i < nbins:
            # A success that took > 0.5 s lost its first SYN (retransmitted
            # after 1 s): the client saw the outage even though it succeeded.
            (bad if not a.ok else slow if a.d > 0.5 else ok)[i] += 1
    xs = [i * 0.1 for i in range(nbins)]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(13, 5.5), sharex=True, height_ratios=[3, 1.3])
    ax1.bar(xs, ok, width=0.1, color="#2a9d4b", label="ok", align="edge")
    ax1.bar(xs, slow, width=0.1, bottom=ok, color="#f4a261", label="ok after > 0.5 s", align="edge")
    stacked = [x + y for x, y in zip(ok, slow, strict=True)]
    ax1.bar(xs, bad, width=0.1, bottom=stacked, color="#d62828", label="failed", align="edge")
    ax1.set_xlabel("")
    ax1.set_ylabel("attempts started / 100 ms")
    ax1.legend(loc="upper right", fontsize=8)
    ax1.set_title(title, fontsize=10)
    names = sorted({h for _, h in samples} | {"none"})
    level = {n: i for i, n in enumerate(names)}
    if samples:
        ts = [s[0] - t0 for s in samples] + [end - t0]
        ys = [level[s[1]] for s in samples] + [level[samples[-1][1]]]
        ax2.step(ts, ys, where="post", color="#1d3557")
    ax2.set_yticks(range(len(names)), names)
    ax2.set_ylabel("VIP on")
    ax2.set_xlabel("seconds since the client started")
    palette = ["#e9ecef", "#dee2e6"]
    for i, band in enumerate(bands):
        b_end = (band.end or end) - t0
        for ax in (ax1, ax2):
            ax.axvspan(band.start - t0, b_end, color=palette[i % 2], zorder=0)
        ax1.text(band.start - t0 + 0.2, 0.98, band.name, transform=ax1.get_xaxis_transform(),
                 fontsize=7, va="top", rotation=90)
    ax2.set_xlim(0, end - t0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_markdown(
    summaries: Sequence[BandSummary],
    *,
    impl: str,
    png: Path | None,
    diffs: dict[str, str],
    totals: dict[str, Any],
) -> str:
    """The report page: summary table, totals, and the configs' diffs."""
    lines = [
        f"# keeplb demo report (impl: {impl})",
        "",
        f"Client: {totals.get('attempts', 0)} attempts, {totals.get('failed', 0)} failed, "
        f"one new TLS connection to the VIP every 10 ms.",
        "",
    ]
    if png is not None:
        lines += [f"![timeline]({png.name})", ""]
    lines += [
        "| scenario | seconds | attempts | failed | longest gap (ms) | VIP before | VIP after | moved after (s) | failed after move | note |",
        "|---|---:|---:|---:|---:|---|---|---:|---:|---|",
    ]
    for s in summaries:
        moved = "" if s.moved_at is None else f"{s.moved_at:.2f}"
        lines.append(
            f"| {s.name} | {s.seconds} | {s.attempts} | {s.failed} | {s.longest_gap_ms:.0f} | "
            f"{s.master_start} | {s.master_end} | {moved} | {s.failed_after_move} | {s.note} |"
        )
    lines.append("")
    for name, diff in diffs.items():
        lines += [f"## {name} against the seed", "", "```diff", diff.rstrip("\n"), "```", ""]
    return "\n".join(lines)
