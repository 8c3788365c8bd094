"""Reading and writing the Quick-Tune meta-dataset format.

::

    ROOT/
      curves/perf.json       {dataset: {config_id: [val top-1 % after epoch 1, 2, ...]}, "info": {...}}
      curves/cost.json       {dataset: {config_id: [seconds of epoch 1, 2, ...]}}
      table.csv              one row per config_id (first column): the encoded hyperparameters
      meta/descriptors.json  {dataset: [num_samples, num_classes, resolution, channels]}
      meta/max_epochs.json   optional (written by qtt): {dataset: max_epochs}

The published meta-dataset has no ``max_epochs.json``; its datasets then share the longest curve length
of the whole directory as their epoch limit (50 for Meta-Album extended, the limit the curves were
generated with). qtt writes the file so that runs with another ``--max-epochs`` round-trip exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qtt_cli.space.encoding import METHOD_COLUMNS, TABLE_COLUMNS, encode

from .curveset import MODEL_PREFIX, CurveSet

__all__ = ["MetaDatasetError", "load_meta_dataset", "write_meta_dataset"]

PERF_FILE = Path("curves/perf.json")
COST_FILE = Path("curves/cost.json")
TABLE_FILE = Path("table.csv")
DESCRIPTORS_FILE = Path("meta/descriptors.json")
MAX_EPOCHS_FILE = Path("meta/max_epochs.json")
_INFO_KEY = "info"


class MetaDatasetError(ValueError):
    """A directory that is not a readable meta-dataset (missing file, inconsistent content)."""


def load_meta_dataset(root: Path, datasets: Sequence[str] | None = None) -> list[CurveSet]:
    """Every dataset of a meta-dataset directory as a CurveSet (sorted by name).

    Args:
        root: the directory (see the module docstring for its layout).
        datasets: only these datasets (all when ``None``); unknown names are an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise MetaDatasetError(f"meta-dataset {str(root)!r} is not a directory")
    missing = [str(p) for p in (PERF_FILE, COST_FILE, TABLE_FILE, DESCRIPTORS_FILE) if not (root / p).is_file()]
    if missing:
        raise MetaDatasetError(
            f"{str(root)!r} is not a Quick-Tune meta-dataset: missing {', '.join(missing)} "
            "(see the format in qtt_cli/metadataset/quicktune_format.py)"
        )
    perf = _without_info(_read_json(root / PERF_FILE))
    cost = _without_info(_read_json(root / COST_FILE))
    descriptors = _read_json(root / DESCRIPTORS_FILE)
    max_epochs_file = root / MAX_EPOCHS_FILE
    max_epochs = _read_json(max_epochs_file) if max_epochs_file.is_file() else {}
    table = _read_table(root / TABLE_FILE)

    names = sorted(perf)
    if datasets is not None:
        unknown = sorted(set(datasets) - set(names))
        if unknown:
            raise MetaDatasetError(f"{str(root)!r} has no dataset(s) {unknown}; it has {names}")
        names = [n for n in names if n in set(datasets)]
    default_max = max((len(c) for d in perf.values() for c in d.values()), default=1)
    return [
        _curveset(name, perf, cost, descriptors, table, int(max_epochs.get(name, default_max)), root) for name in names
    ]


def write_meta_dataset(curvesets: Sequence[CurveSet], root: Path) -> None:
    """Write curve sets in the meta-dataset format (so that runs can join a meta-dataset).

    The table gets the union of the curve sets' columns (a model column a curve set lacks is 0 there). A
    config id may appear in several curve sets only with identical features. Existing files are replaced.
    """
    root = Path(root)
    names = [cs.name for cs in curvesets]
    if len(set(names)) != len(names):
        raise MetaDatasetError(f"dataset names must be unique, got {names}")
    extra: list[str] = []
    for cs in curvesets:
        extra += [c for c in cs.features.columns if c not in TABLE_COLUMNS and c not in extra]
    bad = [c for c in extra if not _allowed_extra(c)]
    if bad:
        raise MetaDatasetError(
            f"columns {bad} are not table columns (only extra cat:model:* and {', '.join(METHOD_COLUMNS)} may be added)"
        )
    columns = list(TABLE_COLUMNS) + _ordered_extra(extra)
    rows: dict[str, pd.Series] = {}
    for cs in curvesets:
        frame = cs.features.reindex(columns=columns, fill_value=0)
        for cid, (_, row) in zip(cs.config_ids, frame.iterrows(), strict=True):
            if cid in rows and not rows[cid].equals(row):
                raise MetaDatasetError(f"config id {cid!r} appears with different hyperparameters in two datasets")
            rows[cid] = row
    table = pd.DataFrame(list(rows.values()), columns=columns, index=pd.Index(list(rows), name=""))
    table = table.astype(_dtypes(columns))

    for sub in ("curves", "meta"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    perf = {cs.name: {cid: c.tolist() for cid, c in zip(cs.config_ids, cs.curves, strict=True)} for cs in curvesets}
    perf[_INFO_KEY] = {"description": "Validation top-1 accuracy per epoch, written by qtt.", "metric": "Top1 %"}
    cost = {cs.name: {cid: c.tolist() for cid, c in zip(cs.config_ids, cs.costs, strict=True)} for cs in curvesets}
    _write_json(root / PERF_FILE, perf)
    _write_json(root / COST_FILE, cost)
    _write_json(root / DESCRIPTORS_FILE, {cs.name: _json_numbers(cs.meta_features) for cs in curvesets})
    _write_json(root / MAX_EPOCHS_FILE, {cs.name: cs.max_epochs for cs in curvesets})
    table.to_csv(root / TABLE_FILE)


def _curveset(
    name: str, perf: dict, cost: dict, descriptors: dict, table: pd.DataFrame, max_epochs: int, root: Path
) -> CurveSet:
    if name not in cost:
        raise MetaDatasetError(f"{str(root)!r}: dataset {name!r} is in perf.json but not in cost.json")
    if name not in descriptors:
        raise MetaDatasetError(f"{str(root)!r}: dataset {name!r} has no meta-features in meta/descriptors.json")
    ids = list(perf[name])
    absent = [cid for cid in ids if cid not in table.index]
    if absent:
        raise MetaDatasetError(f"{str(root)!r}: {len(absent)} config id(s) of {name!r} are not in table.csv, "
                               f"e.g. {absent[0]!r}")  # fmt: skip
    curves, costs = [], []
    for cid in ids:
        acc = np.asarray(perf[name][cid], dtype=np.float64)
        sec = np.asarray(cost[name].get(cid, []), dtype=np.float64)
        if len(acc) != len(sec):
            raise MetaDatasetError(
                f"{str(root)!r}: dataset {name!r}, config {cid!r} has {len(acc)} accuracies but {len(sec)} costs"
            )
        curves.append(acc)
        costs.append(sec)
    meta = descriptors[name]
    if not isinstance(meta, list) or len(meta) != 4:
        raise MetaDatasetError(f"{str(root)!r}: meta-features of {name!r} must be 4 numbers, got {meta!r}")
    return CurveSet(name, tuple(ids), table.loc[ids], tuple(curves), tuple(costs), np.asarray(meta, float), max_epochs)


def _read_table(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MetaDatasetError(f"{str(path)!r} is not a readable CSV table: {exc}") from exc
    table.index = table.index.astype(str)
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise MetaDatasetError(
            f"{str(path)!r} lacks {len(missing)} column(s) of the Quick-Tune encoding, e.g. {missing[:3]}"
        )
    extra = [c for c in table.columns if c not in TABLE_COLUMNS]
    bad = [c for c in extra if not _allowed_extra(str(c))]
    if bad:
        raise MetaDatasetError(f"{str(path)!r} has unknown column(s) {bad[:5]}")
    if not table.index.is_unique:
        raise MetaDatasetError(f"{str(path)!r}: config ids (first column) are not unique")
    columns = list(TABLE_COLUMNS) + _ordered_extra(extra)
    try:
        return table[columns].astype(_dtypes(columns))
    except (ValueError, TypeError) as exc:
        raise MetaDatasetError(f"{str(path)!r} has a non-numeric value: {exc}") from exc


def _allowed_extra(column: str) -> bool:
    """Columns a table may have beyond ``TABLE_COLUMNS``: models the table lacks, and the training methods
    (written by ``qtt meta-train --run``)."""
    return column.startswith(MODEL_PREFIX) or column in METHOD_COLUMNS


def _ordered_extra(extra: Sequence[str]) -> list[str]:
    """Extra model columns first, then the method columns, as ``encode`` orders them."""
    return [c for c in extra if c not in METHOD_COLUMNS] + [c for c in METHOD_COLUMNS if c in extra]


def _dtypes(columns: Sequence[str]) -> dict[str, Any]:
    """The encoding's dtypes (int64 for one-hots, methods and integer hyperparameters, float64 otherwise)."""
    extra = [c[len(MODEL_PREFIX) :] for c in columns if c.startswith(MODEL_PREFIX) and c not in TABLE_COLUMNS]
    dtypes = dict(encode([], extra, methods=True).dtypes)
    return {c: dtypes[c] for c in columns}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MetaDatasetError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MetaDatasetError(f"{str(path)!r} must hold a JSON object keyed by dataset")
    return data


def _without_info(data: dict) -> dict:
    """The per-dataset entries (the ``info`` key describes the file)."""
    out = {k: v for k, v in data.items() if k != _INFO_KEY}
    for name, curves in out.items():
        if not isinstance(curves, dict):
            raise MetaDatasetError(f"entry {name!r} must map config ids to lists of numbers")
    return out


def _json_numbers(values: np.ndarray) -> list[float | int]:
    return [int(v) if float(v).is_integer() else float(v) for v in values]


def _write_json(path: Path, payload: Any) -> None:
    try:
        text = json.dumps(payload, allow_nan=False)
    except ValueError as exc:
        raise MetaDatasetError(f"cannot write {path}: a curve holds a non-finite number ({exc})") from exc
    path.write_text(text)
