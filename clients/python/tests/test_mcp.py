"""The MCP server through the official Python SDK (the ``mcp`` package),
over streamable HTTP (``/mcp`` of ``pgfork serve``) and stdio (``pgfork
mcp``), on a real pool."""

from __future__ import annotations

import asyncio
import uuid

import httpx2
import psycopg
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

TOOLS = {
    "diff_branch",
    "list_sources",
    "create_branch",
    "list_branches",
    "describe_schema",
    "run_sql",
    "reset_branch",
    "delete_branch",
}


async def exercise(session: ClientSession, source_dsn: str) -> None:
    await session.initialize()
    listed = await session.list_tools()
    names = {t.name for t in listed.tools}
    assert TOOLS <= names, names
    for tool in listed.tools:
        assert len(tool.description or "") > 60, f"{tool.name} needs a precise description"
        assert tool.input_schema["type"] == "object"
    run_sql = next(t for t in listed.tools if t.name == "run_sql")
    assert set(run_sql.input_schema["required"]) == {"branch", "sql"}

    r = await session.call_tool("list_sources", {})
    assert not r.is_error and r.structured_content["sources"][0]["name"] == "shop"

    name = f"mcp-{uuid.uuid4().hex[:6]}"
    r = await session.call_tool("create_branch", {"name": name, "from": "shop", "ttl": "1h"})
    assert not r.is_error, r.content
    dsn = r.structured_content["dsn"]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 500

    r = await session.call_tool("describe_schema", {"branch": name})
    tables = {t["name"]: t for t in r.structured_content["tables"]}
    assert {"customers", "orders"} <= set(tables)
    orders = tables["orders"]
    assert orders["primary_key"]["definition"] == "PRIMARY KEY (id)"
    # Read with search_path pinned to pg_catalog: names come qualified.
    assert "REFERENCES public.customers(id)" in orders["foreign_keys"][0]["definition"]
    assert {c["name"]: c["type"] for c in orders["columns"]}["total"] == "numeric(10,2)"

    r = await session.call_tool("run_sql", {"branch": name, "sql": "SELECT id, email FROM customers ORDER BY id", "max_rows": 5})
    out = r.structured_content
    assert out["columns"] == ["id", "email"] and len(out["rows"]) == 5
    assert out["truncated"] and "first 5 rows" in out["note"]

    r = await session.call_tool("run_sql", {"branch": name, "sql": "DELETE FROM orders WHERE id <= 100; SELECT count(*) FROM orders"})
    assert r.structured_content["rows"] == [["1900"]], r.structured_content
    assert r.structured_content["statements"][0] == 100
    with psycopg.connect(source_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 2000, "the source changed"

    r = await session.call_tool("diff_branch", {"branch": name, "limit": 3})
    assert not r.is_error, r.content
    tables = {t["table"]: t for t in r.structured_content["data"]["tables"]}
    orders = next(t for k, t in tables.items() if k.endswith("orders"))
    assert (orders["deleted"], orders["inserted"], orders["updated"]) == (100, 0, 0), orders
    assert len(orders["rows"]) <= 3

    # The agent's role is not a superuser, and a source is never a target.
    r = await session.call_tool("run_sql", {"branch": name, "sql": "COPY customers TO PROGRAM 'true'"})
    assert r.is_error and r.structured_content["error"]["code"] == "sql_error"
    r = await session.call_tool("run_sql", {"branch": "shop", "sql": "SELECT 1"})
    assert r.is_error and r.structured_content["error"]["code"] == "unknown_branch"

    # The time limit holds even when the SQL turns its own timeout off:
    # pgfork cancels from outside the session.
    r = await session.call_tool("run_sql", {"branch": name, "sql": "SET statement_timeout = 0; SELECT pg_sleep(30)", "timeout_seconds": 2})
    assert r.is_error and r.structured_content["error"]["code"] == "canceled", r.structured_content
    assert "canceled after 2 s" in r.structured_content["error"]["message"]
    r = await session.call_tool("run_sql", {"branch": name, "sql": "SELECT 1", "timeout_seconds": 61})
    assert r.is_error and r.structured_content["error"]["code"] == "invalid_argument"

    r = await session.call_tool("list_branches", {"labels": {}})
    assert name in [b["name"] for b in r.structured_content["branches"]]
    assert all("dsn" not in b for b in r.structured_content["branches"])

    r = await session.call_tool("reset_branch", {"branch": name})
    assert not r.is_error
    r = await session.call_tool("run_sql", {"branch": name, "sql": "SELECT count(*) FROM orders"})
    assert r.structured_content["rows"] == [["2000"]]

    r = await session.call_tool("delete_branch", {"branch": name})
    assert r.structured_content["deleted"] == [f"branch {name}"]
    r = await session.call_tool("delete_branch", {"branch": name})
    assert r.is_error and r.structured_content["error"]["code"] == "unknown_branch"


def test_mcp_over_streamable_http(server):
    source_dsn = server.json("source", "dsn", "shop")["dsn"]

    async def main() -> None:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {server.token}"}, timeout=120)
        async with streamable_http_client(f"{server.url}/mcp", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await exercise(session, source_dsn)

    asyncio.run(main())


def test_mcp_over_http_needs_the_token(server):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{server.url}/mcp", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=30)
        raise AssertionError("/mcp answered without a token")
    except urllib.error.HTTPError as e:
        assert e.code == 401


def test_mcp_over_stdio(server):
    source_dsn = server.json("source", "dsn", "shop")["dsn"]
    params = StdioServerParameters(command=server.binary, args=["--home", str(server.home), "mcp"])

    async def main() -> None:
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await exercise(session, source_dsn)

    asyncio.run(main())


async def as_agent(session: ClientSession, me: str, other_branch: str) -> None:
    """What an agent's MCP session may and may not do."""
    await session.initialize()
    r = await session.call_tool("list_sources", {})
    assert [s["name"] for s in r.structured_content["sources"]] == ["shop"]
    name = f"{me}-{uuid.uuid4().hex[:6]}"
    r = await session.call_tool("create_branch", {"name": name, "from": "shop"})
    assert not r.is_error, r.content
    assert r.structured_content["expires_at"], "an agent's branch always expires"
    r = await session.call_tool("list_branches", {})
    assert [b["name"] for b in r.structured_content["branches"]] == [name]
    # Another agent's branch is as unknown as one that does not exist.
    for tool, args in [
        ("run_sql", {"branch": other_branch, "sql": "SELECT 1"}),
        ("reset_branch", {"branch": other_branch}),
        ("delete_branch", {"branch": other_branch}),
        ("diff_branch", {"branch": other_branch}),
    ]:
        r = await session.call_tool(tool, args)
        assert r.is_error, (tool, r.content)
        assert r.structured_content["error"]["code"] in ("unknown_branch", "unknown_origin"), r.structured_content
    r = await session.call_tool("create_branch", {"name": f"{name}-long", "from": "shop", "ttl": "7d"})
    assert r.is_error and "--max-ttl" in r.structured_content["error"]["message"], r.structured_content
    r = await session.call_tool("delete_branch", {"branch": name})
    assert not r.is_error, r.content


def test_mcp_acts_as_the_agent_whose_token_it_has(server, client):
    """An agent's token over streamable HTTP, and `pgfork mcp --agent` over
    stdio: the agent's scope, not the admin's."""
    tokens = {}
    for agent in ("mcp-a", "mcp-b"):
        made = server.json("agent", "create", agent, "--source", "shop", "--policy", "branch")
        tokens[agent] = made["api_token"]
    from pgfork import Client

    other = Client(server.url, token=tokens["mcp-b"], timeout=120)
    theirs = f"b-{uuid.uuid4().hex[:6]}"
    other.create_branch(theirs, "shop")
    assert [b.name for b in client.branches(agent="mcp-b")] == [theirs]

    async def over_http() -> None:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {tokens['mcp-a']}"}, timeout=120)
        async with streamable_http_client(f"{server.url}/mcp", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await as_agent(session, "mcp-a", theirs)

    asyncio.run(over_http())

    params = StdioServerParameters(
        command=server.binary,
        args=["--home", str(server.home), "mcp", "--agent", "mcp-a"],
        env={"PGFORK_TOKEN": tokens["mcp-a"], "PATH": "/usr/bin:/bin"},
    )

    async def over_stdio() -> None:
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await as_agent(session, "mcp-a", theirs)

    asyncio.run(over_stdio())

    # The API audits each call, under the agent's name.
    records = [r for r in client._request("GET", "/v1/audit", query=[("agent", "mcp-a")])]
    assert any(r["statement"] == "tool create_branch" for r in records), records
    other.delete_branch(theirs)
    for agent in tokens:
        server.json("agent", "revoke", agent)
