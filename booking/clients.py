"""How a service's clients module reaches another service."""

from django.db import connection

from resilience.http import ServiceClient


def service(name: str) -> ServiceClient:
    """The client of service ``name``, after giving this thread's database connection back.

    A call to another service can take seconds (its deadline, or a fault). Outside a
    transaction the connection is not needed meanwhile: closed here, it goes back to the pool
    (PostgreSQL) and the next query takes one again, so threads waiting on a slow service do
    not hold every pooled connection. Inside a transaction it is kept, as it must be.
    """
    if not connection.in_atomic_block:
        connection.close()
    return ServiceClient(name)
