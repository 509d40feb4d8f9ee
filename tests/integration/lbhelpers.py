"""Small loopback helpers shared by the integration tests."""

from __future__ import annotations

import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Echo:
    """A backend that answers every connection with its name, on a thread."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with c:
                c.sendall(self.name)

    def close(self) -> None:
        self.stopped = True
        self.thread.join(2)
        self.sock.close()


def request(port: int, timeout: float = 3.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.settimeout(timeout)
        data = b""
        while chunk := c.recv(4096):
            data += chunk
        return data


class UdpLog:
    """The syslog datagrams keeplb sends, read on a loopback UDP socket."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])

    def lines(self, until: float = 2.0, quiet: float = 0.4) -> list[str]:
        """Datagrams until `until` s have passed or none came for `quiet` s."""
        out: list[str] = []
        end = time.monotonic() + until
        last = time.monotonic()
        while time.monotonic() < end and time.monotonic() - last < quiet:
            try:
                out.append(self.sock.recv(65535).decode())
                last = time.monotonic()
            except TimeoutError:
                continue
        return out

    def close(self) -> None:
        self.sock.close()
