"""What every handler of the apiserver answers with: JSON bodies and metav1.Status failures."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from services.apiserver import status as st

JSON = "application/json"
encoder = msgspec.json.Encoder()


def json_response(doc: Any, code: int = 200, content_type: str = JSON) -> web.Response:
    return web.Response(body=encoder.encode(doc), status=code, headers={"Content-Type": content_type})


def status_response(doc: dict[str, Any]) -> web.Response:
    return json_response(doc, int(doc.get("code") or 500))


class Failure(Exception):
    """A request refused before reaching the bus, as a metav1.Status."""

    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.doc = st.status(code, reason, message, **details)


def not_found_path() -> Failure:
    return Failure(404, "NotFound", "the server could not find the requested resource")
