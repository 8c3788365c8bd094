"""The `qtt` command line.

One setting of the process is made here, before anything imports torch: OpenMP threads that wait for work
sleep instead of spinning. On a CPU whose cores are shared (another job, a second qtt worker), spinning
threads of a small model's ops steal the time their own siblings need: one training batch of mobilevit_xxs at
32 px took 3.0 s with 2 spinning threads next to two busy loops, 0.53 s with passive waiting and 0.47 s with
one thread (`benchmarks/bench_threads.py`). A user's own OMP_WAIT_POLICY is kept.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
