"""Typed models of haproxy.cfg and keepalived.conf.

These dataclasses are the contract between the parsers and everything that
runs. Times are integers in milliseconds on the haproxy side (haproxy's own
unit) and floats in seconds on the keepalived side (keepalived's unit);
VRRP timers are converted to centiseconds in vrrp/timers.py only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum

from keeplb.config.diagnostics import Span

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# --------------------------------------------------------------------------
# haproxy.cfg
# --------------------------------------------------------------------------


class Mode(Enum):
    TCP = "tcp"
    HTTP = "http"
    LOG = "log"


class ProxyKind(Enum):
    DEFAULTS = "defaults"
    FRONTEND = "frontend"
    BACKEND = "backend"
    LISTEN = "listen"

    @property
    def has_frontend(self) -> bool:
        return self in (ProxyKind.FRONTEND, ProxyKind.LISTEN)

    @property
    def has_backend(self) -> bool:
        return self in (ProxyKind.BACKEND, ProxyKind.LISTEN)


@dataclass(frozen=True, slots=True)
class LogTarget:
    """One `log` line. `address` is '/dev/log', 'stdout', 'stderr', 'udp@h:p', 'h:p', ..."""

    address: str
    facility: str = "local0"
    level: str | None = None
    minlevel: str | None = None
    format: str | None = None
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed socket address as haproxy understands it.

    family: 'ipv4', 'ipv6', 'unix', 'abns', or 'any' (host '*' or empty).
    For 'unix' the path is in `host`. port_low == port_high for a single port;
    both are None when no port was given.
    """

    family: str
    host: str
    port_low: int | None = None
    port_high: int | None = None
    port_offset: bool = False  # "+N" / "-N" server ports

    def ports(self) -> range:
        if self.port_low is None:
            return range(0)
        high = self.port_high if self.port_high is not None else self.port_low
        return range(self.port_low, high + 1)


@dataclass(frozen=True, slots=True)
class Bind:
    address: Address
    name: str | None = None
    backlog: int | None = None
    maxconn: int | None = None
    v4v6: bool = False
    v6only: bool = False
    transparent: bool = False
    interface: str | None = None
    ssl: bool = False
    accept_proxy: bool = False
    options: tuple[tuple[str, str | None], ...] = ()
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Options of a `server` or `default-server` line; None means 'not set here'."""

    check: bool | None = None
    check_port: int | None = None
    check_addr: str | None = None
    inter: int | None = None
    fastinter: int | None = None
    downinter: int | None = None
    rise: int | None = None
    fall: int | None = None
    weight: int | None = None
    slowstart: int | None = None
    maxconn: int | None = None
    maxqueue: int | None = None
    minconn: int | None = None
    backup: bool | None = None
    disabled: bool | None = None
    on_marked_down: str | None = None  # 'shutdown-sessions'
    on_marked_up: str | None = None  # 'shutdown-backup-sessions'
    on_error: str | None = None
    check_ssl: bool | None = None
    ssl: bool | None = None
    verify: str | None = None  # 'none' | 'required'
    sni: str | None = None
    check_sni: str | None = None
    ca_file: str | None = None
    init_addr: tuple[str, ...] | None = None
    send_proxy: bool | None = None
    agent_check: bool | None = None
    resolvers: str | None = None
    id: int | None = None
    cookie: str | None = None
    track: str | None = None
    error_limit: int | None = None


# haproxy's defaults for a server when nothing sets an option (2.6).
SERVER_DEFAULTS = ServerOptions(
    check=False,
    inter=2000,
    rise=2,
    fall=3,
    weight=1,
    slowstart=0,
    maxconn=0,
    maxqueue=0,
    backup=False,
    disabled=False,
    check_ssl=False,
    ssl=False,
)


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    address: Address
    options: ServerOptions
    """Effective options: the line's own, then default-server's, then SERVER_DEFAULTS."""
    span: Span | None = None

    @property
    def weight(self) -> int:
        return self.options.weight if self.options.weight is not None else 1


@dataclass(frozen=True, slots=True)
class Balance:
    algorithm: str = "roundrobin"
    argument: str | None = None  # e.g. 'hdr(host)' for 'balance hdr(host)', url_param name
    hash_type: str = "map-based"  # 'map-based' | 'consistent'
    hash_function: str | None = None
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    """An `if`/`unless` condition on a rule: ACL names (with '!'), and anonymous ACLs."""

    negate: bool  # True for 'unless'
    terms: tuple[tuple[str, ...], ...]
    """Disjunction of conjunctions: (('acl1', '!acl2'), ('acl3',)) for 'acl1 !acl2 || acl3'.
    Anonymous ACLs appear as '{ criterion value... }' strings."""
    text: str = ""


@dataclass(frozen=True, slots=True)
class Acl:
    name: str
    criterion: str  # 'dst_port', 'src', 'path', 'path_beg', 'hdr(host)', ...
    flags: tuple[str, ...]
    values: tuple[str, ...]
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class UseBackend:
    backend: str
    condition: Condition | None
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class TcpRequestConnection:
    """A `tcp-request connection accept|reject [if|unless cond]` rule: decides on a
    connection right after accept(), in order, the first matching rule winning."""

    action: str  # 'accept' | 'reject'
    condition: Condition | None = None
    acls: tuple[Acl, ...] | None = None
    """The ACLs its condition names: None for those of the proxy holding the rule;
    set for a rule inherited from a defaults section, whose ACLs stay there."""
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class TcpRequestContent:
    """A `tcp-request content accept|reject [if|unless cond]` rule: decides on a
    session from what its client sent, before use_backend, the first matching
    rule winning (haproxy's tcp_inspect_request)."""

    action: str  # 'accept' | 'reject'
    condition: Condition | None = None
    acls: tuple[Acl, ...] | None = None
    """As TcpRequestConnection.acls."""
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """A `tcp-request`, `http-request`, `tcp-check` or `http-check` line, split into words."""

    keyword: str  # 'tcp-request', 'http-request', 'tcp-check', 'http-check'
    action: str  # 'connection', 'use-service', 'connect', 'send', 'expect', ...
    args: tuple[str, ...]
    condition: Condition | None = None
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class StatsSocket:
    address: Address
    mode: int | None = None
    level: str = "admin"  # 2.6: 'admin' by default for a stats socket
    expose_fd_listeners: bool = False
    user: str | None = None
    group: str | None = None
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class StatsPage:
    enabled: bool = False
    uri: str = "/haproxy?stats"
    refresh: int | None = None  # ms
    auth: tuple[tuple[str, str], ...] = ()
    admin: Condition | None = None
    realm: str | None = None
    hide_version: bool = False
    span: Span | None = None


@dataclass
class Proxy:
    """A defaults, frontend, backend or listen section, after inheritance from defaults."""

    kind: ProxyKind
    name: str
    span: Span | None = None
    mode: Mode = Mode.TCP
    from_defaults: str | None = None  # name of the defaults section inherited from
    binds: list[Bind] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    default_server: ServerOptions = field(default_factory=ServerOptions)
    balance: Balance = field(default_factory=Balance)
    timeouts: dict[str, int] = field(default_factory=dict)
    """'connect', 'client', 'server', 'queue', 'check', 'tunnel', 'client-fin', ... in ms."""
    options: dict[str, bool] = field(default_factory=dict)
    """'tcplog': True, 'httplog': True, 'dontlognull': True, 'redispatch': False, ...
    also 'tcp-check', 'httpchk', 'allbackups'."""
    option_args: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Arguments given to an option, e.g. 'httpchk': ('GET', '/readyz')."""
    logs: list[LogTarget] = field(default_factory=list)
    log_global: bool = False
    maxconn: int | None = None
    fullconn: int | None = None
    rate_limit_sessions: int | None = None  # `rate-limit sessions`: per second
    backlog: int | None = None
    retries: int | None = None
    default_backend: str | None = None
    use_backends: list[UseBackend] = field(default_factory=list)
    acls: list[Acl] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    tcp_request_connection: list[TcpRequestConnection] = field(default_factory=list)
    """The accept/reject ones, inherited ones first; other actions are in `rules` only."""
    tcp_request_content: list[TcpRequestContent] = field(default_factory=list)
    """The same for `tcp-request content` (frontend side: a frontend or listen)."""
    stats: StatsPage = field(default_factory=StatsPage)
    disabled: bool = False
    log_format: str | None = None
    """`log-format` (own or inherited), uncompiled; None when `option tcplog` or
    `httplog` came after it."""
    log_format_span: Span | None = None  # where that `log-format` is (its argument)

    def timeout(self, name: str, default: int | None = None) -> int | None:
        return self.timeouts.get(name, default)

    def option(self, name: str) -> bool:
        return self.options.get(name, False)

    def rules_of(self, keyword: str) -> list[Rule]:
        return [r for r in self.rules if r.keyword == keyword]


@dataclass
class Global:
    daemon: bool = False
    master_worker: bool = False
    maxconn: int | None = None
    maxconnrate: int | None = None
    maxsessrate: int | None = None  # sessions/s: connections the `tcp-request connection` rules let in
    nbthread: int = 1
    user: str | None = None
    group: str | None = None
    uid: int | None = None
    gid: int | None = None
    chroot: str | None = None
    pidfile: str | None = None
    ulimit_n: int | None = None
    hard_stop_after: int | None = None  # ms
    server_state_file: str | None = None
    server_state_base: str | None = None
    logs: list[LogTarget] = field(default_factory=list)
    log_tag: str | None = None
    stats_sockets: list[StatsSocket] = field(default_factory=list)
    stats_timeout: int | None = None
    stats_maxconn: int | None = None
    tune: dict[str, str] = field(default_factory=dict)
    cpu_map: dict[int, frozenset[int]] = field(default_factory=dict)
    """`cpu-map`: thread (keeplb: worker) number -> the CPUs it may run on."""
    span: Span | None = None


@dataclass
class HaproxyConfig:
    files: list[str] = field(default_factory=list)
    global_: Global = field(default_factory=Global)
    defaults: dict[str, Proxy] = field(default_factory=dict)
    """Named defaults sections; an anonymous one is stored under ''."""
    proxies: list[Proxy] = field(default_factory=list)
    """frontend, backend and listen sections in file order."""

    @property
    def frontends(self) -> list[Proxy]:
        return [p for p in self.proxies if p.kind.has_frontend]

    @property
    def backends(self) -> list[Proxy]:
        return [p for p in self.proxies if p.kind.has_backend]

    def backend(self, name: str) -> Proxy | None:
        for p in self.proxies:
            if p.kind.has_backend and p.name == name:
                return p
        return None


# --------------------------------------------------------------------------
# keepalived.conf
# --------------------------------------------------------------------------


class VrrpStateName(Enum):
    MASTER = "MASTER"
    BACKUP = "BACKUP"


@dataclass
class GlobalDefs:
    router_id: str | None = None
    notification_email: list[str] = field(default_factory=list)
    notification_email_from: str | None = None
    smtp_server: str | None = None
    smtp_connect_timeout: int | None = None
    vrrp_skip_check_adv_addr: bool = False
    vrrp_strict: bool = False
    vrrp_version: int = 2
    vrrp_garp_interval: float = 0.0  # seconds between gratuitous ARPs
    vrrp_gna_interval: float = 0.0
    vrrp_garp_master_delay: float = 5.0
    vrrp_garp_master_repeat: int = 5
    vrrp_garp_master_refresh: float = 0.0
    vrrp_garp_master_refresh_repeat: int = 1
    vrrp_garp_lower_prio_delay: float | None = None
    vrrp_garp_lower_prio_repeat: int | None = None
    vrrp_lower_prio_no_advert: bool = False
    vrrp_higher_prio_send_advert: bool = False
    vrrp_startup_delay: float = 0.0
    vrrp_mcast_group4: str = "224.0.0.18"
    vrrp_mcast_group6: str = "ff02::12"
    vrrp_check_unicast_src: bool = False
    vrrp_no_swap: bool = False
    vrrp_notify_fifo: str | None = None
    enable_script_security: bool = False
    script_user: str | None = None
    script_group: str | None = None
    dynamic_interfaces: bool = False
    max_auto_priority: int | None = None
    other: dict[str, tuple[str, ...]] = field(default_factory=dict)
    span: Span | None = None


@dataclass
class VrrpScript:
    name: str
    script: str = ""
    interval: float = 1.0
    timeout: float | None = None
    weight: int = 0
    weight_reverse: bool = False
    rise: int = 1
    fall: int = 1
    user: str | None = None
    group: str | None = None
    init_fail: bool = False
    span: Span | None = None


@dataclass
class TrackFileDef:
    name: str
    file: str = ""
    weight: int = 1
    weight_reverse: bool = False
    init_file: int | None = None
    init_file_overwrite: bool = False
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class TrackRef:
    """A name under track_script / track_file / track_interface, with its optional weight."""

    name: str
    weight: int | None = None
    reverse: bool = False
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class VirtualAddress:
    address: IPInterface  # with its prefix; /32 or /128 when none was given
    brd: str | None = None
    dev: str | None = None
    scope: str | None = None
    label: str | None = None
    no_track: bool = False
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class VirtualRoute:
    words: tuple[str, ...]  # 'src 10.0.0.1 to 10.1.0.0/16 via 10.0.0.254 dev eth0' as words
    span: Span | None = None


@dataclass
class VrrpInstance:
    name: str
    span: Span | None = None
    state: VrrpStateName | None = None
    interface: str | None = None
    virtual_router_id: int | None = None
    priority: int = 100
    advert_int: float = 1.0  # seconds
    version: int | None = None  # None: global_defs vrrp_version
    nopreempt: bool = False
    preempt_delay: float = 0.0
    auth_type: str | None = None  # 'PASS' | 'AH'
    auth_pass: str | None = None
    unicast_src_ip: IPAddress | None = None
    unicast_peers: list[IPAddress] = field(default_factory=list)
    mcast_src_ip: IPAddress | None = None
    virtual_ipaddresses: list[VirtualAddress] = field(default_factory=list)
    virtual_ipaddresses_excluded: list[VirtualAddress] = field(default_factory=list)
    virtual_routes: list[VirtualRoute] = field(default_factory=list)
    track_scripts: list[TrackRef] = field(default_factory=list)
    track_interfaces: list[TrackRef] = field(default_factory=list)
    track_files: list[TrackRef] = field(default_factory=list)
    track_lb: list[str] | None = None
    """keeplb extension: backends whose health drives this instance in `keeplb run`
    (None: all backends of the local balancer; [] : off)."""
    notify: str | None = None
    notify_master: str | None = None
    notify_backup: str | None = None
    notify_fault: str | None = None
    notify_stop: str | None = None
    garp_master_delay: float | None = None  # None: global_defs value
    garp_master_repeat: int | None = None
    garp_master_refresh: float | None = None
    garp_master_refresh_repeat: int | None = None
    dont_track_primary: bool = False
    accept: bool | None = None
    strict_mode: bool | None = None
    smtp_alert: bool = False
    native_ipv6: bool = False
    use_vmac: bool = False
    debug: int | None = None

    @property
    def family(self) -> int:
        """4 or 6, from the first virtual address (keepalived's rule: one family per instance)."""
        for vip in self.virtual_ipaddresses:
            return vip.address.version
        return 6 if self.native_ipv6 else 4


@dataclass
class VrrpSyncGroup:
    name: str
    group: list[str] = field(default_factory=list)
    notify: str | None = None
    notify_master: str | None = None
    notify_backup: str | None = None
    notify_fault: str | None = None
    notify_stop: str | None = None
    track_scripts: list[TrackRef] = field(default_factory=list)
    track_interfaces: list[TrackRef] = field(default_factory=list)
    track_files: list[TrackRef] = field(default_factory=list)
    smtp_alert: bool = False
    span: Span | None = None


@dataclass
class KeepalivedConfig:
    files: list[str] = field(default_factory=list)
    global_defs: GlobalDefs = field(default_factory=GlobalDefs)
    scripts: dict[str, VrrpScript] = field(default_factory=dict)
    track_files: dict[str, TrackFileDef] = field(default_factory=dict)
    instances: list[VrrpInstance] = field(default_factory=list)
    sync_groups: list[VrrpSyncGroup] = field(default_factory=list)
    static_ipaddresses: list[VirtualAddress] = field(default_factory=list)
    static_routes: list[VirtualRoute] = field(default_factory=list)

    def instance(self, name: str) -> VrrpInstance | None:
        for inst in self.instances:
            if inst.name == name:
                return inst
        return None
