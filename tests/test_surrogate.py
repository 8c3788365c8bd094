"""The predictors (qtt_cli.surrogate): deep-kernel GP + cost MLP, persistence, meta-training, priors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from qtt_cli.cli.app import app
from qtt_cli.hub import load_hub
from qtt_cli.metadataset import (
    CurveSet,
    build_curveset,
    hub_model_columns,
    load_meta_dataset,
    without_degenerate,
    write_meta_dataset,
)
from qtt_cli.space import TABLE_COLUMNS, build_space, sample_configs
from qtt_cli.surrogate import (
    PRIORS_DIR,
    Surrogate,
    SurrogateFileError,
    describe_priors,
    load_priors,
    meta_train,
)

META_DATASET = Path(__file__).resolve().parents[2] / "shared/data/quicktune-extended"
QUICKTUNE = load_hub("quicktune")
TINY = load_hub("tiny")
TINY_MODELS = [TINY.table_names.get(m, m) for m in TINY.names]


def _synthetic(name: str, n: int, seed: int, *, num_samples: int = 2000, max_epochs: int = 8) -> CurveSet:
    """Curves with structure a predictor can learn: the final accuracy depends on the model and on the
    distance of log10(lr) from -3; curves rise as 1 - exp(-t/2); an epoch costs a model-specific number of
    seconds proportional to the dataset size."""
    rng = np.random.default_rng(seed)
    configs = sample_configs(build_space(TINY.names), n, seed=seed)
    model_skill = {m: 40 + 8 * i for i, m in enumerate(TINY.names)}
    model_cost = {m: 2.0 * (i + 1) for i, m in enumerate(TINY.names)}
    curves, costs = [], []
    for c in configs:
        final = model_skill[c.model] - 12 * abs(np.log10(c.lr) + 3)
        k = int(rng.integers(1, max_epochs + 1))
        t = np.arange(1, k + 1)
        curves.append(np.clip(final * (1 - np.exp(-t / 2)) + rng.normal(0, 1, k), 0, 100))
        costs.append(model_cost[c.model] * num_samples / 1000 * rng.uniform(0.9, 1.1, k))
    return build_curveset(
        name, configs, curves, costs, [num_samples, 10, 64, 3], max_epochs,
        config_ids=[f"{name}-{i}" for i in range(n)], model_names_map=TINY.table_names, model_column_names=TINY_MODELS,
    )  # fmt: skip


@pytest.fixture(scope="module")
def synthetic() -> list[CurveSet]:
    return [_synthetic(f"d{i}", 60, seed=i, num_samples=1000 * (i + 1)) for i in range(6)]


def test_save_then_load_gives_identical_predictions(tmp_path, synthetic):
    surrogate = Surrogate.new(synthetic[0].features.columns, seed=1)
    surrogate.fit(synthetic[:2], steps=15)
    cs = synthetic[2]
    rows = np.arange(len(cs))
    start = np.minimum(cs.lengths, 3)
    before = surrogate.predict(cs, rows, start + 2, start)
    surrogate.save(tmp_path)
    loaded = Surrogate.load(tmp_path)
    after = loaded.predict(cs, rows, start + 2, start)
    np.testing.assert_array_equal(before.mean, after.mean)
    np.testing.assert_array_equal(before.std, after.std)
    np.testing.assert_array_equal(before.cost_s, after.cost_s)
    assert loaded.layout == surrogate.layout and loaded.scaler == surrogate.scaler
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))
    assert json.loads((tmp_path / "surrogate.json").read_text())["layout"]["model_columns"][-1] == (
        "cat:model:lcnet_050.ra2_in1k"
    )


def test_load_refuses_a_directory_without_a_surrogate(tmp_path):
    with pytest.raises(SurrogateFileError, match="holds no surrogate"):
        Surrogate.load(tmp_path)
    (tmp_path / "surrogate.safetensors").write_bytes(b"junk")
    (tmp_path / "surrogate.json").write_text('{"format": "something else"}')
    with pytest.raises(SurrogateFileError, match="not a qtt-surrogate"):
        Surrogate.load(tmp_path)


def test_load_names_a_setting_it_does_not_know_instead_of_failing_with_a_traceback(synthetic, tmp_path):
    Surrogate.new(synthetic[0].features.columns, seed=0).save(tmp_path)
    config = json.loads((tmp_path / "surrogate.json").read_text())
    config["hyper"]["mean"] = "from-the-future"
    (tmp_path / "surrogate.json").write_text(json.dumps(config))
    with pytest.raises(SurrogateFileError, match="from-the-future"):
        Surrogate.load(tmp_path)


def test_cost_predictions_are_positive_seconds(synthetic):
    surrogate = Surrogate.new(synthetic[0].features.columns, seed=0)
    surrogate.fit(synthetic[:3], steps=250, lr=3e-3)
    cs = synthetic[1]  # 2000 images: an epoch of model i costs 4 * (i + 1) seconds
    truth = np.array([4.0 * (TINY.names.index(c.model) + 1) for c in _configs(cs)])
    rows = np.arange(len(cs))
    one = surrogate.predict(cs, rows, np.ones(len(cs), int), np.zeros(len(cs), int)).cost_s
    three = surrogate.predict(cs, rows, np.full(len(cs), 3), np.zeros(len(cs), int)).cost_s
    assert (one > 0).all() and (three > 0).all()
    ratio = one / truth
    assert np.median(np.abs(np.log(ratio))) < np.log(1.5), f"predicted/true cost ratios {np.round(ratio, 2)}"
    np.testing.assert_allclose(three / one, 3.0, rtol=0.25)  # three epochs cost about three times one


def _configs(cs: CurveSet):
    from qtt_cli.space import decode

    return [decode(row, TINY.table_names) for _, row in cs.features.iterrows()]


def test_gp_mean_moves_toward_an_observed_curve(synthetic):
    surrogate = Surrogate.new(synthetic[0].features.columns, seed=0)
    cs = synthetic[0]
    empty = cs.with_observations([np.zeros(0)] * len(cs), [np.zeros(0)] * len(cs))
    prior = surrogate.predict(empty, [0], [6], [0])
    curve = np.array([90.0, 91.0, 92.0, 93.0, 94.0])
    observed = list(empty.curves)
    observed[0] = curve
    costs = list(empty.costs)
    costs[0] = np.ones(5)
    posterior = surrogate.predict(empty.with_observations(observed, costs), [0], [6], [5])
    assert abs(posterior.mean[0] - 94) < abs(prior.mean[0] - 94) - 10
    assert posterior.std[0] < prior.std[0]
    assert posterior.std[0] > 0


def test_every_model_column_reaches_the_feature_extractor(synthetic):
    columns = list(TABLE_COLUMNS) + [f"cat:model:{m}" for m in TINY_MODELS if f"cat:model:{m}" not in TABLE_COLUMNS]
    surrogate = Surrogate.new(columns, seed=0)
    layout, cs = surrogate.layout, synthetic[0]
    x = torch.from_numpy(layout.rows(cs, surrogate.scaler, np.zeros(4, int), np.ones(4), np.zeros(4, int)))
    x.requires_grad_(True)
    surrogate.nets.gp.feature_extractor(x).square().sum().backward()
    grad = x.grad[:, layout.slices["model"]].abs().sum(dim=0)
    assert len(grad) == 27  # 24 table models + the tiny hub's 3 others
    assert (grad > 0).all(), f"model columns without influence: {np.flatnonzero(grad.numpy() == 0)}"


def test_with_columns_adds_zero_embeddings_that_training_moves(synthetic):
    table_only = Surrogate.new(list(TABLE_COLUMNS), seed=0)
    table_only.fit(synthetic[:1][:0] or [_table_models_only(synthetic[0])], steps=5)
    cs = synthetic[0]
    extended = table_only.with_columns(cs.features.columns)
    assert table_only.unknown_models(cs.features.columns) == [
        "cat:model:tf_efficientnet_lite0.in1k", "cat:model:mobilenetv3_small_050.lamb_in1k",
        "cat:model:lcnet_050.ra2_in1k",
    ]  # fmt: skip
    assert extended.covers(cs.features.columns) and not table_only.covers(cs.features.columns)
    weight = extended.nets.gp.feature_extractor.model_embedding.weight
    assert weight.shape[1] == 27 and torch.count_nonzero(weight[:, 24:]) == 0
    # rows of models both know get the same predictions
    known = _table_models_only(cs)
    rows = np.arange(len(known))
    a = table_only.predict(known, rows, np.ones(len(known), int), np.zeros(len(known), int))
    b = extended.predict(known, rows, np.ones(len(known), int), np.zeros(len(known), int))
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-5)
    extended.fit([cs], steps=5, lr=1e-2)
    assert torch.count_nonzero(extended.nets.gp.feature_extractor.model_embedding.weight[:, 24:]) > 0
    with pytest.raises(ValueError, match="with_columns"):
        table_only.predict(cs, rows, np.ones(len(rows), int), np.zeros(len(rows), int))


def _table_models_only(cs: CurveSet) -> CurveSet:
    rows = [i for i, m in enumerate(cs.model_names()) if f"cat:model:{m}" in TABLE_COLUMNS]
    sub = cs.subset(rows)
    return CurveSet(sub.name, sub.config_ids, sub.features[list(TABLE_COLUMNS)], sub.curves, sub.costs,
                    sub.meta_features, sub.max_epochs)  # fmt: skip


def test_predict_validates_its_requests(synthetic):
    surrogate = Surrogate.new(synthetic[0].features.columns)
    with pytest.raises(ValueError, match="from_epochs < target_epochs"):
        surrogate.predict(synthetic[0], [0], [2], [2])
    with pytest.raises(ValueError, match="index"):
        surrogate.predict(synthetic[0], [999], [2], [1])


def test_meta_training_lowers_held_out_nll(synthetic):
    surrogate, report = meta_train(synthetic[:4], synthetic[4:], iterations=150, batch_size=128, lr=3e-3,
                                   eval_every=50, patience=3, seed=0)  # fmt: skip
    untrained = Surrogate.new(surrogate.layout.model_columns + list(TABLE_COLUMNS), scaler=surrogate.scaler)
    assert report["best_iteration"] > 0
    assert report["best_val_nll"] < report["untrained_val_nll"] - 0.5, report["val_nll_curve"]
    assert surrogate.nll(synthetic[4:]) == pytest.approx(report["best_val_nll"])
    assert surrogate.nll(synthetic[4:]) < untrained.nll(synthetic[4:]) - 0.5


def test_meta_training_on_real_curves_lowers_held_out_nll():
    if not (META_DATASET / "table.csv").is_file():
        pytest.skip(f"Quick-Tune meta-dataset not found at {META_DATASET} (it lives in ../shared next to the repo)")
    sets = load_meta_dataset(META_DATASET, datasets=["APL", "BCT", "FLW", "MED_LF", "PNU", "TEX_DTD"])
    surrogate, report = meta_train(sets[:4], sets[4:], iterations=200, eval_every=100, patience=2, seed=0)
    assert report["best_val_nll"] < report["untrained_val_nll"] - 0.5, report["val_nll_curve"]
    assert surrogate.covers(hub_model_columns(QUICKTUNE))


def test_priors_coverage_rule(tmp_path, synthetic):
    Surrogate.new(list(TABLE_COLUMNS)).save(tmp_path)
    full = load_priors(hub_model_columns(QUICKTUNE), tmp_path)
    assert full is not None and full.covers(hub_model_columns(QUICKTUNE))
    assert "cover all 24 models" in describe_priors(hub_model_columns(QUICKTUNE), tmp_path)
    partial = load_priors(hub_model_columns(TINY), tmp_path)
    assert partial is not None and partial.covers(hub_model_columns(TINY))
    assert partial.info["untrained_models"] == [m for m in TINY_MODELS if f"cat:model:{m}" not in TABLE_COLUMNS]
    assert "know 3 of the hub's 6 models" in describe_priors(hub_model_columns(TINY), tmp_path)
    assert load_priors(["cat:model:resnet18.a1_in1k"], tmp_path) is None
    assert "not used" in describe_priors(["cat:model:resnet18.a1_in1k"], tmp_path)
    assert load_priors(hub_model_columns(QUICKTUNE), tmp_path / "none") is None


def test_shipped_priors_cover_the_quicktune_hub_and_beat_untrained():
    priors = load_priors(hub_model_columns(QUICKTUNE))
    assert priors is not None, f"no priors in {PRIORS_DIR}"
    assert priors.covers(hub_model_columns(QUICKTUNE))
    report = priors.info["meta_training"]
    assert report["best_val_nll"] < report["untrained_val_nll"]
    if (META_DATASET / "table.csv").is_file():
        from qtt_cli.metadataset import without_degenerate

        val = [without_degenerate(cs) for cs in load_meta_dataset(META_DATASET, datasets=report["val_datasets"])]
        assert priors.nll(val) == pytest.approx(report["best_val_nll"], abs=1e-3)


def test_meta_train_command(tmp_path, synthetic):
    data = tmp_path / "meta"
    write_meta_dataset(synthetic[:4], data)
    out = tmp_path / "priors"
    args = ["--iterations", "20", "--eval-every", "10", "--val-datasets", "1", "--json"]
    result = CliRunner().invoke(app, ["meta-train", "--meta-dataset", str(data), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["val_datasets"]) == 1 and report["iterations_run"] == 20
    assert Surrogate.load(out).covers(synthetic[0].features.columns)
    bad = CliRunner().invoke(app, ["meta-train", "--meta-dataset", str(tmp_path), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "not a Quick-Tune meta-dataset" in bad.output
    assert not (tmp_path / "x").exists()


def test_priors_learn_from_the_run_what_spg_and_hvp_do():
    """The shipped priors never saw SPG or HVP: extended with the method columns they predict a pipeline
    with a method exactly like the same pipeline without it, and a refit on a run where SPG pipelines did
    badly makes them predict SPG pipelines lower."""
    import dataclasses

    from qtt_cli.space.encoding import METHOD_COLUMNS

    columns = [*hub_model_columns(TINY), *METHOD_COLUMNS]
    priors = load_priors(columns)
    assert priors is not None and priors.layout.method_columns == ["linear_probing", *METHOD_COLUMNS]
    plain_priors = load_priors(hub_model_columns(TINY))
    assert plain_priors.layout.method_columns == ["linear_probing"]  # the shipped file embeds no SPG/HVP

    base = sample_configs(build_space(TINY.names), 40, seed=3)
    spg = dict(spg=True, spg_modules=2, spg_drop=0.2, spg_cold_start=0)
    configs = [dataclasses.replace(c, **spg) if i % 2 else c for i, c in enumerate(base)]
    curves = [np.full(3, 15.0 if c.spg else 75.0) + np.arange(3) for c in configs]

    def curveset(cfgs, crv):
        return build_curveset(
            "run", cfgs, crv, [np.ones(len(c)) for c in crv], [1000, 10, 32, 3], 8,
            model_names_map=TINY.table_names, model_column_names=TINY_MODELS,
        )  # fmt: skip

    fresh = sample_configs(build_space(TINY.names), 6, seed=99)
    pairs = curveset([*fresh, *(dataclasses.replace(c, **spg) for c in fresh)], [np.zeros(0)] * 12)
    rows, ones, zeros = np.arange(12), np.ones(12, int), np.zeros(12, int)
    before = priors.predict(pairs, rows, ones, zeros).mean
    np.testing.assert_allclose(before[:6], before[6:], rtol=1e-6)  # zero embedding: SPG changes nothing yet
    np.testing.assert_allclose(before, plain_priors.predict(pairs, rows, ones, zeros).mean, rtol=1e-5)

    run = curveset(configs, curves)
    priors.fit([run], steps=100, lr=1e-4, seed=0)  # what QuickTune refits priors with
    # predict the fresh pairs in the context of the run (as QuickTune does): its observations + the pairs
    both = build_curveset(
        "run", [*configs, *fresh, *(dataclasses.replace(c, **spg) for c in fresh)], [*curves, *[np.zeros(0)] * 12],
        [*(np.ones(len(c)) for c in curves), *[np.zeros(0)] * 12], [1000, 10, 32, 3], 8,
        model_names_map=TINY.table_names, model_column_names=TINY_MODELS,
    )  # fmt: skip
    after = priors.predict(both, np.arange(40, 52), ones, zeros).mean
    assert (after[:6] - after[6:]).mean() > 15  # SPG twins now predicted far below (the run: 60 points)
    assert torch.count_nonzero(priors.nets.gp.feature_extractor.method_embedding) > 0


# --- issue 10: clean priors, latent EI, fixed fidelity scale --------------------------------------------------


def _twins(hub, n: int = 20, seed: int = 1):
    """``n`` configurations fully finetuned, then the same ``n`` with linear probing, nothing observed."""
    import dataclasses

    full = [dataclasses.replace(c, linear_probing=False) for c in sample_configs(build_space(hub.names), n, seed=seed)]
    probing = [dataclasses.replace(c, linear_probing=True) for c in full]
    models = [hub.table_names.get(m, m) for m in hub.names]
    return build_curveset(
        "twins", full + probing, [np.zeros(0)] * (2 * n), [np.zeros(0)] * (2 * n), [5000, 20, 128, 3], 50,
        model_names_map=hub.table_names, model_column_names=models,
    )  # fmt: skip


def test_shipped_priors_predict_linear_probing_cost_within_a_plausible_ratio_of_its_finetuned_twin():
    """The meta-dataset's linear-probing records are broken runs (one epoch, near chance, mostly almost free);
    priors that learnt them predicted a linear-probing epoch ~25x (up to 300x) cheaper than the same pipeline
    finetuned. A linear probe skips the backbone's backward pass but not its forward pass: between 1/5 and 2x."""
    priors = load_priors(hub_model_columns(QUICKTUNE))
    twins = _twins(QUICKTUNE)
    n = len(twins) // 2
    pred = priors.predict(twins, np.arange(2 * n), np.ones(2 * n, int), np.zeros(2 * n, int))
    ratio = pred.cost_s[n:] / pred.cost_s[:n]
    assert ratio.min() >= 0.2 and ratio.max() <= 2.0, ratio
    assert "linear_probing" in priors.layout.method_columns  # learnt from the run, starting at zero


def test_degenerate_records_are_the_single_epoch_linear_probes(synthetic):
    import dataclasses

    from qtt_cli.metadataset import degenerate_rows

    cs = synthetic[0]
    configs = [dataclasses.replace(c, linear_probing=i < 5) for i, c in enumerate(_configs(cs))]
    curves = [np.array([2.0]) if i < 3 else (np.array([5.0, 30.0]) if i < 5 else c) for i, c in enumerate(cs.curves)]
    costs = [np.full(len(c), 0.1) for c in curves]
    probes = build_curveset(
        "probes", configs, curves, costs, cs.meta_features, cs.max_epochs,
        model_names_map=TINY.table_names, model_column_names=TINY_MODELS,
    )  # fmt: skip
    assert degenerate_rows(probes).tolist() == [0, 1, 2]  # a linear probe recorded for two epochs is kept
    assert len(without_degenerate(probes)) == len(probes) - 3
    clean = without_degenerate(probes)
    assert without_degenerate(clean) is clean


def test_acquisition_std_is_the_latent_posterior_without_the_observation_noise(synthetic):
    """A configuration observed many times at an epoch is known there: its latent std shrinks far below the
    learnt observation noise, while the predictive std of a new observation stays above it."""
    surrogate = Surrogate.new(synthetic[0].features.columns, seed=0)
    surrogate.fit(synthetic[:2], steps=30)
    cs = synthetic[0]
    row = int(np.argmax(cs.lengths))
    noise_std = float(surrogate.nets.likelihood.noise.detach().sqrt()) * 100
    k = int(cs.lengths[row])
    latent = surrogate.predict(cs, np.array([row]), np.array([k]), np.array([k - 1]))
    noisy = surrogate.predict(cs, np.array([row]), np.array([k]), np.array([k - 1]), observation_noise=True)
    assert noisy.std[0] >= noise_std - 1e-6
    assert latent.std[0] < noisy.std[0]
    np.testing.assert_allclose(latent.mean, noisy.mean)
    assert latent.std[0] ** 2 == pytest.approx(noisy.std[0] ** 2 - noise_std**2, rel=1e-3, abs=1e-6)


def test_a_prediction_at_epoch_k_does_not_depend_on_the_runs_max_epochs(synthetic):
    """The priors learnt epoch / 50 (the meta-dataset's limit); a run with --max-epochs 10 must show them
    epoch 2 as 2/50, not 2/10. The scale is stored with the surrogate."""
    import dataclasses

    priors = load_priors(hub_model_columns(TINY))
    assert priors.layout.fidelity_scale == 50
    cs = synthetic[0]
    rows = np.flatnonzero(cs.lengths >= 3)[:10]
    short, long_ = dataclasses.replace(cs, max_epochs=10), dataclasses.replace(cs, max_epochs=50)
    target, seen = np.full(len(rows), 3), np.full(len(rows), 2)
    a = priors.with_columns(cs.features.columns)
    p10 = a.predict(short, rows, target, seen)
    p50 = a.predict(long_, rows, target, seen)
    np.testing.assert_allclose(p10.mean, p50.mean)
    np.testing.assert_allclose(p10.std, p50.std)
    np.testing.assert_allclose(p10.cost_s, p50.cost_s)


def test_meta_training_stores_the_fidelity_scale_of_its_data(synthetic, tmp_path):
    surrogate, _ = meta_train(synthetic[:3], synthetic[3:4], iterations=5, eval_every=5)
    assert surrogate.layout.fidelity_scale == synthetic[0].max_epochs == 8
    surrogate.save(tmp_path)
    assert Surrogate.load(tmp_path).layout.fidelity_scale == 8


def test_a_search_refit_lets_the_observation_noise_follow_the_runs_own_curves(synthetic):
    """Priors learnt where accuracy jitters by 6 points (the shipped priors' noise); a run whose curves jitter by
    0.2 point. At the search's refit rate (1e-4) the noise stays the priors'; with ``noise_lr`` it falls toward
    the run's, and so does the latent spread of a plateaued pipeline's next epoch (the spread that, divided by
    a small cost, kept plateaus running)."""
    priors = Surrogate.new(synthetic[0].features.columns, seed=0)
    priors.fit(synthetic[:3], steps=20)
    priors.nets.likelihood.noise = torch.tensor(0.06**2)
    rng = np.random.default_rng(0)
    configs = sample_configs(build_space(TINY.names), 8, seed=5)
    curves = [np.clip(60 + 10 * (i % 3) + rng.normal(0, 0.2, 12), 0, 100) for i in range(len(configs))]
    costs = [np.full(12, 3.0) for _ in configs]
    run = build_curveset("run", configs, curves, costs, [1000, 10, 64, 3], 50, model_names_map=TINY.table_names,
                         model_column_names=TINY_MODELS)  # fmt: skip

    def after_refit(**kwargs) -> tuple[float, float]:
        model = priors.copy()
        model.fit([run], steps=100, lr=1e-4, seed=0, **kwargs)
        latent = model.predict(run, np.array([0]), np.array([13]), np.array([12]))
        return float(model.nets.likelihood.noise.detach().sqrt()) * 100, float(latent.std[0])

    slow_noise, slow_std = after_refit()
    fast_noise, fast_std = after_refit(noise_lr=1e-2)
    assert slow_noise > 5.5
    assert fast_noise < 0.7 * slow_noise
    assert fast_std < slow_std


def test_horizon_batch_targets_lie_past_each_configurations_cut_and_see_only_its_prefix(synthetic):
    from qtt_cli.surrogate.features import observations
    from qtt_cli.surrogate.surrogate import curve_batch, horizon_batch

    surrogate = Surrogate.new(synthetic[0].features.columns)
    obs = observations(synthetic[1], surrogate.layout, surrogate.scaler)
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = curve_batch(obs, rng, 64)
        rows, taus = horizon_batch(obs, idx, rng)
        configs_in_batch = set(obs.config_rows[idx].tolist())
        lengths = np.bincount(obs.config_rows, minlength=len(synthetic[1]))
        fresh = 0
        for row, tau in zip(rows, taus, strict=True):
            config, cut = obs.config_rows[row], obs.epochs[row] - 1  # the row holding the prefix 1..cut
            assert cut < tau <= lengths[config]
            target = row + tau - obs.epochs[row]
            assert obs.config_rows[target] == config and obs.epochs[target] == tau
            if config in configs_in_batch:  # cut where the batch cut it: its epochs 1..cut are in the batch
                assert np.sum(obs.config_rows[idx] == config) == cut
            else:
                fresh += 1
                assert cut == 0  # an unstarted configuration
        assert 1 <= fresh <= max(1, len(configs_in_batch) // 4)


def _slow_starters(name: str, n: int, seed: int, num_samples: int) -> CurveSet:
    """Curves that sit near 10 % for their first epochs and then climb, late, to a final accuracy set by the
    distance of log10(lr) from -3 (the shape of the meta-dataset's slow starters); 1-20 epochs recorded."""
    rng = np.random.default_rng(seed)
    configs = sample_configs(build_space(TINY.names), n, seed=seed)
    curves, costs = [], []
    for c in configs:
        final = 90 - 15 * abs(np.log10(c.lr) + 3)
        t = np.arange(1, int(rng.integers(1, 21)) + 1)
        curves.append(np.clip(10 + (final - 10) / (1 + np.exp(-(t - 8))) + rng.normal(0, 1, len(t)), 0, 100))
        costs.append(np.full(len(t), 2.0))
    return build_curveset(
        name, configs, curves, costs, [num_samples, 10, 64, 3], 20, config_ids=[f"{name}-{i}" for i in range(n)],
        model_names_map=TINY.table_names, model_column_names=TINY_MODELS,
    )  # fmt: skip


def test_far_epoch_targets_teach_the_priors_that_slow_starters_climb():
    """Trained on next-epoch targets only, the networks never see an epoch more than one past its prefix: a
    prediction at a later epoch is extrapolation, and a slow starter's flat first epochs say it stays flat.
    With far-epoch targets (the default) the held-out likelihood of later epochs is far better (5.59 ->
    -0.26), the next epoch's about the same (-1.80 -> -1.69).

    600 iterations: with the mean predicting the change from a curve's last value (``MeanNet``), a flat
    prefix followed by a late climb needs a large change far out and none at the next epoch, and one change
    head learns to tell them apart slowly (after 150 iterations the far targets had made the next epoch
    worse, and early stopping kept the untrained weights). A mean predicting levels got there sooner and
    further out (far-epoch error 4.8 against 12.9 points here); the search asks only next-step predictions
    of started pipelines, where the change form is the better one (``test_shipped_priors_expect_a_climbing_
    curve_to_keep_climbing``)."""
    sets = [_slow_starters(f"d{i}", 60, seed=i, num_samples=1000 * (i + 1)) for i in range(6)]
    scores = {}
    for horizon in (False, True):
        surrogate, _ = meta_train(sets[:4], sets[4:], iterations=600, batch_size=128, lr=3e-3, eval_every=50,
                                  patience=30, seed=0, hyper={"horizon_targets": horizon})  # fmt: skip
        scores[horizon] = surrogate.evaluate(sets[4:])
    assert scores[True]["nll_horizon"] < scores[False]["nll_horizon"] - 0.5, scores
    assert scores[True]["mae_horizon"] < scores[False]["mae_horizon"], scores
    assert scores[True]["nll"] < scores[False]["nll"] + 0.25, scores


def test_the_learnt_prior_mean_ranks_configurations_the_run_has_not_observed(synthetic):
    """With a constant prior mean, what the priors know about a configuration reaches a prediction only
    through its covariance with the run's observations: before the first one, every configuration is
    predicted alike. The learnt mean (the default) carries the meta-data's expectation: on a held-out
    dataset, with nothing observed, it ranks the configurations by their final accuracy (which depends on
    the model and the learning rate alike on every synthetic dataset): rank correlation 0.81, 0.84, 0.78
    with meta-training seeds 0, 1, 2."""
    held_out = synthetic[5]
    rows = np.flatnonzero(held_out.lengths > 0)
    nothing = held_out.with_observations([np.zeros(0)] * len(held_out), [np.zeros(0)] * len(held_out))
    final = np.array([held_out.curves[r][-1] for r in rows])
    predicted = {}
    for mean in ("constant", "learnt"):
        surrogate, _ = meta_train(synthetic[:4], synthetic[4:5], iterations=150, batch_size=128, lr=3e-3,
                                  eval_every=50, patience=3, seed=0, hyper={"mean": mean})  # fmt: skip
        epochs = held_out.lengths[rows]
        predicted[mean] = surrogate.predict(nothing, rows, epochs, np.zeros(len(rows), int)).mean
    assert np.ptp(predicted["constant"]) < 1e-6  # alike: the constant mean, the same prior variance
    rank = np.corrcoef(np.argsort(np.argsort(predicted["learnt"])), np.argsort(np.argsort(final)))[0, 1]
    assert rank > 0.6, rank


def test_meta_training_holds_the_gp_offset_at_zero_and_a_search_refit_moves_it(synthetic):
    """With a learnt mean, the GP's constant is one dataset's offset from the meta-data's expectation.
    Left free in meta-training it drifted with the last datasets seen (+0.2, i.e. 20 points, on the real
    meta-dataset) and moved every prediction of the priors; a search's refit must still learn it."""
    surrogate, _ = meta_train(synthetic[:4], synthetic[4:5], iterations=60, batch_size=128, lr=3e-3,
                              eval_every=20, patience=3, seed=0)  # fmt: skip
    constant = surrogate.nets.gp.mean_module.constant
    assert constant.item() == 0.0
    surrogate.fit([synthetic[5]], steps=20, lr=3e-3)
    assert abs(constant.item()) > 1e-3
