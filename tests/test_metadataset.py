"""The meta-dataset reader/writer and run directories as CurveSets (qtt_cli.metadataset)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qtt_cli.hub import load_hub
from qtt_cli.metadataset import (
    CurveSet,
    MetaDatasetError,
    build_curveset,
    load_meta_dataset,
    load_run,
    model_columns,
    write_meta_dataset,
)
from qtt_cli.space import TABLE_COLUMNS, build_space, decode, encode, sample_configs
from qtt_cli.store import ResultsStore, make_rows
from qtt_cli.worker.results import EpochResult

SHARED = Path(__file__).resolve().parents[2] / "shared"
META_DATASET = SHARED / "data/quicktune-extended"
TINY = load_hub("tiny")


@pytest.fixture(scope="module")
def real() -> list[CurveSet]:
    if not (META_DATASET / "table.csv").is_file():
        pytest.skip(f"Quick-Tune meta-dataset not found at {META_DATASET} (it lives in ../shared next to the repo)")
    return load_meta_dataset(META_DATASET)


def _synthetic(name: str, n: int, seed: int, max_epochs: int = 6) -> CurveSet:
    rng = np.random.default_rng(seed)
    configs = sample_configs(build_space(TINY.names), n, seed=seed)
    lengths = rng.integers(0, max_epochs + 1, size=n)
    curves = [np.round(rng.uniform(0, 100, size=k), 6) for k in lengths]
    costs = [rng.uniform(0.5, 30, size=k) for k in lengths]
    return build_curveset(
        name, configs, curves, costs, [1234, 7, 64, 3], max_epochs,
        config_ids=[f"{name}-{i}" for i in range(n)],
        model_names_map=TINY.table_names, model_column_names=[TINY.table_names.get(m, m) for m in TINY.names],
    )  # fmt: skip


def _assert_same(a: CurveSet, b: CurveSet) -> None:
    assert a.name == b.name and a.config_ids == b.config_ids and a.max_epochs == b.max_epochs
    pd.testing.assert_frame_equal(a.features, b.features, check_dtype=True)
    np.testing.assert_array_equal(a.meta_features, b.meta_features)
    for x, y in zip(a.curves + a.costs, b.curves + b.costs, strict=True):
        np.testing.assert_array_equal(x, y)


def test_write_then_load_gives_identical_curvesets(tmp_path):
    sets = [_synthetic("alpha", 25, seed=1), _synthetic("beta", 12, seed=2, max_epochs=9)]
    write_meta_dataset(sets, tmp_path)
    back = load_meta_dataset(tmp_path)
    assert [cs.name for cs in back] == ["alpha", "beta"]
    for a, b in zip(sets, back, strict=True):
        _assert_same(a, b)
    # unknown models kept their own columns after the table's
    assert model_columns(back[0].features.columns)[-3:] == [
        "cat:model:tf_efficientnet_lite0.in1k", "cat:model:mobilenetv3_small_050.lamb_in1k",
        "cat:model:lcnet_050.ra2_in1k",
    ]  # fmt: skip
    assert len(load_meta_dataset(tmp_path, datasets=["beta"])) == 1


def test_write_refuses_a_config_id_with_two_different_configs(tmp_path):
    a, b = _synthetic("alpha", 3, seed=1), _synthetic("beta", 3, seed=2)
    clash = CurveSet("beta", a.config_ids, b.features, b.curves, b.costs, b.meta_features, b.max_epochs)
    with pytest.raises(MetaDatasetError, match="different hyperparameters"):
        write_meta_dataset([a, clash], tmp_path)


def test_with_observations_keeps_configs_and_checks_lengths():
    cs = _synthetic("alpha", 4, seed=3)
    seen = cs.with_observations([np.array([50.0])] * 4, [np.array([2.0])] * 4)
    assert seen.config_ids == cs.config_ids and seen.num_observations == 4
    pd.testing.assert_frame_equal(seen.features, cs.features)
    with pytest.raises(ValueError, match="accuracies but"):
        cs.with_observations([np.array([50.0, 60.0])] * 4, [np.array([2.0])] * 4)


def test_not_a_meta_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(MetaDatasetError, match="not a directory"):
        load_meta_dataset(tmp_path / "nope")
    (tmp_path / "curves").mkdir()
    (tmp_path / "curves/perf.json").write_text("{}")
    with pytest.raises(MetaDatasetError, match="missing curves/cost.json, table.csv, meta/descriptors.json"):
        load_meta_dataset(tmp_path)


def test_inconsistent_meta_dataset_is_a_clear_error(tmp_path):
    write_meta_dataset([_synthetic("alpha", 5, seed=1)], tmp_path)
    cost = json.loads((tmp_path / "curves/cost.json").read_text())
    first = next(iter(cost["alpha"]))
    cost["alpha"][first] = cost["alpha"][first] + [1.0]
    (tmp_path / "curves/cost.json").write_text(json.dumps(cost))
    with pytest.raises(MetaDatasetError, match="accuracies but"):
        load_meta_dataset(tmp_path)
    (tmp_path / "table.csv").write_text("id,lr\n1,0.1\n")
    with pytest.raises(MetaDatasetError, match="lacks .* column"):
        load_meta_dataset(tmp_path)


def _epochs(values, start=1, cost=3.0):
    return [EpochResult(start + i, v, 1.0, 1.0, cost + i) for i, v in enumerate(values)]


def test_load_run_reads_curves_prefixes_and_hub_names(tmp_path):
    run = tmp_path / "my-run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({
        "hub": "tiny", "models": TINY.names,
        "meta_features": {"num_samples": 300, "num_classes": 10, "resolution": 32, "channels": 3},
        "settings": {"max_epochs": 5},
    }))  # fmt: skip
    configs = sample_configs(build_space(TINY.names), 3, seed=0)
    configs[0] = dataclasses.replace(configs[0], model="dla46x_c.in1k")
    now = pd.Timestamp.now(tz="UTC")
    store = ResultsStore(run)
    # p1: two steps of two epochs; p2: one epoch then diverged in its second step; p3: failed before any epoch
    store.append(make_rows("p1", configs[0], _epochs([10, 20]), step=1, status="ok", error=None, wall_time=now))
    store.append(make_rows("p2", configs[1], _epochs([5]), step=2, status="ok", error=None, wall_time=now))
    store.append(make_rows("p1", configs[0], _epochs([30, 40], 3), step=3, status="ok", error=None, wall_time=now))
    store.append(make_rows("p2", configs[1], [], step=4, status="diverged", error="nan", wall_time=now,
                           failed_epoch=2))  # fmt: skip
    store.append(make_rows("p3", configs[2], [], step=5, status="failed", error="oom", wall_time=now,
                           failed_epoch=1))  # fmt: skip

    cs = load_run(run)
    assert cs.name == "my-run" and cs.max_epochs == 5
    assert cs.config_ids == ("my-run/p1", "my-run/p2", "my-run/p3")
    assert [c.tolist() for c in cs.curves] == [[10, 20, 30, 40], [5], []]
    assert [c.tolist() for c in cs.costs] == [[3, 4, 3, 4], [3], []]
    np.testing.assert_array_equal(cs.meta_features, [300, 10, 32, 3])
    assert cs.model_names()[0] == "dla46x_c"  # the hub's dla46x_c.in1k under its meta-dataset name
    extra = model_columns(cs.features.columns)[len(model_columns(TABLE_COLUMNS)) :]
    assert extra == ["cat:model:tf_efficientnet_lite0.in1k", "cat:model:mobilenetv3_small_050.lamb_in1k",
                     "cat:model:lcnet_050.ra2_in1k"]  # fmt: skip
    pd.testing.assert_frame_equal(
        cs.features,
        encode(
            configs, [TINY.table_names.get(m, m) for m in TINY.names], model_names_map=TINY.table_names,
            methods=True,
        ),  # fmt: skip
    )
    assert list(cs.features.columns[-2:]) == ["method:spg", "method:hvp"]  # SPG/HVP: for the predictors


def test_load_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(MetaDatasetError, match="not a qtt run directory"):
        load_run(tmp_path)


# --- the shared meta-dataset ---------------------------------------------------------------------------


def test_real_meta_dataset_shape(real):
    assert len(real) == 18
    assert sum(len(cs) for cs in real) == 3214
    assert {cs.max_epochs for cs in real} == {50}
    assert all(cs.lengths.min() >= 1 and cs.lengths.max() <= 50 for cs in real)
    apl = next(cs for cs in real if cs.name == "APL")
    np.testing.assert_array_equal(apl.meta_features, [5775, 21, 128, 3])
    assert min(c.min() for c in apl.curves) >= 0 and max(c.max() for c in apl.curves) <= 100
    assert all((c > 0).all() for c in apl.costs)


def test_real_table_through_curveset_equals_the_table_encoding(real):
    table = pd.read_csv(META_DATASET / "table.csv", index_col=0)
    table.index = table.index.astype(str)
    for cs in real[:4]:
        assert list(cs.features.columns) == list(TABLE_COLUMNS)
        rows = table.loc[list(cs.config_ids)].reset_index(drop=True)
        pd.testing.assert_frame_equal(cs.features, rows, check_dtype=True)
        reencoded = encode([decode(row) for _, row in cs.features.iterrows()])
        pd.testing.assert_frame_equal(reencoded, cs.features, check_dtype=True)
