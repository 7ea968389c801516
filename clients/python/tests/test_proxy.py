"""The policy proxy with psycopg: a `pgfork proxy` on the home of the
`server` fixture (a source ``shop`` with 500 customers and 2000 orders),
one agent per policy, psycopg's usual ways (implicit transactions, server-
side parameters, pipeline mode, COPY)."""

from __future__ import annotations

import psycopg
import pytest

from conftest import Server


def _agent(server: Server, name: str, policy: str, *extra: str) -> str:
    return server.json("agent", "create", name, "--source", "shop", "--policy", policy, *extra)["secret"]


def _url(name: str, secret: str, port: int) -> str:
    return f"postgresql://{name}:{secret}@127.0.0.1:{port}/shop"


def _source_count(server: Server, table: str) -> int:
    dsn = server.json("source", "dsn", "shop")["dsn"]
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_read_only_refuses_writes_with_25006(server: Server, proxy: int) -> None:
    secret = _agent(server, "pyreader", "read-only")
    with psycopg.connect(_url("pyreader", secret, proxy)) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 500
        row = conn.execute("SELECT email FROM customers WHERE id = %s", (7,)).fetchone()
        assert row[0] == "c7@example.com"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as e:
            conn.execute("UPDATE customers SET email = %s WHERE id = %s", ("x@example.com", 1))
        assert "pgfork policy read-only" in str(e.value)
        conn.rollback()
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("SET default_transaction_read_only = off")
    assert _source_count(server, "customers") == 500


def test_dry_run_rolls_back_with_true_results(server: Server, proxy: int) -> None:
    secret = _agent(server, "pytester", "dry-run")
    url = _url("pytester", secret, proxy)
    with psycopg.connect(url) as conn:
        cur = conn.execute("DELETE FROM orders WHERE customer_id = %s", (2,))
        assert cur.rowcount == 4
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 1996
        conn.commit()  # answered as a rollback
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 2000
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.pipeline():
            inserted = conn.execute(
                "INSERT INTO customers VALUES (%s, %s) RETURNING id", (9001, "p@example.com")
            )
            counted = conn.execute("SELECT count(*) FROM customers")
        assert inserted.fetchone()[0] == 9001
        assert counted.fetchone()[0] == 501
        assert conn.execute("SELECT count(*) FROM customers WHERE id = 9001").fetchone()[0] == 0
    assert _source_count(server, "orders") == 2000


def test_branch_takes_copy_and_leaves_the_source_alone(server: Server, proxy: int) -> None:
    secret = _agent(server, "pybranch", "branch")
    with psycopg.connect(_url("pybranch", secret, proxy), autocommit=True) as conn:
        with conn.cursor().copy("COPY customers (id, email) FROM STDIN") as copy:
            for i in range(10001, 10101):
                copy.write_row((i, f"b{i}@example.com"))
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 600
        with conn.cursor().copy("COPY (SELECT id FROM customers WHERE id > 10095) TO STDOUT") as copy:
            rows = list(copy.rows())
        assert len(rows) == 5
    assert _source_count(server, "customers") == 500
