"""QuickTune's choices with a surrogate whose predictions the test dictates (tests/fake_surrogate.py)."""

from __future__ import annotations

import numpy as np
import pytest
from fake_surrogate import FakeSurrogate

from qtt_cli.metadataset import build_curveset
from qtt_cli.optimizer.base import PipelineState, Suggestion
from qtt_cli.optimizer.quicktune import FitSchedule, QuickTune
from qtt_cli.space import build_space
from qtt_cli.space.config import PipelineConfig

IDS = ("a", "b", "c", "d", "e", "f")
META = [1000, 10, 128, 3]


def recorded(lengths=(4, 4, 4, 4, 4, 2)):
    """Six recorded configurations (curves are only used for their lengths, the replay's epoch limits)."""
    configs = [PipelineConfig(model="dla46x_c", lr=lr) for lr in (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3)]
    curves = [np.linspace(10, 40, n) for n in lengths]
    return build_curveset("toy", configs, curves, [np.ones(n) for n in lengths], META, 4, config_ids=IDS)


def state(pid, curve, status="ok", error=None, failed_steps=0):
    return PipelineState(pid, None, tuple(curve), tuple(1.0 for _ in curve), status, error, failed_steps)


def quicktune(surrogate, curveset=None, **kwargs):
    return QuickTune.for_recorded(curveset or recorded(), delta_t=1, priors=surrogate, **kwargs)


def test_never_proposes_finished_failed_or_diverged_pipelines():
    # a..c look best to the surrogate, but a is finished, b failed, c diverged; f reached its recorded length
    surrogate = FakeSurrogate(means={"a": 99, "b": 98, "c": 97, "f": 96, "d": 60, "e": 55}, std=0.5)
    history = {
        "a": state("a", [20, 30, 40, 50]),
        "b": state("b", [20], "failed", "ValueError: bad lr", 1),
        "c": state("c", [20], "diverged", "training loss is nan"),
        "f": state("f", [20, 30]),
        "d": state("d", [25]),
    }
    suggestion = quicktune(surrogate).ask(history)
    assert (suggestion.pipeline_id, suggestion.start_epoch, suggestion.end_epoch) == ("d", 1, 2)


def test_transient_failure_is_retried_once():
    surrogate = FakeSurrogate(means={"b": 90}, default_mean=20, std=0.5)
    once = {"b": state("b", [20], "failed", "OutOfMemoryError: CUDA out of memory. Tried to allocate", 1)}
    assert quicktune(surrogate).ask(once).pipeline_id == "b"
    twice = {"b": state("b", [20], "failed", "OutOfMemoryError: CUDA out of memory", 2)}
    assert quicktune(surrogate).ask(twice).pipeline_id != "b"


def test_started_pipeline_wins_when_its_ei_per_second_is_highest():
    # d (started, 1 epoch) and e (fresh) both predicted at 60 over an incumbent of 50; d costs 1 s, e 10 s
    history = {"d": state("d", [50.0])}
    costs = {"d": 1.0, "e": 10.0, "a": 10.0, "b": 10.0, "c": 10.0, "f": 10.0}
    surrogate = FakeSurrogate(means={"d": 60, "e": 60}, epoch_costs=costs, default_mean=0, std=1.0)
    suggestion = quicktune(surrogate).ask(history)
    assert (suggestion.pipeline_id, suggestion.start_epoch, suggestion.end_epoch) == ("d", 1, 2)
    # now e is cheaper: the fresh configuration wins, started from epoch 0
    surrogate = FakeSurrogate(means={"d": 60, "e": 60}, epoch_costs={**costs, "d": 10.0, "e": 1.0}, std=1.0)
    suggestion = quicktune(surrogate).ask(history)
    assert (suggestion.pipeline_id, suggestion.start_epoch, suggestion.end_epoch) == ("e", 0, 1)


def test_without_cost_awareness_the_higher_ei_wins_however_expensive():
    history = {"d": state("d", [50.0])}
    costs = {"d": 100.0, "e": 1.0}
    surrogate = FakeSurrogate(means={"d": 62, "e": 58}, epoch_costs=costs, std=1.0)
    assert quicktune(surrogate).ask(history).pipeline_id == "e"
    assert quicktune(surrogate, use_cost=False).ask(history).pipeline_id == "d"


def test_ei_is_measured_against_the_incumbent_at_the_next_epoch():
    # d is at epoch 1 (40 %); a reached 70 % at epoch 2. d predicted 65 at epoch 2 < 70: little EI.
    # e (fresh) predicted 45 at epoch 1 against the epoch-1 best of 40 (d): more EI, so e wins.
    history = {"a": state("a", [30, 70, 71, 72]), "d": state("d", [40.0])}
    surrogate = FakeSurrogate(means={"d": 65, "e": 45}, default_mean=0, std=1.0)
    assert quicktune(surrogate).ask(history).pipeline_id == "e"


def test_fresh_pool_configuration_gets_the_next_id_and_leaves_the_pool():
    space = build_space(["dla46x_c", "mobilevit_xs"])
    surrogate = FakeSurrogate(means={"pool-3": 90}, default_mean=10)
    opt = QuickTune.for_space(
        space, meta_features=META, model_names_map=None, model_column_names=None, max_epochs=5, delta_t=2,
        priors=surrogate, pool_size=8, seed=1,
    )  # fmt: skip
    first = opt.ask({})  # nothing observed: the pool's first (random) configuration, as Algorithm 1 starts
    assert (first.pipeline_id, first.config, first.start_epoch, first.end_epoch) == ("p0001", opt.layout.pool[0], 0, 2)
    history = {"p0001": PipelineState("p0001", first.config, (50.0, 55.0), (1.0, 1.0), "ok")}
    second = opt.ask(history)
    assert (second.pipeline_id, second.config, second.start_epoch, second.end_epoch) == (
        "p0002", opt.layout.pool[3], 0, 2,
    )  # fmt: skip
    history["p0002"] = PipelineState("p0002", second.config, (60.0, 62.0), (1.0, 1.0), "ok")
    surrogate.means = {"p0002": 95}
    assert opt.ask(history) == Suggestion("p0002", opt.layout.pool[3], 2, 4)
    curveset, _ = opt.layout.build(history, opt)
    assert "pool-3" not in curveset.config_ids and "pool-0" not in curveset.config_ids and len(curveset) == 8


def test_the_pool_is_fixed_by_the_seed_so_a_resumed_run_sees_the_same_candidates():
    space = build_space(["dla46x_c", "mobilevit_xs"])

    def pool(seed):
        opt = QuickTune.for_space(space, meta_features=META, model_names_map=None, model_column_names=None,
                                  max_epochs=5, delta_t=1, priors=FakeSurrogate(), pool_size=16, seed=seed)
        return opt.layout.pool

    assert pool(3) == pool(3) and pool(3) != pool(4)


def test_refit_schedule_full_fits_then_refinements_then_reset_after_a_stall():
    surrogate = FakeSurrogate(std=1.0)
    schedule = FitSchedule(full_refits=2, full_steps=7, refine_steps=3, refit_fraction=0.5, stall_patience=3)
    opt = quicktune(surrogate, schedule=schedule)
    for values in ([10.0], [10.0, 20.0], [10.0, 20.0, 20.0], [10.0, 20.0, 20.0, 20.0]):
        opt.ask({"d": state("d", values)})
    # n=1, 2: full fits from the priors; n=3: 1 new >= ceil(0.5·2) -> refinement; n=4: 1 new < ceil(0.5·3)
    assert surrogate.fits() == [("fit", 7, 1), ("fit", 7, 2), ("fit", 3, 3)]
    # the best (20) has not improved for 3 asks (n=3, 4, 5): back to a copy of the priors, fitted fully
    opt.ask({"d": state("d", [10.0, 20.0, 20.0, 20.0]), "e": state("e", [5.0])})
    assert surrogate.log[-2:] == [("copy",), ("fit", 7, 5)]


@pytest.mark.parametrize(("schedule", "priors", "expected"), [
    (FitSchedule(), True, None),  # default: the noise moves at the refit's rate (1e-4 from the priors)
    (FitSchedule(noise_lr=1e-2), True, 1e-2),  # the run-noise ablation: 100x faster
    (FitSchedule(noise_lr=1e-2), False, 1e-2),
    (FitSchedule(noise_lr=1e-5), False, 1e-3),  # never slower than the other weights (1e-3 from scratch)
])  # fmt: skip
def test_every_refit_lets_the_observation_noise_learn_at_its_own_rate(schedule, priors, expected):
    seen = []

    class Recording(FakeSurrogate):
        def fit(self, curvesets, *, steps, lr=1e-3, seed=0, noise_lr=None):
            seen.append((lr, noise_lr))
            return super().fit(curvesets, steps=steps, lr=lr, seed=seed)

        def copy(self):
            return self

    surrogate = Recording(std=1.0)
    opt = QuickTune.for_recorded(recorded(), delta_t=1, priors=surrogate if priors else None, schedule=schedule,
                                 new_surrogate=lambda columns, seed: surrogate)  # fmt: skip
    opt.ask({"d": state("d", [10.0])})
    opt.ask({"d": state("d", [10.0, 20.0])})
    assert seen == [(1e-4 if priors else 1e-3, expected)] * 2


@pytest.mark.parametrize("with_priors", [True, False])
def test_the_first_pipeline_is_random_and_without_priors_the_surrogate_is_fresh(with_priors):
    built = []

    def new_surrogate(columns, seed):
        built.append((len(columns), seed))
        return FakeSurrogate(means={"a": 99})

    priors = FakeSurrogate(means={"a": 99}) if with_priors else None
    opt = quicktune(priors, new_surrogate=new_surrogate, seed=5)
    first = opt.ask({})
    assert first.pipeline_id == opt.layout.ids[0]  # the seeded order's first, not the predicted best "a"
    assert opt.layout.ids != quicktune(priors, new_surrogate=new_surrogate, seed=6).layout.ids
    assert opt.use_meta == with_priors
    width = len(recorded().features.columns)
    assert built == ([] if with_priors else [(width, 5), (width, 6)])


def test_nothing_left_to_propose_returns_none():
    history = {cid: state(cid, list(np.linspace(10, 40, n))) for cid, n in zip(IDS, (4, 4, 4, 4, 4, 2), strict=True)}
    assert quicktune(FakeSurrogate()).ask(history) is None


@pytest.mark.parametrize("delta_t", [1, 3])
def test_steps_stop_at_the_recorded_length(delta_t):
    history = {"f": state("f", [10.0])}  # f was recorded for 2 epochs
    surrogate = FakeSurrogate(means={"f": 99}, std=0.5)
    suggestion = QuickTune.for_recorded(recorded(), delta_t=delta_t, priors=surrogate).ask(history)
    assert (suggestion.pipeline_id, suggestion.start_epoch, suggestion.end_epoch) == ("f", 1, 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("mobilenetv3_small_050.lamb_in1k", "predictors start untrained"),  # not in the meta-dataset: no priors
        ("dla46x_c.in1k", "cover all 1 models"),  # a meta-dataset model: the shipped priors are used
    ],
)
def test_qtt_tune_with_quicktune_runs_end_to_end(tmp_path, digits_split_dir, model, says):
    import json

    from typer.testing import CliRunner

    from qtt_cli.cli.app import app
    from qtt_cli.store import RunDir
    from qtt_cli.surrogate.priors import PRIORS_DIR

    if "cover" in says and not (PRIORS_DIR / "surrogate.safetensors").is_file():
        pytest.skip(f"no shipped priors in {PRIORS_DIR}")
    hub = tmp_path / "hub.yaml"
    hub.write_text(f"models:\n  - name: {model}\n    input_size: 32\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "tune", str(digits_split_dir), "--out", str(out), "--hub", str(hub), "--weights", "random",
        "--max-input-size", "32", "--max-epochs", "2", "--max-steps", "3", "--budget", "60m",
        "--optimizer", "quicktune", "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "quicktune:" in result.stderr and says in result.stderr  # says whether priors are used
    summary = json.loads(result.stdout)
    assert summary["steps"] == 3 and summary["reason"] == "max_steps"
    history = RunDir(out).store.load()
    ok = history[history["status"] == "ok"]
    assert len(ok) == 3 and ok["val_top1"].between(0, 100).all()
    for _, rows in ok.groupby("pipeline_id"):  # freeze-thaw: every pipeline's epochs are 1, 2, ... in order
        assert list(rows.sort_values("step")["epoch"]) == list(range(1, len(rows) + 1))
    # the fitted predictors are kept for a resume, as safetensors + JSON (no pickles)
    saved = sorted(p.name for p in (out / "optimizer").rglob("*") if p.is_file())
    assert saved == ["state.json", "surrogate.json", "surrogate.safetensors"]
    resumed = CliRunner().invoke(app, ["resume", str(out), "--max-steps", "4", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert "resumed its fitted predictors" in resumed.stderr and json.loads(resumed.stdout)["steps"] == 4


def test_a_pipeline_trained_past_all_others_competes_with_the_overall_best_not_its_own_last_epoch():
    # a reached 80 % at epoch 1; d was trained to epoch 3 and plateaued at 56. Continuing d to epoch 4
    # (predicted 57 ± 1) is measured against 80, the best at any lower epoch (Section 4.3), so its EI is ~0
    # and the fresh e (79 ± 1 against the epoch-1 best of 80) wins. Against d's own 56 it would win.
    history = {"a": state("a", [80.0]), "d": state("d", [50.0, 55.0, 56.0])}
    surrogate = FakeSurrogate(means={"d": 57, "e": 79}, default_mean=0, std=1.0)
    assert quicktune(surrogate).ask(history).pipeline_id == "e"


def test_cost_cooling_turns_ei_per_second_into_plain_ei_as_the_budget_runs_out():
    from qtt_cli.optimizer import AcquisitionSettings, BudgetStatus

    cooled = AcquisitionSettings(cost_cooling=True)
    assert cooled.exponent(None) == 1.0  # budget unknown: equation 3
    assert cooled.exponent(BudgetStatus(100.0, 75.0)) == pytest.approx(0.25)
    assert cooled.exponent(BudgetStatus(100.0, 120.0)) == 0.0
    assert AcquisitionSettings().exponent(BudgetStatus(100.0, 75.0)) == 1.0  # off by default

    history = {"d": state("d", [50.0])}
    surrogate = FakeSurrogate(means={"d": 62, "e": 58}, epoch_costs={"d": 100.0, "e": 1.0}, std=1.0)
    opt = quicktune(surrogate, acquisition=cooled)
    assert opt.ask(history, BudgetStatus(10_000.0, 0.0)).pipeline_id == "e"  # early: per second, e
    assert opt.ask(history, BudgetStatus(10_000.0, 9_800.0)).pipeline_id == "d"  # late: plain EI, d


def test_unaffordable_steps_are_skipped_while_an_affordable_one_exists():
    from qtt_cli.optimizer import AcquisitionSettings, BudgetStatus

    history = {"d": state("d", [50.0])}
    surrogate = FakeSurrogate(means={"d": 70, "e": 51}, epoch_costs={"d": 10.0, "e": 1.0}, std=1.0)
    opt = quicktune(surrogate, acquisition=AcquisitionSettings(skip_unaffordable=True))
    assert opt.ask(history, BudgetStatus(1000.0, 0.0)).pipeline_id == "d"  # EI 20 for 10 s beats 1.1 for 1 s
    assert opt.ask(history, BudgetStatus(1000.0, 995.0)).pipeline_id == "e"  # 5 s left: d cannot finish
    assert quicktune(surrogate).ask(history, BudgetStatus(1000.0, 995.0)).pipeline_id == "d"  # knob off


def test_a_resumed_quicktune_decides_as_the_uninterrupted_one(tmp_path):
    """Past the full refits, the surrogate carries refinements and stall counters between asks: restored
    from ``save_state``, a new optimizer continues exactly where the interrupted one stopped."""
    from qtt_cli.bench.replay import Replay
    from qtt_cli.optimizer import BudgetStatus
    from qtt_cli.surrogate import Surrogate

    rng = np.random.default_rng(2)  # curves on which a resume from the priors decides differently (4 of 14)
    configs = [PipelineConfig(model="dla46x_c", lr=lr) for lr in np.geomspace(1e-5, 1e-2, 12)]
    curves = [np.clip(np.cumsum(rng.uniform(0, 10, 6)) + rng.normal(0, 2, 6), 0, 100) for _ in configs]
    cs = build_curveset("toy", configs, curves, [np.full(6, 1.0 + i % 3) for i in range(12)], META, 6)
    schedule = FitSchedule(full_refits=2, full_steps=5, refine_steps=3, refit_fraction=0.0, stall_patience=3)

    def optimizer():
        return QuickTune.for_recorded(cs, delta_t=1, priors=Surrogate.new(cs.features.columns, seed=0),
                                      schedule=schedule, seed=0)  # fmt: skip

    def steps(opt, run, n, save_to=None):
        out = []
        for _ in range(n):
            s = opt.ask(run.pipelines(), BudgetStatus(run.budget_s, run.used_s))
            if save_to is not None:
                opt.save_state(save_to)
            run.step(s)
            out.append((s.pipeline_id, s.end_epoch))
        return out

    uninterrupted = steps(optimizer(), Replay(cs, 1e6), 14)

    run, first = Replay(cs, 1e6), optimizer()
    head = steps(first, run, 7, save_to=tmp_path)
    resumed = optimizer()
    assert resumed.load_state(tmp_path)
    assert (resumed._full_fits, resumed._fitted_n, resumed._since_best) == (
        first._full_fits, first._fitted_n, first._since_best
    )
    assert head + steps(resumed, run, 7) == uninterrupted
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [f"surrogate-{first._fitted_n:06d}"]
    assert not optimizer().load_state(tmp_path / "nothing")
