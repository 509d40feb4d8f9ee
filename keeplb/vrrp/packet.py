"""VRRP advertisement codec: RFC 3768 (VRRPv2) and RFC 5798 (VRRPv3), pure.

`buf` is always the VRRP message (the IP payload); the IO shell strips the IP
header and passes what the codec cannot see in it: the address family, the
source and destination addresses (for the v3 pseudo-header) and the TTL or
hop limit. Nothing here guesses: the family is an argument and every count is
checked against the length before it is used.

Two layers of checks, as keepalived's vrrp_check_packet() has them:

* `decode` makes the checks every receiver makes (TTL, version, type,
  length against count, checksum, family) and raises MalformedPacket.
* `validate` makes the checks that depend on the receiving instance (VRID,
  version, authentication, v2 interval, address list) and raises
  MalformedPacket too; the shell counts both the same way, by `reason`.

Intervals inside keeplb are integer centiseconds (v3's unit); v2 carries
whole seconds on the wire and is converted here, at the codec boundary only.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import Enum

from keeplb.errors import MalformedPacket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

VRRP_PROTO = 112
VRRP_TTL = 255
TYPE_ADVERTISEMENT = 1

AUTH_NONE = 0
AUTH_PASS = 1  # RFC 2338 "Simple Text Password"; RFC 3768 keeps the field
AUTH_AH = 2  # IPsec AH: keepalived's legacy option, refused by keeplb
AUTH_DATA_LEN = 8

HEADER_LEN = 8
V3_MAX_ADVER_INT_CS = 0x0FFF  # 12 bits (RFC 5798 §5.2.7)
V2_MAX_ADVER_INT_S = 0xFF  # 8 bits (RFC 3768 §5.3.7)

_AUTH_TYPES = {"PASS": AUTH_PASS, "AH": AUTH_AH}


class DropReason(Enum):
    """Why a received packet was dropped; the value is the Prometheus label."""

    TRUNCATED = "truncated"  # shorter than the fixed header
    TTL = "ttl"  # TTL / hop limit is not 255 (RFC 5798 §7.1)
    VERSION = "version"  # not 2 or 3, or not this instance's version
    TYPE = "type"  # not an ADVERTISEMENT
    VRID = "vrid"  # VRID 0, or for another instance
    CHECKSUM = "checksum"
    LENGTH = "length"  # length does not match the address count
    ADDR_COUNT = "addr_count"  # count differs from the configured addresses
    ADDR_LIST = "addr_list"  # addresses differ from the configured ones
    AUTH = "auth"  # authentication type or password mismatch
    AUTH_TYPE = "auth_type"  # AH (or an unknown type) that keeplb refuses
    INTERVAL = "interval"  # v2 advert_int mismatch, or a zero interval
    FAMILY = "family"  # addresses or family inconsistent, v2 over IPv6
    UNICAST_SRC = "unicast_src"  # vrrp_check_unicast_src: the source is not a unicast_peer


@dataclass(frozen=True, slots=True)
class Advertisement:
    """One VRRP ADVERTISEMENT, version-neutral.

    `max_adver_int_cs` is in centiseconds for both versions (v2's seconds are
    multiplied by 100 when decoded). `auth_type`/`auth_data` only exist on the
    v2 wire; `auth_data` is the password without its NUL padding.
    """

    version: int
    vrid: int
    priority: int
    max_adver_int_cs: int
    addresses: tuple[IPAddress, ...]
    auth_type: int = AUTH_NONE
    auth_data: bytes = b""


def auth_type_code(name: str | None) -> int:
    """Map keepalived's `auth_type` word ('PASS', 'AH', or None) to the wire value."""
    if name is None:
        return AUTH_NONE
    return _AUTH_TYPES.get(name.upper(), AUTH_NONE)


def pad_auth_pass(password: str | bytes | None) -> bytes:
    """The 8 bytes keepalived puts on the wire for `auth_pass`: truncated, NUL padded."""
    if password is None:
        return bytes(AUTH_DATA_LEN)
    raw = password.encode() if isinstance(password, str) else password
    return raw[:AUTH_DATA_LEN].ljust(AUTH_DATA_LEN, b"\0")


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement checksum of `data` (odd lengths padded with a zero)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(family: int, src: IPAddress, dst: IPAddress, length: int) -> bytes:
    # RFC 5798 §5.2.8: v3 sums the IPv4 or IPv6 pseudo-header (RFC 8200 §8.1) too.
    if family == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, VRRP_PROTO, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, VRRP_PROTO)


def _checksum(version: int, family: int, src: IPAddress, dst: IPAddress, msg: bytes) -> int:
    if version == 3:
        return internet_checksum(_pseudo_header(family, src, dst, len(msg)) + msg)
    return internet_checksum(msg)  # RFC 3768 §5.3.8: the VRRP message only


def _check_family(family: int, src: IPAddress, dst: IPAddress) -> None:
    if family not in (4, 6):
        raise MalformedPacket(DropReason.FAMILY, f"address family {family} is not 4 or 6")
    if src.version != family or dst.version != family:
        raise MalformedPacket(
            DropReason.FAMILY, f"source {src} / destination {dst} are not IPv{family}"
        )


def decode(
    buf: bytes | bytearray | memoryview,
    *,
    family: int,
    src: IPAddress,
    dst: IPAddress,
    ttl: int | None,
) -> Advertisement:
    """Decode the VRRP message `buf` received from `src` to `dst`.

    Called by the shell for every packet read on a VRRP socket. `ttl` is the IP
    TTL / IPv6 hop limit; pass None where keepalived skips the check (unicast
    peers, whose packets may be routed). Raises MalformedPacket and nothing
    else, whatever `buf` holds; its `detail` has keepalived's wording, to be
    logged after the instance name ("(haproxy-vip) Invalid VRRPv2 checksum").

    keepalived 2.2 can also accept a unicast v3 packet whose checksum was
    computed with 224.0.0.18 as destination (pre-2.0 peers); keeplb does not.
    """
    buf = bytes(buf)  # recvmsg buffers may be views; slices below must be bytes
    _check_family(family, src, dst)
    if ttl is not None and ttl != VRRP_TTL:
        raise MalformedPacket(
            DropReason.TTL, f"invalid TTL/HL. Received {ttl} and expect {VRRP_TTL}"
        )
    if len(buf) < HEADER_LEN:
        raise MalformedPacket(
            DropReason.TRUNCATED,
            f"vrrp packet too short, length {len(buf)} and expect {HEADER_LEN}",
        )
    version, ptype = buf[0] >> 4, buf[0] & 0x0F
    vrid, priority, count = buf[1], buf[2], buf[3]
    if version not in (2, 3):
        raise MalformedPacket(DropReason.VERSION, f"wrong version. Received {version}")
    if ptype != TYPE_ADVERTISEMENT:
        raise MalformedPacket(
            DropReason.TYPE, f"Invalid packet type. {ptype} and expect {TYPE_ADVERTISEMENT}"
        )
    if version == 2 and family != 4:
        # RFC 3768 is IPv4 only; keepalived forces version 3 on an IPv6 instance.
        raise MalformedPacket(DropReason.FAMILY, "VRRPv2 over IPv6")
    if vrid == 0:
        raise MalformedPacket(DropReason.VRID, "VRID 0")
    addr_len = 4 if family == 4 else 16
    expected = HEADER_LEN + count * addr_len + (AUTH_DATA_LEN if version == 2 else 0)
    if len(buf) != expected:
        size = "long" if len(buf) > expected else "short"
        raise MalformedPacket(
            DropReason.LENGTH, f"vrrp packet too {size}, length {len(buf)} and expect {expected}"
        )
    if _checksum(version, family, src, dst, buf) != 0:
        raise MalformedPacket(DropReason.CHECKSUM, f"Invalid VRRPv{version} checksum")
    if version == 2:
        auth_type, interval_cs = buf[4], buf[5] * 100
        end = HEADER_LEN + count * addr_len
        auth_data = buf[end:].rstrip(b"\0")
        if auth_type == AUTH_NONE:
            auth_data = b""
        elif auth_type != AUTH_PASS:
            raise MalformedPacket(DropReason.AUTH_TYPE, f"Invalid auth type: {auth_type}")
    else:
        auth_type, auth_data = AUTH_NONE, b""
        interval_cs = int.from_bytes(buf[4:6], "big") & V3_MAX_ADVER_INT_CS
    if interval_cs == 0:
        raise MalformedPacket(DropReason.INTERVAL, "advertisement interval 0")
    cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    addresses = tuple(
        cls(buf[HEADER_LEN + i * addr_len : HEADER_LEN + (i + 1) * addr_len]) for i in range(count)
    )
    return Advertisement(version, vrid, priority, interval_cs, addresses, auth_type, auth_data)


def validate(
    adv: Advertisement,
    *,
    vrid: int,
    version: int,
    auth_type: int,
    auth_pass: bytes,
    adver_int_cs: int,
    addresses: tuple[IPAddress, ...],
    skip_check_adv_addr: bool,
) -> None:
    """The per-instance checks keepalived makes on a decoded advertisement.

    Called by the shell after `decode`, with the receiving instance's config:
    `auth_pass` as `pad_auth_pass` returns it, `addresses` the configured
    virtual addresses in config order. Pass skip_check_adv_addr=True only when
    keepalived would skip the address check (`vrrp_skip_check_adv_addr` set
    and the advert comes from the master already known). Raises MalformedPacket.
    """
    if adv.vrid != vrid:
        raise MalformedPacket(DropReason.VRID, f"VRID {adv.vrid}, ours {vrid}")
    if adv.version != version:
        raise MalformedPacket(
            DropReason.VERSION, f"wrong version. Received {adv.version} and expect {version}"
        )
    if version == 2:
        if adv.auth_type != auth_type:
            raise MalformedPacket(
                DropReason.AUTH, f"received a {adv.auth_type} auth, expecting {auth_type}!"
            )
        if auth_type == AUTH_PASS and pad_auth_pass(adv.auth_data) != pad_auth_pass(auth_pass):
            raise MalformedPacket(DropReason.AUTH, "received an invalid passwd!")
        if adv.max_adver_int_cs != adver_int_cs:
            # RFC 3768 §7.1: v2 routers must agree on the interval; v3 learns it.
            raise MalformedPacket(
                DropReason.INTERVAL,
                f"advertisement interval mismatch mine={adver_int_cs // 100} sec "
                f"rcv'd={adv.max_adver_int_cs // 100} sec",
            )
    if skip_check_adv_addr:
        return
    if len(adv.addresses) != len(addresses):
        raise MalformedPacket(
            DropReason.ADDR_COUNT,
            f"received an unexpected ip number count {len(adv.addresses)}, expected {len(addresses)}!",
        )
    received = set(adv.addresses)
    for address in addresses:
        if address not in received:
            raise MalformedPacket(
                DropReason.ADDR_LIST,
                f"ip address associated with VRID {vrid} not present in MASTER advert : {address}",
            )


def encode(adv: Advertisement, *, family: int, src: IPAddress, dst: IPAddress) -> bytes:
    """The VRRP message for `adv`, checksum filled in; `adv` is not changed.

    Called by the shell for every SendAdvertisement. Raises ValueError for an
    advertisement no router may send (a programming error, not network input).
    """
    if family not in (4, 6) or src.version != family or dst.version != family:
        raise ValueError(f"family {family} with {src} -> {dst}")
    if adv.version not in (2, 3) or (adv.version == 2 and family != 4):
        raise ValueError(f"VRRP version {adv.version} over IPv{family}")
    if not 1 <= adv.vrid <= 255 or not 0 <= adv.priority <= 255 or len(adv.addresses) > 255:
        raise ValueError(
            f"VRID {adv.vrid}, priority {adv.priority}, {len(adv.addresses)} addresses"
        )
    if any(a.version != family for a in adv.addresses):
        raise ValueError(f"addresses {adv.addresses} are not all IPv{family}")
    head = bytes(
        [(adv.version << 4) | TYPE_ADVERTISEMENT, adv.vrid, adv.priority, len(adv.addresses)]
    )
    body = b"".join(a.packed for a in adv.addresses)
    if adv.version == 2:
        seconds, rest = divmod(adv.max_adver_int_cs, 100)
        if rest or not 1 <= seconds <= V2_MAX_ADVER_INT_S:
            raise ValueError(f"VRRPv2 interval {adv.max_adver_int_cs} cs is not 1..255 s")
        if adv.auth_type not in (AUTH_NONE, AUTH_PASS):
            raise ValueError(f"authentication type {adv.auth_type}")
        head += bytes([adv.auth_type, seconds])
        tail = pad_auth_pass(adv.auth_data if adv.auth_type == AUTH_PASS else None)
    else:
        if not 1 <= adv.max_adver_int_cs <= V3_MAX_ADVER_INT_CS:
            raise ValueError(f"VRRPv3 interval {adv.max_adver_int_cs} cs is not 1..4095")
        head += struct.pack("!H", adv.max_adver_int_cs)
        tail = b""
    msg = head + b"\0\0" + body + tail
    csum = _checksum(adv.version, family, src, dst, msg)
    return msg[:6] + struct.pack("!H", csum) + msg[8:]
