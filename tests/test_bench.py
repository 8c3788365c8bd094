"""The replay benchmark: recorded values and costs, budgets, regret, the baselines, and `qtt bench` itself."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from qtt_cli.bench import Replay, ReplayError, normalized_regret, recorded_configs, regret_range, replay
from qtt_cli.bench.metrics import summarize
from qtt_cli.cli.app import app
from qtt_cli.metadataset import build_curveset, write_meta_dataset
from qtt_cli.optimizer import PipelineState, RandomSearch, SuccessiveHalving, Suggestion
from qtt_cli.space import build_space, sample_configs
from qtt_cli.space.config import PipelineConfig

META = [1000, 10, 128, 3]


def toy(curves, costs, name="toy"):
    configs = [PipelineConfig(model="dla46x_c", lr=lr) for lr in (1e-5, 5e-5, 1e-4, 5e-4, 1e-3)[: len(curves)]]
    ids = [chr(ord("a") + i) for i in range(len(curves))]
    return build_curveset(name, configs, curves, costs, META, 4, config_ids=ids)


def step(pid, start, end):
    return Suggestion(pid, None, start, end)


def test_replay_returns_the_recorded_values_and_charges_exactly_the_recorded_costs():
    run = Replay(toy([[10.0, 20.0, 30.0], [50.0]], [[1.5, 2.25, 4.0], [8.0]]), budget_s=100)
    assert run.step(step("a", 0, 2)) == [10.0, 20.0]
    assert run.used_s == 3.75
    assert run.step(step("b", 0, 1)) == [50.0] and run.used_s == 11.75
    assert run.step(step("a", 2, 3)) == [30.0] and run.used_s == 15.75
    assert run.pipelines()["a"].curve == (10.0, 20.0, 30.0) and run.pipelines()["a"].costs == (1.5, 2.25, 4.0)
    trace = run.trace()
    assert list(trace.used_s) == [1.5, 3.75, 11.75, 15.75] and list(trace.values) == [10.0, 20.0, 50.0, 30.0]
    assert list(trace.best_by(np.array([1.0, 3.75, 12.0]))) == [pytest.approx(np.nan, nan_ok=True), 20.0, 50.0]


def test_a_config_cannot_be_continued_past_its_recorded_length_nor_restarted():
    run = Replay(toy([[10.0, 20.0], [50.0]], [[1.0, 1.0], [1.0]]), budget_s=100)
    with pytest.raises(ReplayError, match="recorded for 2 epochs"):
        run.step(step("a", 0, 3))
    run.step(step("a", 0, 2))
    with pytest.raises(ReplayError, match="recorded for 2 epochs"):
        run.step(step("a", 2, 3))
    with pytest.raises(ReplayError, match="continue from there"):
        run.step(step("a", 0, 1))
    with pytest.raises(ReplayError, match="not a recorded configuration"):
        run.step(step("zz", 0, 1))
    assert run.used_s == 2.0  # refused steps cost nothing


def test_the_epoch_that_would_overrun_the_budget_is_not_observed():
    run = Replay(toy([[10.0, 20.0, 30.0]], [[4.0, 4.0, 4.0]]), budget_s=10)
    assert run.step(step("a", 0, 3)) == [10.0, 20.0]
    assert run.exhausted and run.used_s == 8.0


def test_normalized_regret_uses_the_range_of_all_recorded_values():
    curveset = toy([[20.0, 60.0], [40.0, 80.0, 70.0]], [[1.0, 1.0], [1.0, 1.0, 1.0]])
    assert regret_range(curveset) == (20.0, 80.0)
    regret = normalized_regret(np.array([80.0, 65.0, 20.0, np.nan]), 20.0, 80.0)
    assert list(regret) == [0.0, 0.25, 1.0, 1.0]  # nothing observed yet counts as the worst


def test_mean_rank_is_taken_per_dataset_seed_and_budget():
    results = pd.DataFrame({
        "dataset": ["x", "x", "y", "y"], "seed": 0, "budget_h": 1.0,
        "optimizer": ["qt", "rs", "qt", "rs"], "regret": [0.1, 0.3, 0.5, 0.2],
    })  # fmt: skip
    summary = summarize(results).set_index("optimizer")
    assert summary.loc["qt", "regret"] == pytest.approx(0.3) and summary.loc["rs", "regret"] == pytest.approx(0.25)
    assert summary.loc["qt", "rank"] == 1.5 and summary.loc["rs", "rank"] == 1.5


def states(values_at_epoch, epochs=1):
    return {
        f"c{i}": PipelineState(f"c{i}", None, tuple([v] * epochs), tuple([1.0] * epochs), "ok")
        for i, v in enumerate(values_at_epoch)
    }


def test_asha_promotes_the_top_third_of_a_rung_best_first():
    curveset = toy([[1.0] * 4] * 5, [[1.0] * 4] * 5)  # only the source; the pipelines below are made up
    asha = SuccessiveHalving(recorded_configs(curveset), max_epochs=9, delta_t=1, eta=3)
    assert asha.rungs == [1, 3, 9]
    pipelines = states([10, 90, 30, 70, 50, 20, 80, 40, 60])  # 9 pipelines at rung 1: top 3 = 90, 80, 70
    assert [p.pipeline_id for p in asha.promotable(pipelines, 1)] == ["c1", "c6", "c3"]
    assert asha.ask(pipelines) == Suggestion("c1", None, 1, 2)  # towards rung 3, Δt at a time
    # with c1 promoted (now at 2 epochs) it is finished first, then c6 is promoted
    pipelines["c1"] = PipelineState("c1", None, (90.0, 91.0), (1.0, 1.0), "ok")
    assert asha.ask(pipelines) == Suggestion("c1", None, 2, 3)
    pipelines["c1"] = PipelineState("c1", None, (90.0, 91.0, 92.0), (1.0, 1.0, 1.0), "ok")
    assert asha.ask(pipelines) == Suggestion("c6", None, 1, 2)
    # 8 at rung 1 -> top ⌊8/3⌋ = 2: the third best is not promoted, a fresh configuration starts instead
    few = states([10, 90, 30, 70, 50, 20, 80, 40])
    few.pop("c1")
    few["c1"] = PipelineState("c1", None, (90.0, 91.0, 92.0), (1.0,) * 3, "ok")
    few["c6"] = PipelineState("c6", None, (80.0, 81.0, 82.0), (1.0,) * 3, "ok")
    assert asha.promotable(few, 1) == []


def test_random_search_in_replay_trains_recorded_configs_to_their_recorded_length():
    curveset = toy([[10.0, 20.0, 30.0], [50.0], [5.0, 6.0]], [[1.0] * 3, [1.0], [1.0] * 2])
    optimizer = RandomSearch(recorded_configs(curveset), max_epochs=4, delta_t=2, seed=0)
    trace = replay(optimizer, curveset, budget_s=1000)
    assert trace.steps == 4  # 2 steps for the 3-epoch curve (2 + 1), one each for the others
    assert sorted(trace.values) == [5.0, 6.0, 10.0, 20.0, 30.0, 50.0]


@pytest.fixture(scope="module")
def tiny_meta_dataset(tmp_path_factory):
    """Four synthetic datasets of 12 configurations: accuracy rises with lr, cost with batch size."""
    space = build_space(["dla46x_c", "mobilevit_xs", "edgenext_x_small"])
    curvesets = []
    for d in range(4):
        configs = sample_configs(space, 12, seed=d)
        rng = np.random.default_rng(d)
        curves = [np.clip(40 + 2000 * c.lr + 8 * np.log1p(np.arange(rng.integers(2, 9))) + rng.normal(0, 2), 0, 100)
                  for c in configs]  # fmt: skip
        costs = [np.full(len(curve), 60.0 + c.batch_size) for curve, c in zip(curves, configs, strict=True)]
        ids = [f"d{d}-{i}" for i in range(len(configs))]
        curvesets.append(build_curveset(f"d{d}", configs, curves, costs, [500 + d, 10, 128, 3], 8, config_ids=ids))
    root = tmp_path_factory.mktemp("meta")
    write_meta_dataset(curvesets, root)
    return root


def test_qtt_bench_writes_results_table_plot_and_page_and_never_meta_trains_on_the_test_dataset(
    tiny_meta_dataset, tmp_path
):
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, [
        "bench", "--meta-dataset", str(tiny_meta_dataset), "--out", str(out), "--budgets", "5m,15m",
        "--seeds", "1", "--first-seed", "4", "--datasets", "d0,d1", "--folds", "2", "--meta-iterations", "3",
        "--optimizers", "random,asha,dyhpo,quicktune,quicktune-cooled", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    results = pd.read_csv(out / "results.csv")
    assert set(results["dataset"]) == {"d0", "d1"} and set(results["seed"]) == {4}
    assert set(results["optimizer"]) == {"random", "asha", "dyhpo", "quicktune", "quicktune-cooled"}
    assert results["regret"].between(0, 1).all()
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["budget_h"].unique()) == pytest.approx([1 / 12, 0.25]) and len(summary) == 10
    assert (out / "regret.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Quick-Tune" in result.stderr  # the table
    page = (out / "index.html").read_text()  # the page shows the plot and both tables, self-contained
    plot = base64.b64encode((out / "regret.png").read_bytes()).decode("ascii")
    assert f'src="data:image/png;base64,{plot}"' in page
    assert page.count("<tr data-optimizer=") == 5 and 'id="paired"' in page and "4..4" in page
    folds = [json.loads(p.read_text())["key"]["split"] for p in sorted(out.glob("priors/seed-4/fold-*/fold.json"))]
    assert folds and all(not set(f["test"]) & set(f["train"] + f["val"]) for f in folds)
    assert {"d0", "d1"} <= {name for f in folds for name in f["test"]}


def test_each_seed_meta_trains_its_own_fold_priors_unless_they_are_shared(tiny_meta_dataset, tmp_path, monkeypatch):
    """Meta-training is deterministic on one machine but not across CPUs, so one shared draw of the fold
    priors made a whole bench depend on it; by default each search seed uses priors of its own meta seed."""
    import qtt_cli.surrogate as surrogate_package
    from qtt_cli.bench import runner

    seen: list[tuple[str, int, Path]] = []
    real_task, real_meta = runner._run_task, surrogate_package.meta_train
    meta_seeds: list[int] = []

    def spy_task(task):
        seen.append((task.dataset, task.seed, Path(task.priors_dir).relative_to(tmp_path / "b")))
        return real_task(task)

    def spy_meta(*args, **kwargs):
        meta_seeds.append(kwargs["seed"])
        return real_meta(*args, **kwargs)

    monkeypatch.setattr(runner, "_run_task", spy_task)
    monkeypatch.setattr(surrogate_package, "meta_train", spy_meta)
    common = dict(meta_dataset=tiny_meta_dataset, budgets_s=(300.0,), seeds=2, first_seed=3, datasets=("d0",),
                  folds=2, meta_iterations=2, optimizers=("quicktune",))  # fmt: skip
    runner.run_bench(runner.BenchSettings(out=tmp_path / "b", **common))
    fold = runner.assign_folds(["d0", "d1", "d2", "d3"], 2)
    k = next(i for i, f in enumerate(fold) if "d0" in f)
    assert sorted(seen) == [("d0", 3, Path(f"priors/seed-3/fold-{k}")), ("d0", 4, Path(f"priors/seed-4/fold-{k}"))]
    assert sorted(meta_seeds) == [3000 + k, 4000 + k]
    a, b = (tmp_path / "b" / f"priors/seed-{s}/fold-{k}/surrogate.safetensors" for s in (3, 4))
    assert a.read_bytes() != b.read_bytes()

    seen.clear()
    meta_seeds.clear()
    runner.run_bench(runner.BenchSettings(out=tmp_path / "b", shared_priors=True, **common))
    assert sorted(seen) == [("d0", 3, Path(f"priors/fold-{k}")), ("d0", 4, Path(f"priors/fold-{k}"))]
    assert meta_seeds == [k]


def test_qtt_bench_rejects_bad_input_with_a_message(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--meta-dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a directory" in result.stderr
    result = CliRunner().invoke(app, [
        "bench", "--meta-dataset", str(tmp_path), "--out", str(tmp_path / "o"), "--optimizers", "grid",
    ])  # fmt: skip
    assert result.exit_code == 2 and "unknown optimizer" in result.stderr


def test_the_replay_tells_the_optimizer_how_much_budget_is_left():
    from qtt_cli.optimizer import Optimizer

    class Spy(Optimizer):
        def __init__(self):
            super().__init__(max_epochs=3, delta_t=1)
            self.seen = []

        def ask(self, pipelines, budget=None):
            self.seen.append((budget.total_s, budget.used_s))
            epochs = pipelines["a"].epochs if "a" in pipelines else 0
            return step("a", epochs, epochs + 1) if epochs < 3 else None

    spy = Spy()
    replay(spy, toy([[10.0, 20.0, 30.0]], [[4.0, 2.0, 1.0]]), budget_s=50)
    assert spy.seen == [(50.0, 0.0), (50.0, 4.0), (50.0, 6.0), (50.0, 7.0)]


def test_optimizers_that_plan_with_the_budget_are_scored_on_the_run_with_that_budget():
    from qtt_cli.bench.runner import regret_table

    curveset = toy([[0.0, 100.0]], [[1.0, 1.0]])  # regret range 0..100
    base = {"dataset": "toy", "optimizer": "x", "seed": 0, "steps": 1, "ask_s": 0.0}
    short = {**base, "budget_s": 10.0, "used_s": [1.0], "values": [90.0]}  # the 10 s run found 90
    long = {**base, "budget_s": 100.0, "used_s": [1.0, 50.0], "values": [20.0, 100.0]}  # the 100 s run: 20, 100
    table = regret_table([long, short], {"toy": curveset}, [10.0, 100.0]).set_index("budget_s")["regret"]
    assert table[10.0] == pytest.approx(0.1)  # from the 10 s run, not the 100 s run's prefix (0.8)
    assert table[100.0] == pytest.approx(0.0)
    assert table[table.index > 20.0].iloc[0] == pytest.approx(0.8)  # between budgets: the larger run


# --- issue 10: honest cache, paired differences, the degenerate records --------------------------------------


def test_cached_fold_priors_are_retrained_when_the_code_or_the_meta_training_defaults_change(
    tiny_meta_dataset, tmp_path, monkeypatch
):
    import qtt_cli.surrogate as surrogate_package
    from qtt_cli.bench import runner
    from qtt_cli.bench.runner import BenchSettings, assign_folds, fold_priors
    from qtt_cli.metadataset import load_meta_dataset

    curvesets = load_meta_dataset(tiny_meta_dataset)
    folds = assign_folds([cs.name for cs in curvesets], 2)
    settings = BenchSettings(meta_dataset=tiny_meta_dataset, out=tmp_path, folds=2, meta_iterations=2)
    trained = []
    real = surrogate_package.meta_train

    def counting(*args, **kwargs):
        trained.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(surrogate_package, "meta_train", counting)
    directory = tmp_path / "fold-0"
    fold_priors(curvesets, folds, 0, settings, directory)
    fold_priors(curvesets, folds, 0, settings, directory)
    assert len(trained) == 1  # unchanged: reused
    key = json.loads((directory / "fold.json").read_text())["key"]
    assert len(key["code_sha256"]) == 64 and key["defaults"]["hyper"]["feature_dim"] == 16

    fingerprint = runner.meta_training_fingerprint()
    monkeypatch.setitem(surrogate_package.DEFAULT_HYPER, "feature_dim", 8)  # a changed default
    assert runner.meta_training_fingerprint() != fingerprint
    fold_priors(curvesets, folds, 0, settings, directory)
    assert len(trained) == 2
    monkeypatch.setattr(runner, "meta_training_fingerprint", lambda: {**fingerprint, "code_sha256": "0" * 64})
    fold_priors(curvesets, folds, 0, settings, directory)  # changed code
    assert len(trained) == 3


def test_paired_differences_are_per_dataset_and_seed_with_their_standard_error():
    from qtt_cli.bench.metrics import paired_differences

    rows = []
    for dataset, base in (("x", 0.5), ("y", 0.1)):
        for seed, noise in ((0, 0.0), (1, 0.02)):
            rows.append({"dataset": dataset, "seed": seed, "budget_h": 1.0, "optimizer": "quicktune", "regret": base})
            rows.append({"dataset": dataset, "seed": seed, "budget_h": 1.0, "optimizer": "random",
                         "regret": base + 0.1 + noise})  # fmt: skip
    paired = paired_differences(pd.DataFrame(rows), "quicktune")
    (row,) = paired.to_dict("records")
    assert row["optimizer"] == "random" and row["pairs"] == 4
    assert row["mean_diff"] == pytest.approx(0.11)
    assert row["se"] == pytest.approx(np.std([0.1, 0.12, 0.1, 0.12], ddof=1) / 2)  # the datasets' spread cancels


def test_the_bench_can_drop_the_degenerate_records_from_the_candidates(tmp_path):
    """A linear-probing record of one epoch with the dataset's best accuracy: the paper's protocol replays it
    (and it sets y_max); with --drop-degenerate it is neither a candidate nor part of the regret range."""
    configs = [PipelineConfig(model="dla46x_c", lr=lr, linear_probing=i == 0)
               for i, lr in enumerate((1e-5, 5e-5, 1e-4))]  # fmt: skip
    curves = [np.array([90.0]), np.array([10.0, 40.0, 50.0]), np.array([20.0, 30.0])]
    costs = [np.array([1.0]), np.ones(3), np.ones(2)]
    sets = [build_curveset(name, configs, curves, costs, META, 3, config_ids=[f"{name}{i}" for i in range(3)])
            for name in ("lp", "twin")]  # fmt: skip
    write_meta_dataset(sets, tmp_path / "meta")
    for flag, best in (([], 90.0), (["--drop-degenerate"], 50.0)):
        out = tmp_path / f"bench{len(flag)}"
        result = CliRunner().invoke(app, [
            "bench", "--meta-dataset", str(tmp_path / "meta"), "--out", str(out), "--budgets", "1m",
            "--seeds", "1", "--folds", "2", "--datasets", "lp", "--optimizers", "random", "--quiet", *flag,
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
        final = pd.read_csv(out / "results.csv").sort_values("budget_s").iloc[-1]
        assert final["best_val_top1"] == best and final["regret"] == 0.0


def test_the_bench_page_shows_differences_to_quick_tune_only_and_bolds_the_lowest_regret(tmp_path):
    from qtt_cli.report.bench_page import write_bench_page

    pd.DataFrame({"budget_h": [1.0, 1.0], "optimizer": ["random", "quicktune"], "label": ["Random", "QT"],
                  "regret": [0.5, 0.25], "regret_std": [0.1, 0.1], "rank": [1.75, 1.25], "runs": [4, 4]},
                 ).to_csv(tmp_path / "summary.csv", index=False)  # fmt: skip
    pd.DataFrame({"budget_h": [1.0, 1.0], "optimizer": ["random", "quicktune"], "reference": ["quicktune", "other"],
                  "mean_diff": [0.25, -0.5], "se": [0.05, 0.1], "pairs": [4, 4]},
                 ).to_csv(tmp_path / "paired.csv", index=False)  # fmt: skip
    page = write_bench_page(tmp_path).read_text()
    assert "<td><b>0.250</b></td>" in page and "<td>0.500</td>" in page
    paired = page[page.index('id="paired"'):]
    assert "+0.250 ± 0.050" in paired and "-0.500" not in paired


def test_the_run_noise_ablation_differs_from_quick_tune_only_in_the_noise_rate():
    from qtt_cli.bench.runner import RUN_NOISE_LR, make_optimizer

    cs = build_curveset("d", [PipelineConfig(model="dla46x_c", lr=lr) for lr in (1e-4, 1e-3)],
                        [np.linspace(10, 40, 3)] * 2, [np.ones(3)] * 2, [1000, 10, 128, 3], 3)  # fmt: skip
    plain = make_optimizer("quicktune", cs, priors=object(), seed=0, delta_t=1)
    ablation = make_optimizer("quicktune-run-noise", cs, priors=object(), seed=0, delta_t=1)
    assert plain.schedule.noise_lr is None
    assert ablation.schedule.noise_lr == RUN_NOISE_LR
    assert (ablation.use_cost, ablation.use_meta, ablation.acquisition) == (True, True, plain.acquisition)
