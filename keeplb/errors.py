"""The exceptions library code raises; only cli.py turns them into exit codes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keeplb.config.diagnostics import Diagnostic
    from keeplb.vrrp.packet import DropReason


class KeeplbError(Exception):
    """Base of every error keeplb raises on purpose."""


class ConfigError(KeeplbError):
    """A configuration could not be loaded; `diagnostics` says why, with locations."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics) or "invalid configuration")


class ProtocolError(KeeplbError):
    """Input from the network that does not follow the protocol."""


class MalformedPacket(ProtocolError):
    """A VRRP packet that must be dropped; `reason` is the counter label."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class NetlinkOpError(KeeplbError):
    """A netlink request failed; `errno` is pyroute2's NetlinkError.code."""

    def __init__(self, errno: int, message: str = "") -> None:
        self.errno = errno
        super().__init__(message or f"netlink error {errno}")
