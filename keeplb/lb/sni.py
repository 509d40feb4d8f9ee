"""The payload fetches of `tcp-request content` conditions, on the bytes a client
has sent so far: req.len, req.ssl_hello_type, req.ssl_sni, req.payload.

Pure and bounds-checked: any bytes in, never an exception out. Each fetch
answers a Sample (value, may_change), as haproxy 2.6's payload.c fetches do:

    value None, may_change True   "too_short": not enough data yet (SMP_F_MAY_CHANGE)
    value None, may_change False  not a TLS hello / no such field: never will be
    value set,  may_change True   an answer more data may change (req.len)

The ClientHello walk follows haproxy's smp_fetch_ssl_hello_sni (its checks and
its quirks: the hello must be complete in the buffer, only the first record is
read, the first host_name of the first server_name extension is the answer),
and adds the bound haproxy leaves out: a name running past the data is no name.
"""

from __future__ import annotations

Sample = tuple[object | None, bool]
"""(value, may_change); a value is an int, a str or bytes."""

TOO_SHORT: Sample = (None, True)
NOT_FOUND: Sample = (None, False)


def _u16(b: bytes, i: int) -> int:
    return (b[i] << 8) | b[i + 1]


def req_len(data: bytes) -> Sample:
    """req.len: what the client has sent so far; may grow (haproxy smp_fetch_len)."""
    return len(data), True


def ssl_hello_type(data: bytes) -> Sample:
    """req.ssl_hello_type: the handshake type of the first TLS record (1: ClientHello),
    once that whole handshake message is in (haproxy smp_fetch_ssl_hello_type)."""
    n = len(data)
    if n == 0:
        return TOO_SHORT
    if not (0x14 <= data[0] <= 0x17 or data[0] == 0xFF):
        return NOT_FOUND
    if n < 9:
        return TOO_SHORT
    if (data[1] << 16) + data[2] < 0x030000:  # SSLv3 or later
        return NOT_FOUND
    if _u16(data, 3) < 4:  # the record must hold a handshake type and length
        return NOT_FOUND
    hs_len = (data[6] << 16) | _u16(data, 7)
    if n < 9 + hs_len:
        return TOO_SHORT
    return data[5], False


# record header, handshake header, version, random, and the least of session id,
# ciphers, compression methods and one extension list (haproxy's minimum)
_MIN_RECORD = 1 + 3 + 2 + 32 + 1 + 2 + 2 + 1 + 1 + 2 + 2
_MIN_HELLO = 2 + 32 + 1 + 2 + 2 + 1 + 1 + 2 + 2


def ssl_sni(data: bytes) -> Sample:
    """req.ssl_sni: the server name a TLS ClientHello asks for (haproxy
    smp_fetch_ssl_hello_sni), decoded as latin-1 so that any byte maps to one
    character and matching sees what haproxy compares."""
    n = len(data)
    if n == 0:
        return TOO_SHORT
    if data[0] != 0x16:  # handshake record
        return NOT_FOUND
    if n < 3:
        return TOO_SHORT
    if data[1] < 0x03:  # SSLv3 or later in the record layer
        return NOT_FOUND
    if n < 5:
        return TOO_SHORT
    if _u16(data, 3) < _MIN_RECORD:
        return NOT_FOUND
    p, left = 5, n - 5
    if left < 1:
        return TOO_SHORT
    if data[p] != 0x01:  # ClientHello
        return NOT_FOUND
    if left < 4:
        return TOO_SHORT
    hs_len = (data[p + 1] << 16) | _u16(data, p + 2)
    if hs_len < _MIN_HELLO:
        return NOT_FOUND
    if left < hs_len:  # haproxy waits for hs_len bytes after the record header
        return TOO_SHORT
    p += 4
    end = min(n, p + hs_len)  # never read past what the hello claims nor the data
    if end - p < 35:
        return NOT_FOUND
    if data[p] < 0x03 or data[p + 1] < 0x01:  # TLSv1 minimum
        return NOT_FOUND
    sid = data[p + 34]
    if sid > 32 or sid > hs_len - 35:
        return NOT_FOUND
    hs_len -= 35 + sid
    p += 35 + sid
    if hs_len < 4 or p + 2 > end:
        return NOT_FOUND
    ciphers = _u16(data, p)
    if ciphers < 2 or ciphers > hs_len:
        return NOT_FOUND
    hs_len -= 2 + ciphers
    p += 2 + ciphers
    if hs_len < 2 or p + 1 > end:
        return NOT_FOUND
    comp = data[p]
    if comp < 1 or comp > hs_len:
        return NOT_FOUND
    hs_len -= 1 + comp
    p += 1 + comp
    if hs_len < 2 or p + 2 > end:
        return NOT_FOUND
    ext_total = _u16(data, p)
    if ext_total > hs_len - 2:
        return NOT_FOUND
    left = ext_total
    p += 2
    while left >= 4 and p + 4 <= end:
        ext_type = _u16(data, p)
        ext_len = _u16(data, p + 2)
        if ext_len > left - 4:
            return NOT_FOUND
        if ext_type == 0:  # server_name (RFC 6066 §3)
            if ext_len < 2 or p + 9 > end:
                return NOT_FOUND
            list_len = _u16(data, p + 4)
            if list_len < 4 or list_len > left - 6:
                return NOT_FOUND
            name_len = _u16(data, p + 7)
            if data[p + 6] == 0:  # host_name
                if p + 9 + name_len > end:
                    return NOT_FOUND
                return data[p + 9 : p + 9 + name_len].decode("latin-1"), False
        left -= 4 + ext_len
        p += 4 + ext_len
    return NOT_FOUND


def payload(data: bytes, offset: int, length: int) -> Sample:
    """req.payload(offset,length): `length` bytes at `offset`, once they are in; a
    length of 0 means everything from `offset` on, which may still grow
    (haproxy smp_fetch_payload)."""
    if offset < 0 or length < 0:
        return NOT_FOUND
    if length == 0:
        if offset > len(data):
            return TOO_SHORT
        return data[offset:], True
    if offset + length > len(data):
        return TOO_SHORT
    return data[offset : offset + length], False


__all__ = ["NOT_FOUND", "TOO_SHORT", "Sample", "payload", "req_len", "ssl_hello_type", "ssl_sni"]
