"""Ports on 127.0.0.1 that nothing listens on (yet): for stacks to bind, or to be refused."""

from workshop.scenarios.stack import free_ports

__all__ = ["closed_port_url", "free_ports"]


def closed_port_url(scheme: str = "http") -> str:
    """A URL whose connections are refused: a service that is down."""
    return f"{scheme}://127.0.0.1:{free_ports(1)[0]}"
