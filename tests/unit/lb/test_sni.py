"""keeplb.lb.sni: the ClientHello walk of haproxy's req.ssl_sni / req.ssl_hello_type,
on real ClientHellos from Python's ssl module and on garbage."""

from __future__ import annotations

import contextlib
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeplb.lb import sni


def client_hello(server_hostname: str | None, *, tls13: bool = True,
                 session_id: bool = False) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if not tls13:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


NAMES = ["api.example", "a.b", "x" * 63 + ".example", "xn--bcher-kva.example", "API.Example"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("tls13", [True, False])
def test_real_client_hellos(name: str, tls13: bool) -> None:
    hello = client_hello(name, tls13=tls13)
    assert sni.ssl_sni(hello) == (name, False)
    assert sni.ssl_hello_type(hello) == (1, False)
    # followed by more bytes (a second record, application data): same answer
    assert sni.ssl_sni(hello + b"\x17\x03\x03\x00\x01x") == (name, False)


def test_hello_without_server_name() -> None:
    hello = client_hello(None)
    assert sni.ssl_sni(hello) == sni.NOT_FOUND
    assert sni.ssl_hello_type(hello) == (1, False)


def test_every_prefix_of_a_hello_waits() -> None:
    """haproxy wants the whole hello: any shorter prefix "may change". (Its SNI
    walk compares the bytes after the record header with the hello's length
    without the 4 bytes of the handshake header: the last 4 may be missing.)"""
    hello = client_hello("api.example")
    for n in range(len(hello)):
        assert sni.ssl_hello_type(hello[:n]) == sni.TOO_SHORT, n
        want = sni.TOO_SHORT if n < len(hello) - 4 else ("api.example", False)
        assert sni.ssl_sni(hello[:n]) == want, n


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"\x00", b"SSH-2.0-x\r\n",
                                  b"\x16\x02\x00\x00\x00"])
def test_not_tls_is_definitive(data: bytes) -> None:
    assert sni.ssl_sni(data) == sni.NOT_FOUND
    assert sni.ssl_hello_type(data) in (sni.NOT_FOUND, sni.TOO_SHORT)
    if data[0] not in (0x14, 0x15, 0x16, 0x17, 0xFF):
        assert sni.ssl_hello_type(data) == sni.NOT_FOUND


def test_hello_type_of_other_handshakes() -> None:
    server_hello_like = bytes([0x16, 3, 3, 0, 8, 2, 0, 0, 4, 1, 2, 3, 4])
    assert sni.ssl_hello_type(server_hello_like) == (2, False)
    assert sni.ssl_hello_type(bytes([0x16, 2, 0, 0, 8, 1, 0, 0, 0])) == sni.NOT_FOUND  # SSLv2


def test_name_running_past_the_data_is_no_name() -> None:
    """haproxy would read past its buffer here; keeplb answers no name."""
    hello = bytearray(client_hello("api.example"))
    i = hello.index(b"api.example")
    hello[i - 2 : i] = (0xFFFF).to_bytes(2, "big")  # name_len
    assert sni.ssl_sni(bytes(hello)) == sni.NOT_FOUND


def test_payload_and_len() -> None:
    assert sni.req_len(b"abc") == (3, True)
    assert sni.payload(b"GET /", 0, 4) == (b"GET ", False)
    assert sni.payload(b"GE", 0, 4) == sni.TOO_SHORT
    assert sni.payload(b"GET /", 4, 0) == (b"/", True)


@given(st.binary(max_size=600))
def test_garbage_never_raises(data: bytes) -> None:
    for fetch in (sni.ssl_sni, sni.ssl_hello_type, sni.req_len):
        value, may_change = fetch(data)
        assert isinstance(may_change, bool)
    name = sni.ssl_sni(data)[0]
    assert name is None or isinstance(name, str)


_HELLO = client_hello("api.example")


@given(st.integers(0, len(_HELLO) - 1), st.integers(0, 255))
def test_one_byte_mutations_never_raise(at: int, value: int) -> None:
    mutated = _HELLO[:at] + bytes([value]) + _HELLO[at + 1 :]
    name, _ = sni.ssl_sni(mutated)
    assert name is None or isinstance(name, str)
    sni.ssl_hello_type(mutated)


@given(st.binary(max_size=64), st.integers(0, 100))
def test_truncations_and_tails_never_raise(tail: bytes, cut: int) -> None:
    data = _HELLO[: max(0, len(_HELLO) - cut)] + tail
    sni.ssl_sni(data)
    sni.ssl_hello_type(data)
