"""Charts as inline SVG markup, drawn by matplotlib (object API: no pyplot, no global backend).

Text stays text (`svg.fonttype: none`: small files, the browser's fonts); matplotlib escapes it. Each chart
gets its own id salt so that several SVGs in one page never share element ids.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from ..extras import require

PURPOSE = "it draws the charts of HTML reports (--report)"
BAR_INCH = 0.19  # height per bar


def _svg(fig, salt: str) -> str:
    matplotlib = require("matplotlib", "report", PURPOSE)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]  # no XML declaration / DOCTYPE inside HTML


def _plain(texts: Sequence[str]) -> list[str]:
    """Text shown as written: a `$` would start matplotlib's math mode (class names are data)."""
    return [str(t).replace("$", r"\$") for t in texts]


def _figure(width: float, height: float):
    # matplotlib's one-time "building the font cache; this may take a moment" (a log line after 5 s on a
    # busy machine) would land raw among segcli's progress lines
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    require("matplotlib", "report", PURPOSE)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=96)


def bars(
    names: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    xlabel: str,
    colors: Sequence[Sequence[int]] | None = None,
    percent: bool = False,
    salt: str = "bars",
) -> str:
    """Horizontal bars, first entry on top, each labelled with its value."""
    n = max(len(names), 1)
    fig = _figure(6.5, 0.9 + BAR_INCH * n)
    ax = fig.add_subplot()
    y = np.arange(len(names))
    face = [tuple(v / 255 for v in c) for c in colors] if colors is not None else "#4a7ab5"
    ax.barh(y, values, color=face, edgecolor="#333333", linewidth=0.4)
    ax.set_yticks(y, labels=_plain(names), fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)  # first entry on top, no empty margins
    ax.set_title(_plain([title])[0], fontsize=10, loc="left")
    ax.set_xlabel(_plain([xlabel])[0], fontsize=9)
    top = max(values, default=0) or 1
    ax.set_xlim(0, top * 1.18)
    if percent:
        from matplotlib.ticker import PercentFormatter

        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    for yi, v in zip(y, values, strict=True):
        ax.text(v + top * 0.01, yi, f"{100 * v:.1f}%" if percent else f"{v:g}", va="center", fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig, salt)


def histogram(values: Sequence[float], *, title: str, xlabel: str, bins: int = 20, salt: str = "hist") -> str:
    fig = _figure(7.5, 3.0)
    ax = fig.add_subplot()
    ax.hist(values, bins=bins, range=(0.0, 1.0), color="#4a7ab5", edgecolor="white")
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("images", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig, salt)


def heatmap(matrix: np.ndarray, names: Sequence[str], *, title: str, salt: str = "heatmap") -> str:
    """A row-normalised matrix (rows: ground truth, columns: prediction) as an image; class names on the
    axes up to 60 classes."""
    k = matrix.shape[0]
    side = float(np.clip(k * 0.12, 4.0, 14.0))
    fig = _figure(side + 1.5, side + 1.0)
    ax = fig.add_subplot()
    shown = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(shown, ax=ax, fraction=0.04, label="fraction of the ground-truth class's pixels")
    if k <= 60:
        ax.set_xticks(range(k), labels=_plain(names), rotation=90, fontsize=6)
        ax.set_yticks(range(k), labels=_plain(names), fontsize=6)
    ax.set_xlabel("predicted class", fontsize=9)
    ax.set_ylabel("ground-truth class", fontsize=9)
    ax.set_title(_plain([title])[0], fontsize=10, loc="left")
    return _svg(fig, salt)


def lines(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    percent: bool = False,
    salt: str = "lines",
) -> str:
    """Curves (name → (x, y)) on one axis, with a legend when there are several; markers where a curve has
    few points (validations)."""
    fig = _figure(7.5, 3.2)
    ax = fig.add_subplot()
    for name, (x, y) in series.items():
        ax.plot(x, y, label=_plain([name])[0], linewidth=1.2, marker="o" if len(x) <= 30 else None, markersize=3)
    ax.set_title(_plain([title])[0], fontsize=10, loc="left")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations
    if percent:
        from matplotlib.ticker import PercentFormatter

        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if len(series) > 1:
        ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig, salt)
