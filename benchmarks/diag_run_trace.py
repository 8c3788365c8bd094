"""Why did a real ``qtt tune`` run choose what it chose? Replays its asks from the results store.

For each step k of a finished Quick-Tune run, the run's optimizer (rebuilt as ``qtt resume`` does, from the
run's settings, pool seed and priors) is asked again with the pipelines as they stood before step k. The asks
are replayed in order from the first, so the refit schedule and its seeds are the run's, and the choice
should be the recorded one (printed side by side: a mismatch means the run is not reproducible, e.g. a
different code version). Printed per ask: the incumbent (best recorded accuracy), the four best-scored
candidates and every continued one, each with its predicted accuracy at the next fidelity (latent mean and
std, what equation 3 uses), the predicted seconds and the score; for continued pipelines also what was
recorded at their last epoch and the priors' own expectation of the next one (the learnt prior mean, which
sees the curve so far, with the GP conditioned on nothing): where the posterior follows it below the last
recorded value, the priors expect the curve to fall back.

CPU: one surrogate fit per ask, like the run itself (seconds each on the tiny hub).

    python benchmarks/diag_run_trace.py RUNDIR [--asks 12]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from diag_run_bias import rebuild, unconditioned


def states_before(records: list[dict], step: int) -> dict:
    """The pipelines as the tuner saw them before ``step`` (rows of earlier steps only)."""
    from qtt_cli.tuner.history import pipeline_state

    rows: dict[str, list[dict]] = {}
    for row in records:
        if row["step"] is not None and int(row["step"]) < step:
            rows.setdefault(str(row["pipeline_id"]), []).append(row)
    return {pid: pipeline_state(pid, group) for pid, group in rows.items()}


def trace(run: Path, asks: int) -> None:
    opt, _, rd = rebuild(run)
    records = list(rd.store.records())
    recorded = {int(r["step"]): str(r["pipeline_id"]) for r in records if r["step"] is not None}
    for k in range(min(asks, len(recorded))):
        pipelines = states_before(records, k)
        suggestion = opt.ask(pipelines, None)
        chose = _name(suggestion.pipeline_id if suggestion else None, pipelines)
        actual = _name(recorded.get(k), pipelines)
        model = getattr(opt, "_model", None)
        if model is None or not pipelines:
            print(f"ask {k}: chose {chose} (recorded {actual}); nothing observed")
            continue
        seen, cands = opt.layout.build(pipelines, opt)
        pred = model.predict(seen, cands.rows, cands.targets, cands.epochs)
        scores, _ = opt.scores(seen, cands, pred, None)
        scores = np.asarray(scores, dtype=np.float64)
        prior = unconditioned(model).predict(seen, cands.rows, cands.targets, cands.epochs)
        best = max(max(p.curve) for p in pipelines.values() if p.curve)
        print(f"ask {k}: chose {chose} (recorded {actual}), incumbent {best:.1f}")
        top = list(np.argsort(-scores)[:4])
        continued = [i for i, pid in enumerate(cands.pipeline_ids) if pid is not None and i not in top]
        for i in top + continued:
            pid = cands.pipeline_ids[i]
            line = (f"   {pid or 'new':6s} epoch {cands.epochs[i]}->{cands.targets[i]}: {pred.mean[i]:5.1f} +- "
                    f"{pred.std[i]:4.1f}, {pred.cost_s[i]:5.1f} s, score {scores[i]:.3g}")
            if pid is not None:
                line += (f"; epoch {cands.epochs[i]} recorded {pipelines[pid].curve[-1]:.1f}, priors expect "
                         f"{prior.mean[i]:.1f} next")
            print(line)


def _name(pid: str | None, pipelines: dict) -> str:
    if pid is None:
        return "-"
    return pid if pid in pipelines else f"{pid} (new)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--asks", type=int, default=12)
    args = parser.parse_args()
    trace(args.run, args.asks)


if __name__ == "__main__":
    main()
