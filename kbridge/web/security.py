"""Access to `kbridge web`: the web_token, a session cookie, CSRF checks and response headers.

With web_token set, a request needs `Authorization: Bearer <token>` or the session cookie
that POST /login sets. The cookie holds an HMAC of the token, never the token, and nothing
here logs or echoes the token. Every state-changing call is a POST; one made with the
cookie (a browser) must also carry the page's CSRF token in X-CSRF-Token, which another
site cannot read. Static files are public: they hold no data.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ..config import Settings
from ..errors import KBridgeError

MIN_TOKEN = 16
COOKIE = "kbridge_session"
CSRF_HEADER = "x-csrf-token"
PUBLIC = ("/static/", "/login")
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "Cache-Control": "no-store",
}


def web_token(settings: Settings) -> str | None:
    """KBRIDGE_WEB_TOKEN if set, else the web_token setting; a short one is refused without showing it."""
    token = os.environ.get("KBRIDGE_WEB_TOKEN") or settings.web_token
    if token is not None and len(token) < MIN_TOKEN:
        raise KBridgeError(f"the web token (KBRIDGE_WEB_TOKEN or web_token) must have at least {MIN_TOKEN} "
                           "characters; its value is not shown")
    return token


class Guard:
    def __init__(self, token: str | None) -> None:
        self.token = token
        self._secret = secrets.token_bytes(32)  # per server start: sessions and CSRF tokens end with it
        self.csrf = hmac.new(self._secret, b"csrf", hashlib.sha256).hexdigest()

    def session(self) -> str:
        assert self.token is not None
        return hmac.new(self._secret, b"session:" + self.token.encode(), hashlib.sha256).hexdigest()

    def token_ok(self, given: str) -> bool:
        return self.token is not None and _same(given, self.token)

    def bearer(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(given.strip())

    def authenticated(self, request: Request) -> bool:
        if self.token is None or self.bearer(request):
            return True
        return _same(request.cookies.get(COOKIE, ""), self.session())

    async def __call__(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if not path.startswith(PUBLIC):
            if not self.authenticated(request):
                if path.startswith("/api/"):
                    response: Response = JSONResponse({"error": "web_token required"}, status_code=401)
                else:
                    response = RedirectResponse("/login", status_code=303)
                return _secured(response)
            if request.method not in ("GET", "HEAD") and not self.bearer(request):
                if not _same(request.headers.get(CSRF_HEADER, ""), self.csrf):
                    return _secured(JSONResponse({"error": "missing or wrong X-CSRF-Token header"}, status_code=403))
        return _secured(await call_next(request))

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return _secured(login_page(self.csrf, failed=False))
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given, csrf = form.get("token", [""])[0], form.get("csrf", [""])[0]
        if not _same(csrf, self.csrf) or not self.token_ok(given):
            return _secured(login_page(self.csrf, failed=True, status=403))
        response = RedirectResponse("/", status_code=303)
        if self.token is not None:
            response.set_cookie(COOKIE, self.session(), httponly=True, samesite="strict")
        return _secured(response)


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that also takes non-ASCII input (compare_digest refuses such str)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def _secured(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def login_page(csrf: str, failed: bool, status: int = 200) -> Response:
    from .pages import shell

    note = '<p class="error">That token is not right.</p>' if failed else ""
    body = (f'<h1>kbridge web</h1>{note}<form method="post" action="/login">'
            f'<input type="hidden" name="csrf" value="{csrf}">'
            '<label>web token <input type="password" name="token" autocomplete="current-password"></label>'
            '<button type="submit">Sign in</button></form>')
    return shell("login", body, csrf, status=status, nav=False)
