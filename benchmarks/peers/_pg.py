"""PostgreSQL helpers for the cases: a fresh database per case, and a Procrastinate app on it."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any


async def fresh_database() -> str:
    import asyncpg

    admin = os.environ["PEERS_PG_ADMIN_DSN"]
    name = f"bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin.rsplit("/", 1)[0] + f"/{name}"


def procrastinate_app(dsn: str) -> Any:
    import procrastinate

    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
