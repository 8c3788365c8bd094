"""`qtt report`: one static HTML page per run, figures embedded as PNG data URIs.

The page is a single file with no scripts, stylesheets or fonts from elsewhere, so it opens from a disk,
an e-mail attachment or a CI artifact store without a server or the internet.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from qtt_cli.report import figures
from qtt_cli.report.page import escape, figure, head, write_page
from qtt_cli.report.run_data import RunData, load_run, recipe, steps_table

REPORT_DIR = "report"
REPORT_FILE = "index.html"


# Leaderboard columns shown on the page, with their headings.
_TABLE = (
    ("rank", "#"), ("pipeline_id", "pipeline"), ("model", "model"), ("best_val_top1", "best val top-1 (%)"),
    ("best_epoch", "at epoch"), ("epochs", "epochs"), ("cost_s", "cost (s)"), ("status", "status"),
    ("lr", "lr"), ("opt", "optimizer"), ("batch_size", "batch"), ("data_augmentation", "augmentation"),
    ("strategy", "strategies"),
)


_INTEGERS = {"rank", "best_epoch", "epochs", "batch_size"}


def default_report_dir(run_dir: Path) -> Path:
    return Path(run_dir) / REPORT_DIR


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write ``index.html`` for the run in ``run_dir`` into ``out`` (default ``RUNDIR/report``) and return
    its path. Only that one file is written; the folder is created if needed."""
    data = load_run(Path(run_dir))
    out = Path(out) if out is not None else default_report_dir(data.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_page(out / REPORT_FILE, render(data))


def render(data: RunData) -> str:
    """The whole page as a string."""
    from qtt_cli.report.run_data import strategies

    table = data.table.copy()
    table["strategy"] = [", ".join(strategies(_config_row(data, pid))) for pid in table["pipeline_id"]]
    best = data.best_pipeline
    parts = [
        head(f"qtt report: {data.run_dir.name}"),
        f"<h1>qtt run report: {escape(data.run_dir.name)}</h1>",
        _summary(data, best),
    ]
    if data.history.empty:
        parts.append("<p>The run has no results yet.</p></body></html>")
        return "\n".join(parts)
    parts += [
        "<h2>Search progress</h2>",
        figure("best-so-far", figures.best_so_far(data),
                "Best validation top-1 found so far against the time used by the steps (training, evaluation, "
                "model build and checkpoints; black step line); each circle is the last epoch of one step. The "
                "dashed line is the budget; the dotted line is the budget actually used, which also counts the "
                "optimizer's time."),
        figure("learning-curves", figures.learning_curves(data),
                "Validation top-1 after each epoch of every pipeline, one colour, marker and line style per "
                "model; the wide grey line is the best pipeline."),
        figure("accuracy-vs-cost", figures.accuracy_vs_cost(data),
                "Best validation top-1 of each pipeline against the seconds spent on it. The dashed line joins "
                "the Pareto-optimal pipelines: none of the others is both cheaper and at least as accurate."),
        figure("time-spent", figures.time_spent(data),
                "Where the budget went: seconds of the steps (training, evaluation, model build, checkpoints) "
                "per model and per finetuning strategy (a pipeline that combines strategies counts for each of them)."),
    ]
    predicted = figures.predictions(data)
    if predicted is not None:
        parts += ["<h2>How well the predictors did on this dataset</h2>",
                  figure("predictions", predicted, _prediction_caption(data))]
    elif data.settings.get("optimizer") == "quicktune":
        parts.append("<p>This Quick-Tune run recorded no predictions (it was made before qtt recorded them, or "
                     "only its first, randomly drawn step ran).</p>")
    parts += [
        f"<h2>Leaderboard ({len(table)} pipelines)</h2>",
        _leaderboard(table, best),
    ]
    if best is not None:
        parts += [f'<h2>Recipe of the best pipeline, <span id="best-model">{escape(_model_of(data, best))}</span> '
                  f"({escape(best)})</h2>", _recipe(recipe(data.history, best))]
    parts.append("</body></html>")
    return "\n".join(parts)


def _summary(data: RunData, best: str | None) -> str:
    s = data.settings
    rows = [
        ("dataset", s.get("dataset")),
        ("images", _images(data.dataset)),
        ("classes", len(data.dataset.get("classes", []) or [])),
        ("hub", s.get("hub")),
        ("weights", s.get("weights")),
        ("optimizer", s.get("optimizer")),
        ("budget", f"{data.budget_s:.0f} s, {data.used_s:.0f} s used"),
        ("steps", data.history["step"].nunique() if not data.history.empty else 0),
        ("pipelines", len(data.table)),
    ]
    if best is not None:
        top = data.table.iloc[0]
        rows.append(("best", f"{top['model']} ({best}): {top['best_val_top1']:.2f} % validation top-1 at epoch "
                             f"{int(top['best_epoch'])}"))
    body = "".join(f'<tr><th>{escape(k)}</th><td class="text">{escape(v)}</td></tr>' for k, v in rows)
    return f'<table class="summary">{body}</table>'


def _images(dataset: dict[str, Any]) -> str:
    splits = dataset.get("splits") or {}
    return ", ".join(f"{n} {name}" for name, n in splits.items() if n)


def _leaderboard(table, best: str | None) -> str:
    head = "".join(f"<th>{escape(title)}</th>" for _, title in _TABLE)
    rows = []
    for _, row in table.iterrows():
        cls = ' class="best"' if row["pipeline_id"] == best else ""
        cells = "".join(_cell(row.get(name), integer=name in _INTEGERS, css=name) for name, _ in _TABLE)
        rows.append(f'<tr data-pipeline="{escape(row["pipeline_id"])}"{cls}>{cells}</tr>')
    return f'<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _recipe(values: dict[str, Any]) -> str:
    rows = "".join(f'<tr><th>{escape(k)}</th><td class="text">{escape(v)}</td></tr>' for k, v in values.items())
    return f'<table id="recipe">{rows}</table>'


def _cell(value, *, integer: bool = False, css: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<td></td>"
    if integer and isinstance(value, float | np.floating) and float(value).is_integer():
        return f"<td>{int(value)}</td>"  # an integer column that pandas made float (a NaN for a failure)
    if isinstance(value, float | np.floating):
        text = f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"
        return f"<td>{text}</td>"
    if isinstance(value, int | np.integer):
        return f"<td>{value}</td>"
    classes = f"text {css}" if css == "strategy" else "text"
    return f'<td class="{classes}">{escape(value)}</td>'


def _prediction_caption(data: RunData) -> str:
    steps = steps_table(data.history)
    steps = steps[steps["pred_val_top1"].notna() & steps["val_top1"].notna()]
    acc_err = float(np.mean(np.abs(steps["pred_val_top1"] - steps["val_top1"])))
    cost = steps[steps["pred_cost_s"].notna()]
    text = (f"Each point is one step chosen by Quick-Tune ({len(steps)} steps with a prediction): what the "
            f"predictors expected before the step, against what it gave. Mean absolute error of the accuracy "
            f"prediction: {acc_err:.1f} percentage points.")
    if len(cost):
        ratio = float(np.median(cost["cost_s"] / cost["pred_cost_s"].clip(lower=1e-9)))
        text += f" Median observed / predicted cost: {ratio:.2f}."
    return text


def _config_row(data: RunData, pipeline_id: str) -> dict[str, Any]:
    return data.history[data.history["pipeline_id"] == pipeline_id].iloc[0].to_dict()


def _model_of(data: RunData, pipeline_id: str) -> str:
    return str(data.table.loc[data.table["pipeline_id"] == pipeline_id, "model"].iloc[0])
