"""keepalived.conf -> KeepalivedConfig, with keepalived 2.2.7's checks in keeplb's words.

Pipeline: kalexer.read (files, includes, $definitions, @conditions, quotes,
braces) -> keyword tables per block (GLOBAL_DEFS, VRRP_SCRIPT, VRRP_INSTANCE,
...) -> the dataclasses of model.py -> whole-config checks (unknown
track_script, duplicate names, VRID clashes, script security).

Verdicts follow `keepalived -t`: whatever makes keepalived 2.2.7 -t exit
non-zero is an error here, even when keepalived calls it a "Warning" (it
still fails the test); warnings are kept for what keepalived accepts
silently but keeplb does not do (LVS, VMACs, ...). Like keepalived, the
parser falls back to the default for a bad value and drops an instance that
cannot run, so the model returned is always usable; `exit_code()` on the
returned diagnostics gives the code `keepalived -t` would exit with.

Contract: parse() never raises on bad input and never prints.
"""

from __future__ import annotations

import grp
import ipaddress
import math
import os
import pwd
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keeplb.config import kalexer
from keeplb.config.diagnostics import Diagnostics, Span, did_you_mean
from keeplb.config.kalexer import Node
from keeplb.config.model import (
    GlobalDefs,
    IPAddress,
    KeepalivedConfig,
    TrackFileDef,
    TrackRef,
    VirtualAddress,
    VirtualRoute,
    VrrpInstance,
    VrrpScript,
    VrrpStateName,
    VrrpSyncGroup,
)

__all__ = ["KeepalivedDiagnostics", "keyword_table", "parse"]

SUPPORTED = "supported"
UNSUPPORTED = "unsupported"

# keepalived's exit codes for -t (core/main.c config_test_exit).
EXIT_OK = 0
EXIT_MISSING_PARAMETER = 2  # keepalived stops reading at a keyword without its value
EXIT_CONFIG = 4  # keepalived cannot run the config at all
EXIT_CONFIG_TEST = 5  # errors, keepalived would still run
EXIT_CONFIG_TEST_SECURITY = 6  # script security not enabled while scripts are used

SECURITY_VIOLATION = (
    "SECURITY VIOLATION - scripts are being executed but script_security not enabled"
)
DEFAULT_SCRIPT_USER = "keepalived_script"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class KeepalivedDiagnostics(Diagnostics):
    """Diagnostics plus what `keepalived -t` would make of them."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = False  # keepalived stops reading: a keyword lacks its value
        self.unreadable = False  # the main file could not be read
        self.security_violation = False

    def exit_code(self) -> int:
        """The exit code `keepalived -t` gives for the same file (0, 2, 5 or 6).

        One deliberate difference: keepalived -t exits 0 when the main file is
        missing ("Config files missing"); keeplb gives 4, as there is nothing to run.
        """
        if self.unreadable:
            return EXIT_CONFIG
        if self.aborted:
            return EXIT_MISSING_PARAMETER
        if self.security_violation:
            return EXIT_CONFIG_TEST_SECURITY
        return EXIT_CONFIG_TEST if self.has_errors else EXIT_OK


# --------------------------------------------------------------------------
# the parsing context and value readers
# --------------------------------------------------------------------------


BadValue = Callable[[str], tuple[str, str | None]]
"""Given the bad text, the (message, hint) a keyword wants instead of the generic one."""


class _Ctx:
    def __init__(
        self, diags: KeepalivedDiagnostics, env: Mapping[str, str], host_checks: bool
    ) -> None:
        self.diags = diags
        self.env = env
        self.host_checks = host_checks
        self.cfg = KeepalivedConfig()
        self.instance_spans: dict[str, Span] = {}
        self.dropped_instances: set[str] = set()
        # Scripts that would run besides vrrp_scripts: (span, command, owner, attribute);
        # the attribute of owner is cleared when the script cannot run (see _check_scripts).
        self.notify_scripts: list[tuple[Span, str, object | None, str | None]] = []
        self.has_vrrp = False  # a vrrp_instance block exists: keepalived's VRRP checks run
        self.spans: dict[int, dict[str, Span]] = {}  # id(model object) -> setting -> span
        # id(instance) -> address family, set by the first keyword that implies one
        # (keepalived's rule: a VIP, unicast_src_ip, mcast_src_ip, a peer, native_ipv6).
        self.family: dict[int, int] = {}

    def imply_family(self, obj: object, version: int) -> None:
        self.family.setdefault(id(obj), version)

    # --- diagnostics -------------------------------------------------------

    def error(self, span: Span | None, message: str, hint: str | None = None) -> None:
        self.diags.error(span, message, hint)

    def warning(self, span: Span | None, message: str, hint: str | None = None) -> None:
        self.diags.warning(span, message, hint)

    # --- value readers -----------------------------------------------------

    def arg(self, node: Node, index: int = 1) -> str | None:
        """Word `index` of the line; a missing one is keepalived's fatal 'missing parameter'."""
        if index < len(node.words):
            return node.words[index]
        self.error(node.span, f"'{node.keyword}' needs a value")
        self.diags.aborted = True
        return None

    def integer(
        self, node: Node, lo: int, hi: int, index: int = 1, bad: BadValue | None = None
    ) -> int | None:
        """Word `index` as an integer in [lo, hi]; None (and an error) otherwise.

        `bad(text)` gives the message and hint to use instead of the generic one.
        """
        text = self.arg(node, index)
        if text is None:
            return None
        try:
            value = int(text.strip(), 10)
        except ValueError:
            self._bad(node, index, f"invalid number '{text}'", bad)
            return None
        if not lo <= value <= hi:
            self._bad(node, index, f"number '{text}' outside range [{lo}, {hi}]", bad)
            return None
        return value

    def number(
        self, node: Node, lo: float, hi: float, index: int = 1, bad: BadValue | None = None
    ) -> float | None:
        """Word `index` as a finite decimal in [lo, hi]; None (and an error) otherwise."""
        text = self.arg(node, index)
        if text is None:
            return None
        try:
            value = float(text)
        except ValueError:
            self._bad(node, index, f"invalid number '{text}'", bad)
            return None
        if math.isnan(value) or math.isinf(value):
            self._bad(node, index, f"'{text}' is not a finite number", bad)
            return None
        if not lo <= value <= hi:
            self._bad(node, index, f"number '{text}' outside range [{lo:g}, {hi:g}]", bad)
            return None
        return value

    def _bad(self, node: Node, index: int, problem: str, bad: BadValue | None) -> None:
        if bad is None:
            self.error(node.word_span(index), f"{node.keyword}: {problem}")
        else:
            message, hint = bad(node.words[index])
            self.error(node.word_span(index), message, hint)

    def address(self, text: str, span: Span, what: str) -> IPAddress | None:
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            self.error(span, f"{what}: invalid IP address '{text}'")
            return None

    def script_path(
        self, node: Node, index: int = 1, owner: object | None = None, attr: str | None = None
    ) -> str | None:
        """Word `index` as a script to run; `owner.attr` holds it in the model, if anywhere."""
        text = self.arg(node, index)
        if text is not None:
            self.notify_scripts.append((node.span, text, owner, attr))
        return text


def _entries(ctx: _Ctx, node: Node) -> list[Node]:
    """The lines of a list block (addresses, names, routes); a nested `{` is an error there."""
    out = []
    for child in node.children or []:
        if child.children is not None:
            ctx.error(
                child.open_span or child.span,
                f"unexpected '{{' in '{node.keyword}' after '{child.words[-1]}'; line ignored",
            )
            continue
        out.append(child)
    return out


def _flag(node: Node) -> bool:
    """keepalived's flag keywords: bare means true; an argument may say otherwise."""
    if len(node.words) < 2:
        return True
    return node.words[1].lower() not in ("false", "no", "off", "0")


_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")


def _strict_bool(ctx: _Ctx, node: Node) -> bool | None:
    """keepalived's get_true_false keywords: bare, or exactly true/yes/on/false/no/off."""
    if len(node.words) < 2:
        return True
    word = node.words[1]
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    ctx.error(
        node.word_span(1),
        f"invalid value '{word}' for {node.keyword}; use {'/'.join(_TRUE + _FALSE)}",
    )
    return None


# --------------------------------------------------------------------------
# keyword tables: (block, keyword) -> handler, status
# --------------------------------------------------------------------------

Handler = Callable[[_Ctx, Node, Any], None]


@dataclass(frozen=True, slots=True)
class Keyword:
    handler: Handler | None  # None: valid for keepalived, accepted and ignored by keeplb
    status: str = SUPPORTED
    block: bool = False  # the keyword takes a `{ }` block
    note: str = ""


def _unsupported(note: str = "", block: bool = False) -> Keyword:
    return Keyword(None, UNSUPPORTED, block, note)


def _set(attr: str, reader: Callable[[_Ctx, Node], Any]) -> Handler:
    def handler(ctx: _Ctx, node: Node, obj: Any) -> None:
        value = reader(ctx, node)
        if value is not None:
            setattr(obj, attr, value)

    return handler


def _str(ctx: _Ctx, node: Node) -> str | None:
    return ctx.arg(node)


def _bool(ctx: _Ctx, node: Node) -> bool:
    return _flag(node)


def _umask_ok(text: str) -> bool:
    """A number (octal with a leading 0, hex with 0x) or S_I* bits joined by '|'."""
    try:
        return int(text, 0) >= 0
    except ValueError:
        return all(part.strip().startswith(("IR", "IW", "IX")) for part in text.split("|"))


def _check_value(spec: str) -> Handler:
    """Checks the value of a keyword keeplb does not use the way keepalived -t does.

    spec: 'bool' (true/false...), 'str' (any word, required), 'uint' / 'uint1'
    (unsigned, >= 0 / >= 1), 'int', 'range:LO:HI', 'deprecated:NEW', 'optuint'
    (an optional unsigned).
    """

    def handler(ctx: _Ctx, node: Node, obj: Any) -> None:
        kind, _, arg = spec.partition(":")
        if kind == "bool":
            _strict_bool(ctx, node)
        elif kind == "str":
            ctx.arg(node)
        elif kind == "uint":
            ctx.integer(node, 0, _UINT_MAX)
        elif kind == "uint1":
            ctx.integer(node, 1, _UINT_MAX)
        elif kind == "optuint":
            if len(node.words) > 1:
                ctx.integer(node, 0, _UINT_MAX)
        elif kind == "int":
            ctx.integer(node, -(2**31), 2**31 - 1)
        elif kind == "range":
            lo, hi = (int(x) for x in arg.split(":"))
            ctx.integer(node, lo, hi)
        elif kind == "script":
            ctx.script_path(node)
        elif kind == "umask":
            text = ctx.arg(node)
            if text is not None and not _umask_ok(text):
                ctx.error(node.word_span(1), f"unknown umask bit '{text}'")
        elif kind == "rxbufs":
            text = ctx.arg(node)
            if text is not None and text.upper() not in ("MTU", "ADVERT", "SIZE"):
                ctx.integer(node, 0, _UINT_MAX)
        elif kind == "lvs_timeouts":
            words = node.args
            if (
                not words
                or len(words) % 2
                or any(
                    k not in ("tcp", "tcpfin", "udp") or not v.isdigit()
                    for k, v in zip(words[::2], words[1::2], strict=True)
                )
            ):
                ctx.error(node.span, "lvs_timeouts needs 'tcp N', 'tcpfin N' or 'udp N'")
        elif kind == "unicast":
            lo, hi = (int(x) for x in arg.split(":"))
            ctx.integer(node, lo, hi)
            inst_spans(ctx, obj).setdefault("unicast_keyword", node.span)
        elif kind == "deprecated":
            ctx.error(
                node.word_span(0),
                f"keyword '{node.keyword}' is deprecated"
                + (f"; use '{arg}'" if arg else "")
                + " (keepalived -t fails on it)",
            )
        if isinstance(obj, GlobalDefs):
            obj.other[node.keyword] = tuple(node.args)

    return handler


def _uint(lo: int, hi: int) -> Callable[[_Ctx, Node], int | None]:
    return lambda ctx, node: ctx.integer(node, lo, hi)


def _float(lo: float, hi: float) -> Callable[[_Ctx, Node], float | None]:
    return lambda ctx, node: ctx.number(node, lo, hi)


def _secs(lo: int, hi: int) -> Callable[[_Ctx, Node], float | None]:
    """Whole seconds, which is all keepalived 2.2.7 accepts for these timers."""

    def reader(ctx: _Ctx, node: Node) -> float | None:
        value = ctx.integer(node, lo, hi)
        return None if value is None else float(value)

    return reader


def _notify(attr: str) -> Handler:
    """notify, notify_master...: keepalived keeps the first one and rejects a second."""

    def handler(ctx: _Ctx, node: Node, obj: Any) -> None:
        if getattr(obj, attr) is not None:
            ctx.error(
                node.span,
                f"({obj.name}) {node.keyword} script already specified; "
                f"'{' '.join(node.args)}' is ignored",
            )
            return
        value = ctx.script_path(node, owner=obj, attr=attr)
        if value is not None:
            setattr(obj, attr, value)
        if len(node.words) > 2:
            # keepalived runs the script as that user (and group); keeplb does not.
            ctx.warning(
                node.word_span(2),
                f"{node.keyword}: running the script as '{' '.join(node.words[2:])}' "
                "is not supported by keeplb",
                hint="keeplb runs notify scripts as its own user; quote the command "
                "if these words are its arguments",
            )

    return handler


# keepalived's timer range for garp/gna intervals (read_decimal_unsigned_strvec,
# microsecond resolution up to UINT_MAX us).
_US_RANGE = (0.000001, 4294.967295)
_UINT_MAX = 4294967295


# --- global_defs -------------------------------------------------------------


def _g_notification_email(ctx: _Ctx, node: Node, g: GlobalDefs) -> None:
    if node.children is None:
        ctx.error(node.span, "notification_email needs a { } block of addresses")
        return
    emails = [w for child in _entries(ctx, node) for w in child.words]
    if not emails:
        ctx.error(
            node.open_span or node.span,
            "empty notification_email block",
            hint="remove the block or list at least one address (keepalived -t fails on it too)",
        )
    g.notification_email = emails


def _g_interval(attr: str) -> Handler:
    def handler(ctx: _Ctx, node: Node, g: GlobalDefs) -> None:
        def bad(text: str) -> tuple[str, str | None]:
            return (
                f"{node.keyword} '{text}' is invalid: it must be between "
                f"0.000001 and 4294.967295 seconds; the default "
                f"({getattr(GlobalDefs(), attr):g}, no delay) is used",
                f"remove the {node.keyword} line to get the default",
            )

        value = ctx.number(node, *_US_RANGE, bad=bad)
        if value is not None:
            setattr(g, attr, value)

    return handler


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$"
)


def _g_smtp_server(ctx: _Ctx, node: Node, g: GlobalDefs) -> None:
    server = ctx.arg(node)
    if server is None:
        return
    g.smtp_server = server
    try:
        ipaddress.ip_address(server)
    except ValueError:
        if not _HOSTNAME.match(server):
            ctx.error(node.word_span(1), f"invalid smtp_server '{server}'")
        else:
            # keepalived resolves a name when it reads the file and rejects it if
            # that fails; keeplb does no DNS while parsing, so it only points it out.
            ctx.warning(node.word_span(1), f"smtp_server '{server}' is not an IP address")
    if len(node.words) > 2:
        ctx.integer(node, 1, 65535, index=2)


def _g_dynamic_interfaces(ctx: _Ctx, node: Node, g: GlobalDefs) -> None:
    if len(node.words) > 1 and node.words[1] != "allow_if_changes":
        ctx.error(node.word_span(1), f"unknown dynamic_interfaces option '{node.words[1]}'")
        return
    g.dynamic_interfaces = True


def _g_max_auto_priority(ctx: _Ctx, node: Node, g: GlobalDefs) -> None:
    # Bare: the highest real-time priority (keepalived's default of 99 for it).
    value = ctx.integer(node, -1, 99) if len(node.words) > 1 else 99
    if value is not None:
        g.max_auto_priority = value


def _g_version(ctx: _Ctx, node: Node, g: GlobalDefs) -> None:
    value = ctx.integer(node, 2, 3)
    if value is not None:
        g.vrrp_version = value


def _g_other(ctx: _Ctx, node: Node, g: GlobalDefs) -> None:
    g.other[node.keyword] = tuple(node.args)


def _g_notify_fifo(ctx: _Ctx, node: Node, g: GlobalDefs) -> None:
    """`vrrp_notify_fifo FIFO [user [group]]`."""
    path = ctx.arg(node)
    if path is None:
        return
    g.vrrp_notify_fifo = path
    if len(node.words) > 2:
        # keepalived chowns a FIFO it creates to that user; keeplb creates it
        # as its own user (mode 0644: any user can read it). keepalived does
        # not check the names (-t is silent on an unknown user), so neither do we.
        ctx.warning(
            node.word_span(2),
            f"vrrp_notify_fifo: owner '{' '.join(node.words[2:])}' is not supported by keeplb",
            hint="keeplb creates the FIFO as its own user, mode 0644 (readable by all)",
        )


def _g_script_security(ctx: _Ctx, node: Node, g: GlobalDefs) -> None:
    g.enable_script_security = True


def _g_script_user(ctx: _Ctx, node: Node, g: GlobalDefs) -> None:
    user = ctx.arg(node)
    if user is None:
        return
    g.script_user = user
    if len(node.words) > 2:
        g.script_group = node.words[2]
    if ctx.host_checks:
        try:
            pwd.getpwnam(user)
        except KeyError:
            ctx.error(node.word_span(1), f"script_user '{user}': no such user")
        if g.script_group is not None:
            try:
                grp.getgrnam(g.script_group)
            except KeyError:
                ctx.error(node.word_span(2), f"script_user: no such group '{g.script_group}'")


def _g_mcast(attr: str, version: int) -> Handler:
    def handler(ctx: _Ctx, node: Node, g: GlobalDefs) -> None:
        text = ctx.arg(node)
        if text is None:
            return
        addr = ctx.address(text, node.word_span(1), node.keyword)
        if addr is None:
            return
        if addr.version != version or not addr.is_multicast:
            ctx.error(
                node.word_span(1),
                f"{node.keyword}: '{text}' is not an IPv{version} multicast address",
            )
            return
        setattr(g, attr, str(addr))

    return handler


_NO_SMTP = "keeplb sends no e-mail; use notify scripts"
_NO_LOWER_PRIO_GARP = "keeplb sends no gratuitous ARPs after a lower-priority advert"
_STRICT = (
    "keeplb makes its configuration checks (authentication is dropped) but not its "
    "run-time rules: no no_accept filtering of the virtual addresses, no forced "
    "lower_prio_no_advert"
)

GLOBAL_DEFS: dict[str, Keyword] = {
    "router_id": Keyword(_set("router_id", _str)),
    # keeplb sends no e-mail: these are read and checked (keepalived -t does) and warned.
    "notification_email": Keyword(_g_notification_email, UNSUPPORTED, True, _NO_SMTP),
    "notification_email_from": Keyword(
        _set("notification_email_from", _str), UNSUPPORTED, note=_NO_SMTP
    ),
    "smtp_server": Keyword(_g_smtp_server, UNSUPPORTED, note=_NO_SMTP),
    "smtp_connect_timeout": Keyword(
        _set("smtp_connect_timeout", _uint(1, 4294)), UNSUPPORTED, note=_NO_SMTP
    ),
    "smtp_helo_name": Keyword(_g_other, UNSUPPORTED, note=_NO_SMTP),
    "vrrp_skip_check_adv_addr": Keyword(_set("vrrp_skip_check_adv_addr", _bool)),
    "vrrp_strict": Keyword(_set("vrrp_strict", _bool), UNSUPPORTED, note=_STRICT),
    "vrrp_version": Keyword(_g_version),
    "vrrp_garp_interval": Keyword(_g_interval("vrrp_garp_interval")),
    "vrrp_gna_interval": Keyword(_g_interval("vrrp_gna_interval")),
    "vrrp_garp_master_delay": Keyword(_set("vrrp_garp_master_delay", _secs(0, 4294))),
    "vrrp_garp_master_repeat": Keyword(_set("vrrp_garp_master_repeat", _uint(1, _UINT_MAX))),
    "vrrp_garp_master_refresh": Keyword(_set("vrrp_garp_master_refresh", _secs(0, _UINT_MAX))),
    "vrrp_garp_master_refresh_repeat": Keyword(
        _set("vrrp_garp_master_refresh_repeat", _uint(1, _UINT_MAX))
    ),
    # keeplb sends gratuitous ARPs on becoming master and on refresh only.
    "vrrp_garp_lower_prio_delay": Keyword(
        _set("vrrp_garp_lower_prio_delay", _secs(0, 4294)), UNSUPPORTED, note=_NO_LOWER_PRIO_GARP
    ),
    "vrrp_garp_lower_prio_repeat": Keyword(
        _set("vrrp_garp_lower_prio_repeat", _uint(0, _UINT_MAX)),
        UNSUPPORTED,
        note=_NO_LOWER_PRIO_GARP,
    ),
    "vrrp_lower_prio_no_advert": Keyword(_set("vrrp_lower_prio_no_advert", _strict_bool)),
    "vrrp_higher_prio_send_advert": Keyword(_set("vrrp_higher_prio_send_advert", _strict_bool)),
    "vrrp_startup_delay": Keyword(_set("vrrp_startup_delay", _float(0.001, 4294.967295))),
    "vrrp_mcast_group4": Keyword(_g_mcast("vrrp_mcast_group4", 4)),
    "vrrp_mcast_group6": Keyword(_g_mcast("vrrp_mcast_group6", 6)),
    "vrrp_check_unicast_src": Keyword(_set("vrrp_check_unicast_src", _bool)),
    "vrrp_no_swap": Keyword(
        _set("vrrp_no_swap", _bool), UNSUPPORTED, note="keeplb does not lock its memory"
    ),
    "vrrp_notify_fifo": Keyword(_g_notify_fifo),
    "enable_script_security": Keyword(_g_script_security),
    "script_user": Keyword(_g_script_user),
    "dynamic_interfaces": Keyword(
        _g_dynamic_interfaces,
        UNSUPPORTED,
        note="an instance whose interface is missing at start stays in FAULT; keeplb "
        "does not pick up an interface created later",
    ),
    "max_auto_priority": Keyword(
        _g_max_auto_priority,
        UNSUPPORTED,
        note="keeplb does not raise its scheduling priority when it runs late",
    ),
}
# Valid keepalived 2.2.7 global_defs keywords keeplb has no use for (probed
# against the real binary). LVS, SNMP, D-Bus, nftables/iptables and
# process-tuning settings: accepted with a warning, kept in GlobalDefs.other.
_GLOBAL_UNSUPPORTED = """
bfd_cpu_affinity bfd_no_swap bfd_priority bfd_process_name bfd_rlimit_rtime
bfd_rlimit_rttime bfd_rt_priority checker_cpu_affinity checker_log_all_failures
checker_no_swap checker_priority checker_process_name checker_rlimit_rtime
checker_rlimit_rttime checker_rt_priority config_save_dir data_use_instance
dbus_service_name default_interface disable_local_igmp enable_dbus
enable_snmp_checker enable_snmp_keepalived enable_snmp_rfc enable_snmp_rfcv2
enable_snmp_rfcv3 enable_snmp_vrrp enable_traps fifo_write_vrrp_states_on_reload
include_check lvs_flush lvs_flush_on_stop lvs_flush_onstop
lvs_netlink_cmd_rcv_bufs lvs_netlink_cmd_rcv_bufs_force lvs_netlink_monitor_rcv_bufs
lvs_netlink_monitor_rcv_bufs_force lvs_notify_fifo lvs_notify_fifo_script
lvs_process_name lvs_sync_daemon lvs_timeouts min_auto_priority_delay nftables
nftables_counters nftables_ifindex nftables_ipvs nftables_ipvs_priority
nftables_ipvs_start_fwmark nftables_priority no_checker_emails no_email_faults
notify_fifo notify_fifo_script process_monitor_rcv_bufs process_monitor_rcv_bufs_force
process_names random_seed reload_check_config reload_file reload_repeat
reload_time_file rs_init_notifies shutdown_script shutdown_script_timeout
smtp_alert smtp_alert_checker smtp_alert_vrrp snmp_socket startup_script
startup_script_timeout tmp_config_directory umask vmac_addr_prefix vmac_prefix
vrrp_cpu_affinity vrrp_down_timer_adverts vrrp_garp_extra_if vrrp_iptables
vrrp_min_garp vrrp_netlink_cmd_rcv_bufs vrrp_netlink_cmd_rcv_bufs_force
vrrp_netlink_monitor_rcv_bufs vrrp_netlink_monitor_rcv_bufs_force
vrrp_notify_fifo_script vrrp_notify_priority_changes vrrp_priority
vrrp_process_name vrrp_rlimit_rtime vrrp_rlimit_rttime vrrp_rt_priority
vrrp_rx_bufs_multiplier vrrp_rx_bufs_policy vrrp_vmac_garp_intvl process_name
""".split()
# How keepalived 2.2.7 checks the values of some of them (probed with -t).
_GLOBAL_VALUE_SPECS = {
    **dict.fromkeys(
        "checker_log_all_failures data_use_instance lvs_netlink_cmd_rcv_bufs_force "
        "lvs_netlink_monitor_rcv_bufs_force no_checker_emails process_monitor_rcv_bufs_force "
        "rs_init_notifies smtp_alert smtp_alert_checker smtp_alert_vrrp vrrp_min_garp "
        "vrrp_netlink_cmd_rcv_bufs_force vrrp_netlink_monitor_rcv_bufs_force "
        "vrrp_notify_priority_changes".split(),
        "bool",
    ),
    **dict.fromkeys(
        "bfd_process_name checker_process_name config_save_dir dbus_service_name "
        "default_interface lvs_notify_fifo lvs_notify_fifo_script lvs_process_name "
        "lvs_sync_daemon notify_fifo reload_time_file "
        "snmp_socket tmp_config_directory "
        "vmac_addr_prefix vmac_prefix vrrp_process_name process_name".split(),
        "str",
    ),
    **dict.fromkeys(
        "lvs_netlink_cmd_rcv_bufs lvs_netlink_monitor_rcv_bufs process_monitor_rcv_bufs "
        "vrrp_netlink_cmd_rcv_bufs vrrp_netlink_monitor_rcv_bufs bfd_cpu_affinity "
        "checker_cpu_affinity vrrp_cpu_affinity random_seed".split(),
        "uint",
    ),
    **dict.fromkeys(
        "bfd_rlimit_rtime bfd_rlimit_rttime checker_rlimit_rtime checker_rlimit_rttime "
        "vrrp_rlimit_rtime vrrp_rlimit_rttime min_auto_priority_delay shutdown_script_timeout "
        "startup_script_timeout vrrp_rx_bufs_multiplier nftables_ipvs_start_fwmark".split(),
        "uint1",
    ),
    **dict.fromkeys(
        "notify_fifo_script vrrp_notify_fifo_script startup_script shutdown_script".split(),
        "script",
    ),
    "vrrp_garp_extra_if": "range:1:86400",
    "lvs_timeouts": "lvs_timeouts",
    "umask": "umask",
    "vrrp_rx_bufs_policy": "rxbufs",
    **dict.fromkeys("bfd_priority checker_priority vrrp_priority".split(), "range:-20:19"),
    **dict.fromkeys("bfd_rt_priority checker_rt_priority vrrp_rt_priority".split(), "range:1:99"),
    **dict.fromkeys("nftables_priority nftables_ipvs_priority".split(), "int"),
    "vrrp_down_timer_adverts": "range:1:100",
    "vrrp_vmac_garp_intvl": "deprecated:vrrp_garp_extra_if",
    "vrrp_iptables": "deprecated:nftables",
}
for _kw in _GLOBAL_UNSUPPORTED:
    _spec = _GLOBAL_VALUE_SPECS.get(_kw)
    GLOBAL_DEFS.setdefault(_kw, Keyword(_check_value(_spec) if _spec else _g_other, UNSUPPORTED))


# --- vrrp_script ------------------------------------------------------------


def _s_weight(ctx: _Ctx, node: Node, s: VrrpScript) -> None:
    value = ctx.integer(node, -253, 253)
    if value is None:
        return
    s.weight = value
    s.weight_reverse = _weight_reverse(ctx, node, 2)


def _weight_reverse(ctx: _Ctx, node: Node, index: int) -> bool:
    """The optional `reverse` after a weight; any other word there is an error."""
    if len(node.words) <= index:
        return False
    if node.words[index] == "reverse":
        return True
    ctx.error(node.word_span(index), f"unknown weight option '{node.words[index]}'")
    return False


def _s_user(ctx: _Ctx, node: Node, s: VrrpScript) -> None:
    user = ctx.arg(node)
    if user is None:
        return
    s.user = user
    if len(node.words) > 2:
        s.group = node.words[2]
    if ctx.host_checks and not _user_group_exist(user, s.group):
        ctx.error(
            node.span,
            f"vrrp_script {s.name}: cannot run as '{' '.join(node.args)}' (no such user or group)",
        )


def _user_group_exist(user: str, group: str | None) -> bool:
    try:
        pwd.getpwnam(user)
        if group is not None:
            grp.getgrnam(group)
    except KeyError:
        return False
    return True


def _s_script(ctx: _Ctx, node: Node, s: VrrpScript) -> None:
    if len(node.words) < 2:
        # keepalived ignores a bare `script` line without failing -t.
        ctx.warning(node.span, f"vrrp_script {s.name}: 'script' without a command is ignored")
        return
    command = ctx.arg(node)
    if command is not None:
        s.script = command
        inst_spans(ctx, s)["script"] = node.span


VRRP_SCRIPT: dict[str, Keyword] = {
    "script": Keyword(_s_script),
    "interval": Keyword(_set("interval", _secs(1, 4294))),
    "timeout": Keyword(_set("timeout", _secs(1, 4294))),
    "weight": Keyword(_s_weight),
    "rise": Keyword(_set("rise", _uint(1, _UINT_MAX))),
    "fall": Keyword(_set("fall", _uint(1, _UINT_MAX))),
    "user": Keyword(_s_user),
    "init_fail": Keyword(_set("init_fail", _bool)),
}


# --- track_file ---------------------------------------------------------------


def _f_weight(ctx: _Ctx, node: Node, f: TrackFileDef) -> None:
    if inst_spans(ctx, f).get("weight") is not None:
        ctx.error(node.span, f"weight already set for track file {f.name}; this one is ignored")
        return
    inst_spans(ctx, f)["weight"] = node.span
    value = ctx.integer(node, -254, 254)
    if value is None:
        return
    f.weight = value
    f.weight_reverse = _weight_reverse(ctx, node, 2)


def _f_init_file(ctx: _Ctx, node: Node, f: TrackFileDef) -> None:
    """`init_file [VALUE] [overwrite]`."""
    rest = node.words[1:]
    f.init_file = 0
    if rest and rest[0] != "overwrite":
        value = ctx.integer(node, -254, 254)
        f.init_file = value if value is not None else 0
        rest = rest[1:]
    if rest and rest[0] == "overwrite":
        f.init_file_overwrite = True
        rest = rest[1:]
    if rest:
        ctx.error(node.span, f"unknown init_file option '{rest[0]}' for track file {f.name}")


def _f_file(ctx: _Ctx, node: Node, f: TrackFileDef) -> None:
    if f.file:
        ctx.error(
            node.span,
            f"file already set for track file {f.name}; '{' '.join(node.args)}' is ignored",
        )
        return
    value = ctx.arg(node)
    if value is not None:
        f.file = value


TRACK_FILE: dict[str, Keyword] = {
    "file": Keyword(_f_file),
    "weight": Keyword(_f_weight),
    "init_file": Keyword(_f_init_file),
}


# --- vrrp_instance --------------------------------------------------------------


def _i_state(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    text = ctx.arg(node)
    if text is None:
        return
    try:
        inst.state = VrrpStateName(text.upper())
    except ValueError:
        ctx.error(node.word_span(1), f"state '{text}' is not MASTER or BACKUP; BACKUP is used")
        inst.state = VrrpStateName.BACKUP


def _i_interface(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    name = ctx.arg(node)
    if name is None:
        return
    inst.interface = name
    if name == "lo":
        ctx.error(node.word_span(1), f"({inst.name}) cannot use a loopback interface (lo) for VRRP")
        inst.interface = None
        return
    if ctx.host_checks and not _interface_exists(name):
        ctx.error(
            node.word_span(1),
            f"interface '{name}' of vrrp_instance {inst.name} does not exist on this host",
        )


def _interface_exists(name: str) -> bool:
    return "/" not in name and name not in (".", "..") and os.path.exists(f"/sys/class/net/{name}")


def _i_vrid(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    def bad(text: str) -> tuple[str, str | None]:
        return (
            f"({inst.name}) virtual_router_id '{text}' is not valid: it must be between 1 and 255",
            None,
        )

    value = ctx.integer(node, 1, 255, bad=bad)
    if value is not None:
        inst.virtual_router_id = value


def _i_priority(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    def bad(text: str) -> tuple[str, str | None]:
        return (
            f"({inst.name}) priority '{text}' is not valid: it must be between 1 and 255; "
            "the default 100 is used",
            "255 is only for the router that owns the virtual addresses",
        )

    value = ctx.integer(node, 1, 255, bad=bad)
    if value is not None:
        inst.priority = value
        inst_spans(ctx, inst)["priority"] = node.word_span(1)


def _i_advert_int(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    def bad(text: str) -> tuple[str, str | None]:
        return (
            f"({inst.name}) advert_int '{text}' is not valid: it must be between 0.01 and 255 "
            "seconds; the default 1 is used",
            None,
        )

    value = ctx.number(node, 0.01, 255, bad=bad)
    if value is not None:
        inst.advert_int = value
        inst_spans(ctx, inst)["advert_int"] = node.word_span(1)


def _i_version(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    value = ctx.integer(node, 2, 3)
    if value is not None:
        inst.version = value


def _i_preempt_delay(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    value = ctx.number(node, 0, 1000)
    if value is not None:
        inst.preempt_delay = value


def _i_authentication(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    if node.children is None:
        ctx.error(node.span, "authentication needs a { } block with auth_type and auth_pass")
        return
    inst_spans(ctx, inst)["authentication"] = node.span
    for child in node.children:
        if child.keyword == "auth_type":
            kind = ctx.arg(child)
            if kind is None:
                continue
            if kind.upper() not in ("PASS", "AH"):
                ctx.error(
                    child.word_span(1), f"({inst.name}) unknown auth_type '{kind}'; use PASS or AH"
                )
                continue
            inst.auth_type = kind.upper()
            if inst.auth_type == "AH":
                ctx.warning(
                    child.word_span(1),
                    "auth_type AH is not supported by keeplb (RFC 3768 removed it); "
                    "use PASS or none",
                )
        elif child.keyword == "auth_pass":
            password = ctx.arg(child)
            if password is None:
                continue
            if len(password) > 8:
                ctx.error(
                    child.word_span(1),
                    f"({inst.name}) auth_pass is longer than 8 characters; it is truncated to "
                    f"'{password[:8]}'",
                    hint="VRRPv2 carries at most 8 characters of password",
                )
                password = password[:8]
            inst.auth_pass = password
        else:
            _unknown(ctx, child, "authentication", ("auth_type", "auth_pass"))
    if inst.auth_type and inst.auth_pass is None:
        ctx.error(node.span, f"({inst.name}) authentication without auth_pass")


def _vip_list(attr: str) -> Handler:
    def handler(ctx: _Ctx, node: Node, inst: Any) -> None:
        if node.children is None:
            ctx.error(node.span, f"{node.keyword} needs a {{ }} block of addresses")
            return
        out: list[VirtualAddress] = getattr(inst, attr)
        for child in _entries(ctx, node):
            vip = _virtual_address(ctx, child, static=attr == "static_ipaddresses")
            if vip is not None:
                out.append(vip)
                if attr == "virtual_ipaddresses":
                    ctx.imply_family(inst, vip.address.version)

    return handler


# keepalived 2.2.7's address options (vrrp_ipaddress.c, probed with -t): those
# taking a value, and flags. keeplb applies brd/broadcast, dev, scope and label;
# no_track is what keeplb does for every address (it does not watch them), and
# '-nodad' what it does for every IPv6 address (IPv4 has no DAD). The others are
# accepted with a warning.
_VIP_VALUE_OPTIONS = ("brd", "broadcast", "dev", "scope", "label", "peer", "preferred_lft")
_VIP_FLAGS = ("no_track", "-nodad", "home", "mngtmpaddr", "noprefixroute", "autojoin", "use_vmac")
_VIP_IGNORED = frozenset(
    "peer preferred_lft home mngtmpaddr noprefixroute autojoin use_vmac track_group".split()
)
_VIP_OPTIONS = (*_VIP_VALUE_OPTIONS, *_VIP_FLAGS)


_SCOPES = ("global", "site", "link", "host", "nowhere")


def _virtual_address(ctx: _Ctx, node: Node, static: bool = False) -> VirtualAddress | None:
    """One line of virtual_ipaddress(_excluded) or, with `static`, of static_ipaddress."""
    text = node.words[0]
    try:
        # keepalived reads 'a.b.c.d/' as the address alone.
        if "/" in text and not text.endswith("/"):
            iface = ipaddress.ip_interface(text)
        else:
            addr = ipaddress.ip_address(text.rstrip("/"))
            iface = ipaddress.ip_interface(f"{addr}/{addr.max_prefixlen}")
    except ValueError:
        ctx.error(node.word_span(0), f"invalid IP address '{text}'; address skipped")
        return None
    opts: dict[str, str] = {}
    no_track = False
    words = node.words[1:]
    options = _VIP_OPTIONS + (("track_group",) if static else ())
    i = 0
    while i < len(words):
        word = words[i]
        if word not in options:
            ctx.error(
                node.word_span(i + 1),
                f"unknown option '{word}' for address {text}",
                hint=did_you_mean(word, options)
                or ("track_group is only for static_ipaddress" if word == "track_group" else None),
            )
            i += 1
            continue
        if word in _VIP_IGNORED:
            ctx.warning(
                node.word_span(i + 1),
                f"keyword '{word}' is not supported by keeplb",
                hint=f"address {text} is set without it",
            )
        if word == "no_track":
            no_track = True
        if word in _VIP_FLAGS:
            i += 1
            continue
        if i + 1 >= len(words):
            ctx.error(node.word_span(i + 1), f"'{word}' needs a value (address {text})")
            break
        opts[word] = words[i + 1]
        i += 2
    if "peer" in opts and "/" in text:
        ctx.error(
            node.word_span(0),
            f"cannot specify an address prefix together with a peer address ({text})",
        )
    dev = opts.get("dev")
    if dev is not None and ctx.host_checks and not _interface_exists(dev):
        ctx.error(node.span, f"interface '{dev}' for address {text} does not exist on this host")
    scope = opts.get("scope")
    if scope is not None and scope not in _SCOPES and not (scope.isdigit() and int(scope) <= 255):
        ctx.error(node.span, f"invalid scope '{scope}' for {text}; use one of {', '.join(_SCOPES)}")
    brd = opts.get("brd", opts.get("broadcast"))
    if brd is not None and brd not in ("+", "-"):
        try:
            ipaddress.ip_address(brd)
        except ValueError:
            ctx.error(node.span, f"invalid broadcast address '{brd}' for {text}")
    return VirtualAddress(
        address=iface,
        brd=None if brd == "-" else brd,  # 'brd -': no broadcast address, as without brd
        dev=opts.get("dev"),
        scope=opts.get("scope"),
        label=opts.get("label"),
        no_track=no_track,
        span=node.span,
    )


def _routes(attr: str) -> Handler:
    def handler(ctx: _Ctx, node: Node, obj: Any) -> None:
        if node.children is None:
            ctx.error(node.span, f"{node.keyword} needs a {{ }} block of routes")
            return
        out: list[VirtualRoute] = getattr(obj, attr)
        for child in _entries(ctx, node):
            if _check_route(ctx, child, tracked=attr == "virtual_routes"):
                out.append(VirtualRoute(tuple(child.words), child.span))

    return handler


# keepalived's route words (vrrp_iproute.c): those taking a value, and bare ones.
_ROUTE_VALUE = frozenset(
    "src from to via gw or dev scope table metric priority preference pref protocol "
    "mtu advmss realms tos dsfield rtt rttvar rto_min ssthresh cwnd initcwnd initrwnd "
    "features congctl window hoplimit expires encap nexthop fastopen_no_cookie".split()
)
_ROUTE_NUMBER = frozenset("metric priority preference mtu advmss".split())
_ROUTE_FLAG = frozenset(
    "onlink no_track blackhole unreachable prohibit throw quickack lock".split()
)
# The words keeplb does not apply when it sets a route (keeplb.vrrp.net.route_spec
# applies to/via/gw/src/dev/metric/priority/preference/table/scope/protocol and the
# route types; keep the two in step): accepted with a warning.
_ROUTE_IGNORED = frozenset(
    "from or pref mtu advmss realms tos dsfield rtt rttvar rto_min ssthresh cwnd initcwnd "
    "initrwnd features congctl window hoplimit expires encap nexthop fastopen_no_cookie "
    "quickack lock".split()
)


def _check_route(ctx: _Ctx, node: Node, tracked: bool) -> bool:
    """Check one route line; False when keepalived skips it."""
    words = node.words
    dest: str | None = None
    dev: str | None = None
    ok = True
    i = 0
    while i < len(words):
        word = words[i]
        if word in _ROUTE_IGNORED:
            ctx.warning(
                node.word_span(i),
                f"keyword '{word}' is not supported by keeplb",
                hint="the route is set without it",
            )
        if word in _ROUTE_FLAG:
            i += 1
            continue
        if word in _ROUTE_VALUE:
            if i + 1 >= len(words):
                ctx.error(node.word_span(i), f"route: '{word}' needs a value")
                ctx.diags.aborted = True
                return False
            value = words[i + 1]
            if word == "dev":
                dev = value
                if ctx.host_checks and not _interface_exists(value):
                    ctx.error(
                        node.word_span(i + 1),
                        f"route: interface '{value}' does not exist on this host",
                    )
            elif word == "to":
                dest = value
            elif word in ("via", "gw", "src", "from") and not _is_network(value):
                ctx.error(node.word_span(i + 1), f"route: invalid address '{value}' after '{word}'")
                ok = False
            elif word in _ROUTE_NUMBER and not value.isdigit():
                ctx.error(node.word_span(i + 1), f"route: invalid number '{value}' after '{word}'")
                ok = False
            i += 2
            continue
        if dest is None and (word == "default" or _is_network(word)):
            dest = word
            i += 1
            continue
        ctx.error(node.word_span(i), f"unknown route keyword '{word}'")
        return False
    if dest is None:
        ctx.error(node.span, "route without a destination")
        return False
    if tracked and dev is None and "no_track" not in words:
        ctx.error(
            node.span,
            f"cannot track route {dest} with no interface specified; it is not tracked",
            hint="add 'dev IFACE' or 'no_track' to the route",
        )
    return ok


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _i_native_ipv6(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    # keepalived ignores any argument: `native_ipv6 0` still means IPv6.
    inst.native_ipv6 = True
    ctx.imply_family(inst, 6)


def _i_unicast_src(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    text = ctx.arg(node)
    if text is not None:
        inst.unicast_src_ip = ctx.address(text, node.word_span(1), "unicast_src_ip")
        if inst.unicast_src_ip is not None:
            inst_spans(ctx, inst)["unicast_src_ip"] = node.word_span(1)
            ctx.imply_family(inst, inst.unicast_src_ip.version)


def _i_mcast_src(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    text = ctx.arg(node)
    if text is not None:
        inst.mcast_src_ip = ctx.address(text, node.word_span(1), "mcast_src_ip")
        if inst.mcast_src_ip is not None:
            inst_spans(ctx, inst)["mcast_src_ip"] = node.word_span(1)
            ctx.imply_family(inst, inst.mcast_src_ip.version)


def _ttl_bad(option: str) -> BadValue:
    return lambda text: (f"{option}: '{text}' is not a number in [0, 255]", None)


def _i_unicast_peer(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    if node.children is None:
        ctx.error(node.span, "unicast_peer needs a { } block of addresses")
        return
    inst_spans(ctx, inst)["unicast_peer"] = node.span
    peer_spans = inst_spans(ctx, inst)
    for child in _entries(ctx, node):
        addr = ctx.address(child.words[0], child.word_span(0), "unicast_peer")
        if addr is None:
            continue
        ttl: dict[str, int] = {}
        i = 1
        while i < len(child.words):
            option = child.words[i]
            if option not in ("min_ttl", "max_ttl"):
                ctx.error(child.span, f"unknown option '{option}' for unicast peer {addr}")
                break
            if i + 1 >= len(child.words):
                ctx.error(child.span, f"({inst.name}) {option} is missing a value")
                break
            # keepalived drops the peer's adverts outside the TTL range; keeplb
            # checks the value as keepalived -t does and goes no further.
            ctx.warning(
                child.word_span(i),
                f"keyword '{option}' is not supported by keeplb",
                hint=f"the TTL of adverts from {addr} is not checked",
            )
            value = ctx.integer(child, 0, 255, index=i + 1, bad=_ttl_bad(option))
            if value is not None:
                ttl[option] = value
            i += 2
        if ttl.get("min_ttl", 0) > ttl.get("max_ttl", 255):
            ctx.error(
                child.span,
                f"({inst.name}) min_ttl {ttl['min_ttl']} > max_ttl {ttl['max_ttl']} - "
                "all packets will be discarded",
            )
        if addr in inst.unicast_peers:
            ctx.warning(child.span, f"unicast peer {addr} listed twice")
            continue
        inst.unicast_peers.append(addr)
        ctx.imply_family(inst, addr.version)
        peer_spans[f"peer:{addr}"] = child.span


def _track_refs(attr: str, kind: str) -> Handler:
    def handler(ctx: _Ctx, node: Node, obj: Any) -> None:
        if node.children is None:
            ctx.error(node.span, f"{node.keyword} needs a {{ }} block of {kind} names")
            return
        out: list[TrackRef] = getattr(obj, attr)
        for child in _entries(ctx, node):
            name = child.words[0]
            weight: int | None = None
            reverse = False
            rest = child.words[1:]
            if rest and rest[0] == "weight":
                if len(rest) < 2:
                    ctx.error(child.word_span(1), f"'weight' needs a value ({kind} {name})")
                else:
                    weight = ctx.integer(child, -254, 254, index=2)
                    reverse = _weight_reverse(ctx, child, 3)
            elif rest:
                ctx.error(
                    child.word_span(1),
                    f"unknown option '{rest[0]}' for {kind} {name}; expected 'weight N'",
                )
            if any(ref.name == name for ref in out):
                ctx.error(child.span, f"duplicate {node.keyword} {name}; ignored")
                continue
            out.append(TrackRef(name, weight, reverse, child.span))

    return handler


def _i_track_lb(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    """keeplb's `track_lb [backend...]`: bare means every backend, `track_lb off` none."""
    names = list(node.args)
    if node.children is not None:
        names += [w for child in node.children for w in child.words]
    if names == ["off"]:
        inst.track_lb = []
    else:
        inst.track_lb = names or None


def _i_use_vmac(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    inst.use_vmac = True


def _i_accept(value: bool) -> Handler:
    def handler(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
        inst.accept = value

    return handler


def _i_debug(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    inst.debug = ctx.integer(node, 0, 4)


def _i_mcast_dst(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    text = ctx.arg(node)
    if text is not None:
        ctx.address(text, node.word_span(1), "mcast_dst_ip")


def _i_extra_notify(required: bool) -> Handler:
    """notify_deleted / notify_master_rx_lower_pri: scripts keeplb never runs."""

    def handler(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
        if required or len(node.words) > 1:
            ctx.script_path(node)

    return handler


def _i_unicast_flag(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    # Counts as a unicast keyword: keepalived wants unicast peers with it.
    inst_spans(ctx, inst).setdefault("unicast_keyword", node.span)


def _i_vmac_option(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    inst_spans(ctx, inst)["vmac_option"] = node.span


def _i_vrf(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    if ctx.arg(node) is not None:
        inst_spans(ctx, inst)["vrf"] = node.span


def _i_use_ipvlan(ctx: _Ctx, node: Node, inst: VrrpInstance) -> None:
    inst_spans(ctx, inst)["use_ipvlan"] = node.span


VRRP_INSTANCE: dict[str, Keyword] = {
    "state": Keyword(_i_state),
    "interface": Keyword(_i_interface),
    "virtual_router_id": Keyword(_i_vrid),
    "priority": Keyword(_i_priority),
    "advert_int": Keyword(_i_advert_int),
    "version": Keyword(_i_version),
    "nopreempt": Keyword(_set("nopreempt", _bool)),
    "preempt": Keyword(lambda ctx, node, inst: setattr(inst, "nopreempt", False)),
    "preempt_delay": Keyword(_i_preempt_delay),
    "authentication": Keyword(_i_authentication, block=True),
    "unicast_src_ip": Keyword(_i_unicast_src),
    "unicast_peer": Keyword(_i_unicast_peer, block=True),
    "mcast_src_ip": Keyword(_i_mcast_src),
    "virtual_ipaddress": Keyword(_vip_list("virtual_ipaddresses"), block=True),
    "virtual_ipaddress_excluded": Keyword(_vip_list("virtual_ipaddresses_excluded"), block=True),
    "virtual_routes": Keyword(_routes("virtual_routes"), block=True),
    "track_script": Keyword(_track_refs("track_scripts", "vrrp_script"), block=True),
    "track_interface": Keyword(_track_refs("track_interfaces", "interface"), block=True),
    "track_file": Keyword(_track_refs("track_files", "track_file"), block=True),
    "track_lb": Keyword(_i_track_lb, note="keeplb extension"),
    "notify": Keyword(_notify("notify")),
    "notify_master": Keyword(_notify("notify_master")),
    "notify_backup": Keyword(_notify("notify_backup")),
    "notify_fault": Keyword(_notify("notify_fault")),
    "notify_stop": Keyword(_notify("notify_stop")),
    "garp_master_delay": Keyword(_set("garp_master_delay", _secs(0, 4294))),
    "garp_master_repeat": Keyword(_set("garp_master_repeat", _uint(1, _UINT_MAX))),
    "garp_master_refresh": Keyword(_set("garp_master_refresh", _secs(0, _UINT_MAX))),
    "garp_master_refresh_repeat": Keyword(_set("garp_master_refresh_repeat", _uint(1, _UINT_MAX))),
    "dont_track_primary": Keyword(_set("dont_track_primary", _bool)),
    # keeplb installs no firewall rules: a master always accepts traffic to its
    # virtual addresses, which is what `accept` asks for.
    "accept": Keyword(_i_accept(True)),
    "no_accept": Keyword(
        _i_accept(False),
        UNSUPPORTED,
        note="keeplb does not filter traffic to the virtual addresses; they behave as with 'accept'",
    ),
    "strict_mode": Keyword(_set("strict_mode", _strict_bool), UNSUPPORTED, note=_STRICT),
    "smtp_alert": Keyword(_set("smtp_alert", _strict_bool), UNSUPPORTED, note=_NO_SMTP),
    "native_ipv6": Keyword(_i_native_ipv6),
    "use_vmac": Keyword(
        _i_use_vmac, UNSUPPORTED, note="the instance uses the interface's own MAC address"
    ),
    "debug": Keyword(_i_debug, UNSUPPORTED, note="keepalived 2.2.7 does not implement it either"),
}
_INSTANCE_UNSUPPORTED = """
garp_lower_prio_delay garp_lower_prio_repeat higher_prio_send_advert
lower_prio_no_advert kernel_rx_buf_size linkbeat_use_polling lvs_sync_daemon_interface
mcast_dst_ip notify_deleted notify_master_rx_lower_pri old_unicast_checksum
promote_secondaries track_bfd track_src_ip unicast_fault_no_peer unicast_ttl
use_ipvlan use_vmac_addr virtual_rules vmac_xmit_base vrf check_unicast_src
skip_check_adv_addr track_process down_timer_adverts garp_extra_if
notify_priority_changes vmac_garp_intvl
""".split()
_INSTANCE_VALUE_SPECS = {
    **dict.fromkeys(
        "higher_prio_send_advert lower_prio_no_advert skip_check_adv_addr "
        "notify_priority_changes".split(),
        "bool",
    ),
    "garp_lower_prio_delay": "uint",
    "garp_lower_prio_repeat": "uint",
    "kernel_rx_buf_size": "uint",
    "unicast_ttl": "unicast:1:255",
    "down_timer_adverts": "range:1:100",
    "garp_extra_if": "uint",
    "lvs_sync_daemon_interface": "deprecated:lvs_sync_daemon in global_defs",
    "vmac_garp_intvl": "deprecated:garp_extra_if",
    "linkbeat_use_polling": "deprecated:linkbeat_use_polling at the top level",
}
for _kw in _INSTANCE_UNSUPPORTED:
    _spec = _INSTANCE_VALUE_SPECS.get(_kw)
    VRRP_INSTANCE.setdefault(
        _kw,
        Keyword(_check_value(_spec), UNSUPPORTED)
        if _spec
        else _unsupported(block=_kw in ("virtual_rules", "track_bfd", "track_process")),
    )
VRRP_INSTANCE["mcast_dst_ip"] = Keyword(_i_mcast_dst, UNSUPPORTED)
VRRP_INSTANCE["notify_deleted"] = Keyword(_i_extra_notify(False), UNSUPPORTED)
VRRP_INSTANCE["notify_master_rx_lower_pri"] = Keyword(_i_extra_notify(True), UNSUPPORTED)
for _kw in ("check_unicast_src", "old_unicast_checksum"):
    VRRP_INSTANCE[_kw] = Keyword(_i_unicast_flag, UNSUPPORTED)
VRRP_INSTANCE["vmac_xmit_base"] = Keyword(_i_vmac_option, UNSUPPORTED)
VRRP_INSTANCE["vrf"] = Keyword(_i_vrf, UNSUPPORTED)
VRRP_INSTANCE["use_ipvlan"] = Keyword(_i_use_ipvlan, UNSUPPORTED)


# --- vrrp_sync_group -------------------------------------------------------------


def _sg_group(ctx: _Ctx, node: Node, sg: VrrpSyncGroup) -> None:
    if node.children is None:
        ctx.error(node.span, "group needs a { } block of vrrp_instance names")
        return
    sg.group.extend(w for child in _entries(ctx, node) for w in child.words)


SYNC_GROUP: dict[str, Keyword] = {
    "group": Keyword(_sg_group, block=True),
    "notify": Keyword(_notify("notify")),
    "notify_master": Keyword(_notify("notify_master")),
    "notify_backup": Keyword(_notify("notify_backup")),
    "notify_fault": Keyword(_notify("notify_fault")),
    "notify_stop": Keyword(_notify("notify_stop")),
    "track_script": Keyword(_track_refs("track_scripts", "vrrp_script"), block=True),
    "track_interface": Keyword(_track_refs("track_interfaces", "interface"), block=True),
    "track_file": Keyword(_track_refs("track_files", "track_file"), block=True),
    "smtp_alert": Keyword(_set("smtp_alert", _strict_bool), UNSUPPORTED, note=_NO_SMTP),
    "global_tracking": Keyword(
        _check_value("deprecated:track_interface/track_script/track_file on the sync group"),
        UNSUPPORTED,
    ),
    "sync_group_tracking_weight": _unsupported(),
    "track_bfd": _unsupported(block=True),
    "track_process": _unsupported(block=True),
    "notify_priority_changes": Keyword(_check_value("bool"), UNSUPPORTED),
}


# --- per-block tables for keyword_table() ------------------------------------------

BLOCK_TABLES: dict[str, dict[str, Keyword]] = {
    "global_defs": GLOBAL_DEFS,
    "vrrp_script": VRRP_SCRIPT,
    "track_file": TRACK_FILE,
    "vrrp_instance": VRRP_INSTANCE,
    "vrrp_sync_group": SYNC_GROUP,
}

# Top-level blocks keepalived knows and keeplb does not run.
ROOT_UNSUPPORTED: dict[str, str] = {
    "virtual_server": "LVS (IPVS) virtual servers are not supported by keeplb; use `keeplb lb`",
    "virtual_server_group": "LVS (IPVS) virtual servers are not supported by keeplb",
    "bfd_instance": "BFD is not supported by keeplb",
    "linkbeat_interfaces": "linkbeat is not supported by keeplb",
    "linkbeat_use_polling": "linkbeat is not supported by keeplb",
    "vrrp_track_process": "process tracking is not supported by keeplb; use a vrrp_script",
    "garp_group": "garp_group is not supported by keeplb",
    "track_group": "track_group is not supported by keeplb",
    "net_namespace": "net_namespace is not supported by keeplb; run keeplb inside the namespace",
    "net_namespace_ipvs": "net_namespace_ipvs is not supported by keeplb",
    "namespace_with_ipsets": "namespace_with_ipsets is not supported by keeplb",
    "use_pid_dir": "use_pid_dir is not supported by keeplb; use -p",
    "child_wait_time": "child_wait_time is not supported by keeplb",
    "interface_up_down_delays": "interface_up_down_delays is not supported by keeplb",
    "static_rules": "static_rules (policy routing) are not supported by keeplb",
    "instance": "instance is not supported by keeplb",
}
ROOT_SUPPORTED = (
    "global_defs",
    "vrrp_script",
    "vrrp_instance",
    "vrrp_sync_group",
    "track_file",
    "vrrp_track_file",
    "static_ipaddress",
    "static_routes",
)


def keyword_table() -> list[tuple[str, str, str]]:
    """Every keyword keeplb knows, as (block, keyword, 'supported'|'unsupported'), for docs."""
    rows: list[tuple[str, str, str]] = []
    for name in ROOT_SUPPORTED:
        rows.append(("(top level)", name, SUPPORTED))
    for name in ROOT_UNSUPPORTED:
        rows.append(("(top level)", name, UNSUPPORTED))
    for block, table in BLOCK_TABLES.items():
        for keyword, kw in table.items():
            rows.append((block, keyword, kw.status))
    rows.append(("authentication", "auth_type", SUPPORTED))
    rows.append(("authentication", "auth_pass", SUPPORTED))
    for block, names in (
        ("virtual_server", VIRTUAL_SERVER_KEYWORDS),
        ("real_server", REAL_SERVER_KEYWORDS | LVS_CHECKERS),
        ("bfd_instance", BFD_KEYWORDS),
    ):
        rows.extend((block, name, UNSUPPORTED) for name in sorted(names))
    return rows


# --------------------------------------------------------------------------
# walking the tree
# --------------------------------------------------------------------------


def inst_spans(ctx: _Ctx, obj: Any) -> dict[str, Span]:
    """Spans of particular settings of a model object, for the whole-config checks.

    The objects live as long as the parse, so their id() is a stable key.
    """
    return ctx.spans.setdefault(id(obj), {})


def _unknown(ctx: _Ctx, node: Node, block: str, choices: Sequence[str]) -> None:
    ctx.error(
        node.word_span(0),
        f"unknown keyword '{node.keyword}' in '{block}'",
        hint=did_you_mean(node.keyword, choices),
    )


def _apply(ctx: _Ctx, node: Node, block: str, table: Mapping[str, Keyword], obj: Any) -> None:
    if node.children is None:
        ctx.error(node.span, f"'{block}' needs a {{ }} block")
        return
    for child in node.children:
        kw = table.get(child.keyword)
        if kw is None:
            _unknown(ctx, child, block, list(table))
            continue
        if kw.block and child.children is None:
            if child is node.children[-1] and not child.args:
                # keepalived reads the enclosing '}' as the end of an empty block.
                child.children = []
            else:
                ctx.error(child.span, f"'{child.keyword}' needs a {{ }} block")
                continue
        if kw.block and child.args and child.keyword != "track_lb":
            ctx.error(
                child.word_span(1),
                f"block '{child.keyword}' has extra parameters: {' '.join(child.args)}",
            )
        if not kw.block and child.children is not None and kw.handler is not None:
            ctx.error(
                child.open_span or child.span,
                f"unexpected '{{' after '{child.keyword}'; block ignored",
            )
            continue
        if kw.status == UNSUPPORTED:
            ctx.warning(
                child.word_span(0),
                f"keyword '{child.keyword}' is not supported by keeplb",
                hint=kw.note or None,
            )
        if kw.handler is not None:
            kw.handler(ctx, child, obj)


def _name(ctx: _Ctx, node: Node) -> str | None:
    if len(node.words) < 2:
        ctx.error(node.span, f"'{node.keyword}' needs a name")
        return None
    return node.words[1]


def _root(ctx: _Ctx, nodes: list[Node]) -> None:
    cfg = ctx.cfg
    for node in nodes:
        kw = node.keyword
        if kw == "global_defs":
            if node.children is None:
                ctx.error(node.span, "'global_defs' needs a { } block")
                continue
            if cfg.global_defs.span is None:
                cfg.global_defs.span = node.span
            _apply(ctx, node, kw, GLOBAL_DEFS, cfg.global_defs)
        elif kw == "vrrp_script":
            name = _name(ctx, node)
            if name is None:
                continue
            script = VrrpScript(name, span=node.span)
            _apply(ctx, node, kw, VRRP_SCRIPT, script)
            if name in cfg.scripts:
                ctx.error(
                    node.span,
                    f"vrrp_script {name} already defined",
                    hint=_first(cfg.scripts[name].span),
                )
                continue
            if not script.script:
                ctx.error(node.span, f"vrrp_script {name} has no 'script'; it is ignored")
                continue
            cfg.scripts[name] = script
        elif kw in ("track_file", "vrrp_track_file"):
            name = _name(ctx, node)
            if name is None:
                continue
            tf = TrackFileDef(name, span=node.span)
            _apply(ctx, node, kw, TRACK_FILE, tf)
            if not tf.file:
                ctx.error(node.span, f"{kw} {name} has no 'file'; it is ignored")
                continue
            cfg.track_files[name] = tf
        elif kw == "vrrp_instance":
            _vrrp_instance(ctx, node)
        elif kw == "vrrp_sync_group":
            name = _name(ctx, node)
            if name is None:
                continue
            sg = VrrpSyncGroup(name, span=node.span)
            _apply(ctx, node, kw, SYNC_GROUP, sg)
            if any(g.name == name for g in cfg.sync_groups):
                ctx.error(node.span, f"vrrp_sync_group {name} already defined")
                continue
            cfg.sync_groups.append(sg)
        elif kw == "static_ipaddress":
            _vip_list("static_ipaddresses")(ctx, node, cfg)
        elif kw == "static_routes":
            _routes("static_routes")(ctx, node, cfg)
        elif kw in ROOT_UNSUPPORTED:
            ctx.warning(
                node.word_span(0),
                f"keyword '{kw}' is not supported by keeplb",
                hint=ROOT_UNSUPPORTED[kw],
            )
            if kw == "virtual_server":
                _check_virtual_server(ctx, node)
            elif kw == "bfd_instance":
                _check_bfd(ctx, node)
        else:
            ctx.error(
                node.word_span(0),
                f"unknown keyword '{kw}'"
                + (" (with a block, ignored)" if node.children is not None else ""),
                hint=did_you_mean(kw, [*ROOT_SUPPORTED, *ROOT_UNSUPPORTED]),
            )


def _first(span: Span | None) -> str | None:
    return f"first defined at {span}" if span else None


# What keepalived 2.2.7 accepts inside the blocks keeplb does not run (probed
# against the binary). keeplb checks the keywords so that the verdict matches
# keepalived -t, and goes no further.
_LVS_COMMON = (
    "alpha connect_timeout delay_before_retry delay_loop inhibit_on_failure lvs_method "
    "retry smtp_alert snmp_name warmup weight"
).split()
VIRTUAL_SERVER_KEYWORDS = frozenset(
    _LVS_COMMON
    + (
        "ha_suspend hashed hysteresis ip_family lb_algo lb_kind lvs_sched omega ops "
        "persistence_engine persistence_granularity persistence_timeout protocol quorum "
        "quorum_down quorum_up real_server sorry_server sorry_server_inhibit "
        "sorry_server_lvs_method virtualhost"
    ).split()
)
REAL_SERVER_KEYWORDS = frozenset(
    _LVS_COMMON + "lthreshold uthreshold notify_down notify_up".split()
)
LVS_CHECKERS = frozenset(
    "TCP_CHECK HTTP_GET SSL_GET MISC_CHECK SMTP_CHECK DNS_CHECK BFD_CHECK UDP_CHECK "
    "PING_CHECK FILE_CHECK".split()
)
BFD_KEYWORDS = frozenset(
    "checker hoplimit idle_tx max_hops min_rx min_tx multiplier neighbor_ip neighbour_ip "
    "passive source_ip ttl vrrp weight".split()
)


_LVS_BLOCKS = LVS_CHECKERS | {"real_server", "sorry_server"}


def _check_keywords(ctx: _Ctx, node: Node, block: str, known: frozenset[str]) -> None:
    for child in node.children or []:
        if child.keyword not in known:
            _unknown(ctx, child, block, sorted(known))
        elif child.children is not None and child.keyword not in _LVS_BLOCKS:
            ctx.error(
                child.open_span or child.span,
                f"unexpected '{{' after '{child.keyword}'; block ignored",
            )


def _check_virtual_server(ctx: _Ctx, node: Node) -> None:
    """The checks keepalived -t makes on an LVS virtual_server, kept for the verdict."""
    children = node.children or []
    _check_keywords(ctx, node, "virtual_server", VIRTUAL_SERVER_KEYWORDS)
    for child in children:
        if child.keyword == "real_server":
            _check_keywords(ctx, child, "real_server", REAL_SERVER_KEYWORDS | LVS_CHECKERS)
    if not any(c.keyword == "real_server" for c in children):
        ctx.error(node.span, f"virtual server {' '.join(node.args)} has no real servers")
    if not any(c.keyword in ("lb_kind", "lvs_method") for c in children):
        ctx.error(
            node.span,
            f"virtual server {' '.join(node.args)}: no forwarding method set "
            "(lb_kind); keepalived defaults to NAT",
        )


def _check_bfd(ctx: _Ctx, node: Node) -> None:
    """keepalived -t refuses a bfd_instance without a valid neighbor_ip."""
    _check_keywords(ctx, node, "bfd_instance", BFD_KEYWORDS)
    neighbors = [c for c in node.children or [] if c.keyword in ("neighbor_ip", "neighbour_ip")]
    if not neighbors:
        ctx.error(node.span, f"bfd_instance {' '.join(node.args)} has no neighbor_ip")
    for child in neighbors:
        if len(child.words) > 1:
            ctx.address(child.words[1], child.word_span(1), "bfd neighbor_ip")


def _vrrp_instance(ctx: _Ctx, node: Node) -> None:
    ctx.has_vrrp = True
    name = _name(ctx, node)
    if name is None:
        return
    if len(node.words) > 2:
        # keepalived 2.2.7 says "vrrp_instance must have a name" and drops the block.
        ctx.error(
            node.word_span(2),
            f"vrrp_instance takes one name; extra words: {' '.join(node.words[2:])}",
        )
        return
    inst = VrrpInstance(name, span=node.span)
    _apply(ctx, node, "vrrp_instance", VRRP_INSTANCE, inst)
    if name in ctx.instance_spans:
        ctx.error(
            node.word_span(1),
            f"vrrp instance {name} already defined; this one is ignored",
            hint=_first(ctx.instance_spans[name]),
        )
        return
    ctx.instance_spans[name] = node.span
    if _validate_instance(ctx, inst):
        ctx.cfg.instances.append(inst)
    else:
        ctx.dropped_instances.add(name)


def _validate_instance(ctx: _Ctx, inst: VrrpInstance) -> bool:
    """keepalived's vrrp_complete_instance checks; False when keepalived drops the instance."""
    where = inst.span
    spans = inst_spans(ctx, inst)
    keep = True
    g = ctx.cfg.global_defs
    version = inst.version or g.vrrp_version
    if inst.virtual_router_id is None:
        ctx.error(
            where,
            f"({inst.name}) the virtual router id must be set",
            hint="add 'virtual_router_id N' (1-255)",
        )
        keep = False
    if inst.interface is None:
        ctx.error(where, f"({inst.name}) no interface set", hint="add 'interface NAME'")
        keep = False
    if "priority" not in spans and inst.state is VrrpStateName.MASTER:
        # keepalived: an initial MASTER without a priority is the address owner.
        inst.priority = 255
    if inst.nopreempt and inst.preempt_delay:
        ctx.error(
            where,
            f"({inst.name}) preempt_delay is incompatible with nopreempt; preempt_delay is reset",
        )
        inst.preempt_delay = 0.0
    if inst.preempt_delay and inst.state is VrrpStateName.MASTER:
        ctx.error(
            where,
            f"({inst.name}) preempt_delay will not work with initial state MASTER; it is cleared",
        )
        inst.preempt_delay = 0.0
    if inst.nopreempt and inst.state is VrrpStateName.MASTER:
        ctx.error(
            where,
            f"({inst.name}) nopreempt will not work with initial state MASTER; nopreempt is cleared",
            hint="use 'state BACKUP' with nopreempt",
        )
        inst.nopreempt = False
    if inst.priority == 255:
        scripts = ctx.cfg.scripts
        weighted = [
            t
            for t in inst.track_scripts
            if (t.weight if t.weight is not None else getattr(scripts.get(t.name), "weight", 0))
        ]
        for ref in weighted:
            ctx.error(
                ref.span,
                f"({inst.name}) tracked script {ref.name} has a weight, which the address owner "
                "(priority 255) cannot use; it is ignored",
                hint="use 'weight 0' to make the script put the instance in FAULT instead",
            )
        inst.track_scripts = [t for t in inst.track_scripts if t not in weighted]
    family = ctx.family.get(id(inst), inst.family)
    vips = []
    for vip in inst.virtual_ipaddresses:
        if vip.address.version != family:
            ctx.error(
                vip.span,
                f"({inst.name}) address {vip.address} is not IPv{family} like the instance; "
                "it is ignored",
                hint="put addresses of the other family in virtual_ipaddress_excluded",
            )
            continue
        vips.append(vip)
    inst.virtual_ipaddresses = vips
    if family == 6:
        inst.native_ipv6 = True  # keeps inst.family right when no VIP is left
    if not inst.virtual_ipaddresses:
        ctx.error(where, f"({inst.name}) no virtual_ipaddress specified; at least one is sensible")
    if inst.mcast_src_ip is not None and inst.mcast_src_ip.version != family:
        ctx.error(
            spans.get("mcast_src_ip", where),
            f"({inst.name}) mcast_src_ip {inst.mcast_src_ip} is not IPv{family} like the instance",
        )
        inst.mcast_src_ip = None
    if family == 6 and version == 2:
        if inst.version == 2:
            ctx.error(
                where, f"({inst.name}) VRRP version 2 does not support IPv6; version 3 is used"
            )
        inst.version = 3
        version = 3
    if version == 2 and inst.advert_int != int(inst.advert_int):
        rounded = max(1, round(inst.advert_int))
        ctx.error(
            spans.get("advert_int", where),
            f"({inst.name}) VRRPv2 advertisement interval {inst.advert_int:g}s must be an integer; "
            f"{rounded}s is used",
            hint="VRRP version 2 counts in whole seconds; use 'version 3' for sub-second adverts",
        )
        inst.advert_int = float(rounded)
    if version == 3 and inst.advert_int > 40.95:
        ctx.error(
            spans.get("advert_int", where),
            f"({inst.name}) VRRPv3 advert_int must be at most 40.95s",
        )
        inst.advert_int = 40.95
    if inst.auth_type is not None and version == 3:
        ctx.error(
            spans.get("authentication", where),
            f"({inst.name}) VRRP version 3 does not support authentication; it is ignored",
        )
        inst.auth_type = None
        inst.auth_pass = None
    strict = inst.strict_mode if inst.strict_mode is not None else g.vrrp_strict
    if inst.auth_type is not None and strict:
        ctx.error(
            spans.get("authentication", where),
            f"({inst.name}) {'strict_mode' if inst.strict_mode else 'vrrp_strict'} forbids "
            "authentication; it is ignored",
        )
        inst.auth_type = None
        inst.auth_pass = None
    if inst.unicast_src_ip is not None and inst.unicast_src_ip.version != family:
        ctx.error(
            spans.get("unicast_src_ip", where),
            f"({inst.name}) unicast_src_ip {inst.unicast_src_ip} is not IPv{family} like the instance",
        )
        inst.unicast_src_ip = None
    peers = []
    for peer in inst.unicast_peers:
        if peer.version != family:
            ctx.error(
                spans.get(f"peer:{peer}", where),
                f"({inst.name}) unicast peer {peer} is not IPv{family} like the instance; peer skipped",
            )
            continue
        peers.append(peer)
    inst.unicast_peers = peers
    if "vmac_option" in spans and not inst.use_vmac:
        ctx.error(spans["vmac_option"], f"({inst.name}) vmac_xmit_base is only valid with use_vmac")
    if "vrf" in spans and inst.interface is not None:
        ctx.error(spans["vrf"], f"({inst.name}) vrf and interface cannot both be given")
    if "use_ipvlan" in spans and inst.unicast_src_ip is None and inst.mcast_src_ip is None:
        ctx.error(
            spans["use_ipvlan"],
            f"({inst.name}) use_ipvlan needs a source address (unicast_src_ip or mcast_src_ip)",
        )
    if inst.native_ipv6 and family == 4:
        ctx.error(where, f"({inst.name}) native_ipv6 cannot be used with IPv4 addresses")
    unicast_kw = ("unicast_peer", "unicast_src_ip", "unicast_keyword")
    if not peers and any(k in spans for k in unicast_kw):
        ctx.error(
            next(spans[k] for k in unicast_kw if k in spans),
            f"({inst.name}) a unicast keyword is given without any unicast peer; multicast is used",
        )
    return keep


def _check_scripts(ctx: _Ctx) -> None:
    """keepalived's script checks: does each script exist, and is script security on.

    As in keepalived, a vrrp_script whose program is missing is an error and is
    disabled; a notify script whose program is missing is skipped quietly (keeplb
    warns); only scripts that would run count for the security check.
    """
    g = ctx.cfg.global_defs
    cfg = ctx.cfg
    path = ctx.env.get("PATH", DEFAULT_PATH)
    running: list[Span | None] = []
    secure = g.enable_script_security
    for name, script in list(cfg.scripts.items()):
        program = _program(script.script)
        where = inst_spans(ctx, script).get("script", script.span)
        if ctx.host_checks:
            found = _find_program(program, path)
            why = _insecure(found) if found and secure else None
            if found is None or why is not None:
                ctx.error(
                    where,
                    f"vrrp_script {name}: '{program}' "
                    + (f"is insecure ({why})" if why else "not found or not executable")
                    + "; the script is disabled",
                )
                del cfg.scripts[name]
                continue
        running.append(where)
    for span, command, owner, attr in ctx.notify_scripts:
        program = _program(command)
        if ctx.host_checks:
            # keepalived skips a missing or insecure notify script without failing -t.
            found = _find_program(program, path)
            why = _insecure(found) if found and secure else None
            if found is None or why is not None:
                problem = f"is insecure ({why})" if why else "not found or not executable"
                ctx.warning(span, f"notify script '{program}' {problem}; it will not run")
                if owner is not None and attr is not None and getattr(owner, attr) == command:
                    # ...and it does not: the daemon runs what the model holds.
                    setattr(owner, attr, None)
                continue
        running.append(span)
    for inst in cfg.instances:
        inst.track_scripts = [t for t in inst.track_scripts if t.name in cfg.scripts]
    if not running:
        return
    if not g.enable_script_security:
        ctx.diags.security_violation = True
        ctx.error(
            min(
                (s for s in running if s),
                key=lambda s: (s.file != cfg.files[0], s.line),
                default=None,
            ),
            SECURITY_VIOLATION,
            hint="scripts run as root; add 'enable_script_security' and "
            "'script_user USER' to global_defs",
        )
    elif g.script_user is None and ctx.host_checks:
        try:
            pwd.getpwnam(DEFAULT_SCRIPT_USER)
        except KeyError:
            ctx.error(
                g.span,
                f"enable_script_security is set without script_user, and the default user "
                f"'{DEFAULT_SCRIPT_USER}' does not exist; scripts cannot run",
                hint="add 'script_user root' (or another user) to global_defs",
            )
            cfg.scripts.clear()


def _program(command: str) -> str:
    words = command.split()
    return words[0] if words else ""


def _find_program(program: str, path: str) -> str | None:
    """The executable file `program` names (looked up in `path` without a '/'), or None."""
    if "/" in program:
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    for folder in path.split(":"):
        candidate = os.path.join(folder or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _insecure(program: str) -> str | None:
    """Why keepalived's script security would refuse `program`, or None when it is safe.

    The rule of keepalived's check_script_secure: the file and every directory
    above it must be owned by root and not writable by group or others (a
    directory with the sticky bit, like /tmp, may be).
    """
    path = os.path.realpath(program)
    first = True
    while True:
        try:
            st = os.stat(path)
        except OSError:
            return f"cannot stat {path}"
        if st.st_uid != 0:
            return f"{path} is not owned by root"
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and (first or not st.st_mode & stat.S_ISVTX):
            return f"{path} is writable by group or others"
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
        first = False


def _defined_refs(
    ctx: _Ctx,
    refs: list[TrackRef],
    defined: Mapping[str, object],
    owner: str,
    what: str,
    block: str | None,
) -> list[TrackRef]:
    """The refs naming something `defined`; each other one is an error and is
    dropped ("<owner> <what> x not found; ignored", with a hint to `block`)."""
    kept = []
    for ref in refs:
        if ref.name in defined:
            kept.append(ref)
            continue
        hint = (
            (did_you_mean(ref.name, defined) or f"define it in a {block} block") if block else None
        )
        ctx.error(ref.span, f"{owner} {what} {ref.name} not found; ignored", hint=hint)
    return kept


def _check_references(ctx: _Ctx) -> None:
    cfg = ctx.cfg
    for inst in cfg.instances:
        owner = f"({inst.name})"
        inst.track_scripts = _defined_refs(
            ctx, inst.track_scripts, cfg.scripts, owner, "track script", "vrrp_script"
        )
        inst.track_files = _defined_refs(
            ctx, inst.track_files, cfg.track_files, owner, "track file", None
        )
        for ref in inst.track_interfaces:
            if ref.name == inst.interface:
                ctx.error(
                    ref.span,
                    f"({inst.name}) track_interface {ref.name} is the instance's own "
                    "interface, which is always tracked; ignored",
                )
            elif ctx.host_checks:
                if not _interface_exists(ref.name):
                    ctx.error(
                        ref.span,
                        f"({inst.name}) track_interface {ref.name} does not exist on this host",
                    )
    seen: dict[tuple[int, int, str], VrrpInstance] = {}
    for inst in cfg.instances:
        if inst.virtual_router_id is None:
            continue
        key = (inst.virtual_router_id, inst.family, inst.interface or "")
        other = seen.get(key)
        if other is not None:
            ctx.error(
                inst.span,
                f"{other.name} and {inst.name} both use VRID {inst.virtual_router_id} with "
                f"IPv{inst.family} on interface {inst.interface}",
                hint="each instance on an interface needs its own virtual_router_id",
            )
        else:
            seen[key] = inst
    owners: dict[IPAddress, VrrpInstance] = {}
    for inst in cfg.instances:
        local: set[IPAddress] = set()
        for vip in inst.virtual_ipaddresses:
            ip = vip.address.ip
            if ip in local:
                ctx.warning(vip.span, f"({inst.name}) virtual address {ip} is listed twice")
                continue
            local.add(ip)
            other = owners.setdefault(ip, inst)
            if other is not inst:
                ctx.warning(
                    vip.span,
                    f"({inst.name}) virtual address {ip} is also in {other.name}",
                    hint="the two instances will fight over the address when both are MASTER",
                )
    names = {i.name for i in cfg.instances}
    in_group: dict[str, str] = {}
    for sg in cfg.sync_groups:
        members = []
        for member in sg.group:
            if member not in names:
                if member not in ctx.dropped_instances:
                    ctx.error(
                        sg.span, f"vrrp_sync_group {sg.name}: vrrp_instance {member} does not exist"
                    )
                continue
            if member in in_group:
                ctx.error(
                    sg.span,
                    f"vrrp_instance {member} is in both sync groups {in_group[member]} and {sg.name}",
                )
                continue
            in_group[member] = sg.name
            members.append(member)
        sg.group = members
        if len(members) == 1:
            ctx.error(
                sg.span,
                f"sync group {sg.name} has only 1 virtual router; a sync group needs at least two",
            )
        for ref in sg.track_scripts:
            if ref.name not in cfg.scripts:
                ctx.error(
                    ref.span,
                    f"vrrp_sync_group {sg.name}: track script {ref.name} not found; ignored",
                )
        # keepalived 2.2.7: "(G) track file x not found, ignoring..." and
        # "(G) tracked interface x doesn't exist", as for an instance's.
        sg.track_files = _defined_refs(
            ctx,
            sg.track_files,
            cfg.track_files,
            f"vrrp_sync_group {sg.name}:",
            "track file",
            "track_file",
        )
        if ctx.host_checks:
            for ref in sg.track_interfaces:
                if not _interface_exists(ref.name):
                    ctx.error(
                        ref.span,
                        f"vrrp_sync_group {sg.name}: track_interface {ref.name} "
                        "does not exist on this host",
                    )


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------


def parse(
    path: str,
    defines: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    *,
    host_checks: bool = True,
) -> tuple[KeepalivedConfig, KeepalivedDiagnostics]:
    """Parse a keepalived.conf and its includes.

    `defines` are the config ids (keepalived -i) that `@id` lines select.
    `env` is the environment scripts are looked up in (PATH); os.environ by default.
    `host_checks` compares the config with this host as keepalived -t does
    (interfaces, script programs, script_user); turn it off to check a file
    meant for another machine or network namespace.

    Never raises on bad input and never prints: everything is in the diagnostics.
    """
    diags = KeepalivedDiagnostics()
    ctx = _Ctx(diags, os.environ if env is None else env, host_checks)
    try:
        nodes, files, opened = kalexer.read(path, defines, diags, env)
        ctx.cfg.files = files
        if not opened:
            diags.unreadable = True
            return ctx.cfg, diags
        _root(ctx, nodes)
        _check_references(ctx)
        # keepalived validates scripts in its VRRP process, which only starts
        # when there is a vrrp_instance.
        if ctx.has_vrrp:
            _check_scripts(ctx)
    except RecursionError:
        diags.error(Span(path, 0), "configuration nested too deeply")
    return ctx.cfg, diags
