"""Fixtures of the hub tests: a PostgreSQL schema per test when a server is available.

``FTI_TEST_POSTGRES_DSN`` names a PostgreSQL server for the tests (``.ci/run`` starts one on
127.0.0.1 and sets it). Without it the PostgreSQL variants skip locally, but fail under
``CI=true``, so CI can never pass with the PostgreSQL backend untested.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

POSTGRES_DSN_VARIABLE = "FTI_TEST_POSTGRES_DSN"


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    dsn = os.environ.get(POSTGRES_DSN_VARIABLE, "").strip()
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{POSTGRES_DSN_VARIABLE} is not set; .ci/run must start PostgreSQL")
        pytest.skip(f"PostgreSQL tests need {POSTGRES_DSN_VARIABLE}; start a server with "
                    ".ci/start-postgres DIR and export the URI it prints")
    return dsn


@pytest.fixture
def postgres_schema(postgres_dsn: str) -> Iterator[str]:
    """Return a fresh, empty schema name, dropped with its tables after the test."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(postgres_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
