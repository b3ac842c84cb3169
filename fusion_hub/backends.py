"""Open the storage backend named by the configuration.

The hub server and the ``fti hub`` commands both call ``open_storage``, so a command that
enrols a site writes to the same database that the running hub reads.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fusion_hub.config import StorageSettings, mask_dsn
from fusion_hub.storage import HubStorage
from fusion_hub.timeutil import utc_now


def open_storage(
    settings: StorageSettings, *, clock: Callable[[], datetime] = utc_now
) -> HubStorage:
    """Connect to the configured backend, creating its tables when missing.

    Raises
    ------
    StorageError
        If the database cannot be opened or reached.
    """
    if settings.backend == "postgresql":
        # psycopg is imported only for hubs that use it.
        from fusion_hub.postgres_storage import PostgresHubStorage

        return PostgresHubStorage(settings.postgresql_dsn, schema=settings.postgresql_schema,
                                  clock=clock, sslmode=settings.postgresql_sslmode or None,
                                  sslrootcert=settings.postgresql_sslrootcert,
                                  sslcert=settings.postgresql_sslcert,
                                  sslkey=settings.postgresql_sslkey)
    from fusion_hub.sqlite_storage import SQLiteHubStorage

    return SQLiteHubStorage(settings.path, clock=clock)


def describe_storage(settings: StorageSettings) -> str:
    """Return where the hub keeps its state, with any password masked, for log lines."""
    if settings.backend == "postgresql":
        sslmode = settings.postgresql_sslmode or "from the DSN or libpq's default"
        return (f"postgresql {mask_dsn(settings.postgresql_dsn)} schema "
                f"{settings.postgresql_schema} sslmode {sslmode}")
    return f"sqlite {settings.path}"
