"""Seconds per training batch of a small model at 32 px with 1 and 2 torch threads, with OpenMP threads that
spin (the default) or sleep (OMP_WAIT_POLICY=PASSIVE, what `qtt` sets), optionally next to busy loops that
share the cores. Each setting runs in its own process (the wait policy is read when OpenMP starts).

    python benchmarks/bench_threads.py [--model mobilevit_xxs.cvnets_in1k] [--hogs 2] [--batches 10]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys

CHILD = """
import sys, time, torch, timm
torch.set_num_threads(int(sys.argv[1]))
m = timm.create_model(sys.argv[2], pretrained=False, num_classes=10)
opt = torch.optim.AdamW(m.parameters())
x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
def run(n):
    t = time.perf_counter()
    for _ in range(n):
        opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
    return time.perf_counter() - t
run(2)
print(run(int(sys.argv[3])) / int(sys.argv[3]))
"""


def _hog() -> None:
    while True:
        pass


def measure(threads: int, policy: str, model: str, batches: int) -> float:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), model, str(batches)], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilevit_xxs.cvnets_in1k")
    parser.add_argument("--hogs", type=int, default=2, help="busy loops beside the measurement")
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    results = {}
    for hogs in (0, args.hogs):
        procs = [mp.Process(target=_hog, daemon=True) for _ in range(hogs)]
        for p in procs:
            p.start()
        try:
            for policy in ("ACTIVE", "PASSIVE"):
                for threads in (1, 2):
                    results[f"hogs={hogs} {policy} threads={threads}"] = measure(threads, policy, args.model,
                                                                                 args.batches)
        finally:
            for p in procs:
                p.terminate()
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:.3f} s/batch")
    print(json.dumps({"model": args.model, "s_per_batch": results}))


if __name__ == "__main__":
    main()
