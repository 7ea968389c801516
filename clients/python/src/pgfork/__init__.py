"""Client for the pgfork HTTP API.

pgfork gives every agent, person or CI job its own writable, isolated,
copy-on-write branch of a real PostgreSQL database. This package talks to
``pgfork serve``::

    from pgfork import Client

    with Client("http://127.0.0.1:7432", token=T).branch("shop", ttl="1h") as b:
        conn = psycopg.connect(b.dsn)   # the branch is deleted on exit
"""

from pgfork.client import AsyncClient, BranchContext, Client
from pgfork.errors import PgforkError
from pgfork.models import Branch, Snapshot, Source, Timings

__all__ = [
    "AsyncClient",
    "Branch",
    "BranchContext",
    "Client",
    "PgforkError",
    "Snapshot",
    "Source",
    "Timings",
]
__version__ = "0.1.0"
