"""Templates: one Jinja2 environment for the served pages and the ``report --html`` file.

Autoescaping is on for every template: todo titles, agent output and event payloads are written by
agents and people, and are shown as text, never as markup. A request with the header
``X-Batchd-Fragment: 1`` (sent by ``static/live.js`` after an event) gets only the page's ``main``
block, which the script swaps in place: pages update with no reload.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

__all__ = ["FRAGMENT_HEADER", "env", "page", "static_text"]

FRAGMENT_HEADER = "x-batchd-fragment"

env = Environment(
    loader=PackageLoader("daemon.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def static_text(name: str) -> str:
    """A file of ``daemon/web/static`` (the report inlines them: one file, no network)."""
    return resources.files("daemon.web").joinpath("static", name).read_text(encoding="utf-8")


def page(request: Request, name: str, context: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    """Render template ``name`` for ``request`` (whole, or its ``main`` block for live.js).

    ``context`` gets ``request``, ``url_for`` and ``last_seq`` (the seq the page shows: live.js asks
    the SSE stream for what came after it). Pages built from the model pass their own ``last_seq``,
    read under the model's lock with their data: read here, later, it could name an event the page
    does not show, whose update would then be missed.

    Imports of macros go inside a template's ``main`` block: a fragment renders only that block."""
    model = request.app.state.model
    ctx = {"request": request, "url_for": request.url_for, "last_seq": model.last_seq, "static": False}
    ctx.update(context)
    template = env.get_template(name)
    if request.headers.get(FRAGMENT_HEADER) == "1" and "main" in template.blocks:
        body = "".join(template.blocks["main"](template.new_context(ctx)))
    else:
        body = template.render(ctx)
    return HTMLResponse(body, status_code=status_code, headers={"Cache-Control": "no-store"})
