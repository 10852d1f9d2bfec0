"""Forest plot and self-contained HTML page for a fitted HypothesisReport.

The figure is built on :class:`matplotlib.figure.Figure` with the Agg canvas,
never through pyplot, so the user's global backend and open figures are left
alone. The HTML page inlines its CSS and embeds the plot as a base64 PNG: it
references no script, font, stylesheet or image outside itself.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 70em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; }
th { background: #f4f4f4; }
td.text, th.text { text-align: left; max-width: 28em; }
tr.significant td { font-weight: 600; }
.summary { background: #f7f7fb; padding: 0.8em 1em; border-left: 4px solid #4a6fa5; }
.notes li, .examples li { margin-bottom: 0.3em; }
.examples blockquote { margin: 0.2em 0 0.6em 1em; color: #444; font-size: 0.9em; }
img { max-width: 100%; }
"""


def _rows_for_plot(report, sort_by: str | None) -> pd.DataFrame:
    frame = report.to_frame(sort_by=sort_by, ascending=True)
    return frame[np.isfinite(frame["regression_coef"].to_numpy(dtype=float))]


def forest_plot(report, *, ax: Any = None, sort_by: str | None = "regression_coef"):
    """Draw coefficients with confidence intervals; return the figure."""
    from matplotlib.figure import Figure

    check_is_fitted(report, "table_")
    rows = _rows_for_plot(report, sort_by)
    if sort_by is None:
        rows = rows.iloc[::-1]  # input order, first hypothesis at the top
    multiclass = "class" in rows.columns
    if ax is None:
        height = 1.2 + 0.32 * max(len(rows), 1)
        fig = Figure(figsize=(8.0, min(height, 40.0)), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    labels = rows["hypothesis"].astype(str).tolist()
    if multiclass:
        labels = [f"[{c}] {h}" for c, h in zip(rows["class"], labels)]
    labels = [label if len(label) <= 60 else label[:57] + "..." for label in labels]
    ypos = np.arange(len(rows))
    coef = rows["regression_coef"].to_numpy(dtype=float)
    lo = rows["regression_ci_low"].to_numpy(dtype=float)
    hi = rows["regression_ci_high"].to_numpy(dtype=float)
    sig = rows["significant"].to_numpy(dtype=bool)
    ax.hlines(ypos, lo, hi, color="#4a6fa5", linewidth=1.6)
    ax.scatter(coef[sig], ypos[sig], color="#4a6fa5", zorder=3, label="significant")
    ax.scatter(
        coef[~sig],
        ypos[~sig],
        facecolor="white",
        edgecolor="#4a6fa5",
        zorder=3,
        label="not significant",
    )
    ax.axvline(0.0, color="#888", linestyle="--", linewidth=1)
    ax.set_yticks(ypos, labels)
    level = f"{report.ci_level:.0%}"
    if report.task_ == "regression":
        ax.set_xlabel(f"OLS coefficient (units of y) with {level} CI")
    else:
        ax.set_xlabel(f"logit coefficient (log-odds) with {level} CI")
    ax.set_title(report.summary().split("; ")[1], fontsize=9)
    if len(rows):
        ax.legend(loc="best", fontsize=8, frameon=False)
    return fig


def _figure_png_base64(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table_html(report) -> str:
    from sklearn_hypothesaes.report import _format_cell

    frame = report.to_frame(sort_by="separation_score")
    text_cols = {"hypothesis", "class", "note"}
    head = "".join(
        f'<th class="{"text" if c in text_cols else "num"}">{html.escape(c)}</th>'
        for c in frame.columns
    )
    body = []
    for _, row in frame.iterrows():
        cells = "".join(
            f'<td class="{"text" if c in text_cols else "num"}">'
            f"{html.escape(_format_cell(row[c], 3))}</td>"
            for c in frame.columns
        )
        cls = ' class="significant"' if row["significant"] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _metrics_html(report) -> str:
    from sklearn_hypothesaes.report import _format_cell

    items = []
    for key, value in report.metrics_.items():
        if key in ("notes", "per_class"):
            continue
        items.append(
            f'<tr><th class="text">{html.escape(key)}</th>'
            f"<td>{html.escape(_format_cell(value, 4) if value is not None else '')}</td></tr>"
        )
    out = f"<table>{''.join(items)}</table>"
    if "per_class" in report.metrics_:
        per_class = pd.DataFrame(report.metrics_["per_class"]).T
        out += "<h3>Per class (one-vs-rest)</h3>" + per_class.to_html(
            float_format=lambda v: f"{v:.3f}", escape=True, border=0
        )
    return out


def _examples_for(report, examples, n_examples: int) -> dict[str, list[str]]:
    if examples is None:
        return {}
    if isinstance(examples, Mapping):
        unknown = [k for k in examples if k not in report.hypotheses_]
        if unknown:
            raise ValueError(f"examples names unknown hypotheses: {unknown[:5]}.")
        return {k: [str(t) for t in list(v)[:n_examples]] for k, v in examples.items()}
    if isinstance(examples, str):
        raise TypeError("examples must be a mapping or a sequence of texts, not one string.")
    texts = list(examples)
    if len(texts) != report.n_samples_:
        raise ValueError(
            f"examples has {len(texts)} texts but the report was fitted on "
            f"{report.n_samples_}; pass the same texts in the same order, or a mapping "
            "{hypothesis: [texts]}."
        )
    return {
        name: [str(texts[i]) for i in rows[:n_examples]]
        for name, rows in report.example_indices_.items()
    }


def write_html(
    report,
    path: str | Path,
    examples: Mapping[str, Sequence[str]] | Sequence[str] | None,
    *,
    title: str,
    n_examples: int,
) -> Path:
    """Write the self-contained HTML page of a fitted report."""
    check_is_fitted(report, "table_")
    if not isinstance(n_examples, int) or n_examples < 1:
        raise ValueError(f"n_examples must be a positive integer; got {n_examples!r}.")
    chosen = _examples_for(report, examples, n_examples)
    png = _figure_png_base64(forest_plot(report))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.metrics_["notes"])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="summary">{html.escape(report.summary())}</p>',
        "<h2>Coefficients</h2>",
        f'<img alt="Forest plot of regression coefficients" src="data:image/png;base64,{png}">',
        "<h2>Hypotheses</h2>",
        _table_html(report),
        "<h2>Metrics</h2>",
        _metrics_html(report),
        f'<h2>Methods</h2><ul class="notes">{notes}</ul>',
    ]
    if chosen:
        blocks = []
        for name, texts in chosen.items():
            quotes = "".join(f"<blockquote>{html.escape(t)}</blockquote>" for t in texts)
            blocks.append(f"<li><strong>{html.escape(name)}</strong>{quotes or ' (none)'}</li>")
        parts.append(f'<h2>Example texts</h2><ul class="examples">{"".join(blocks)}</ul>')
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
