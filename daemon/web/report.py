"""``batchd report --html``: the run page and the whole timeline as one self-contained HTML file.

The file is meant to be attached to a pull request or kept for an audit, and opened long after the
run, with no server and no network: the stylesheet and the timeline's script are inlined
(:func:`render.static_text`), and nothing in it points at a server route or an outside host. The
templates are the served ones (``base.html`` with ``static=True``, the timeline's partial), so the
report and the dashboard cannot drift apart.

Links that would go to a server page point inside the file instead: :func:`static_url_for` maps the
run and the timeline to their sections (``#``, ``#timeline``) and refuses every other route (a todo's
page, its logs, the events, /static), so a template that grows a link to a page the report does not
have fails loudly in the tests rather than shipping a dead link; bars are not links (a todo's row is
in the run section). Everything from todos, agents and events is escaped by the one environment's
autoescape.

The timeline: the all-phases picture first; when the run has more bars than it draws one by one
(:data:`~daemon.web.timeline_view.MAX_DRAWN`: it then sums them up and says to zoom in, which a
file cannot do), every phase follows with a picture of its own, all of its bars drawn, so the
report of a big run still shows every attempt.

The report is a pure function of the log (:func:`build_report`; the clock is injected for running
agents' time); :func:`write_atomic` puts it in place with a temporary file and a rename, so a reader
never sees half a report and a failed write leaves the old file as it was.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.exceptions import UsageError
from daemon.web import render
from daemon.web.pagedata import _todo_row, run_context
from daemon.web.timeline import Timeline
from daemon.web.timeline_view import timeline_context
from daemon.workspace import open_log
from statemachine.economy import run_economy
from statemachine.ids import id_order
from statemachine.projection import Projection, replay

__all__ = [
    "INLINE_SCRIPTS",
    "Report",
    "build_report",
    "check_target",
    "report_context",
    "static_url_for",
    "write_atomic",
]

# Scripts of daemon/web/static that work without a server (live.js does not: it follows the SSE
# stream). The timeline's hover and zoom are the only behaviour the report needs.
INLINE_SCRIPTS = ("timeline.js",)

# Server routes that have an anchor of their own in the report.
_ANCHORS = {"run": "#", "timeline": "#timeline"}


@dataclass(frozen=True, slots=True)
class Report:
    """A rendered report: the HTML and how many events of the log it shows."""

    html: str
    events: int


def static_url_for(name: str, /, **params: Any) -> str:
    """``url_for`` for the report: the run and the timeline are sections of the file; other pages
    (a todo's, its logs, the events, /static) do not exist in it."""
    if name in _ANCHORS:
        return _ANCHORS[name]
    # A template asked for a page the report cannot have (a log, the events page, /static).
    raise LookupError(f"the HTML report has no page {name!r}: link it only when `static` is false")


def _inline_scripts() -> str:
    return "\n".join(render.static_text(name) for name in INLINE_SCRIPTS)


def report_context(proj: Projection, timeline: Timeline, *, now: datetime, events: int) -> dict[str, Any]:
    """What ``report.html`` renders: the run page's context (every todo listed) and the whole
    timeline."""
    ctx = run_context(proj, now)
    if ctx["todos_more"]:
        # The served page lists the first rows and counts the rest; an audit needs every todo.
        economy = run_economy(proj, now=now)
        keys = sorted(proj.todos, key=id_order)
        ctx["todos"] = [_todo_row(proj, key, economy.todos[key].minutes) for key in keys]
        ctx["todos_more"] = 0
    ctx.update(
        static=True,
        url_for=static_url_for,
        last_seq=proj.last_seq,
        events=events,
        inline_css=render.static_text("style.css"),
        inline_js=_inline_scripts(),
        generated_at=now.strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
    # All phases. Bars are not links: a todo's page is not in the file (the run page shows its row).
    overview = timeline_context(timeline, phase=None, now=now.timestamp(), todo_base=None)
    ctx.update(overview)
    # Too many bars to draw at once: the file cannot zoom as the server does, so it holds each zoom.
    ctx["phase_timelines"] = (
        [
            timeline_context(timeline, phase=number, now=now.timestamp(), todo_base=None)["tl"]
            for number in sorted(timeline.phases)
        ]
        if overview["tl"].summary
        else []
    )
    return ctx


def build_report(root: Path, db: str | None = None, *, now: datetime | None = None) -> Report:
    """The report of ``root``'s log (``db`` as ``--db`` takes it), as it is now."""
    log = open_log(root, db)
    try:
        proj = replay(log)
        timeline = Timeline()
        events = 0
        # Up to the projection's last event: a daemon appending meanwhile does not tear the report.
        for event in log.read(since=0, until=proj.last_seq):
            timeline.apply(event)
            events += 1
    finally:
        log.close()
    moment = now or datetime.now(UTC)
    html = render.env.get_template("report.html").render(
        report_context(proj, timeline, now=moment, events=events)
    )
    return Report(html=html, events=events)


def check_target(path: Path) -> None:
    """Refuse a path the report cannot replace (a folder), or one in no folder, before any work."""
    if path.is_dir():
        raise UsageError(f"{path} is a folder", hint="give the report a file name, e.g. report.html")
    if not path.parent.is_dir():
        raise UsageError(
            f"no folder {path.parent} for the report", hint="create it first, or pick another path"
        )


def write_atomic(path: Path, text: str) -> int:
    """Write ``text`` to ``path`` through a temporary file and a rename; the bytes written."""
    check_target(path)
    folder = path.parent
    data = text.encode("utf-8")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(0o644)  # mkstemp makes it 0600; a report is meant to be read by others
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when the write or the rename failed
    return len(data)
