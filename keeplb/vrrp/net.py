"""VRRP network IO: the only module that touches sockets and netlink for VRRP.

- `VrrpSocket`: one raw IPPROTO 112 socket per (family, interface), joined to
  224.0.0.18 / ff02::12 on that interface, TTL / hop limit 255 on send and read
  back on receive, source address chosen per packet with IP(V6)_PKTINFO so the
  advertisement leaves from the primary address (or unicast_src_ip), never
  from a VIP.
- `AddressManager`: virtual addresses and routes (virtual_routes,
  static_routes) through pyroute2's AsyncIPRoute, idempotent (EEXIST on add
  and EADDRNOTAVAIL / ESRCH on delete are success).
- `route_spec`: keepalived's route words -> a `RouteSpec` (pure).
- `send_gratuitous_arp` / `send_unsolicited_na`: announce a VIP's new owner.
- `LinkMonitor`: RTM_NEWLINK events -> callback(ifname, up).

Nothing here decides anything: the daemon calls in, callbacks call out.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from keeplb.config.model import IPAddress, VirtualAddress, VirtualRoute
from keeplb.errors import NetlinkOpError

__all__ = [
    "AddressManager",
    "LinkMonitor",
    "Received",
    "RouteSpec",
    "VrrpSocket",
    "garp_frame",
    "na_message",
    "route_spec",
    "send_gratuitous_arp",
    "send_unsolicited_na",
]

log = logging.getLogger("keeplb.vrrp")

IPPROTO_VRRP = 112
VRRP_TTL = 255
MCAST_GROUP4 = "224.0.0.18"
MCAST_GROUP6 = "ff02::12"

# Linux constants Python's socket module does not always export.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
IFF_UP = 0x1
IFF_RUNNING = 0x40
RTMGRP_LINK = 0x1
RTM_NEWLINK = 16
RTM_DELLINK = 17

RT_SCOPES = {"global": 0, "universe": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}
RTPROT_KEEPALIVED = 18  # iproute2's rt_protos name 'keepalived': routes show "proto keepalived"
RTNH_F_ONLINK = 4
RT_TABLES = {"main": 254, "local": 255, "default": 253}
ROUTE_TYPES = ("blackhole", "unreachable", "prohibit", "throw")
_ROUTE_VALUE_WORDS = frozenset(
    "to via gw src dev metric priority preference pref table scope protocol proto".split()
)


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One route of virtual_routes / static_routes, ready for netlink.

    `kwargs` are AsyncIPRoute.route() arguments except the output interface,
    which the shell resolves from `dev`; `ignored` names words keeplb skips.
    """

    dst: str
    dev: str | None
    kwargs: dict[str, Any]
    ignored: tuple[str, ...] = ()


def route_spec(route: VirtualRoute) -> RouteSpec | None:
    """Turns keepalived's route words ('10.0.0.0/8 via 10.1.1.1 dev eth0 metric 5')
    into a RouteSpec; None when there is no usable destination. The parser has
    already reported bad words, so anything odd here is skipped, never raised."""
    words = list(route.words)
    kw: dict[str, Any] = {"proto": RTPROT_KEEPALIVED}
    dst: str | None = None
    dev: str | None = None
    ignored: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        val = words[i + 1] if i + 1 < len(words) else None
        if w in ROUTE_TYPES:
            kw["type"] = w
        elif w == "onlink":
            kw["flags"] = RTNH_F_ONLINK
        elif w == "no_track":
            pass
        elif w in _ROUTE_VALUE_WORDS and val is not None:
            i += 1
            if w == "to":
                dst = val
            elif w in ("via", "gw"):
                kw["gateway"] = val
            elif w == "src":
                kw["prefsrc"] = val
            elif w == "dev":
                dev = val
            elif w in ("metric", "priority", "preference", "pref") and val.isdigit():
                kw["priority"] = int(val)
            elif w == "table" and (val in RT_TABLES or val.isdigit()):
                kw["table"] = RT_TABLES.get(val) or int(val)
            elif w == "scope" and (val in RT_SCOPES or val.isdigit()):
                kw["scope"] = RT_SCOPES[val] if val in RT_SCOPES else int(val)
            elif w in ("protocol", "proto") and val.isdigit():
                kw["proto"] = int(val)
        elif dst is None and (w == "default" or _is_network(w)):
            dst = w
        else:
            # A word keeplb does not apply (mtu, realms, nexthop, ...): skipped with its value.
            ignored.append(w)
            if val is not None and not (val in ROUTE_TYPES or val in _ROUTE_VALUE_WORDS):
                i += 1
        i += 1
    if dst is None:
        return None
    if dst == "default":
        v6 = any(":" in str(v) for v in (kw.get("gateway"), kw.get("prefsrc")) if v)
        dst = "::/0" if v6 else "0.0.0.0/0"
    try:
        net = ipaddress.ip_network(dst, strict=False)
    except ValueError:
        return None
    kw["dst"] = str(net.network_address)
    kw["dst_len"] = net.prefixlen
    kw["family"] = socket.AF_INET if net.version == 4 else socket.AF_INET6
    return RouteSpec(str(net), dev, kw, tuple(ignored))


@dataclass(frozen=True, slots=True)
class Received:
    """One packet as read off the wire: the VRRP payload plus what the IP header said."""

    payload: bytes
    family: int  # 4 or 6
    src: IPAddress
    dst: IPAddress
    ttl: int  # IPv4 TTL or IPv6 hop limit
    ifname: str


class VrrpSocket:
    """A raw VRRP socket bound to one interface, for one address family.

    Opened by the daemon once per (family, interface) in use; every instance on
    that interface shares it and the daemon demultiplexes by VRID. `on_packet`
    is called from the event loop (add_reader) for each readable datagram with
    the VRRP payload and the IP header's facts; everything about the payload,
    however short or wrong, is the codec's to judge and the daemon's to count.
    """

    def __init__(
        self,
        family: int,
        ifname: str,
        ifindex: int,
        *,
        on_packet: Callable[[Received], None],
        mcast_group: str | None = None,
    ) -> None:
        self.family = family
        self.ifname = ifname
        self.ifindex = ifindex
        self.on_packet = on_packet
        self.group = mcast_group or (MCAST_GROUP4 if family == 4 else MCAST_GROUP6)
        self.sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Creates the socket, joins the group and registers the reader; raises OSError."""
        if self.family == 4:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.ifname.encode())
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            mreqn = struct.pack("=4s4si", socket.inet_aton(self.group), b"\0" * 4, self.ifindex)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        else:
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_VRRP)
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.ifname.encode())
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            mreq = socket.inet_pton(socket.AF_INET6, self.group) + struct.pack("=I", self.ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        s.setblocking(False)
        self.sock = s
        self._loop = loop
        loop.add_reader(s.fileno(), self._readable)

    def close(self) -> None:
        if self.sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.sock = None

    def _readable(self) -> None:
        # Drains a bounded batch per wakeup so one flood cannot starve the timers.
        for _ in range(64):
            if self.sock is None:
                return
            try:
                if self.family == 4:
                    data, _addr = self.sock.recvfrom(65535)
                    pkt = self._parse_v4(data)
                else:
                    data, anc, _flags, addr = self.sock.recvmsg(65535, 256)
                    pkt = self._parse_v6(data, anc, addr)
            except BlockingIOError:
                return
            except OSError as e:
                log.warning("%s: receive error: %s", self.ifname, e)
                return
            if pkt is None:
                continue
            try:
                self.on_packet(pkt)
            except Exception as e:  # noqa: BLE001 - one bad packet must not stop the reader
                log.error("%s: packet from %s not handled: %s: %s", self.ifname, pkt.src,
                          type(e).__name__, e)

    def _parse_v4(self, data: bytes) -> Received | None:
        if len(data) < 20:
            return None
        ihl = (data[0] & 0x0F) * 4
        if ihl < 20 or len(data) < ihl:
            return None
        src = ipaddress.IPv4Address(data[12:16])
        dst = ipaddress.IPv4Address(data[16:20])
        return Received(data[ihl:], 4, src, dst, data[8], self.ifname)

    def _parse_v6(self, data: bytes, anc: list[tuple[int, int, bytes]], addr: Any) -> Received | None:
        hop = -1
        dst: IPAddress = ipaddress.IPv6Address(self.group)
        for level, kind, cdata in anc:
            if level != socket.IPPROTO_IPV6:
                continue
            if kind == IPV6_HOPLIMIT and len(cdata) >= 4:
                hop = struct.unpack("=i", cdata[:4])[0]
            elif kind == IPV6_PKTINFO and len(cdata) >= 16:
                dst = ipaddress.IPv6Address(cdata[:16])
        src = ipaddress.IPv6Address(str(addr[0]).split("%", 1)[0])
        return Received(data, 6, src, dst, hop, self.ifname)

    def send(self, payload: bytes, dst: IPAddress, src: IPAddress | None) -> bool:
        """Sends one advertisement; False (logged) when the kernel refuses it."""
        if self.sock is None:
            return False
        try:
            if self.family == 4:
                spec = src.packed if src is not None else b"\0" * 4
                info = struct.pack("=I4s4s", self.ifindex, spec, b"\0" * 4)
                self.sock.sendmsg(
                    [payload], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, (str(dst), 0)
                )
            else:
                spec = src.packed if src is not None else b"\0" * 16
                info = spec + struct.pack("=I", self.ifindex)
                self.sock.sendmsg(
                    [payload],
                    [(socket.IPPROTO_IPV6, IPV6_PKTINFO, info)],
                    0,
                    (str(dst), 0, 0, self.ifindex),
                )
        except OSError as e:
            log.warning("%s: cannot send advertisement to %s: %s", self.ifname, dst, e)
            return False
        return True


# --------------------------------------------------------------------------
# gratuitous ARP / unsolicited neighbour advertisement
# --------------------------------------------------------------------------


def interface_mac(ifname: str) -> bytes:
    """The interface's hardware address, read from sysfs (b'' when it has none)."""
    try:
        with open(f"/sys/class/net/{ifname}/address", encoding="ascii") as f:
            text = f.read().strip()
    except OSError:
        return b""
    try:
        return bytes.fromhex(text.replace(":", ""))
    except ValueError:
        return b""


def garp_frame(mac: bytes, vip: ipaddress.IPv4Address) -> bytes:
    """A broadcast ARP request for `vip` from `mac`, as keepalived sends it."""
    eth = b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + vip.packed + b"\xff" * 6 + vip.packed
    return eth + arp


def send_gratuitous_arp(ifname: str, vips: list[ipaddress.IPv4Address]) -> int:
    """Sends one gratuitous ARP per VIP on `ifname`; returns how many left."""
    mac = interface_mac(ifname)
    if len(mac) != 6 or not vips:
        return 0
    sent = 0
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
            s.bind((ifname, ETH_P_ARP))
            for vip in vips:
                s.send(garp_frame(mac, vip))
                sent += 1
    except OSError as e:
        log.warning("%s: cannot send gratuitous ARP: %s", ifname, e)
    return sent


def na_message(mac: bytes, vip: ipaddress.IPv6Address) -> bytes:
    """An unsolicited neighbour advertisement (RFC 4861 §4.4) for `vip`, override flag set."""
    flags = 0x20000000  # O: override existing cache entries
    body = struct.pack("!BBHI", 136, 0, 0, flags) + vip.packed
    if mac:
        body += struct.pack("!BB", 2, 1) + mac  # target link-layer address option
    return body


def send_unsolicited_na(ifname: str, ifindex: int, vips: list[ipaddress.IPv6Address]) -> int:
    """Sends one unsolicited NA per VIP to ff02::1 on `ifname` (kernel fills the checksum)."""
    if not vips:
        return 0
    mac = interface_mac(ifname)
    sent = 0
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
            for vip in vips:
                s.sendto(na_message(mac, vip), ("ff02::1", 0, 0, ifindex))
                sent += 1
    except OSError as e:
        log.warning("%s: cannot send unsolicited neighbour advertisement: %s", ifname, e)
    return sent


# --------------------------------------------------------------------------
# addresses and links through netlink
# --------------------------------------------------------------------------


def _attr(msg: Any, name: str) -> Any:
    try:
        return msg.get_attr(name)
    except (AttributeError, KeyError):
        return None


class AddressManager:
    """Adds and removes virtual addresses; owns the one AsyncIPRoute of the VRRP process."""

    def __init__(self) -> None:
        self._ipr: AsyncIPRoute | None = None

    async def _get(self) -> AsyncIPRoute:
        if self._ipr is None:
            self._ipr = AsyncIPRoute()
            await self._ipr.setup_endpoint()
        return self._ipr

    async def close(self) -> None:
        if self._ipr is not None:
            ipr, self._ipr = self._ipr, None
            try:
                ipr.close()
            except OSError:
                pass

    async def ifindex(self, ifname: str) -> int | None:
        """The interface index of `ifname`, None when it does not exist."""
        ipr = await self._get()
        try:
            found = await ipr.link_lookup(ifname=ifname)
        except NetlinkError:
            return None
        return found[0] if found else None

    async def link_up(self, ifindex: int) -> bool:
        """True when the link is administratively up and has carrier (IFF_UP|IFF_RUNNING)."""
        ipr = await self._get()
        try:
            for link in await ipr.link("get", index=ifindex):
                flags = int(link["flags"])
                return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)
        except NetlinkError:
            return False
        return False

    async def addresses(self, ifindex: int, family: int) -> list[tuple[IPAddress, int]]:
        """(address, prefixlen) on the interface, in the kernel's order (primary first)."""
        ipr = await self._get()
        fam = socket.AF_INET if family == 4 else socket.AF_INET6
        out: list[tuple[IPAddress, int]] = []
        try:
            async for msg in await ipr.get_addr(family=fam, index=ifindex):
                addr = _attr(msg, "IFA_ADDRESS")
                if addr is None:
                    continue
                flags = _attr(msg, "IFA_FLAGS")
                if flags is None:
                    flags = msg.get("flags", 0)
                if int(flags or 0) & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
                    # Not usable as a source until DAD is over (sendmsg gives EINVAL).
                    continue
                out.append((ipaddress.ip_address(addr), int(msg["prefixlen"])))
        except NetlinkError as e:
            raise NetlinkOpError(e.code, f"cannot list addresses: {e}") from e
        return out

    async def primary_address(
        self, ifindex: int, family: int, exclude: set[IPAddress]
    ) -> IPAddress | None:
        """The address advertisements leave from: first IPv4 address, or IPv6 link-local."""
        for addr, _plen in await self.addresses(ifindex, family):
            if addr in exclude:
                continue
            if family == 6 and not addr.is_link_local:
                continue
            return addr
        return None

    async def add(self, ifindex: int, vip: VirtualAddress) -> bool:
        """Adds one VIP; True if added, False if it was already there. Raises NetlinkOpError."""
        return await self._op("add", ifindex, vip)

    async def delete(self, ifindex: int, vip: VirtualAddress) -> bool:
        """Removes one VIP; True if removed, False if it was not there. Raises NetlinkOpError."""
        return await self._op("del", ifindex, vip)

    async def route(self, command: str, spec: RouteSpec) -> bool:
        """Adds ('add') or removes ('del') one route; True when the kernel changed.
        Raises NetlinkOpError (a missing `dev` is ENODEV)."""
        ipr = await self._get()
        oif = None
        if spec.dev is not None:
            oif = await self.ifindex(spec.dev)
            if oif is None:
                if command == "del":
                    return False
                raise NetlinkOpError(errno.ENODEV, f"cannot add route {spec.dst}: no interface {spec.dev}")
        return await _route_op_impl(ipr, command, spec, oif)

    async def _op(self, command: str, ifindex: int, vip: VirtualAddress) -> bool:
        ipr = await self._get()
        iface = vip.address
        kwargs: dict[str, Any] = {
            "index": ifindex,
            "address": str(iface.ip),
            "prefixlen": iface.network.prefixlen,
        }
        if command == "add":
            if iface.version == 4:
                if vip.brd:
                    kwargs["broadcast"] = (
                        str(iface.network.broadcast_address) if vip.brd == "+" else vip.brd
                    )
                if vip.label:
                    kwargs["label"] = vip.label
            else:
                # keepalived adds IPv6 VIPs with nodad, so a takeover is immediate.
                kwargs["flags"] = IFA_F_NODAD
            if vip.scope:
                scope = RT_SCOPES.get(vip.scope)
                if scope is None and vip.scope.isdigit():
                    scope = int(vip.scope)
                if scope is not None:
                    kwargs["scope"] = scope
        return await _idempotent(lambda: ipr.addr(command, **kwargs), command,
                                 (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV),
                                 f"cannot {command} {iface}")


async def _route_op_impl(ipr: AsyncIPRoute, command: str, spec: RouteSpec, oif: int | None) -> bool:
    kwargs = dict(spec.kwargs)
    if oif is not None:
        kwargs["oif"] = oif
    return await _idempotent(lambda: ipr.route(command, **kwargs), command,
                             (errno.ESRCH, errno.ENOENT, errno.ENODEV),
                             f"cannot {command} route {spec.dst}")


async def _idempotent(request: Callable[[], Awaitable[object]], command: str,
                      absent: tuple[int, ...], what: str) -> bool:
    """Runs one netlink add/del; False when there was nothing to do (EEXIST on
    add, one of `absent` on del), NetlinkOpError for any other failure."""
    try:
        await request()
    except NetlinkError as e:
        if command == "add" and e.code == errno.EEXIST:
            return False
        if command == "del" and e.code in absent:
            return False
        raise NetlinkOpError(e.code, f"{what}: {e}") from e
    return True


class LinkMonitor:
    """Watches RTM_NEWLINK/RTM_DELLINK and reports (ifname, up) on each change of state."""

    def __init__(self, on_change: Callable[[str, bool], None]) -> None:
        self.on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._ipr: AsyncIPRoute | None = None
        self._last: dict[str, bool] = {}

    async def start(self, initial: dict[str, bool]) -> None:
        """Binds to the link multicast group; `initial` is the state already known."""
        self._last = dict(initial)
        self._ipr = AsyncIPRoute()
        await self._ipr.bind(groups=RTMGRP_LINK)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self._ipr is not None
        while True:
            try:
                async for msg in self._ipr.get():
                    self._handle(msg)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a netlink hiccup must not stop tracking
                log.warning("link monitor: %s", e)
                await asyncio.sleep(0.5)

    def _handle(self, msg: Any) -> None:
        try:
            kind = msg["header"]["type"]
        except (KeyError, TypeError):
            return
        if kind not in (RTM_NEWLINK, RTM_DELLINK):
            return
        name = _attr(msg, "IFLA_IFNAME")
        if not name:
            return
        flags = int(msg.get("flags", 0) or 0)
        up = kind == RTM_NEWLINK and bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)
        if self._last.get(name) == up:
            return
        self._last[name] = up
        self.on_change(name, up)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None
        if self._ipr is not None:
            try:
                self._ipr.close()
            except OSError:
                pass
            self._ipr = None
