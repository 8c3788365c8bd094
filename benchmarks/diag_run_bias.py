"""Are the priors' expectations biased on a real run, and does the search correct the bias?

The GP's prior mean is learnt on the meta-dataset (``MeanNet``); the run can only shift it through the GP's
constant mean, refitted at the priors' slow rate. If a dataset (or a run with random weights) sits far from
what the meta-data leads the priors to expect, the posterior of a configuration unlike every observed one
falls back to that expectation: too high, and unstarted configurations keep looking better than the
pipelines the run has measured; too low, and they look worse. This script measures it on a finished
``qtt tune`` run of the ``quicktune`` optimizer:

* **priors, nothing observed**: each started pipeline's predicted first epoch vs its recorded first epoch;
* **fitted, at the end**: the run's last fitted predictors (``RUNDIR/optimizer``), conditioned on everything
  the run observed, on the same first epochs (in-sample) and on the still unstarted pool.

Printed: means in accuracy points, the mean bias (recorded minus predicted) and the GP's constant offset.
Light on CPU (a few predictions); reads the run directory only.

    python benchmarks/diag_run_bias.py RUNDIR [RUNDIR ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def rebuild(run: Path):
    """The run's Quick-Tune (pool, meta-features, priors) and its pipelines, as ``qtt resume`` rebuilds them."""
    from qtt_cli.data.meta import MetaFeatures
    from qtt_cli.hub import load_hub
    from qtt_cli.space import build_space, load_space
    from qtt_cli.store import RunDir
    from qtt_cli.tuner.history import History
    from qtt_cli.tuner.settings import TuneSettings
    from qtt_cli.tuner.tuner import make_optimizer, resolve_hub_name

    rd = RunDir(run)
    info = rd.read_run()
    settings = TuneSettings.from_json(info["settings"], out=str(run))
    if settings.optimizer != "quicktune":
        raise SystemExit(f"{run}: optimizer {settings.optimizer!r}, not quicktune")
    hub = load_hub(resolve_hub_name(settings.hub))
    space = load_space(settings.space_file, hub.names) if settings.space_file else build_space(hub.names)
    features = MetaFeatures(**info["meta_features"]).as_list()  # the meta-dataset's order, not run.json's
    opt = make_optimizer(settings, space, hub=hub, meta_features=features)
    return opt, History(rd.store).states(), rd


def unconditioned(model):
    """A copy of ``model`` whose GP conditions on nothing: its predictions are the learnt prior mean (which still
    sees each input's curve prefix)."""
    prior = model.copy()
    prior.hyper["max_context"] = 0
    return prior


def first_epochs(opt, pipelines: dict, model) -> np.ndarray:
    """The predicted first epoch of every started pipeline (rows in ``pipelines`` order)."""
    seen, _ = opt.layout.build(pipelines, opt)
    rows = np.arange(len(pipelines), dtype=np.int64)
    pred = model.predict(seen, rows, np.ones(len(rows), dtype=np.int64), np.zeros(len(rows), dtype=np.int64))
    return np.asarray(pred.mean, dtype=np.float64)


def report(run: Path) -> None:
    opt, pipelines, rd = rebuild(run)
    pipelines = {pid: p for pid, p in pipelines.items() if p.curve}
    recorded = np.array([p.curve[0] for p in pipelines.values()])
    prior_pred = first_epochs(opt, pipelines, unconditioned(opt._start))
    loaded = opt.load_state(rd.optimizer) if rd.optimizer.is_dir() else False
    print(f"{run}: {len(recorded)} pipelines started, recorded first epoch {recorded.mean():.1f} "
          f"(best {recorded.max():.1f})")
    print(f"  priors, nothing observed:  predicted {prior_pred.mean():.1f}, bias {np.mean(recorded - prior_pred):+.1f}"
          f" points, rank corr {_spearman(prior_pred, recorded):+.2f}")
    model = getattr(opt, "_model", None)
    if not loaded or model is None:
        print("  (no fitted predictors saved in the run)")
        return
    fitted_pred = first_epochs(opt, pipelines, model)
    seen, cands = opt.layout.build(pipelines, opt)
    fresh = np.array([pid is None for pid in cands.pipeline_ids])
    pool = model.predict(seen, cands.rows[fresh], cands.targets[fresh], cands.epochs[fresh])
    offset = float(model.nets.gp.mean_module.constant.detach()) if hasattr(model, "nets") else float("nan")
    print(f"  fitted at the end:         predicted {fitted_pred.mean():.1f} on the started (in-sample), "
          f"bias {np.mean(recorded - fitted_pred):+.1f}; unstarted pool predicted "
          f"{np.mean(pool.mean):.1f} (max {np.max(pool.mean):.1f}); GP constant offset {offset:+.4f}")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0]) if len(a) > 2 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    for run in parser.parse_args().runs:
        report(run)


if __name__ == "__main__":
    main()
