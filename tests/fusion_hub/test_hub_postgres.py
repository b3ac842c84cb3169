"""Hubs sharing one PostgreSQL database: several processes, each round closed once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import requests
import yaml

from fusion_hub.backends import open_storage
from fusion_hub.config import (
    HubConfig,
    StorageSettings,
    connection_problem,
    load_hub_config,
    mask_dsn,
)
from fusion_hub.errors import StorageError
from fusion_hub.postgres_storage import PIPELINE_BATCH_ROWS, PostgresHubStorage
from fusion_hub.ratelimit import SharedRateLimiter
from fusion_hub.storage import AddOutcome, NewObject, ObjectQuery, VersionFilter
from fusion_hub.timeutil import to_micros
from stix_mappings.ids import collection_id
from tests.conftest import REPO_ROOT
from tests.fusion_hub.hub_testing import (
    HUB_NOW,
    ROUND_SECONDS,
    ROUND_START,
    TAXII,
    enroll,
    evidence,
    make_config,
    postgres_settings,
    running_hub,
    signed_summary,
)

ROUNDS = 8
BAD_IP = "203.0.113.9"


def write_config(path: Path, config: HubConfig) -> Path:
    document = {
        "hub": {"name": config.hub.name, "tick_seconds": 3600},
        "storage": {"backend": "postgresql", "postgresql_dsn": config.storage.postgresql_dsn,
                    "postgresql_schema": config.storage.postgresql_schema},
        "auth": {"argon2_time_cost": 1, "argon2_memory_cost_kib": 1024,
                 "argon2_parallelism": 1},
        "rounds": {"round_seconds": ROUND_SECONDS, "quorum_sites": config.rounds.quorum_sites,
                   "max_clock_skew_seconds": 60},
        "fusion": {"lookback_rounds": 1},
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@pytest.mark.slow
def test_two_processes_close_each_round_once(tmp_path: Path, postgres_dsn: str,
                                             postgres_schema: str) -> None:
    # A quorum of three is never reached by two sites, so every round stays open.
    config = make_config(tmp_path, rounds={"quorum_sites": 3}, fusion={"lookback_rounds": 1},
                         siem=False, storage=postgres_settings(postgres_dsn, postgres_schema))
    with running_hub(config) as hub:
        sites = [enroll(hub, "site-a"), enroll(hub, "site-b")]
        summaries_url = f"{hub.api_root_url}collections/{collection_id('summaries')}/objects/"
        for index in range(ROUNDS):
            round_start = ROUND_START + timedelta(seconds=index * ROUND_SECONDS)
            for site in sites:
                summary = signed_summary(site, round_start=round_start,
                                         items=[evidence(BAD_IP, 0.9)])
                response = requests.post(summaries_url, data=json.dumps({"objects": [summary]}),
                                         auth=site.auth, timeout=10,
                                         headers={"Accept": TAXII, "Content-Type": TAXII})
                assert response.json()["success_count"] == 1
        assert len(hub.storage.open_rounds()) == ROUNDS
    config_path = write_config(tmp_path / "hub.yaml", config)

    # Both processes start at the same instant, after their imports are done, and both try
    # every round: one from the oldest, one from the newest, so they meet in the middle.
    expected = [to_micros(ROUND_START + timedelta(seconds=i * ROUND_SECONDS))
                for i in range(ROUNDS)]
    start_at = f"{time.time() + 4.0:.3f}"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    workers = [
        subprocess.Popen([sys.executable, str(Path(__file__).with_name("round_closer.py")),
                          str(config_path), HUB_NOW.isoformat(), start_at,
                          ",".join(str(us) for us in order)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=REPO_ROOT)
        for order in (expected, expected[::-1])
    ]
    closed_by: list[list[int]] = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=60)
        assert worker.returncode == 0, stderr
        closed_by.append(json.loads(stdout.strip().splitlines()[-1]))

    assert sorted(closed_by[0] + closed_by[1]) == expected
    assert set(closed_by[0]).isdisjoint(closed_by[1])
    storage = PostgresHubStorage(postgres_dsn, schema=postgres_schema)
    try:
        records = [storage.get_round(us) for us in expected]
        assert all(r is not None and r.close_reason == "forced" for r in records)
        assert storage.open_rounds() == []
        # One indicator version per round: no round was fused twice.
        versions = storage.query_objects(ObjectQuery(
            collection_id=collection_id("fused-indicators"), limit=100, types=("indicator",),
            versions=VersionFilter(all=True)))
        assert len(versions.objects) == ROUNDS
    finally:
        storage.close()


def test_hub_on_postgres_publishes_at_quorum(tmp_path: Path, postgres_dsn: str,
                                            postgres_schema: str) -> None:
    config = make_config(tmp_path, storage=postgres_settings(postgres_dsn, postgres_schema))
    with running_hub(config) as hub:
        sites = [enroll(hub, "site-a"), enroll(hub, "site-b")]
        url = f"{hub.api_root_url}collections/{collection_id('summaries')}/objects/"
        for site in sites:
            requests.post(url, data=json.dumps({"objects": [signed_summary(
                site, items=[evidence(BAD_IP, 0.9)])]}), auth=site.auth, timeout=10,
                headers={"Accept": TAXII, "Content-Type": TAXII})

        response = requests.get(
            f"{hub.api_root_url}collections/{collection_id('fused-indicators')}/objects/",
            params={"match[type]": "indicator"}, auth=sites[0].auth, timeout=10,
            headers={"Accept": TAXII})

    assert response.status_code == 200
    patterns = [o["pattern"] for o in response.json()["objects"]]
    assert patterns == [f"[ipv4-addr:value = '{BAD_IP}']"]


def test_unreachable_server_error_masks_password() -> None:
    # Port 9 on loopback (discard) has no PostgreSQL server.
    dsn = "postgresql://fti:hunter2@127.0.0.1:9/fti"

    with pytest.raises(StorageError) as excinfo:
        PostgresHubStorage(dsn, connect_timeout_secs=2)

    assert "hunter2" not in str(excinfo.value)
    assert "host=127.0.0.1 port=9 dbname=fti user=fti password=***" in str(excinfo.value)


def test_invalid_schema_name_rejected() -> None:
    with pytest.raises(StorageError) as excinfo:
        PostgresHubStorage("postgresql://fti@127.0.0.1:9/fti", schema="public; drop")

    assert "schema name" in str(excinfo.value)


def test_storage_settings_repr_masks_dsn() -> None:
    settings = StorageSettings(backend="postgresql",
                               postgresql_dsn="host=db user=fti password=hunter2")

    assert "hunter2" not in repr(settings)
    assert mask_dsn("postgresql://fti:hunter2@db/fti") == "host=db dbname=fti user=fti password=***"


@pytest.mark.parametrize("dsn", [
    "host=db password=open\\ sesame/SECRET\\'q",
    "host=db password='ab\\'cd SECRET'",
    "postgresql://fti@db/fti?pass%77ord=SECRET",
    "postgresql://fti:pw@db/fti?sslpassword=SECRET",
    "postgresql://fti:2024/SpringSECRET@db/fti",
    "postgresql://fti:Tr0ub/SECRET@db",
    "postgresql://fti:TOP%SECRET@db/fti",
    "postgresql://fti:Tr0ub@dor-SECRET@127.0.0.1:5432/fti",
    "postgresql://fti:5432/SECRETpart?application_name=x@127.0.0.1/fti",
    "postgresql://fti@db/fti?scram_client_key=SECRET&scram_server_key=SECRET",
    "host=db user=fti oauth_client_secret=SECRET",
    "postgresql://fti:Sp%ceSECRET@db/fti",
    "host=127.0.0.1 dbname='postgresql://fti:SECRET@127.0.0.1/fti'",
    "host=127.0.0.1 dbname='user=fti password=SECRET'",
    "postgresql://fti%3ASECRET@127.0.0.1/fti",
])
def test_mask_dsn_hides_escaped_passwords(dsn: str) -> None:
    assert "SECRET" not in mask_dsn(dsn)


def test_connection_problem_keeps_only_shown_fields() -> None:
    dsn = "postgresql://fti:pw@127.0.0.1:5432/fti?password=ab&require_auth=SECRET"
    err = ValueError('connection to server at "127.0.0.1", port 5432 failed: '
                     'invalid require_auth value: "SECRET"')

    problem = connection_problem(err, dsn)

    assert problem == ('connection to server at "127.0.0.1", port 5432 failed: '
                       'invalid require_auth value: "..."')


def test_mask_dsn_keeps_encoded_at_in_database() -> None:
    assert mask_dsn("postgresql://fti:pw@db/team%40site") == (
        "host=db dbname=team@site user=fti password=***")


def write_tls_config(path: Path, dsn: str, schema: str, sslmode: str) -> Path:
    document = {"storage": {"backend": "postgresql", "postgresql_dsn": dsn,
                            "postgresql_schema": schema, "postgresql_sslmode": sslmode}}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def test_sslmode_disable_reaches_connection(tmp_path: Path, postgres_dsn: str,
                                            postgres_schema: str) -> None:
    config = load_hub_config(write_tls_config(tmp_path / "hub.yaml", postgres_dsn,
                                              postgres_schema, "disable"))

    storage = open_storage(config.storage)
    try:
        info = storage.connection_info  # type: ignore[attr-defined]
        assert info.get_parameters()["sslmode"] == "disable"
        assert not info.pgconn.ssl_in_use
        assert storage.count_objects(collection_id("keys")) == 0
    finally:
        storage.close()


def test_sslmode_require_without_server_tls_fails(tmp_path: Path, postgres_dsn: str,
                                                  postgres_schema: str) -> None:
    """The test server has no TLS, so libpq must fail to connect instead of falling back."""
    config = load_hub_config(write_tls_config(tmp_path / "hub.yaml", postgres_dsn,
                                              postgres_schema, "require"))

    with pytest.raises(StorageError) as excinfo:
        open_storage(config.storage)

    message = str(excinfo.value)
    assert "server does not support SSL, but SSL was required" in message
    assert "(TLS settings: sslmode=require)" in message
    assert mask_dsn(postgres_dsn) in message


def test_sslmode_overrides_dsn_value(postgres_dsn: str, postgres_schema: str) -> None:
    separator = "&" if "?" in postgres_dsn else "?"
    dsn = f"{postgres_dsn}{separator}sslmode=require"

    storage = PostgresHubStorage(dsn, schema=postgres_schema, sslmode="disable")
    try:
        assert storage.connection_info.get_parameters()["sslmode"] == "disable"
    finally:
        storage.close()


def test_rate_limit_shared_by_two_connections(postgres_dsn: str, postgres_schema: str) -> None:
    """Two hub processes (two connections) draw from one bucket per credential."""
    first = PostgresHubStorage(postgres_dsn, schema=postgres_schema)
    second = PostgresHubStorage(postgres_dsn, schema=postgres_schema)
    limiters = [SharedRateLimiter(first, 4), SharedRateLimiter(second, 4)]
    try:
        waits = [limiters[i % 2].acquire("site-a") for i in range(5)]
        other_site = limiters[1].acquire("site-b")
    finally:
        first.close()
        second.close()

    assert waits[:4] == [0.0, 0.0, 0.0, 0.0]
    # The fifth request finds the shared bucket empty; 4 a minute refill one in 15 s.
    assert 14.0 < waits[4] <= 15.0
    assert other_site == 0.0


def test_hub_on_postgres_uses_shared_rate_limit(tmp_path: Path, postgres_dsn: str,
                                                postgres_schema: str) -> None:
    """Requests counted by another process leave the hub's bucket for the credential empty."""
    config = make_config(tmp_path, hub={"rate_limit_per_minute": 2},
                         storage=postgres_settings(postgres_dsn, postgres_schema))
    with running_hub(config) as hub:
        site = enroll(hub, "site-a")
        other_process = PostgresHubStorage(postgres_dsn, schema=postgres_schema)
        try:
            drained = [SharedRateLimiter(other_process, 2).acquire("site-a") for _ in range(2)]
        finally:
            other_process.close()
        response = requests.get(f"{hub.api_root_url}collections/", auth=site.auth,
                                headers={"Accept": TAXII}, timeout=10)

    assert drained == [0.0, 0.0]
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "30"


def test_nul_in_url_or_name_rejected(tmp_path: Path, postgres_dsn: str,
                                     postgres_schema: str) -> None:
    """PostgreSQL text cannot hold a NUL, so the hub turns one away before any query."""
    config = make_config(tmp_path, storage=postgres_settings(postgres_dsn, postgres_schema))
    with running_hub(config) as hub:
        site = enroll(hub, "site-a")
        objects_url = f"{hub.api_root_url}collections/{collection_id('keys')}/objects/"
        by_filter = requests.get(objects_url, params={"match[id]": "\x00"}, auth=site.auth,
                                 headers={"Accept": TAXII}, timeout=10)
        by_path = requests.get(f"{objects_url}x-test--%00/", auth=site.auth,
                               headers={"Accept": TAXII}, timeout=10)
        by_name = requests.get(f"{hub.api_root_url}collections/", auth=("site\x00a", "x"),
                               headers={"Accept": TAXII}, timeout=10)

    assert by_filter.status_code == 400
    assert by_filter.headers["Content-Type"] == TAXII
    assert "NUL character" in by_filter.json()["description"]
    assert by_path.status_code == 400
    assert by_name.status_code == 401
    assert by_name.headers["Content-Type"] == TAXII


def test_status_bodies_compressed_with_lz4(postgres_dsn: str, postgres_schema: str) -> None:
    """Where the server offers lz4, the schema stores status resources with it."""
    storage = PostgresHubStorage(postgres_dsn, schema=postgres_schema)
    try:
        body = json.dumps({"successes": [{"id": f"indicator--{index}"} for index in range(5000)]})
        storage.save_status("status-1", "site-a", body)
        assert storage.load_status("status-1") == ("site-a", body)
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            (offered,) = conn.execute(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                "WHERE name = 'default_toast_compression'").fetchone()
            (method,) = conn.execute(
                f"SELECT pg_column_compression(body) FROM {postgres_schema}.statuses").fetchone()
    finally:
        storage.close()

    assert method == ("lz4" if offered else "pglz")


def test_concurrent_envelopes_sharing_objects(postgres_dsn: str, postgres_schema: str) -> None:
    """Two hub processes add overlapping envelopes: the second waits for the first to commit,
    then stores only its own objects and reports the shared ones as duplicates."""
    first = PostgresHubStorage(postgres_dsn, schema=postgres_schema)
    second = PostgresHubStorage(postgres_dsn, schema=postgres_schema)
    keys = collection_id("keys")

    def envelope(names: list[str]) -> list[NewObject]:
        return [NewObject(keys, f"indicator--{name}", "indicator", "2.1", 1_000, f'"{name}"',
                          f"digest-{name}", "site-a") for name in names]

    shared = [str(index) for index in range(300)]
    outcomes: list[AddOutcome] = []
    try:
        with first.transaction():
            assert first.add_objects(keys, envelope(shared), at_most=300) == [
                AddOutcome.CREATED] * 300
            worker = threading.Thread(target=lambda: outcomes.extend(second.add_objects(
                keys, envelope(["own", *shared]), at_most=301)))
            worker.start()
            worker.join(timeout=1.0)
            # The second envelope waits for the first transaction's lock on the collection.
            assert worker.is_alive()
        worker.join(timeout=30)
        assert not worker.is_alive()
        stored = first.count_objects(keys)
    finally:
        first.close()
        second.close()

    assert outcomes == [AddOutcome.CREATED] + [AddOutcome.DUPLICATE] * 300
    assert stored == 301


def test_restart_takes_no_lock_on_statuses(postgres_dsn: str, postgres_schema: str) -> None:
    """A hub that starts on an existing schema does not wait for readers of its tables."""
    PostgresHubStorage(postgres_dsn, schema=postgres_schema).close()
    started: list[PostgresHubStorage] = []
    with psycopg.connect(postgres_dsn) as reader:
        # An open transaction that has read statuses, as pg_dump's has.
        reader.execute(f"SELECT count(*) FROM {postgres_schema}.statuses").fetchone()
        worker = threading.Thread(target=lambda: started.append(
            PostgresHubStorage(postgres_dsn, schema=postgres_schema)))
        worker.start()
        worker.join(timeout=10)
        finished = not worker.is_alive()
        reader.rollback()
    worker.join(timeout=30)
    for storage in started:
        storage.close()

    assert finished


def indicator(object_id: str) -> NewObject:
    return NewObject("c-1", object_id, "indicator", "2.1", 1, "{}", "d", None)


def end_connection(postgres_dsn: str, storage: PostgresHubStorage) -> None:
    """End the storage's connection from the server side, as a restart would."""
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (storage.connection_info.backend_pid,))


def test_lost_connection_reopened(postgres_dsn: str, postgres_schema: str,
                                  caplog: pytest.LogCaptureFixture) -> None:
    """After the server ends the hub's connection, the call that meets the loss fails and
    the next one runs on a new connection."""
    storage = PostgresHubStorage(postgres_dsn, schema=postgres_schema)
    try:
        storage.add_object(indicator("indicator--a"))
        end_connection(postgres_dsn, storage)

        with caplog.at_level(logging.WARNING, logger="fusion_hub.postgres_storage"):
            with pytest.raises(StorageError):
                storage.count_objects("c-1")
            count = storage.count_objects("c-1")
    finally:
        storage.close()

    assert count == 1
    assert any("the connection was lost, reconnecting" in m for m in caplog.messages)


def test_pipeline_insert_error_recovers(
        postgres_dsn: str, postgres_schema: str, caplog: pytest.LogCaptureFixture) -> None:
    """A server error in the middle of the pipelined inserts fails the call cleanly: nothing
    stored, nothing logged by psycopg, and the next call works."""
    storage = PostgresHubStorage(postgres_dsn, schema=postgres_schema)
    with psycopg.connect(postgres_dsn, autocommit=True,
                         options=f"-c search_path={postgres_schema}") as admin:
        admin.execute("CREATE FUNCTION refuse_bad() RETURNS trigger AS $$ BEGIN "
                      "IF NEW.id = 'indicator--bad' THEN RAISE EXCEPTION 'refused by test'; "
                      "END IF; RETURN NEW; END $$ LANGUAGE plpgsql")
        admin.execute("CREATE TRIGGER refuse_bad BEFORE INSERT ON objects "
                      "FOR EACH ROW EXECUTE FUNCTION refuse_bad()")
    count = PIPELINE_BATCH_ROWS + 10
    objects = [indicator(f"indicator--{index}") for index in range(count)]
    objects[PIPELINE_BATCH_ROWS + 5] = objects[0]._replace(id="indicator--bad")
    try:
        with caplog.at_level(logging.WARNING):
            with pytest.raises(StorageError) as excinfo:
                storage.add_objects("c-1", objects, at_most=count)
            stored = storage.count_objects("c-1")
            after = storage.add_objects("c-1", objects[:1], at_most=1)
    finally:
        storage.close()

    assert "refused by test" in str(excinfo.value)
    assert stored == 0
    assert after == [AddOutcome.CREATED]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []


def test_lost_connection_fails_commit(
        postgres_dsn: str, postgres_schema: str) -> None:
    """A transaction whose connection was lost fails at COMMIT, even if its caller caught
    the first error, and stores nothing."""
    storage = PostgresHubStorage(postgres_dsn, schema=postgres_schema)
    try:
        with pytest.raises(StorageError):
            with storage.transaction():
                storage.add_object(indicator("indicator--a"))
                end_connection(postgres_dsn, storage)
                with pytest.raises(StorageError):
                    storage.count_objects("c-1")
        count = storage.count_objects("c-1")
    finally:
        storage.close()

    assert count == 0
