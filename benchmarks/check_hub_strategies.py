"""Every finetuning strategy on one model of each architecture family of a hub: one real worker step each.

The suite trains the tiny hub's CNNs; the quicktune hub adds transformers (BEiT, DeiT 3, VOLO, XCiT, Swin V2),
ConvNeXt and large EfficientNets, on which strategies that reach into a model (DELTA's feature maps, BSS's
features, Co-Tuning's head, StochNorm's batch norms, layer decay's parameter groups, freezing, SPG's replicas)
meet other layouts. A failure here is a pipeline that a real search would lose. Random weights (offline),
digits at the model's input size (``--max-input-size`` caps what can be capped; models with a fixed input size
keep theirs, so the big transformers take minutes per step on a CPU: ``--models`` picks).

    python benchmarks/check_hub_strategies.py --hub quicktune --max-input-size 64
    python benchmarks/check_hub_strategies.py --models xcit_nano_12_p8_384.fb_dist_in1k --strategies delta bss
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))

STRATEGIES = {
    "plain": {},
    "linear-probing": {"linear_probing": True},
    "freeze-half": {"pct_to_freeze": 0.5},
    "layer-decay": {"layer_decay": 0.75},
    "stoch-norm": {"stoch_norm": True},
    "sp": {"sp_reg": 0.01},
    "delta": {"delta_reg": 0.01},
    "bss": {"bss_reg": 0.001},
    "cotuning": {"cotuning_reg": 0.5},
    "mixup-cutmix": {"mixup": 0.2, "cutmix": 0.2, "mixup_prob": 1.0},
    "spg": {"spg": True, "spg_modules": 2, "spg_drop": 0.2, "spg_cold_start": 1},
    "hvp": {"hvp_views": 2, "hvp_every": 1},
}


def one_per_family(names: list[str]) -> list[str]:
    """The smallest-listed model of each family (the name up to its first '_'), hubs list large to small."""
    chosen: dict[str, str] = {}
    for name in names:
        chosen[name.split("_")[0]] = name  # the later (smaller) one wins
    return list(chosen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hub", default="quicktune")
    parser.add_argument("--models", nargs="*", help="model names (default: one per family of the hub)")
    parser.add_argument("--strategies", nargs="*", choices=sorted(STRATEGIES), default=list(STRATEGIES))
    parser.add_argument("--max-input-size", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=4, help="digits per class (train and val split 1:1)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    args = parser.parse_args()

    import make_dataset

    from qtt_cli.data import build_cache, discover
    from qtt_cli.hub import load_hub, parse_weights
    from qtt_cli.space.config import PipelineConfig
    from qtt_cli.worker import FinetuneWorker

    models = args.models or one_per_family([spec.name for spec in load_hub(args.hub).models])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "digits"
        make_dataset.make_dataset("digits", data, layout="flat", per_class=args.per_class, seed=0)
        cache = build_cache(discover(data, val_fraction=0.5, seed=0), Path(tmp) / "cache", args.max_input_size)
        for model in models:
            for name in args.strategies:
                root = Path(tmp) / "ckpt" / model / name
                worker = FinetuneWorker(cache, parse_weights("random"), root, max_epochs=2,
                                        max_input_size=args.max_input_size, device=args.device)  # fmt: skip
                config = PipelineConfig(model=model, batch_size=4, lr=1e-3, opt="adamw", **STRATEGIES[name])
                started = time.perf_counter()
                result = worker.step("p", config, 0, 1)
                row = {"model": model, "strategy": name, "status": result.status, "error": result.error,
                       "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
                rows.append(row)
                print(f"{model:45s} {name:15s} {result.status:9s} {row['seconds']:7.1f}s {result.error or ''}",
                      flush=True)  # fmt: skip
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"{len(rows) - len(failed)} of {len(rows)} steps ok")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
