"""The one exception the client raises."""

from __future__ import annotations


class PgforkError(Exception):
    """An error answered by the pgfork API (or a failure to reach it).

    Attributes:
        status: HTTP status (0 when the server could not be reached).
        code: The API's stable error code, e.g. ``unknown_branch``,
            ``name_taken``, ``quota_exceeded``, ``disk_floor``,
            ``unauthorized``, ``bad_request``.
        message: What went wrong and what to do about it.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code} (HTTP {status}): {message}")
        self.status = status
        self.code = code
        self.message = message
