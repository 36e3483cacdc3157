"""Response values passed from the route handlers back to the HTTP layer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain;charset=UTF-8"
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)


class HttpError(Exception):
    """Raised by handlers; becomes a plain-text error response."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def to_response(self) -> Response:
        return text(self.message, self.status)


def text(body: str, status: int = 200) -> Response:
    return Response(status=status, body=body.encode())


def as_json(payload: Any, status: int = 200) -> Response:
    return Response(
        status=status,
        body=json.dumps(payload).encode(),
        content_type="application/json;charset=UTF-8",
    )


def binary(data: bytes, content_type: str = "application/octet-stream", name: str = "") -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{name}"'} if name else {}
    return Response(body=data, content_type=content_type, headers=headers)


def result_set(rows: list[dict[str, str]], title: str = "") -> Response:
    return as_json(
        {"ResultSet": {"Result": rows, "totalRecords": str(len(rows)), "title": title}}
    )
