"""The HTML pages: a shell each; static/app.js fills it from the JSON API.

Data reaches the page only through the DOM's textContent in app.js, never as HTML, so a
dead letter's payload or an error message shows as text whatever it contains.
"""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse

PAGES = {"overview": "Overview", "groups": "Consumer groups", "routes": "Routes", "errors": "Errors",
         "dead-letters": "Dead letters"}


def shell(page: str, body: str, csrf: str, status: int = 200, nav: bool = True) -> HTMLResponse:
    links = "".join(
        f'<a href="/{"" if name == "overview" else name}"{" class=current" if name == page else ""}>{title}</a>'
        for name, title in PAGES.items()
    ) if nav else ""
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kbridge web: {escape(PAGES.get(page, page))}</title>
<meta name="csrf-token" content="{escape(csrf)}">
<link rel="stylesheet" href="/static/style.css"></head>
<body data-page="{escape(page)}"><nav><b>kbridge</b>{links}</nav><main id="main">{body}</main>
<script src="/static/app.js"></script></body></html>"""
    return HTMLResponse(html, status_code=status)
