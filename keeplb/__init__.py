"""keeplb: the job of keepalived + HAProxy in one tool."""

from keeplb.errors import ConfigError, KeeplbError, MalformedPacket, NetlinkOpError, ProtocolError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "KeeplbError",
    "MalformedPacket",
    "NetlinkOpError",
    "ProtocolError",
    "__version__",
]
