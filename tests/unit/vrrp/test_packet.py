"""VRRP codec: real keepalived packets, round-trips, checksums, hostile bytes."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeplb.errors import MalformedPacket
from keeplb.vrrp import packet
from keeplb.vrrp.packet import Advertisement, DropReason, decode, encode, validate

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

# Captured with tcpdump from keepalived 2.2.7 (Debian 12) in a private netns
# pair: vrid 60, priority 100, advert_int 1, auth PASS 1111, one VIP. Each is
# the whole IP packet; the VRRP message starts after the IP header.
KEEPALIVED_V2_V4 = bytes.fromhex(
    "45c0002800010000ff70cd430a4d0302e0000012213c640101010a080a4d030a3131313100000000"
)
KEEPALIVED_V3_V4 = bytes.fromhex("45c0002000010000ff70cd4b0a4d0302e0000012313c640100646f290a4d030a")
KEEPALIVED_V3_V6 = bytes.fromhex(
    "6c0595ea001870fffe80000000000000087d8afffe1fad8fff020000000000000000000000000012"
    "313c640100642f89fd770003000000000000000000000010"
)


def test_decode_keepalived_v2_ipv4() -> None:
    adv = decode(
        KEEPALIVED_V2_V4[20:], family=4, src=V4("10.77.3.2"), dst=V4("224.0.0.18"), ttl=255
    )
    assert adv == Advertisement(2, 60, 100, 100, (V4("10.77.3.10"),), packet.AUTH_PASS, b"1111")
    validate(
        adv,
        vrid=60,
        version=2,
        auth_type=packet.auth_type_code("PASS"),
        auth_pass=packet.pad_auth_pass("1111"),
        adver_int_cs=100,
        addresses=(V4("10.77.3.10"),),
        skip_check_adv_addr=False,
    )
    # and keeplb writes the very same bytes
    assert encode(adv, family=4, src=V4("10.77.3.2"), dst=V4("224.0.0.18")) == KEEPALIVED_V2_V4[20:]


def test_decode_keepalived_v3_ipv4_uses_pseudo_header() -> None:
    msg = KEEPALIVED_V3_V4[20:]
    adv = decode(msg, family=4, src=V4("10.77.3.2"), dst=V4("224.0.0.18"), ttl=255)
    assert adv == Advertisement(3, 60, 100, 100, (V4("10.77.3.10"),))
    assert encode(adv, family=4, src=V4("10.77.3.2"), dst=V4("224.0.0.18")) == msg
    with pytest.raises(MalformedPacket) as exc:  # same bytes, another destination
        decode(msg, family=4, src=V4("10.77.3.2"), dst=V4("10.77.3.3"), ttl=255)
    assert exc.value.reason is DropReason.CHECKSUM


def test_decode_keepalived_v3_ipv6() -> None:
    src, dst = V6("fe80::87d:8aff:fe1f:ad8f"), V6("ff02::12")
    msg = KEEPALIVED_V3_V6[40:]
    adv = decode(msg, family=6, src=src, dst=dst, ttl=255)
    assert adv == Advertisement(3, 60, 100, 100, (V6("fd77:3::10"),))
    assert encode(adv, family=6, src=src, dst=dst) == msg


V2_MSG = KEEPALIVED_V2_V4[20:]
SRC4, DST4 = V4("10.77.3.2"), V4("224.0.0.18")


def _with_checksum(msg: bytes) -> bytes:
    """Fix the v2 checksum of a hand-edited message so a later check is reached."""
    zeroed = msg[:6] + b"\0\0" + msg[8:]
    return zeroed[:6] + packet.internet_checksum(zeroed).to_bytes(2, "big") + zeroed[8:]


@pytest.mark.parametrize(
    ("buf", "kwargs", "reason"),
    [
        (V2_MSG, {"ttl": 64}, DropReason.TTL),
        (V2_MSG[:7], {}, DropReason.TRUNCATED),
        (b"", {}, DropReason.TRUNCATED),
        (_with_checksum(bytes([0x41]) + V2_MSG[1:]), {}, DropReason.VERSION),
        (_with_checksum(bytes([0x22]) + V2_MSG[1:]), {}, DropReason.TYPE),
        (_with_checksum(V2_MSG[:1] + b"\0" + V2_MSG[2:]), {}, DropReason.VRID),
        (V2_MSG[:-1], {}, DropReason.LENGTH),
        (V2_MSG + b"\0", {}, DropReason.LENGTH),
        (_with_checksum(V2_MSG[:3] + b"\x02" + V2_MSG[4:]), {}, DropReason.LENGTH),
        (V2_MSG[:8] + b"\x0a\x4d\x03\x0b" + V2_MSG[12:], {}, DropReason.CHECKSUM),
        (_with_checksum(V2_MSG[:4] + b"\x02" + V2_MSG[5:]), {}, DropReason.AUTH_TYPE),
        (_with_checksum(V2_MSG[:5] + b"\x00" + V2_MSG[6:]), {}, DropReason.INTERVAL),
        (V2_MSG, {"family": 6}, DropReason.FAMILY),
        (V2_MSG, {"src": V6("fe80::1")}, DropReason.FAMILY),
    ],
)
def test_decode_drop_reasons(buf: bytes, kwargs: dict[str, object], reason: DropReason) -> None:
    args: dict[str, object] = {"family": 4, "src": SRC4, "dst": DST4, "ttl": 255, **kwargs}
    with pytest.raises(MalformedPacket) as exc:
        decode(buf, **args)  # type: ignore[arg-type]
    assert exc.value.reason is reason


def test_v2_over_ipv6_is_refused() -> None:
    src, dst = V6("fe80::1"), V6("ff02::12")
    adv = Advertisement(2, 1, 100, 100, (V6("fd00::1"),))
    with pytest.raises(ValueError, match="version 2 over IPv6"):
        encode(adv, family=6, src=src, dst=dst)
    v3 = encode(Advertisement(3, 1, 100, 100, (V6("fd00::1"),)), family=6, src=src, dst=dst)
    with pytest.raises(MalformedPacket) as exc:
        decode(bytes([0x21]) + v3[1:] + bytes(8), family=6, src=src, dst=dst, ttl=255)
    assert exc.value.reason is DropReason.FAMILY


def test_unicast_skips_ttl() -> None:
    assert decode(V2_MSG, family=4, src=SRC4, dst=V4("10.77.3.3"), ttl=None).vrid == 60


def test_encode_does_not_mutate_and_pads_password() -> None:
    adv = Advertisement(2, 60, 100, 100, (V4("10.77.3.10"),), packet.AUTH_PASS, b"1111")
    before = repr(adv)
    wire = encode(adv, family=4, src=SRC4, dst=DST4)
    assert repr(adv) == before
    assert wire[-8:] == b"1111\0\0\0\0"


@pytest.mark.parametrize(
    "adv",
    [
        Advertisement(2, 60, 100, 150, (V4("10.0.0.1"),)),  # v2 needs whole seconds
        Advertisement(3, 60, 100, 4096, (V4("10.0.0.1"),)),
        Advertisement(3, 0, 100, 100, (V4("10.0.0.1"),)),
        Advertisement(3, 1, 256, 100, (V4("10.0.0.1"),)),
        Advertisement(3, 1, 100, 100, (V6("fd00::1"),)),  # family mismatch
        Advertisement(2, 1, 100, 100, (V4("10.0.0.1"),), packet.AUTH_AH),
    ],
)
def test_encode_refuses_impossible_adverts(adv: Advertisement) -> None:
    with pytest.raises(ValueError):
        encode(adv, family=4, src=SRC4, dst=DST4)


# ------------------------------------------------------------------ validate

VALID = {
    "vrid": 60,
    "version": 2,
    "auth_type": packet.AUTH_PASS,
    "auth_pass": packet.pad_auth_pass("1111"),
    "adver_int_cs": 100,
    "addresses": (V4("10.77.3.10"),),
    "skip_check_adv_addr": False,
}
BASE = Advertisement(2, 60, 100, 100, (V4("10.77.3.10"),), packet.AUTH_PASS, b"1111")


@pytest.mark.parametrize(
    ("adv", "overrides", "reason"),
    [
        (BASE, {"vrid": 61}, DropReason.VRID),
        (BASE, {"version": 3}, DropReason.VERSION),
        (BASE, {"auth_type": packet.AUTH_NONE}, DropReason.AUTH),
        (BASE, {"auth_pass": packet.pad_auth_pass("2222")}, DropReason.AUTH),
        (BASE, {"adver_int_cs": 200}, DropReason.INTERVAL),
        (BASE, {"addresses": (V4("10.77.3.11"),)}, DropReason.ADDR_LIST),
        (BASE, {"addresses": (V4("10.77.3.10"), V4("10.77.3.11"))}, DropReason.ADDR_COUNT),
    ],
)
def test_validate_drop_reasons(
    adv: Advertisement, overrides: dict[str, object], reason: DropReason
) -> None:
    with pytest.raises(MalformedPacket) as exc:
        validate(adv, **{**VALID, **overrides})  # type: ignore[arg-type]
    assert exc.value.reason is reason


def test_validate_accepts_and_skips() -> None:
    validate(BASE, **VALID)  # type: ignore[arg-type]
    # vrrp_skip_check_adv_addr: a known master's address list is not compared
    validate(BASE, **{**VALID, "addresses": (V4("10.9.9.9"),), "skip_check_adv_addr": True})  # type: ignore[arg-type]
    # v3 learns the interval instead of refusing it
    v3 = Advertisement(3, 60, 100, 250, (V4("10.77.3.10"),))
    validate(v3, **{**VALID, "version": 3, "auth_type": 0})  # type: ignore[arg-type]


def test_drop_reason_values_are_prometheus_labels() -> None:
    values = [r.value for r in DropReason]
    assert len(set(values)) == len(values)
    assert all(v.isidentifier() and v == v.lower() for v in values)


# ------------------------------------------------------------------ properties


@st.composite
def adverts(draw: st.DrawFn) -> tuple[Advertisement, int, V4 | V6, V4 | V6]:
    family = draw(st.sampled_from([4, 6]))
    version = 3 if family == 6 else draw(st.sampled_from([2, 3]))
    addr: st.SearchStrategy[V4 | V6]
    if family == 4:
        addr = st.builds(V4, st.integers(0, 2**32 - 1))
    else:
        addr = st.builds(V6, st.integers(0, 2**128 - 1))
    addresses = tuple(draw(st.lists(addr, max_size=20)))
    if version == 2:
        interval = draw(st.integers(1, 255)) * 100
        auth_type = draw(st.sampled_from([packet.AUTH_NONE, packet.AUTH_PASS]))
        auth_data = b""
        if auth_type == packet.AUTH_PASS:
            auth_data = draw(st.binary(max_size=8)).rstrip(b"\0")
    else:
        interval = draw(st.integers(1, 4095))
        auth_type, auth_data = packet.AUTH_NONE, b""
    adv = Advertisement(
        version,
        draw(st.integers(1, 255)),
        draw(st.integers(0, 255)),
        interval,
        addresses,
        auth_type,
        auth_data,
    )
    return adv, family, draw(addr), draw(addr)


@given(adverts())
def test_round_trip(case: tuple[Advertisement, int, V4 | V6, V4 | V6]) -> None:
    adv, family, src, dst = case
    wire = encode(adv, family=family, src=src, dst=dst)
    assert decode(wire, family=family, src=src, dst=dst, ttl=255) == adv


@given(adverts(), st.data())
def test_any_single_bit_flip_is_caught(
    case: tuple[Advertisement, int, V4 | V6, V4 | V6], data: st.DataObject
) -> None:
    adv, family, src, dst = case
    wire = bytearray(encode(adv, family=family, src=src, dst=dst))
    bit = data.draw(st.integers(0, len(wire) * 8 - 1))
    wire[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(MalformedPacket):
        decode(bytes(wire), family=family, src=src, dst=dst, ttl=255)


@given(st.binary(max_size=200), st.sampled_from([4, 6]), st.integers(0, 255))
def test_random_bytes_only_raise_malformed(buf: bytes, family: int, ttl: int) -> None:
    src, dst = (SRC4, DST4) if family == 4 else (V6("fe80::1"), V6("ff02::12"))
    try:
        adv = decode(buf, family=family, src=src, dst=dst, ttl=ttl)
    except MalformedPacket as exc:
        assert isinstance(exc.reason, DropReason)
    else:  # a packet that passes every check must survive re-encoding
        again = encode(adv, family=family, src=src, dst=dst)
        assert decode(again, family=family, src=src, dst=dst, ttl=255) == adv


def test_details_use_keepalived_words() -> None:
    flipped = V2_MSG[:8] + b"\x0a\x4d\x03\x0b" + V2_MSG[12:]
    with pytest.raises(MalformedPacket, match=r"^checksum: Invalid VRRPv2 checksum$"):
        decode(flipped, family=4, src=SRC4, dst=DST4, ttl=255)
    with pytest.raises(MalformedPacket, match=r"invalid TTL/HL\. Received 1 and expect 255"):
        decode(V2_MSG, family=4, src=SRC4, dst=DST4, ttl=1)
    with pytest.raises(MalformedPacket, match=r"vrrp packet too long, length 21 and expect 20"):
        decode(V2_MSG + b"\0", family=4, src=SRC4, dst=DST4, ttl=255)
    with pytest.raises(MalformedPacket, match=r"received an invalid passwd!"):
        validate(BASE, **{**VALID, "auth_pass": packet.pad_auth_pass("x")})  # type: ignore[arg-type]
    with pytest.raises(MalformedPacket, match=r"not present in MASTER advert : 10\.77\.3\.11"):
        validate(BASE, **{**VALID, "addresses": (V4("10.77.3.11"),)})  # type: ignore[arg-type]


def test_decode_accepts_buffer_views() -> None:
    view = memoryview(bytearray(KEEPALIVED_V2_V4))[20:]
    assert decode(view, family=4, src=SRC4, dst=DST4, ttl=255).auth_data == b"1111"
