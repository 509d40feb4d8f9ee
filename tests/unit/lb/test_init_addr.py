"""`init-addr`: a server's first address by haproxy's methods, in order."""

from __future__ import annotations

import pytest

from keeplb.errors import KeeplbError
from keeplb.lb.app import DEFAULT_INIT_ADDR, init_address

WHERE = "'server be/s1'"
NAMES = {"api1.lab": "10.0.0.4", "v6.lab": "fd00::4"}


def libc(host: str) -> str | None:
    return NAMES.get(host)


@pytest.mark.parametrize(("host", "methods", "last", "want"), [
    ("10.0.0.7", ("none",), None, "10.0.0.7"),  # an address needs no method
    ("api1.lab", DEFAULT_INIT_ADDR, None, "10.0.0.4"),
    ("api1.lab", DEFAULT_INIT_ADDR, "10.0.0.99", "10.0.0.99"),  # last comes first
    ("api1.lab", ("libc", "last"), "10.0.0.99", "10.0.0.4"),
    ("gone.lab", ("libc", "last"), "10.0.0.99", "10.0.0.99"),
    ("v6.lab", ("libc",), None, "fd00::4"),
    ("gone.lab", ("libc", "none"), None, None),
    ("api1.lab", ("none", "libc"), None, None),  # none ends the list
    ("gone.lab", ("last", "libc", "192.0.2.1"), None, "192.0.2.1"),
])
def test_methods_in_order(host: str, methods: tuple[str, ...], last: str | None,
                          want: str | None) -> None:
    assert init_address(WHERE, host, methods, last, libc) == want


def test_no_method_gives_an_address_is_haproxys_error() -> None:
    with pytest.raises(KeeplbError) as err:
        init_address(WHERE, "gone.lab", DEFAULT_INIT_ADDR, None, libc)
    assert str(err.value) == "'server be/s1' : could not resolve address 'gone.lab'."


def test_falling_back_to_an_address_warns_as_haproxy(caplog: pytest.LogCaptureFixture) -> None:
    assert init_address(WHERE, "gone.lab", ("libc", "192.0.2.1"), None, libc) == "192.0.2.1"
    assert ("'server be/s1' : could not resolve address 'gone.lab', falling back to "
            "configured address.") in caplog.text
