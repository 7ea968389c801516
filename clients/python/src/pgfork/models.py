"""What the API returns, as dataclasses. Fields the server adds later are
ignored, so an older client keeps working with a newer server."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Type, TypeVar

T = TypeVar("T")


def _build(cls: Type[T], data: Mapping[str, Any]) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Timings:
    """Where the time of a branch's creation went, in milliseconds."""

    clone_ms: int
    start_ms: int
    total_ms: int
    snapshot_ms: Optional[int] = None


@dataclass(frozen=True)
class Branch:
    """A branch: a writable copy-on-write clone with its own server.

    ``dsn`` carries the password only in what ``create_branch`` returns (and
    in ``Client.dsn``); elsewhere it is masked.
    """

    name: str
    source: str
    snapshot: str
    status: str
    port: int
    dsn: str
    database: str
    user: str
    created_at: str
    protected: bool = False
    parent_branch: Optional[str] = None
    expires_at: Optional[str] = None
    #: When it was last in use; its idle time counts from here.
    last_active_at: Optional[str] = None
    pid: Optional[int] = None
    labels: Dict[str, str] = field(default_factory=dict)
    timings: Optional[Timings] = None
    unshared_bytes: Optional[int] = None
    #: Who made it: ``agent:NAME`` or ``admin:NAME``.
    created_by: Optional[str] = None
    #: Set only when the branch's stored record cannot be shown whole
    #: (written by an older pgfork or by hand): what is wrong, what to do.
    error: Optional[str] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Branch":
        """Builds a branch from the API's JSON."""
        data = dict(data)
        if data.get("timings") is not None:
            data["timings"] = _build(Timings, data["timings"])
        return _build(cls, data)


@dataclass(frozen=True)
class Source:
    """A database that branches are made from."""

    name: str
    mode: str
    status: str
    port: int
    database: str
    user: str
    snapshots: int = 0
    branches: int = 0
    created_at: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Source":
        """Builds a source from the API's JSON."""
        return _build(cls, data)


@dataclass(frozen=True)
class Snapshot:
    """A sealed, immutable image of a source or branch (id like ``shop@3``)."""

    id: str
    number: int
    source: str
    status: str
    created_at: str
    parent_branch: Optional[str] = None
    method: Optional[str] = None
    lsn: Optional[str] = None
    branches: List[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Snapshot":
        """Builds a snapshot from the API's JSON."""
        return _build(cls, data)
