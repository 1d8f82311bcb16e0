"""What a prediction request sends: its images, read within the server's limits.

    app.add_middleware(BodyLimit)                        # 413 once a body passes CLASSIFIER_API_MAX_MB
    files = await read_images(request, max_files=64)     # [(name, bytes)], or an HTTPException with a sentence

Multipart bodies are parsed by Starlette (python-multipart), JSON bodies by the standard library; nothing here
parses HTTP by hand. The byte limit is counted as the body arrives, so a client that lies about (or leaves out) its
Content-Length is stopped at the limit, not after it sent a gigabyte.
"""

from __future__ import annotations

import base64
import binascii
import json
import unicodedata

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Receive, Scope, Send

from core import settings

MAX_NAME = 200


def _max_bytes() -> int:
    return int(settings.current().api_max_mb * 2**20)


class TooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, detail=f"The request is larger than this server takes ({limit / 2**20:.0f} MB); "
                         "send fewer or smaller images per request.")  # fmt: skip


class BodyLimit:
    """Refuses a request body larger than the server's limit, from its Content-Length or as its bytes arrive."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = _max_bytes()
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            detail = TooLarge(limit).detail
            body = json.dumps({"detail": detail}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise TooLarge(limit)  # raised inside the route's body read: answered as a 413
            return message

        await self.app(scope, counted, send)


def clean_name(name: object, i: int) -> str:
    """A file name fit to be echoed back: its last part, one line, at most ``MAX_NAME`` characters."""
    text = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()
    return text[:MAX_NAME] or f"image {i + 1}"


async def read_images(request: Request, max_files: int) -> list[tuple[str, bytes]]:
    """The request's images as (name, bytes): multipart ``files``, or JSON ``{"images": [...]}`` with base64 data.

    Raises:
        HTTPException: 415 another content type; 413 more than ``max_files`` images or too many bytes;
            422 no image, or a body that is not what the content type says.
    """
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        files = await _multipart(request, max_files)
    elif kind == "application/json":
        files = await _json(request)
    else:
        raise HTTPException(415, detail="Send the images as multipart/form-data (field 'files') or as JSON "
                            '{"images": [{"name": ..., "data": <base64>}]}.')  # fmt: skip
    if not files:
        raise HTTPException(422, detail="The request has no image: send one or more in the field 'files'.")
    if len(files) > max_files:
        raise HTTPException(413, detail=f"A request takes at most {max_files} images; this one has {len(files)}.")
    return files


async def _multipart(request: Request, max_files: int) -> list[tuple[str, bytes]]:
    try:
        form = await request.form(max_files=max_files + 1, max_fields=max_files + 16)
    except HTTPException:
        raise
    except Exception as exc:  # a malformed multipart body (python-multipart's own errors)
        raise HTTPException(422, detail=f"The multipart body cannot be read ({exc}).") from None
    try:
        parts = form.getlist("files")
        if any(not isinstance(p, UploadFile) for p in parts):
            raise HTTPException(422, detail="The field 'files' must hold image files, not text.")
        return [(clean_name(p.filename, i), await p.read()) for i, p in enumerate(parts)]
    finally:
        await form.close()


async def _json(request: Request) -> list[tuple[str, bytes]]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(422, detail="The body is not valid JSON.") from None
    images = body.get("images") if isinstance(body, dict) else None
    if not isinstance(images, list):
        raise HTTPException(422, detail='A JSON body is {"images": [{"name": ..., "data": <base64>}, ...]}.')
    out = []
    for i, image in enumerate(images):
        name, data = (image.get("name"), image.get("data")) if isinstance(image, dict) else (None, image)
        if not isinstance(data, str):
            raise HTTPException(422, detail=f"Image {i + 1} has no base64 'data'.")
        try:
            raw = base64.b64decode(data.split(",", 1)[-1] if data.startswith("data:") else data, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(422, detail=f"Image {i + 1}'s data is not valid base64.") from None
        out.append((clean_name(name, i), raw))
    return out
