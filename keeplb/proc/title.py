"""Process titles ('keeplb: lb master', 'keeplb: lb worker 1', 'keeplb: vrrp')."""

from __future__ import annotations

import setproctitle


def set_title(title: str) -> None:
    setproctitle.setproctitle(f"keeplb: {title}")
