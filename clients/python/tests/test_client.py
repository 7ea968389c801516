"""The Python client against a real ``pgfork serve``, with psycopg as the
branches' client."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from pgfork import AsyncClient, Branch, Client, PgforkError


def count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchone()[0]


def test_context_manager_gives_an_isolated_branch_and_deletes_it(client: Client, server):
    source_dsn = server.json("source", "dsn", "shop")["dsn"]
    with client.branch("shop", ttl="1h", labels={"suite": "py"}) as b:
        assert isinstance(b, Branch)
        assert b.status == "running" and b.source == "shop"
        assert b.timings is not None and b.timings.total_ms > 0
        assert b.expires_at is not None
        with psycopg.connect(b.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 2000
            conn.execute("DELETE FROM orders")
            assert conn.execute("SELECT current_setting('is_superuser')").fetchone()[0] == "off"
        assert count(b.dsn, "SELECT count(*) FROM orders") == 0
        assert count(source_dsn, "SELECT count(*) FROM orders") == 2000, "the source changed"
        assert [x.name for x in client.branches(labels={"suite": "py"})] == [b.name]
        info = client.get_branch(b.name)
        assert "********" in info.dsn and info.unshared_bytes is not None
        assert client.dsn(b.name) == b.dsn
        name = b.name
    with pytest.raises(PgforkError) as e:
        client.get_branch(name)
    assert (e.value.status, e.value.code) == (404, "unknown_branch")


def test_reset_stop_start_and_metrics(client: Client):
    with client.branch("shop") as b:
        with psycopg.connect(b.dsn) as conn:
            conn.execute("DELETE FROM customers WHERE id > 10 AND id NOT IN (SELECT customer_id FROM orders)")
            conn.execute("CREATE TABLE scratch (x int)")
        reset = client.reset_branch(b.name)
        assert reset.port == b.port
        assert count(b.dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'scratch'") == 0
        assert client.stop_branch(b.name).status == "stopped"
        assert client.start_branch(b.name).status == "running"
        assert count(b.dsn, "SELECT count(*) FROM customers") == 500
        client.set_branch(b.name, ttl="2h", protect=True, labels={"k": "v"})
        got = client.get_branch(b.name)
        assert got.protected and got.labels == {"k": "v"} and got.expires_at
        client.set_branch(b.name, protect=False, clear_ttl=True, unlabel=["k"])
        assert client.get_branch(b.name).labels == {}
    text = client.metrics()
    assert "pgfork_branch_creations_total" in text
    assert 'pgfork_branch_create_duration_seconds_bucket{phase="clone"' in text
    wakes = [l for l in text.splitlines() if l.startswith("pgfork_branch_wake_duration_seconds_count")]
    assert wakes and int(wakes[0].split()[1]) >= 1, wakes
    assert 'pgfork_snapshot_age_seconds{snapshot="shop@1",source="shop"}' in text


def test_sources_snapshots_and_branch_of_a_branch(client: Client):
    assert [s.name for s in client.sources()] == ["shop"]
    assert client.source("shop").database == "shop"
    assert [s.id for s in client.snapshots(source="shop")][0] == "shop@1"
    with client.branch("shop@1") as parent:
        with psycopg.connect(parent.dsn) as conn:
            conn.execute("INSERT INTO customers VALUES (9999, 'new@example.com')")
        child = client.create_branch(f"{parent.name}-kid", parent.name)
        assert count(child.dsn, "SELECT count(*) FROM customers WHERE id = 9999") == 1
        with pytest.raises(PgforkError) as e:
            client.delete_branch(parent.name)
        assert (e.value.status, e.value.code) == (409, "has_dependents")
    # The context manager deletes with force: the child went too.
    assert all(not b.name.endswith("-kid") for b in client.branches())


def test_errors_are_clear(client: Client, server):
    with pytest.raises(PgforkError) as e:
        Client(server.url, token="wrong").branches()
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    with pytest.raises(PgforkError) as e:
        Client(server.url, token="").branches()
    assert e.value.status == 401
    assert Client(server.url, token="").health()["status"] == "ok"
    with pytest.raises(PgforkError) as e:
        client.create_branch("Bad Name", "shop")
    assert (e.value.status, e.value.code) == (400, "invalid_name")
    with pytest.raises(PgforkError) as e:
        client.create_branch("fine", "nowhere")
    assert (e.value.status, e.value.code) == (404, "unknown_origin")
    with pytest.raises(PgforkError) as e:
        client.create_branch("fine", "shop", ttl="soon")
    assert e.value.status == 400 and "ttl" in e.value.message
    # Out of bounds is refused before anything is stored.
    with pytest.raises(PgforkError) as e:
        client.create_branch("fine", "shop", ttl="300000y")
    assert (e.value.status, e.value.code) == (400, "invalid_argument") and "'ttl'" in e.value.message
    with pytest.raises(PgforkError) as e:
        client.create_branch("fine", "shop", labels={"../etc": "x"})
    assert (e.value.status, e.value.code) == (400, "invalid_argument") and "'labels'" in e.value.message
    assert "fine" not in [b.name for b in client.branches()]
    assert all(b.error is None for b in client.branches())


def test_openapi_lists_the_branch_routes(client: Client):
    doc = client.openapi()
    assert doc["openapi"].startswith("3.")
    assert {"get", "post"} <= set(doc["paths"]["/v1/branches"])


def test_async_client(server):
    async def main() -> None:
        ac = AsyncClient(server.url, token=server.token)
        async with ac.branch("shop", ttl="10m") as b:
            got = await ac.get_branch(b.name)
            assert got.status == "running"
            assert b.name in [x.name for x in await ac.branches()]
        with pytest.raises(PgforkError) as e:
            await ac.get_branch(b.name)
        assert e.value.code == "unknown_branch"

    asyncio.run(main())


def test_rehearse_then_request_a_promotion_and_approve_it(client: Client, server):
    source_dsn = server.json("source", "dsn", "shop")["dsn"]
    r = client.rehearse("shop", "CREATE INDEX orders_by_customer ON orders (customer_id);\n")
    assert r["verdict"] == "blocked", r  # an index without CONCURRENTLY
    assert r["statements"][0]["outcome"] == "applied"
    assert any(f["rule"] == "require-concurrent-index-creation" for f in r["lints"])
    with client.branch("shop", ttl="1h") as b:
        with psycopg.connect(b.dsn) as conn:
            conn.execute("CREATE TABLE py_promoted (id int PRIMARY KEY)")
            conn.execute("INSERT INTO py_promoted VALUES (1), (2)")
        req = client.request_promotion(b.name, note="a table for the client test")
        assert req["status"] == "open" and req["summary"]["preview"]["conflicts"] == 0
        assert [p["id"] for p in client.promotions(status="open")] == [req["id"]]
        done = client.approve_promotion(req["id"])
        assert done["status"] == "approved" and done["result"]["applied"] is True
    assert count(source_dsn, "SELECT count(*) FROM py_promoted") == 2
    with psycopg.connect(source_dsn) as conn:
        conn.execute("DROP TABLE py_promoted")  # the source is shared by the other tests
    with pytest.raises(PgforkError) as e:
        client.reject_promotion(req["id"], "too late")
    assert (e.value.status, e.value.code) == (409, "wrong_state")
