"""Command line: argument parsing and dispatch only.

Exit codes follow the originals: 0 success, 1 bad configuration or failure
(haproxy -c and keepalived -t both answer 1 for an invalid file here), 3 when
the service could not start, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Sequence

from keeplb import __version__
from keeplb.config.diagnostics import Diagnostic, Diagnostics
from keeplb.errors import ConfigError, KeeplbError

EXIT_OK = 0
EXIT_CONFIG = 1
STARTUP_FAILURE = 3
EXIT_NO_LISTENER = 2
EXIT_INTERRUPTED = 130

_KEEPALIVED_HINT = re.compile(
    r"^\s*(global_defs|vrrp_instance|vrrp_script|vrrp_sync_group|virtual_server|"
    r"static_ipaddress|static_routes|track_file|vrrp_track_file|include)\b",
    re.M,
)
_HAPROXY_HINT = re.compile(r"^\s*(global|defaults|frontend|backend|listen)\b", re.M)


def print_diagnostics(diags: Sequence[Diagnostic], *, quiet: bool = False) -> None:
    """Writes diagnostics to stderr, errors always, warnings unless quiet."""
    for d in diags:
        if quiet and not d.is_error:
            continue
        _err(str(d))


def detect_format(path: str) -> str:
    """'haproxy' or 'keepalived', from the file name first, then its content."""
    base = os.path.basename(path).lower()
    if "keepalived" in base or base.endswith(".conf") and "haproxy" not in base:
        guess = "keepalived"
    elif "haproxy" in base or base.endswith(".cfg"):
        guess = "haproxy"
    else:
        guess = ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(65536)
    except OSError:
        return guess or "haproxy"
    ka = len(_KEEPALIVED_HINT.findall(text)) + text.count("{")
    ha = len(_HAPROXY_HINT.findall(text))
    if ka and not ha:
        return "keepalived"
    if ha and not ka:
        return "haproxy"
    return guess or ("keepalived" if ka > ha else "haproxy")


def _parse_haproxy(paths: Sequence[str]) -> tuple[object, Diagnostics]:
    from keeplb.config import haproxy

    return haproxy.parse(list(paths))


def _parse_keepalived(path: str, defines: Sequence[str] = ()) -> tuple[object, Diagnostics]:
    from keeplb.config import keepalived

    return keepalived.parse(path, defines=list(defines))


def keepalived_exit_code(diags: Diagnostics) -> int:
    """What `keepalived -t` exits with for these diagnostics (1 if the parser cannot say)."""
    code = getattr(diags, "exit_code", None)
    if callable(code):
        return int(code())
    return EXIT_CONFIG if diags.has_errors else EXIT_OK


def keepalived_can_run(diags: Diagnostics) -> bool:
    """keepalived runs a config despite most errors (it falls back to defaults and
    drops what cannot run); it stops only when it cannot read the file or a
    keyword lacks its value (exit codes 4 and 2 of -t)."""
    return keepalived_exit_code(diags) not in (2, 4)


def _haproxy_files(paths: Sequence[str]) -> list[str]:
    """The files haproxy would read for these -f arguments (a directory: its *.cfg)."""
    from keeplb.config import haproxy

    return haproxy.expand_paths(paths, Diagnostics())


def _missing(paths: Sequence[str]) -> list[str]:
    return [p for p in paths if not os.path.exists(p)]


def parse_pids(option: str, values: Sequence[str] | None) -> list[int] | str:
    """The PIDs given to -sf/-st, or haproxy's complaint about one. A PID of 0
    or below would signal a whole process group (ours, with kill(0)), so it is
    refused as haproxy refuses it."""
    pids: list[int] = []
    for text in values or ():
        m = re.match(r"\s*[+-]?\d+", text)
        if m is None or m.end() != len(text):
            rest = text[m.end():] if m else text
            return f"{option} option: some bytes unconsumed in PID list {{{rest}}}"
        pid = int(text)
        if pid > 2**31 - 1 or pid < -(2**31):
            return f"{option} option: failed to parse {{{text}}}: Numerical result out of range"
        if pid <= 0:
            return f"{option} option: PID {text} is not a process id (must be above 0)"
        pids.append(pid)
    return pids


def health_fd_problem(fd: int) -> str | None:
    """Why `fd` cannot carry the balancer's health lines (the hidden --health-fd
    that `keeplb run` passes), or None. Checked before anything starts: the
    writer would otherwise fail deep in the start-up with a bare OSError."""
    try:
        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except (OSError, OverflowError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else os.strerror(errno.EBADF)
        return f"--health-fd option: cannot use file descriptor {fd} ({why})"
    if mode == os.O_RDONLY:
        return f"--health-fd option: file descriptor {fd} is not open for writing"
    return None


def pidfile_problem(path: str) -> str | None:
    """Why `path` cannot be a pidfile (strerror), or None. Tried as write_pidfile()
    writes it, a temporary file next to it, before anything starts: otherwise
    the error comes after daemonizing, where nobody sees it."""
    if os.path.isdir(path):
        return os.strerror(errno.EISDIR)
    tmp = f"{path}.{os.getpid()}.check"
    try:
        with open(tmp, "w"):
            pass
        os.unlink(tmp)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _absolute(path: str | None) -> str | None:
    # A daemon changes directory to "/" and a master re-reads its files on
    # reload: a relative -f, -k or -p would then name another file.
    return os.path.abspath(path) if path else path


# --------------------------------------------------------------------------
# keeplb check
# --------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.files:
        if not os.path.exists(path):
            _err(f"{path}: error: no such file")
            status = EXIT_CONFIG
            continue
        fmt = args.format or detect_format(path)
        if fmt == "haproxy" and not _haproxy_files([path]):
            _err(f"{path}: error: no configuration file found in {path}")
            status = EXIT_CONFIG
            continue
        if fmt == "keepalived":
            _, diags = _parse_keepalived(path)
        else:
            _, diags = _parse_haproxy([path])
        print_diagnostics(diags, quiet=args.quiet)
        n_err = len(diags.errors)
        if fmt == "keepalived" and n_err and keepalived_can_run(diags):
            print(f"{path}: note: keepalived would still run this file, falling back to defaults")
        n_warn = len(diags.warnings)
        verdict = "invalid" if n_err else "valid"
        print(f"{path}: {fmt} config {verdict} ({n_err} error(s), {n_warn} warning(s))")
        if n_err:
            status = EXIT_CONFIG
    return status


# --------------------------------------------------------------------------
# keeplb lb
# --------------------------------------------------------------------------


def cmd_lb(args: argparse.Namespace) -> int:
    if not args.file:
        _err("keeplb lb: error: no configuration file given (-f FILE)")
        return EXIT_CONFIG
    missing = _missing(args.file)
    if missing:
        for p in missing:
            _err(f"{p}: error: no such file or directory")
        return EXIT_CONFIG
    if not _haproxy_files(args.file):
        _err("keeplb lb: error: no configuration file found in " + ", ".join(args.file))
        return EXIT_CONFIG
    cfg, diags = _parse_haproxy(args.file)
    print_diagnostics(diags, quiet=args.quiet)
    no_listener = not diags.has_errors and not any(
        fe.binds for fe in getattr(cfg, "frontends", []) if not fe.disabled)
    if args.check:
        if diags.has_errors:
            _err("Fatal errors found in configuration.")
            return EXIT_CONFIG
        if no_listener:
            # haproxy -c's words and exit code for a file that cannot serve anything
            print("Configuration file has no error but will not start (no listener) => exit(2).")
            return EXIT_NO_LISTENER
        print("Configuration file is valid")
        return EXIT_OK
    if no_listener:
        _err("keeplb lb: error: no listener: the configuration has no 'bind' line. Nothing to do!")
        return EXIT_NO_LISTENER
    if diags.has_errors:
        _err("Fatal errors found in configuration.")
        return EXIT_CONFIG
    soft = parse_pids("-sf", args.sf)
    hard = parse_pids("-st", args.st)
    if isinstance(soft, str) or isinstance(hard, str):
        _err(f"keeplb lb: error: {soft if isinstance(soft, str) else hard}")
        return EXIT_CONFIG
    if args.health_fd is not None and (why := health_fd_problem(args.health_fd)):
        _err(f"keeplb lb: error: {why}")
        return EXIT_CONFIG
    global_ = getattr(cfg, "global_", None)
    pidfile = args.pidfile or getattr(global_, "pidfile", None)
    if args.worker is None and pidfile and (why := pidfile_problem(pidfile)):
        _err(f"keeplb lb: error: [haproxy.main()] Cannot create pidfile {pidfile} ({why})")
        return EXIT_CONFIG
    if args.worker is None:
        del cfg  # the process model parses again: a worker must see the file as it is now
    from keeplb.proc import lbmain

    return lbmain.main(
        [os.path.abspath(p) for p in args.file],
        daemon=args.daemon,
        foreground=args.foreground,
        pidfile=_absolute(args.pidfile),
        master_worker=args.master_worker,
        soft_stop_pids=soft,
        hard_stop_pids=hard,
        health_fd=args.health_fd,
        worker=args.worker,
        ready_fd=args.ready_fd,
    )


# --------------------------------------------------------------------------
# keeplb vrrp
# --------------------------------------------------------------------------


def cmd_vrrp(args: argparse.Namespace) -> int:
    if args.action == "status":
        from keeplb.vrrp import daemon

        return daemon.print_status(
            args.status_file or os.path.join(daemon.state_dir(), "keeplb-vrrp.json"))
    path = args.file or "/etc/keepalived/keepalived.conf"
    if not os.path.exists(path):
        _err(f"{path}: error: no such file or directory")
        return EXIT_CONFIG
    cfg, diags = _parse_keepalived(path, args.config_id or ())
    print_diagnostics(diags, quiet=args.quiet)
    if args.test:
        code = keepalived_exit_code(diags)
        if code:
            _err(f"{path}: configuration is invalid (keepalived -t would exit {code})")
            return code
        print(f"{path}: configuration is valid")
        return EXIT_OK
    if not keepalived_can_run(diags):
        return EXIT_CONFIG
    if args.pidfile and (why := pidfile_problem(args.pidfile)):
        _err(f"pidfile_write : Cannot open {args.pidfile} pidfile ({why})")
        return EXIT_CONFIG
    from keeplb.vrrp import daemon

    return daemon.main(
        os.path.abspath(path),
        foreground=args.dont_fork or not args.daemon,
        pidfile=_absolute(args.pidfile),
        log_console=args.log_console or args.dont_fork or not args.daemon,
        lb_health_fd=args.lb_health_fd,
    )


# --------------------------------------------------------------------------
# keeplb run
# --------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    missing = _missing([*args.file, args.keepalived])
    if missing:
        for p in missing:
            _err(f"{p}: error: no such file or directory")
        return EXIT_CONFIG
    if not _haproxy_files(args.file):
        _err("keeplb run: error: no configuration file found in " + ", ".join(args.file))
        return EXIT_CONFIG
    _, hdiags = _parse_haproxy(args.file)
    _, kdiags = _parse_keepalived(args.keepalived)
    print_diagnostics([*hdiags, *kdiags], quiet=args.quiet)
    if hdiags.has_errors or not keepalived_can_run(kdiags):
        return EXIT_CONFIG
    if args.check:
        print("Configuration files are valid")
        return EXIT_OK
    if args.pidfile and (why := pidfile_problem(args.pidfile)):
        _err(f"keeplb run: error: Cannot create pidfile {args.pidfile} ({why})")
        return EXIT_CONFIG
    from keeplb.proc import supervisor

    return supervisor.main(
        [os.path.abspath(p) for p in args.file],
        os.path.abspath(args.keepalived),
        daemon=args.daemon,
        pidfile=_absolute(args.pidfile),
        track_lb=not args.no_track_lb,
    )


# --------------------------------------------------------------------------
# keeplb demo
# --------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from keeplb.lab import demo

    rest = list(args.rest)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return demo.main(rest)


# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="keeplb",
        description="keepalived + HAProxy in one tool: VRRP virtual IPs and a TCP load balancer.",
    )
    p.add_argument("--version", action="version", version=f"keeplb {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("check", help="check haproxy.cfg / keepalived.conf files")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--format", choices=["haproxy", "keepalived"], help="do not guess the format")
    c.add_argument("-q", "--quiet", action="store_true", help="errors only")
    c.set_defaults(func=cmd_check)

    lb = sub.add_parser("lb", help="the load balancer (like haproxy)")
    lb.add_argument("-f", dest="file", action="append", default=[], metavar="FILE",
                    help="configuration file or directory (repeatable)")
    lb.add_argument("-c", dest="check", action="store_true", help="check the configuration and exit")
    lb.add_argument("-D", dest="daemon", action="store_true", help="run in the background")
    lb.add_argument("-db", dest="foreground", action="store_true",
                    help="stay in the foreground even if the config says 'daemon'")
    lb.add_argument("-W", dest="master_worker", action="store_true", help="master-worker mode")
    lb.add_argument("-p", dest="pidfile", metavar="PIDFILE")
    lb.add_argument("-q", dest="quiet", action="store_true", help="quiet: errors only")
    lb.add_argument("-sf", dest="sf", nargs="+", metavar="PID", help="soft-stop these PIDs once ready")
    lb.add_argument("-st", dest="st", nargs="+", metavar="PID", help="hard-stop these PIDs once ready")
    lb.add_argument("--health-fd", type=int, help=argparse.SUPPRESS)
    lb.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    lb.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    lb.set_defaults(func=cmd_lb)

    v = sub.add_parser("vrrp", help="the VRRP daemon (like keepalived)")
    v.add_argument("action", nargs="?", choices=["status"], help="'status': show a running daemon's state")
    v.add_argument("-f", "--use-file", dest="file", metavar="FILE")
    v.add_argument("-t", "--config-test", dest="test", action="store_true", help="check the configuration and exit")
    v.add_argument("-n", "--dont-fork", dest="dont_fork", action="store_true", help="stay in the foreground")
    v.add_argument("-D", "--log-detail", dest="log_detail", action="store_true", help="detailed logging (accepted)")
    v.add_argument("-l", "--log-console", dest="log_console", action="store_true", help="log to the console")
    v.add_argument("--daemon", dest="daemon", action="store_true", help="detach (keepalived's default)")
    v.add_argument("-p", "--pid", dest="pidfile", metavar="PIDFILE")
    v.add_argument("-i", "--config-id", dest="config_id", action="append", metavar="ID",
                   help="config id for @ID conditional lines")
    v.add_argument("-q", dest="quiet", action="store_true", help="errors only")
    v.add_argument("--status-file", help="status JSON to read for 'status' "
                   "(default: $KEEPLB_VRRP_STATE_DIR or /tmp, keeplb-vrrp.json)")
    v.add_argument("--lb-health-fd", type=int, help=argparse.SUPPRESS)
    v.set_defaults(func=cmd_vrrp)

    r = sub.add_parser("run", help="load balancer and VRRP together, LB health driving VRRP")
    r.add_argument("-f", dest="file", action="append", default=[], required=True, metavar="HAPROXY_CFG")
    r.add_argument("-k", dest="keepalived", required=True, metavar="KEEPALIVED_CONF")
    r.add_argument("-c", dest="check", action="store_true", help="check both files and exit")
    r.add_argument("-D", dest="daemon", action="store_true")
    r.add_argument("-p", dest="pidfile", metavar="PIDFILE")
    r.add_argument("-q", dest="quiet", action="store_true")
    r.add_argument("--no-track-lb", action="store_true",
                   help="do not let load-balancer health drive VRRP priority")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="an HA setup in network namespaces, with a live failover",
                       add_help=False)
    d.add_argument("rest", nargs=argparse.REMAINDER)
    d.set_defaults(func=cmd_demo)
    return p


def _safe_streams() -> None:
    # A config may hold bytes that are not UTF-8; they are echoed escaped, never as a crash.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


def _err(text: str) -> None:
    try:
        sys.stderr.write(text.rstrip("\n") + "\n")
    except UnicodeEncodeError:
        sys.stderr.write(text.encode("utf-8", "backslashreplace").decode("ascii", "replace") + "\n")


HELD_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _hold_signals() -> dict[int, object]:
    """Until a daemon installs its handlers, a reload or dump signal must not kill it
    (systemd or an operator may send one right after start); the event loop's
    handlers replace these, and children exec'd later get the defaults back.
    Returns the previous dispositions, restored when main() returns."""
    return {sig: signal.signal(sig, signal.SIG_IGN) for sig in HELD_SIGNALS}


def main(argv: Sequence[str] | None = None) -> int:
    _safe_streams()
    argv = list(sys.argv[1:] if argv is None else argv)
    held: dict[int, object] = {}
    if argv[:1] and argv[0] in ("lb", "vrrp", "run") and "-c" not in argv and "-t" not in argv:
        held = _hold_signals()
    try:
        return _dispatch(argv)
    finally:
        for sig, previous in held.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]


def _dispatch(argv: list[str]) -> int:
    if argv[:1] == ["demo"]:
        # The demo has its own options; argparse's REMAINDER would swallow none of them.
        argv = ["demo", "--", *argv[1:]]
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        return func(args)
    except ConfigError as e:
        print_diagnostics(e.diagnostics)
        return EXIT_CONFIG
    except KeeplbError as e:
        _err(f"keeplb: error: {e}")
        return STARTUP_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 - the one place a bug is turned into a message
        if os.environ.get("KEEPLB_DEBUG"):
            traceback.print_exc()
        _err(f"keeplb: internal error: {type(e).__name__}: {e} (set KEEPLB_DEBUG=1 for details)")
        return STARTUP_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
