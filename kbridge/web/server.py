"""The `kbridge web` ASGI app: pages, the JSON API under /api/, and the static files it serves itself.

Starlette, served by uvicorn: a small, well-kept ASGI toolkit with no templating or ORM
to carry. Handlers that talk to Kafka are plain functions, which Starlette runs in its
thread pool, so a slow broker never stalls the pages.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..app import KBridge
from ..dlq_show import read_letters
from ..errors import KBridgeError
from ..render import flow_rows
from ..replay import ReplayResult, replay, routed_targets
from ..replay_selection import replay_selected
from . import commands, dead_letters
from .pages import PAGES, shell
from .security import Guard, web_token
from .state import ReportReader, ReportStore

log = logging.getLogger("kbridge.web")
STATIC = Path(__file__).parent / "static"
MAX_LETTERS = 200


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def _int(value: str | None, name: str, default: int | None) -> int | None:
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise KBridgeError(f"{name} must be an integer >= 0, got {value[:20]!r}")
    return int(value)


class Dashboard:
    """The handlers, bound to one app, its report store and its command sender."""

    def __init__(self, app: KBridge, store: ReportStore, guard: Guard) -> None:
        self.app = app
        self.store = store
        self.guard = guard
        self.sender = commands.CommandSender(app)

    # -- pages ----------------------------------------------------------------

    def page(self, request: Request) -> Response:
        name = request.url.path.strip("/") or "overview"
        return shell(name, f"<h1>{PAGES[name]}</h1><div id=\"content\">Loading…</div>", self.guard.csrf)

    # -- reads ----------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        return JSONResponse({"client_id": self.app.client_id, **self.store.overview()})

    def listeners(self, request: Request) -> Response:
        return JSONResponse(self.store.listeners())

    def groups(self, request: Request) -> Response:
        return JSONResponse(self.store.groups())

    def chart(self, request: Request) -> Response:
        return JSONResponse(self.store.chart(request.path_params["group_id"], bucket=self.app.settings.report_interval))

    def routes(self, request: Request) -> Response:
        return JSONResponse(flow_rows(self.app))

    def errors(self, request: Request) -> Response:
        return JSONResponse(self.store.failures(request.query_params.get("route") or None))

    def csrf(self, request: Request) -> Response:
        return JSONResponse({"csrf": self.guard.csrf})

    def dlq_topics(self, request: Request) -> Response:
        return JSONResponse(dead_letters.dead_letter_topics(self.app))

    def letters(self, request: Request) -> Response:
        topic = request.path_params["topic"]
        if (refused := self._not_a_dead_letter_topic(topic)) is not None:
            return refused
        try:
            offset = _int(request.query_params.get("offset"), "offset", None)
            limit = min(_int(request.query_params.get("limit"), "limit", 50) or 50, MAX_LETTERS)
            found = read_letters(self.app.settings, topic, limit, offset)
        except KBridgeError as exc:
            return _error(str(exc))
        return JSONResponse([letter.as_json() for letter in found])

    def command(self, request: Request) -> Response:
        command_id = request.path_params["id"]
        return JSONResponse({"id": command_id, "acked_by": self.store.acked_by(command_id)})

    # -- changes (POST only) ----------------------------------------------------

    def _not_a_dead_letter_topic(self, topic: str) -> Response | None:
        """404 for a topic that is not one of the app's dead-letter topics: no call reads or writes others."""
        if topic in dead_letters.dead_letter_topics(self.app):
            return None
        return _error(f"{topic!r} is not a dead-letter topic of this app", 404)

    async def replay(self, request: Request) -> Response:
        topic = request.path_params["topic"]
        if (refused := self._not_a_dead_letter_topic(topic)) is not None:
            return refused
        body = await _body(request) or {}
        limit = body.get("limit") if isinstance(body, dict) else None
        if limit is not None and not (isinstance(limit, int) and not isinstance(limit, bool) and limit > 0):
            return _error("limit must be an integer > 0, or null for every letter")
        try:
            # Only to topics the app routes (never a topic a letter's header names otherwise).
            result = await run_in_threadpool(replay, self.app.settings, topic, routed_targets(self.app), limit)
        except KBridgeError as exc:
            return _error(str(exc))
        return _replayed(result, topic)

    async def replay_selected(self, request: Request) -> Response:
        topic = request.path_params["topic"]
        if (refused := self._not_a_dead_letter_topic(topic)) is not None:
            return refused
        try:
            selection, force = dead_letters.chosen(await _body(request))
            # The same Sender as a full replay: only to routed topics; the replay group is not moved.
            result = await run_in_threadpool(replay_selected, self.app.settings, topic, routed_targets(self.app),
                                             selection, force=force)
        except KBridgeError as exc:
            return _error(str(exc))
        return _replayed(result, topic)

    async def skip(self, request: Request) -> Response:
        topic = request.path_params["topic"]
        if (refused := self._not_a_dead_letter_topic(topic)) is not None:
            return refused
        body = await _body(request)
        if not (isinstance(body, dict) and all(isinstance(body.get(k), int) and not isinstance(body.get(k), bool)
                                               and body[k] >= 0 for k in ("partition", "until"))):
            return _error("the body must be {\"partition\": P, \"until\": OFFSET} (integers >= 0)")
        try:
            before = await run_in_threadpool(dead_letters.skip, self.app, topic, body["partition"], body["until"])
        except KBridgeError as exc:
            return _error(str(exc))
        log.info("web: skipped %s-%d offsets %d..%d in the replay group", topic, body["partition"], before,
                 body["until"])
        return JSONResponse({"skipped_from": before, "until": body["until"], "next": body["until"] + 1})

    async def pause(self, request: Request) -> Response:
        return await self._command(request, "pause")

    async def resume(self, request: Request) -> Response:
        return await self._command(request, "resume")

    async def _command(self, request: Request, action: str) -> Response:
        try:
            command = commands.build(self.app, action, await _body(request))
            await run_in_threadpool(self.sender.send, command)
        except KBridgeError as exc:
            return _error(str(exc))
        except Exception as exc:  # Kafka did not take it
            return _error(f"the command did not reach Kafka: {type(exc).__name__}: {exc}", 503)
        log.info("web: %s %s %s %s (command %s)", action, command["group_id"], command["topic"],
                 "all" if command["partition"] is None else command["partition"], command["id"])
        return JSONResponse(command, status_code=202)


def _replayed(result: ReplayResult, topic: str) -> Response:
    log.info("web: %s", result.summary(topic))
    return JSONResponse({"replayed": result.replayed, "skipped": result.skipped,
                         "skipped_by": dict(result.skipped_by), "summary": result.summary(topic)})


def create_app(app: KBridge, host: str = "127.0.0.1", read_reports: bool = True) -> Starlette:
    """The ASGI app of `kbridge web` for app; read_reports=False leaves the store empty (tests)."""
    settings = app.settings
    guard = Guard(web_token(settings))
    store = ReportStore(settings.report_timeout)
    reader = ReportReader(settings, store) if read_reports else None
    d = Dashboard(app, store, guard)
    pages = [Route("/" + ("" if name == "overview" else name), d.page, methods=["GET"]) for name in PAGES]
    routes = [
        *pages,
        Route("/login", guard.login, methods=["GET", "POST"]),
        Route("/api/overview", d.overview, methods=["GET"]),
        Route("/api/listeners", d.listeners, methods=["GET"]),
        Route("/api/groups", d.groups, methods=["GET"]),
        Route("/api/groups/{group_id}/chart", d.chart, methods=["GET"]),
        Route("/api/routes", d.routes, methods=["GET"]),
        Route("/api/errors", d.errors, methods=["GET"]),
        Route("/api/csrf", d.csrf, methods=["GET"]),
        Route("/api/dead-letters", d.dlq_topics, methods=["GET"]),
        Route("/api/dead-letters/{topic}", d.letters, methods=["GET"]),
        Route("/api/dead-letters/{topic}/replay", d.replay, methods=["POST"]),
        Route("/api/dead-letters/{topic}/replay-selected", d.replay_selected, methods=["POST"]),
        Route("/api/dead-letters/{topic}/skip", d.skip, methods=["POST"]),
        Route("/api/pause", d.pause, methods=["POST"]),
        Route("/api/resume", d.resume, methods=["POST"]),
        Route("/api/commands/{id}", d.command, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(BaseHTTPMiddleware, dispatch=guard)]
    if _loopback(host):  # a page on another site cannot reach 127.0.0.1 through a rebound DNS name
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]"]))

    @asynccontextmanager
    async def lifespan(web: Starlette) -> AsyncIterator[None]:
        if reader is not None:
            reader.start()
        try:
            yield
        finally:
            if reader is not None:
                reader.close()
            d.sender.close()

    web = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    web.state.store = store
    return web


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(app: KBridge, host: str, port: int) -> None:
    import uvicorn

    web = create_app(app, host)
    if web_token(app.settings) is None and not _loopback(host):
        log.warning("serving %s without a web token: anyone who reaches it can pause listeners and replay", host)
    uvicorn.run(web, host=host, port=port, log_level="info", access_log=False)
