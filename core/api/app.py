"""The HTTP API under ``/api/v1``: a FastAPI application that ``server.py`` mounts beside the pages.

    POST /api/v1/runs/{run_id}/predict    Bearer key; multipart field ``files`` or JSON ``{"images": [...]}``
    GET  /api/v1/runs/{run_id}            classes, image size, metrics, thresholds ("not sure", "none of these"),
                                          card link (Bearer key)
    GET  /api/v1/runs/{run_id}/card       the run's model card, Markdown (Bearer key)
    GET  /api/v1/health                   no key
    GET  /api/v1/openapi.json, /api/v1/docs

Every route that reads a run asks ``core.workspace.keys.authenticate`` first (no key: 401; a key for another run,
revoked or expired: 403), before the request's body is read. What a key's holder may spend is bounded: images per
request and bytes per request (``CLASSIFIER_API_MAX_FILES``, ``CLASSIFIER_API_MAX_MB``: 413, checked as the body
arrives, not after), pixels per image (``CLASSIFIER_MAX_PIXELS``: that image's own error), images a minute per key
(``CLASSIFIER_API_IMAGES_PER_MINUTE``: 429 with Retry-After) and images waiting per model (429). Every refusal is
a 4xx with ``{"detail": sentence}``; a bug is a 500 with a sentence and the traceback only in the server's log.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import settings
from core.api import bodies, schemas
from core.api.batching import Batcher, Busy
from core.api.limits import RateLimit
from core.util.errors import UserError
from core.workspace import keys, runs
from core.workspace.db import WorkspaceError

log = logging.getLogger(__name__)
PREFIX = "/api/v1"
_bearer = HTTPBearer(auto_error=False, description="An API key made with `python -m core keys create RUN_ID`.")
_STATUS = {keys.NoKey: 401, keys.UnknownKey: 401, keys.KeyNotAllowed: 403, keys.UnknownRun: 404}


def _refusal(exc: UserError) -> HTTPException:
    status = next((s for kind, s in _STATUS.items() if isinstance(exc, kind)), 422)
    if isinstance(exc, WorkspaceError):
        status = 503
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return HTTPException(status, detail=str(exc), headers=headers)


async def run_key(run_id: str, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> keys.ApiKey:
    """The request's key, when it may use ``run_id`` (its use counted); a 401/403/404 otherwise."""
    token = creds.credentials if creds is not None else None
    try:
        return await asyncio.to_thread(keys.authenticate, token, run_id)
    except UserError as exc:
        raise _refusal(exc) from None


async def _run(run_id: str) -> runs.RunInfo:
    found = await asyncio.to_thread(runs.find_run, run_id)
    if found is None:
        raise HTTPException(404, detail=f"There is no run {run_id!r} on this server (it may have been deleted).")
    return found


RunKey = Annotated[keys.ApiKey, Depends(run_key)]


def _sentence(exc: RequestValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    where = " ".join(str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query", "header"))
    return f"The request is not valid: {where + ': ' if where else ''}{first.get('msg', 'unreadable')}."


def _handlers(api: FastAPI) -> None:
    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"There is no such address in the API: see {PREFIX}/docs."
        elif exc.status_code == 405:
            detail = f"This address does not take a {request.method} request: see {PREFIX}/docs."
        return JSONResponse({"detail": str(detail)}, exc.status_code, headers=getattr(exc, "headers", None))

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _sentence(exc)}, 422)

    @api.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        log.exception("API request %s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "The server failed to answer this request; its log says why."}, 500)


def create_app(batcher: Batcher | None = None) -> FastAPI:
    """The API application; mount it at ``/api/v1`` (``server.py``)."""
    api = FastAPI(
        title="Image classifier API",
        version="1",
        description="Classify images with a trained run. Every route but /health needs an API key: "
        "`Authorization: Bearer <key>` (make one with `python -m core keys create RUN_ID --name NAME`).",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    api.state.batcher = batcher or Batcher()
    api.state.rate = RateLimit(lambda: settings.current().api_images_per_minute)
    api.add_middleware(bodies.BodyLimit)
    _handlers(api)
    _routes(api)
    return api


def _routes(api: FastAPI) -> None:
    @api.get("/health", response_model=schemas.Health, summary="Whether the server answers")
    async def health() -> schemas.Health:
        predict = sys.modules.get("core.model.predict")  # loaded models only: never load TensorFlow here
        batcher: Batcher = api.state.batcher
        return schemas.Health(
            status="ok", models_loaded=len(predict._cache) if predict else 0, waiting=batcher.pending(),
            batches=batcher.batches, images=batcher.images,
        )  # fmt: skip

    @api.get("/runs/{run_id}", response_model=schemas.RunInfo, responses=schemas.REFUSALS, summary="A run")
    async def run_info(run_id: str, key: RunKey) -> schemas.RunInfo:
        return schemas.run_info(await _run(run_id), PREFIX)

    @api.get("/runs/{run_id}/card", response_class=PlainTextResponse, responses=schemas.REFUSALS,
             summary="The run's model card (Markdown)")  # fmt: skip
    async def card(run_id: str, key: RunKey) -> PlainTextResponse:
        info = await _run(run_id)
        from core.publish.card import render

        try:
            text = await asyncio.to_thread(render.markdown, info.path, None, None)
        except UserError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        return PlainTextResponse(text, media_type="text/markdown")

    @api.post("/runs/{run_id}/predict", response_model=schemas.PredictResponse, responses=schemas.PREDICT_REFUSALS,
              openapi_extra=schemas.PREDICT_BODY, summary="Classify one or more images")  # fmt: skip
    async def predict(run_id: str, request: Request, key: RunKey) -> schemas.PredictResponse:
        rate: RateLimit = api.state.rate
        _limit(rate.wait(key.id))  # a key already over its minute is refused before its body is read
        files = await bodies.read_images(request, settings.current().api_max_files)
        _limit(rate.take(key.id, len(files)))
        info = await _run(run_id)
        from core.api import predicting  # TensorFlow: with the first prediction, not with the server

        try:
            answers, stored, note = await predicting.answer(api.state.batcher, info, key, files)
        except Busy as exc:
            raise HTTPException(429, detail=str(exc), headers={"Retry-After": "2"}) from None
        except UserError as exc:
            raise HTTPException(503, detail=str(exc)) from None
        return schemas.PredictResponse(run=info.id, predictions=answers, stored=stored, store_note=note)


def _limit(seconds: float) -> None:
    if seconds > 0:
        raise HTTPException(
            429,
            detail=f"This key has classified its {settings.current().api_images_per_minute} images for this "
            f"minute; try again in {seconds:.0f} s.",
            headers={"Retry-After": str(max(1, round(seconds)))},
        )
