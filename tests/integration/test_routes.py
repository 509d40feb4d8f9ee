"""use_backend routes through real loopback sockets.

A tcp frontend that declares an ACL on a layer-7 fetch (`path_beg`), used by
no rule or by a rule keeplb leaves out, still routes its layer-4 rules as
haproxy 2.6 does (seen on loopback with the same kind of config: one bind per
port, `dst_port` with a value and with `gt`). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from test_proxy import ask_name, backends, free_port, run, running, stop_all  # noqa: E402

from keeplb.config.haproxy import parse_text  # noqa: E402


def three_ports() -> tuple[int, int, int]:
    """Three distinct free ports, in increasing order."""
    ports: set[int] = set()
    for _ in range(20):
        ports.add(free_port())
        if len(ports) == 3:
            lo, mid, hi = sorted(ports)
            return lo, mid, hi
    raise RuntimeError("no three free ports")


def test_layer4_routes_beside_an_unrelated_layer7_acl() -> None:
    async def body() -> None:
        bs = await backends("s1", "s2", "s3")
        lo, mid, hi = three_ports()
        cfg, diags = parse_text(f"""\
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{lo}
    bind 127.0.0.1:{mid}
    bind 127.0.0.1:{hi}
    acl x path_beg /api
    acl is_api path_beg /api
    use_backend b3 if is_api
    use_backend b2 if {{ dst_port {mid} }}
    use_backend b3 if {{ dst_port gt {mid} }}
    default_backend b1
backend b1
    server s1 127.0.0.1:{bs[0].port}
backend b2
    server s2 127.0.0.1:{bs[1].port}
backend b3
    server s3 127.0.0.1:{bs[2].port}
""", file="routes.cfg")
        assert not diags.has_errors, [str(d) for d in diags]
        # the rule on a path is left out, and said so on its line
        assert [str(d) for d in diags.warnings] == [
            "routes.cfg:12:17: warning: fetch 'path_beg' in a 'use_backend' condition is not "
            "supported by keeplb; the rule is ignored"]
        try:
            async with running(cfg):
                for _ in range(2):
                    assert await ask_name(mid) == "s2"
                    assert await ask_name(hi) == "s3"
                    assert await ask_name(lo) == "s1"
        finally:
            await stop_all(bs)
    run(body)
