"""``batchd report --html FILE``: the run page and the timeline as one self-contained HTML file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from daemon.cli.main import db_option, json_option, repo_option, resolve_root

__all__ = ["register"]


@click.command()
@repo_option
@db_option
@json_option
@click.option(
    "--html",
    "html_path",
    required=True,
    type=click.Path(dir_okay=True, path_type=Path),
    metavar="FILE",
    help="Write the report to FILE (replaced atomically if it exists).",
)
def report(repo: Path | None, db: str | None, as_json: bool, html_path: Path) -> None:
    """The run (state, verdict, phases with their commits and pushes, todos, agent time and cost) and
    its whole timeline, as one HTML file that needs no server and no network: attach it to a pull
    request or keep it for an audit. It reads the log (while the daemon runs too) and changes nothing."""
    # Imported here: the web stack (Jinja2, the templates) loads only for the commands that use it.
    from daemon.web.report import build_report, check_target, write_atomic

    check_target(html_path)
    root = resolve_root(repo)
    if sys.stderr.isatty():  # a long log takes a while to fold: say what is happening
        click.echo("report: reading the event log…", err=True)
    built = build_report(root, db)
    size = write_atomic(html_path, built.html)
    if as_json:
        click.echo(json.dumps({"path": str(html_path), "bytes": size, "events": built.events}))
    else:
        click.echo(f"{html_path}: {size:,} bytes ({built.events:,} events)")


def register(cli: click.Group) -> None:
    cli.add_command(report)
