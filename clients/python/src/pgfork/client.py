"""The clients: :class:`Client` (blocking, standard library only) and
:class:`AsyncClient` (the same calls as coroutines, each run on a worker
thread so that an event loop is never blocked)."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Dict, List, Mapping, Optional

from pgfork.errors import PgforkError
from pgfork.models import Branch, Snapshot, Source

DEFAULT_URL = "http://127.0.0.1:7432"


class Client:
    """A client of one ``pgfork serve``.

    Args:
        url: Base URL of the server (default ``$PGFORK_URL`` or
            ``http://127.0.0.1:7432``).
        token: The API bearer token printed by ``pgfork init`` or
            ``pgfork token rotate`` (default ``$PGFORK_TOKEN``).
        timeout: Seconds to wait for one request. Creating a branch takes
            about a second; taking a snapshot of a large source longer.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = 300.0,
    ) -> None:
        self.url = (url or os.environ.get("PGFORK_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("PGFORK_TOKEN")
        self.timeout = timeout

    def __repr__(self) -> str:  # never show the token
        return f"Client({self.url!r})"

    # -- transport ---------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: Optional[Mapping[str, Any]] = None,
        query: Optional[List[tuple]] = None,
        raw: bool = False,
    ) -> Any:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            raise _error_of(e.code, e.read()) from None
        except (urllib.error.URLError, OSError) as e:
            raise PgforkError(0, "unreachable", f"cannot reach {self.url}: {e}") from None
        if raw:
            return payload.decode()
        return json.loads(payload) if payload else None

    # -- system ------------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """``GET /health`` (needs no token)."""
        return self._request("GET", "/health")

    def openapi(self) -> Dict[str, Any]:
        """The server's OpenAPI document."""
        return self._request("GET", "/openapi.json")

    def metrics(self) -> str:
        """Prometheus metrics, as text."""
        return self._request("GET", "/metrics", raw=True)

    # -- sources -----------------------------------------------------------

    def sources(self) -> List[Source]:
        """Every source."""
        return [Source.from_json(s) for s in self._request("GET", "/v1/sources")]

    def source(self, name: str) -> Source:
        """One source."""
        return Source.from_json(self._request("GET", f"/v1/sources/{_seg(name)}"))

    def create_source(self, name: str) -> Source:
        """A new local source (a cluster pgfork runs), started and empty."""
        return Source.from_json(self._request("POST", "/v1/sources", {"name": name}))

    def delete_source(self, name: str, force: bool = False) -> List[str]:
        """Deletes a source and its snapshots (``force``: its branches too)."""
        q = [("force", "true")] if force else None
        return self._request("DELETE", f"/v1/sources/{_seg(name)}", query=q)["deleted"]

    # -- snapshots ---------------------------------------------------------

    def snapshots(self, source: Optional[str] = None) -> List[Snapshot]:
        """Snapshots, optionally of one source only."""
        q = [("source", source)] if source else None
        return [Snapshot.from_json(s) for s in self._request("GET", "/v1/snapshots", query=q)]

    def create_snapshot(self, of: str) -> Snapshot:
        """A consistent, sealed snapshot of a source or branch."""
        return Snapshot.from_json(self._request("POST", "/v1/snapshots", {"of": of}))

    def delete_snapshot(self, id: str, force: bool = False) -> List[str]:
        """Deletes a snapshot (``force``: and the branches made from it)."""
        q = [("force", "true")] if force else None
        return self._request("DELETE", f"/v1/snapshots/{_seg(id)}", query=q)["deleted"]

    # -- branches ----------------------------------------------------------

    def branches(
        self, labels: Optional[Mapping[str, str]] = None, agent: Optional[str] = None
    ) -> List[Branch]:
        """Branches the token may see, optionally only those carrying all
        ``labels``, or only those ``agent`` made (an orchestrator lists its
        workers' branches)."""
        q = [("label", f"{k}={v}") for k, v in (labels or {}).items()]
        if agent is not None:
            q.append(("agent", agent))
        return [Branch.from_json(b) for b in self._request("GET", "/v1/branches", query=q)]

    def get_branch(self, name: str) -> Branch:
        """One branch (password masked), with its unshared bytes."""
        return Branch.from_json(self._request("GET", f"/v1/branches/{_seg(name)}"))

    def create_branch(
        self,
        name: str,
        from_: str,
        *,
        ttl: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        protect: bool = False,
        durable: bool = False,
        fresh: bool = False,
        schema_only: bool = False,
    ) -> Branch:
        """Creates and starts a branch of ``from_`` (a source, a snapshot id
        such as ``shop@3``, or a branch). The result's ``dsn`` carries the
        password: treat it as a secret."""
        body: Dict[str, Any] = {"name": name, "from": from_}
        if ttl is not None:
            body["ttl"] = ttl
        if labels:
            body["labels"] = dict(labels)
        for key, value in (
            ("protect", protect),
            ("durable", durable),
            ("fresh", fresh),
            ("schema_only", schema_only),
        ):
            if value:
                body[key] = True
        return Branch.from_json(self._request("POST", "/v1/branches", body))

    def dsn(self, name: str) -> str:
        """The branch's connection string, with its password."""
        return self._request("GET", f"/v1/branches/{_seg(name)}/dsn")["dsn"]

    def set_branch(
        self,
        name: str,
        *,
        ttl: Optional[str] = None,
        clear_ttl: bool = False,
        protect: Optional[bool] = None,
        labels: Optional[Mapping[str, str]] = None,
        unlabel: Optional[List[str]] = None,
    ) -> Branch:
        """Changes a branch's TTL, protection or labels."""
        body: Dict[str, Any] = {}
        if ttl is not None:
            body["ttl"] = ttl
        if clear_ttl:
            body["clear_ttl"] = True
        if protect is not None:
            body["protect"] = protect
        if labels:
            body["labels"] = dict(labels)
        if unlabel:
            body["unlabel"] = list(unlabel)
        return Branch.from_json(self._request("PATCH", f"/v1/branches/{_seg(name)}", body))

    def reset_branch(self, name: str) -> Branch:
        """Throws the branch's changes away (same name, port and password)."""
        return Branch.from_json(self._request("POST", f"/v1/branches/{_seg(name)}/reset"))

    def start_branch(self, name: str) -> Branch:
        """Starts a stopped branch."""
        return Branch.from_json(self._request("POST", f"/v1/branches/{_seg(name)}/start"))

    def stop_branch(self, name: str) -> Branch:
        """Stops a branch; its data is kept."""
        return Branch.from_json(self._request("POST", f"/v1/branches/{_seg(name)}/stop"))

    def delete_branch(self, name: str, force: bool = False) -> List[str]:
        """Deletes a branch (``force``: and the branches made from it)."""
        q = [("force", "true")] if force else None
        return self._request("DELETE", f"/v1/branches/{_seg(name)}", query=q)["deleted"]

    def share_branch(self, name: str, agent: str, read_only: bool = False) -> Dict[str, Any]:
        """Shares a branch the token's identity made with ``agent``, which
        then gets a DSN of its own role on it (read-only if asked)."""
        body: Dict[str, Any] = {"agent": agent, "read_only": read_only}
        return self._request("POST", f"/v1/branches/{_seg(name)}/share", body)

    def unshare_branch(self, name: str, agent: str) -> None:
        """Stops sharing: the member's role goes and its sessions end."""
        self._request("DELETE", f"/v1/branches/{_seg(name)}/share/{_seg(agent)}")

    def members(self, name: str) -> List[Dict[str, Any]]:
        """The agents a branch is shared with."""
        return self._request("GET", f"/v1/branches/{_seg(name)}/members")

    def rehearse(
        self,
        from_: str,
        sql: str,
        *,
        fresh: bool = False,
        keep: bool = False,
        fail_on: str = "error",
        max_lock_ms: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Rehearses a migration on a throwaway branch of ``from_``: per
        statement whether it applies, its locks and how long they were held,
        rewrites, rows; squawk's lints; the schema diff; ``verdict``
        (``applies``, ``fails`` or ``blocked``)."""
        body: Dict[str, Any] = {"from": from_, "sql": sql, "fresh": fresh, "keep": keep, "fail_on": fail_on}
        if max_lock_ms is not None:
            body["max_lock_ms"] = max_lock_ms
        return self._request("POST", "/v1/rehearsals", body)

    def request_promotion(
        self, branch: str, note: Optional[str] = None, migration: Optional[str] = None
    ) -> Dict[str, Any]:
        """Asks for a branch to be promoted (the only promote an agent may
        do); with ``migration``, pgfork rehearses it and keeps the report."""
        body: Dict[str, Any] = {"branch": branch}
        if note is not None:
            body["note"] = note
        if migration is not None:
            body["migration"] = migration
        return self._request("POST", "/v1/promotions", body)

    def promotions(self, status: Optional[str] = None) -> List[Dict[str, Any]]:
        """Promotion requests the token's identity may see, newest first."""
        q = [("status", status)] if status else None
        return self._request("GET", "/v1/promotions", query=q)

    def promotion(self, id: int) -> Dict[str, Any]:
        """One promotion request."""
        return self._request("GET", f"/v1/promotions/{int(id)}")

    def approve_promotion(self, id: int) -> Dict[str, Any]:
        """Approves a request (admin): promotes its branch now."""
        return self._request("POST", f"/v1/promotions/{int(id)}/approve", {})

    def reject_promotion(self, id: int, reason: str) -> Dict[str, Any]:
        """Rejects a request (admin), saying why."""
        return self._request("POST", f"/v1/promotions/{int(id)}/reject", {"reason": reason})

    def branch(
        self,
        from_: str,
        name: Optional[str] = None,
        *,
        ttl: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        schema_only: bool = False,
    ) -> "BranchContext":
        """A branch of ``from_`` for a ``with`` block: created on entry
        (named ``py-XXXXXXXX`` unless ``name`` is given), deleted on exit,
        with the branches made from it. Set a ``ttl`` as well, so that gc
        removes it even if this process dies inside the block."""
        return BranchContext(self, from_, name, ttl, labels, schema_only)


class BranchContext:
    """``with client.branch("shop") as b:`` — see :meth:`Client.branch`."""

    def __init__(
        self,
        client: Client,
        from_: str,
        name: Optional[str],
        ttl: Optional[str],
        labels: Optional[Mapping[str, str]],
        schema_only: bool,
    ) -> None:
        self.client = client
        self.from_ = from_
        self.name = name or f"py-{uuid.uuid4().hex[:8]}"
        self.ttl = ttl
        self.labels = labels
        self.schema_only = schema_only
        self.branch: Optional[Branch] = None

    def __enter__(self) -> Branch:
        self.branch = self.client.create_branch(
            self.name,
            self.from_,
            ttl=self.ttl,
            labels=self.labels,
            schema_only=self.schema_only,
        )
        return self.branch

    def __exit__(self, *exc: object) -> None:
        if self.branch is not None:
            try:
                self.client.delete_branch(self.name, force=True)
            except PgforkError as e:
                if e.status != 404:  # already gone is fine
                    raise

    async def __aenter__(self) -> Branch:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.__exit__, *exc)


class AsyncClient:
    """:class:`Client` for asyncio: every method is a coroutine (run on a
    worker thread), and ``async with client.branch("shop") as b:`` works."""

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = 300.0,
    ) -> None:
        self.sync = Client(url, token, timeout)

    def __repr__(self) -> str:
        return f"AsyncClient({self.sync.url!r})"

    def branch(self, from_: str, name: Optional[str] = None, **kw: Any) -> BranchContext:
        """See :meth:`Client.branch`; use with ``async with``."""
        return self.sync.branch(from_, name, **kw)

    async def health(self) -> Dict[str, Any]:
        """See :meth:`Client.health`."""
        return await asyncio.to_thread(self.sync.health)

    async def openapi(self) -> Dict[str, Any]:
        """See :meth:`Client.openapi`."""
        return await asyncio.to_thread(self.sync.openapi)

    async def metrics(self) -> str:
        """See :meth:`Client.metrics`."""
        return await asyncio.to_thread(self.sync.metrics)

    async def sources(self) -> List[Source]:
        """See :meth:`Client.sources`."""
        return await asyncio.to_thread(self.sync.sources)

    async def source(self, name: str) -> Source:
        """See :meth:`Client.source`."""
        return await asyncio.to_thread(self.sync.source, name)

    async def create_source(self, name: str) -> Source:
        """See :meth:`Client.create_source`."""
        return await asyncio.to_thread(self.sync.create_source, name)

    async def delete_source(self, name: str, force: bool = False) -> List[str]:
        """See :meth:`Client.delete_source`."""
        return await asyncio.to_thread(self.sync.delete_source, name, force)

    async def snapshots(self, source: Optional[str] = None) -> List[Snapshot]:
        """See :meth:`Client.snapshots`."""
        return await asyncio.to_thread(self.sync.snapshots, source)

    async def create_snapshot(self, of: str) -> Snapshot:
        """See :meth:`Client.create_snapshot`."""
        return await asyncio.to_thread(self.sync.create_snapshot, of)

    async def delete_snapshot(self, id: str, force: bool = False) -> List[str]:
        """See :meth:`Client.delete_snapshot`."""
        return await asyncio.to_thread(self.sync.delete_snapshot, id, force)

    async def branches(
        self, labels: Optional[Mapping[str, str]] = None, agent: Optional[str] = None
    ) -> List[Branch]:
        """See :meth:`Client.branches`."""
        return await asyncio.to_thread(self.sync.branches, labels, agent)

    async def get_branch(self, name: str) -> Branch:
        """See :meth:`Client.get_branch`."""
        return await asyncio.to_thread(self.sync.get_branch, name)

    async def create_branch(self, name: str, from_: str, **kw: Any) -> Branch:
        """See :meth:`Client.create_branch`."""
        return await asyncio.to_thread(self.sync.create_branch, name, from_, **kw)

    async def dsn(self, name: str) -> str:
        """See :meth:`Client.dsn`."""
        return await asyncio.to_thread(self.sync.dsn, name)

    async def set_branch(self, name: str, **kw: Any) -> Branch:
        """See :meth:`Client.set_branch`."""
        return await asyncio.to_thread(self.sync.set_branch, name, **kw)

    async def reset_branch(self, name: str) -> Branch:
        """See :meth:`Client.reset_branch`."""
        return await asyncio.to_thread(self.sync.reset_branch, name)

    async def start_branch(self, name: str) -> Branch:
        """See :meth:`Client.start_branch`."""
        return await asyncio.to_thread(self.sync.start_branch, name)

    async def stop_branch(self, name: str) -> Branch:
        """See :meth:`Client.stop_branch`."""
        return await asyncio.to_thread(self.sync.stop_branch, name)

    async def delete_branch(self, name: str, force: bool = False) -> List[str]:
        """See :meth:`Client.delete_branch`."""
        return await asyncio.to_thread(self.sync.delete_branch, name, force)

    async def share_branch(self, name: str, agent: str, read_only: bool = False) -> Dict[str, Any]:
        """See :meth:`Client.share_branch`."""
        return await asyncio.to_thread(self.sync.share_branch, name, agent, read_only)

    async def unshare_branch(self, name: str, agent: str) -> None:
        """See :meth:`Client.unshare_branch`."""
        await asyncio.to_thread(self.sync.unshare_branch, name, agent)

    async def members(self, name: str) -> List[Dict[str, Any]]:
        """See :meth:`Client.members`."""
        return await asyncio.to_thread(self.sync.members, name)

    async def rehearse(self, from_: str, sql: str, **kw: Any) -> Dict[str, Any]:
        """See :meth:`Client.rehearse`."""
        return await asyncio.to_thread(lambda: self.sync.rehearse(from_, sql, **kw))

    async def request_promotion(
        self, branch: str, note: Optional[str] = None, migration: Optional[str] = None
    ) -> Dict[str, Any]:
        """See :meth:`Client.request_promotion`."""
        return await asyncio.to_thread(self.sync.request_promotion, branch, note, migration)

    async def promotions(self, status: Optional[str] = None) -> List[Dict[str, Any]]:
        """See :meth:`Client.promotions`."""
        return await asyncio.to_thread(self.sync.promotions, status)


def _seg(part: str) -> str:
    """A path segment, quoted (``@`` of snapshot ids kept)."""
    return urllib.parse.quote(part, safe="@")


def _error_of(status: int, payload: bytes) -> PgforkError:
    try:
        err = json.loads(payload)["error"]
        return PgforkError(status, err["code"], err["message"])
    except (ValueError, KeyError, TypeError):
        return PgforkError(status, "http_error", payload.decode(errors="replace")[:500])
