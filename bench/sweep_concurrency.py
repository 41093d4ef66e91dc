"""The README's sweep run one job at a time against several jobs at once, same machine,
same data cache.

    python bench/sweep_concurrency.py [--jobs 2] [--device cpu|cuda] [extra overrides ...]

First renders the dice and trains the evaluator into a shared data folder (outside the
timing), then times ``python src/train.py -m model.latent=1,10 beta=1e-5,1`` twice:
sequential (the basic launcher; each job takes every core) and concurrent
(``hydra/launcher=local_parallel hydra.launcher.n_jobs=<jobs>``; ``threads=auto`` gives
each job cores / jobs threads). On a GPU (``--device cuda``) the concurrent jobs share
the one GPU. Prints both wall times and the ratio sequential / concurrent.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from default_sweep import ROOT, report, run_sweep  # bench/ is the script's folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="jobs at once (joblib n_jobs)")
    parser.add_argument("--device", default="cpu", help="trainer.accelerator of every job")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs")
    args = parser.parse_args()
    extra = [f"trainer.accelerator={args.device}", *args.overrides]
    with tempfile.TemporaryDirectory() as data, tempfile.TemporaryDirectory() as a, \
            tempfile.TemporaryDirectory() as b:  # fmt: skip
        env = {**os.environ, "TINYCVAE_ROOT": a, "TINYCVAE_DATA": data}
        subprocess.run(  # the data and the evaluator, cached for both runs
            [sys.executable, str(ROOT / "src" / "evaluate.py"), *extra],
            cwd=a, env=env, check=True, capture_output=True,
        )  # fmt: skip
        sequential = run_sweep(extra, a, data)
        report(sequential)
        parallel = ["hydra/launcher=local_parallel", f"hydra.launcher.n_jobs={args.jobs}"]
        concurrent = run_sweep([*parallel, *extra], b, data)
        report(concurrent)
    print(
        f"sequential {sequential['total']:.1f} s, {args.jobs} jobs at once "
        f"{concurrent['total']:.1f} s: ratio {sequential['total'] / concurrent['total']:.2f} "
        f"(device {args.device}, {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
