"""The distill-serve app: `create_app(settings)` -> a FastAPI app with these endpoints.

    POST /v1/score    {"articles": [...], "filters": [...]?} -> {"results": [...]} in input order
    GET  /v1/filters  filters, dimensions, tiers, model ids and their eval metrics
    GET  /healthz     alive;  GET /readyz  models loaded and not draining (else 503)
    GET  /metrics     Prometheus text;  GET /docs  OpenAPI docs;  GET /  the try-it page

With DISTILL_SERVE_TOKEN set, /v1/* and /metrics need `Authorization: Bearer
<token>` (compared in constant time, never logged). Whole-request errors are
`{"error": one line, "detail": ...}` (for 422 `detail` is FastAPI's list of
{loc, msg, type}); a bad article inside a good request is its own result
entry. Nothing here logs article text. The work itself is online.py's.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from distill import __version__
from distill.records import encode_line
from distill.scoring import tier_minimums
from distill.serve.server import schemas
from distill.serve.server.metrics import Metrics, MetricsMiddleware
from distill.serve.server.online import OnlineScorer, Prepared, TooLarge, Unavailable, Work
from distill.serve.server.settings import TOKEN_ENV, ServeSettings

PAGE = Path(__file__).with_name("page.html")
GONE = 499  # what the metrics count for a client that went away before its answer (nginx's code)
ERRORS = {code: {"model": schemas.ErrorResponse} for code in (401, 413, 422, 503)}
bearer = HTTPBearer(auto_error=False, description=f"needed when the server was started with {TOKEN_ENV} set")


class RequestProblem(Exception):
    """A whole request is malformed (422): `detail` is FastAPI's list of {loc, msg, type}."""

    def __init__(self, message: str, detail: list[dict[str, Any]]):
        super().__init__(message)
        self.detail = detail


class BodyTooLarge(Exception):
    pass


def create_app(settings: ServeSettings, *, wait_for_models: bool = False, token: str | None = None) -> FastAPI:
    """The app for `settings`: models and filters resolve now (errors raise here), the models
    load when the app starts (in the background unless `wait_for_models`). The bearer
    token is `token`, else $DISTILL_SERVE_TOKEN; none: the API is open."""
    metrics = Metrics()
    scorer = OnlineScorer(settings, metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        scorer.start()
        if wait_for_models:
            await asyncio.to_thread(scorer.wait_ready)
        try:
            yield
        finally:
            await asyncio.to_thread(scorer.close, settings.drain_seconds)

    app = FastAPI(title="distill-serve", version=__version__, lifespan=lifespan,
                  description="Score articles with distilled students, as distill-score does, over HTTP.")
    app.state.settings = settings
    app.state.scorer = scorer
    app.state.metrics = metrics
    app.state.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
    app.state.filters = filters_info(scorer)
    app.include_router(_routes())
    _add_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


async def require_token(request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    token = request.app.state.token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})


def _routes():
    from fastapi import APIRouter

    router = APIRouter()
    guarded = [Depends(require_token)]
    router.add_api_route("/v1/score", score, methods=["POST"], dependencies=guarded, response_model=None,
                         summary="Score one or many articles with some or all filters",
                         responses={200: {"model": schemas.ScoreResponse}, **ERRORS},
                         openapi_extra={"requestBody": {"required": True, "content": {
                             "application/json": {"schema": schemas.ScoreRequest.model_json_schema()}}}})
    router.add_api_route("/v1/filters", filters, methods=["GET"], dependencies=guarded,
                         response_model=schemas.FiltersResponse, responses={401: ERRORS[401]})
    router.add_api_route("/healthz", healthz, methods=["GET"], response_model=schemas.Status)
    router.add_api_route("/readyz", readyz, methods=["GET"], response_model=schemas.Status,
                         responses={503: {"model": schemas.Status}})
    router.add_api_route("/metrics", metrics, methods=["GET"], dependencies=guarded, response_class=Response)
    router.add_api_route("/", page, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    return router


async def score(request: Request) -> Response:
    """Score the articles; each result is the records distill-score writes, or why the article is bad."""
    scorer: OnlineScorer = request.app.state.scorer
    try:
        body = await read_body(request, request.app.state.settings.max_body_bytes)
    except ClientDisconnect:
        return Response(status_code=GONE)
    parsed = parse_request(body)
    try:
        jobs = scorer.job_indices(parsed.filters)
    except ValueError as exc:
        raise RequestProblem(f"field 'filters': {exc}", [_problem(["body", "filters"], str(exc), "value_error")]) from None
    queued = await scorer.submit(parsed.articles, jobs)
    if isinstance(queued, Prepared):  # no article needs a model
        return _json({"results": scorer.results(queued, None)})
    if not await _answered(request, queued):
        scorer.cancel(queued)
        return Response(status_code=GONE)
    return _json({"results": scorer.results(queued.prepared, queued.future.result())},
                 {"Server-Timing": server_timing(queued)})


def server_timing(work: Work) -> str:
    """Milliseconds per phase of this request, as a Server-Timing header."""
    phases = {"prepare": work.prepared.seconds, "tokenise": work.prepared.tokenise,
              "wait": work.taken_at - work.queued_at, "infer": work.infer}
    return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in phases.items())


async def _answered(request: Request, work: Work) -> bool:
    """Wait for the work's records; False if the client disconnects first."""
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({work.future, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server gave up on this request (shutdown timeout)
        request.app.state.scorer.cancel(work)
        raise
    finally:
        gone.cancel()
    return work.future in done


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit` bytes."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise BodyTooLarge(f"the body has {int(length)} bytes; this server takes at most {limit} (--max-body-bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body exceeds {limit} bytes (--max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(body: bytes) -> schemas.ScoreRequest:
    """The request, or RequestProblem naming the field (malformed JSON names the body)."""
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        reason = f"not JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
        raise RequestProblem(f"body: {reason}", [_problem(["body", exc.pos], reason, "json_invalid")]) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        reason = "not UTF-8 JSON" if isinstance(exc, UnicodeDecodeError) else "not JSON (nested too deeply)"
        raise RequestProblem(f"body: {reason}", [_problem(["body"], reason, "json_invalid")]) from None
    try:
        return schemas.ScoreRequest.model_validate(obj)
    except ValidationError as exc:
        detail = [_problem(["body", *e["loc"]], e["msg"], e["type"]) for e in exc.errors()]
        message = "; ".join(f"{_field_name(d['loc'][1:])}: {d['msg']}" for d in detail)
        raise RequestProblem(message, detail) from None


def _problem(loc: list, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def _field_name(loc: list) -> str:
    """("articles", 3) -> field 'articles[3]'; the body itself when empty."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return f"field '{name}'" if name else "body"


async def filters(request: Request) -> dict[str, Any]:
    """The filters this server scores: dimensions, tiers, model id and its eval metrics."""
    return {"filters": request.app.state.filters}


def filters_info(scorer: OnlineScorer) -> list[dict[str, Any]]:
    out = []
    for job in scorer.plan.jobs:
        spec, info = job.spec, scorer.plan.models[job.model].info
        out.append({"id": spec.id, "name": spec.name, "version": spec.version, "description": spec.description,
                    "dimensions": [{"name": d.name, "weight": d.weight, "description": d.description}
                                   for d in spec.dimensions],
                    "tiers": tier_minimums(spec, job.postfilter.tier_shifts), "model": job.postfilter.model_id,
                    "metrics": _finite(info.metrics or {})})
    return out


def _finite(value: Any) -> Any:
    """JSON-safe metrics: NaN and infinities (which distill.json may hold) as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def healthz() -> dict[str, str]:
    """Alive (the process answers); see /readyz for whether it scores."""
    return {"status": "ok"}


async def readyz(request: Request) -> JSONResponse:
    """200 once the models are loaded; 503 while loading, draining or failed."""
    state = request.app.state.scorer.state
    return JSONResponse({"status": state}, 200 if state == "ready" else 503)


async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    content, media_type = request.app.state.metrics.render()
    return Response(content, media_type=media_type)


async def page() -> HTMLResponse:
    """The try-it page."""
    if not PAGE.is_file():
        return HTMLResponse("<p>distill-serve: the page is not installed; see /docs</p>", 404)
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


def _json(content: Any, headers: dict[str, str] | None = None) -> Response:
    # The encoder distill-score writes its lines with: the same JSON for the same record.
    return Response(encode_line(content), media_type="application/json", headers=headers)


def error_response(status: int, message: str, detail: Any = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "detail": message if detail is None else detail}, status,
                        headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    async def problem(_request: Request, exc: RequestProblem) -> JSONResponse:
        return error_response(422, str(exc), exc.detail)

    async def unavailable(_request: Request, exc: Unavailable) -> JSONResponse:
        return error_response(503, f"{exc}; retry shortly", headers={"Retry-After": "1"})

    async def too_large(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(413, str(exc))

    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")

    app.add_exception_handler(RequestProblem, problem)
    app.add_exception_handler(Unavailable, unavailable)
    app.add_exception_handler(TooLarge, too_large)
    app.add_exception_handler(BodyTooLarge, too_large)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
