"""Rendering: the package's Jinja2 templates with autoescaping on (every name and error is escaped)."""

from __future__ import annotations

from functools import cache
from typing import Any

from .._version import __version__
from ..extras import require


@cache
def _environment() -> Any:
    jinja2 = require("jinja2", "report", "it renders HTML reports (--report)")
    return jinja2.Environment(
        loader=jinja2.PackageLoader("segcli", "report/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def require_report() -> None:
    """MissingExtraError now (before any work) unless the report's libraries are installed."""
    _environment()
    require("matplotlib", "report", "it draws the charts of HTML reports (--report)")


def render(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(version=__version__, **context)
