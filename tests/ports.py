"""Ports on 127.0.0.1 that nothing listens on (yet): for stacks to bind, or to be refused."""

import socket


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held at once while choosing, so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def closed_port_url(scheme: str = "http") -> str:
    """A URL whose connections are refused: a service that is down."""
    return f"{scheme}://127.0.0.1:{free_ports(1)[0]}"
