"""A writer slot whose holder died is not waited on for ever (the test and ephemeral servers never
reap leases): after STALE_SLOT_S the run writes under DuckDB's own file lock and says so."""

from __future__ import annotations

import logging
from uuid import UUID

import pytest

from tasks.workspace import Workspace, database


@pytest.mark.usefixtures("prefect_server")
def test_a_writer_slot_left_by_a_dead_holder_does_not_stall_a_run(tmp_path, monkeypatch):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from flows.runtime import limits as limits
    from flows.runtime.server import OWN_SERVER_ENV

    monkeypatch.delenv(OWN_SERVER_ENV, raising=False)  # the test server as a shared one: its slots, not a lock
    monkeypatch.setattr(limits, "STALE_SLOT_S", 3.0)
    # a limit of this test's own: other tests on the session's server never wait on its dead holder
    monkeypatch.setattr(limits, "DUCKDB_WRITER", "ceta2vec-duckdb-writer-dead-holder-test")
    limits.ensure_limit(limits.DUCKDB_WRITER, 1)
    with get_client(sync_client=True) as client:  # a holder that took the slot and then died
        lease = UUID(client.increment_concurrency_slots_with_lease(
            names=[limits.DUCKDB_WRITER], slots=1, mode="concurrency", lease_duration=600).json()["lease_id"])
    ws = Workspace.at(tmp_path / "ws")
    ws.create()

    @flow
    def write_once() -> None:
        with database.writing(ws) as conn:
            conn.execute("CREATE TABLE answer AS SELECT 42 AS x")

    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())  # Prefect's logging config stops propagation
    logging.getLogger("flows.runtime.limits").addHandler(handler)
    try:
        write_once()
    finally:
        logging.getLogger("flows.runtime.limits").removeHandler(handler)
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(lease)
    with database.reading(ws) as conn:
        assert conn.execute("SELECT x FROM answer").fetchone() == (42,)
    assert any("writing under DuckDB's file lock alone" in line for line in said), said


def test_only_a_server_the_user_shares_holds_writer_slots(monkeypatch):
    """A CLI command's own temporary server dies with it, and a slot it counted would outlive it in
    the SQLite database the next command's server reuses: such a server is not a shared one."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.runtime import limits
    from flows.runtime.server import OWN_SERVER_ENV

    monkeypatch.setenv(OWN_SERVER_ENV, "http://127.0.0.1:4321/api")
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4321/api"}):
        assert not limits.shared_server()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert limits.shared_server()
    monkeypatch.delenv(OWN_SERVER_ENV)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4321/api"}):
        assert limits.shared_server()
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert not limits.shared_server()
