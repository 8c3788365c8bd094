"""The page `qtt bench` writes next to its CSV files: the regret plot, the table and the paired differences
in one static HTML file, the same kind of page as `qtt report` (``qtt_cli.report.page``).

It reads only the benchmark's own output files, so it can be rewritten for an old benchmark folder and it
shows exactly what the CSV files say.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from qtt_cli.report.page import escape, figure, head, write_page

PAGE_FILE = "index.html"


def write_bench_page(out: Path) -> Path:
    """Write ``OUT/index.html`` from ``summary.csv``, ``paired.csv`` (if any), ``bench.json`` and
    ``regret.png`` in the benchmark folder ``out``."""
    out = Path(out)
    summary = pd.read_csv(out / "summary.csv")
    settings = json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else {}
    parts = [head(f"qtt bench: {out.name}"), f"<h1>qtt replay benchmark: {escape(out.name)}</h1>",
             _settings(settings, summary)]
    if (out / "regret.png").is_file():
        parts.append(figure(
            "regret", (out / "regret.png").read_bytes(),
            "Mean normalized regret of the best accuracy found so far (left, log scale; 0 = the best recorded "
            "accuracy of the dataset) and mean rank among the optimizers (right, 1 = best), against the budget "
            "in hours of recorded training time; averages over datasets and seeds. Dotted lines mark the "
            "budgets of the table."))
    parts += ["<h2>Regret and rank at each budget</h2>", _summary_table(summary)]
    if (out / "paired.csv").is_file():
        parts += ["<h2>Paired differences to Quick-Tune</h2>",
                  "<p>Each optimizer's regret minus Quick-Tune's on the same dataset and seed, mean ± standard "
                  "error over the pairs: positive means worse than Quick-Tune.</p>",
                  _paired_table(pd.read_csv(out / "paired.csv"), summary)]
    parts.append("</body></html>")
    return write_page(out / PAGE_FILE, "\n".join(parts))


def _settings(settings: dict, summary: pd.DataFrame) -> str:
    seeds = settings.get("seeds")
    first = settings.get("first_seed", 0)
    rows = [
        ("meta-dataset", settings.get("meta_dataset")),
        ("datasets", ", ".join(settings["datasets"]) if settings.get("datasets") else "all"),
        ("seeds", f"{first}..{first + seeds - 1}" if seeds else None),
        ("searches per optimizer and budget", int(summary["runs"].max()) if "runs" in summary else None),
        ("simulated workers", settings.get("workers")),
        ("degenerate records", "removed" if settings.get("drop_degenerate") else "replayed as recorded"),
    ]
    body = "".join(f'<tr><th>{escape(k)}</th><td class="text">{escape(v)}</td></tr>' for k, v in rows if v)
    return f'<table class="summary">{body}</table>'


def _summary_table(summary: pd.DataFrame) -> str:
    """One row per optimizer; the lowest regret and rank at each budget in bold."""
    budgets = sorted(summary["budget_h"].unique())
    lowest = {(b, m): summary.loc[summary["budget_h"] == b, m].min() for b in budgets for m in ("regret", "rank")}
    head_cells = "".join(f"<th>regret {b:g} h</th><th>rank {b:g} h</th>" for b in budgets)
    rows = []
    for optimizer, group in summary.groupby("optimizer", sort=False):
        by_budget = group.set_index("budget_h")
        cells = ""
        for b in budgets:
            for metric, digits in (("regret", 3), ("rank", 2)):
                value = by_budget.loc[b, metric]
                text = f"{value:.{digits}f}"
                cells += f"<td><b>{text}</b></td>" if value == lowest[(b, metric)] else f"<td>{text}</td>"
        label = by_budget["label"].iloc[0] if "label" in by_budget else optimizer
        rows.append(f'<tr data-optimizer="{escape(optimizer)}"><td class="text">{escape(label)}</td>{cells}</tr>')
    return (f'<table id="summary"><thead><tr><th>optimizer</th>{head_cells}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _paired_table(paired: pd.DataFrame, summary: pd.DataFrame) -> str:
    if "reference" in paired:  # a folder may also hold differences to another reference
        paired = paired[paired["reference"] == "quicktune"]
    labels = dict(zip(summary["optimizer"], summary.get("label", summary["optimizer"]), strict=False))
    budgets = sorted(paired["budget_h"].unique())
    head_cells = "".join(f"<th>{b:g} h</th>" for b in budgets)
    rows = []
    for optimizer, group in paired.groupby("optimizer", sort=False):
        by_budget = group.set_index("budget_h")
        cells = "".join(f"<td>{by_budget.loc[b, 'mean_diff']:+.3f} ± {by_budget.loc[b, 'se']:.3f}</td>"
                        for b in budgets)  # fmt: skip
        rows.append(f'<tr><td class="text">{escape(labels.get(optimizer, optimizer))}</td>{cells}</tr>')
    return (f'<table id="paired"><thead><tr><th>optimizer</th>{head_cells}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')
