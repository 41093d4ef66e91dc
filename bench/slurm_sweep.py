"""What SLURM costs and gives, on the cluster this machine can reach (sinfo/sbatch):

    python bench/slurm_sweep.py [--partition debug] [--trials 12] [extra overrides ...]

1. The README's sweep (``-m model.latent=1,10 beta=1e-5,1``) through ``hydra/launcher=slurm``
   against the local joblib launcher (``hydra/launcher=local_parallel``, 2 jobs at once),
   same overrides, same warm data cache: the ratio is what submission and polling cost.
2. A ``--trials``-trial search (``hparams_search=dice_optuna``) run by
   ``sweeps/optuna_workers.sbatch`` with 2 array workers against 1 (``sbatch --wait``),
   each on a fresh journal study: the ratio is what a second worker gives.

Extra overrides go to every run (e.g. ``trainer.max_epochs=2 metrics=none`` to measure
the machinery rather than the training), ``--search`` ones to the search alone (with
``metrics=none``: ``--search objective=[mcu/int8/flash_bytes,val/loss] --search
hydra.sweeper.direction=[minimize,minimize]``). Prints each wall time and the ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from default_sweep import ROOT, report, run_sweep  # bench/ is the script's folder


def warm_cache(extra: list[str], root: str, data: str) -> None:
    env = {**os.environ, "TINYCVAE_ROOT": root, "TINYCVAE_DATA": data}
    subprocess.run(  # one job, untimed: the data (and the evaluator) cached for every run
        [sys.executable, str(ROOT / "src" / "train.py"), *extra],
        cwd=root, env=env, check=True, capture_output=True,
    )  # fmt: skip


def search(workers: int, trials: int, extra: list[str], root: str, data: str) -> float:
    env = {
        **os.environ, "TINYCVAE_ROOT": root, "TINYCVAE_DATA": data,
        "TINYCVAE_REPO": str(ROOT), "PYTHON": sys.executable, "WANDB_MODE": "offline",
    }  # fmt: skip
    cmd = ["sbatch", "--wait", f"--array=0-{workers - 1}"]
    cmd += [str(ROOT / "sweeps" / "optuna_workers.sbatch"), f"hydra.sweeper.n_trials={trials}"]
    start = time.perf_counter()
    proc = subprocess.run([*cmd, *extra], cwd=root, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    ran = len(list(Path(root).glob("logs/multiruns/dice_search_*/*/summary.json")))
    print(f"{' '.join(cmd)}: exit {proc.returncode}, {ran} trials, {took:.1f} s")
    if proc.returncode:
        print(proc.stderr[-2000:], file=sys.stderr)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partition", default="debug")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument(
        "--search", action="append", default=[], metavar="OVERRIDE",
        help="an override for the search only (repeat), e.g. objective=[...]",
    )  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    extra = args.overrides
    slurm = ["hydra/launcher=slurm", f"hydra.launcher.partition={args.partition}"]
    joblib = ["hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2"]
    with tempfile.TemporaryDirectory() as tmp:
        data = f"{tmp}/data"
        dirs = [f"{tmp}/{name}" for name in ("joblib", "slurm", "one", "two")]
        for d in dirs:
            os.makedirs(d)
        warm_cache(extra, dirs[0], data)
        local = run_sweep([*joblib, *extra], dirs[0], data)
        report(local)
        cluster = run_sweep([*slurm, *extra], dirs[1], data)
        report(cluster)
        one = search(1, args.trials, [*extra, *args.search], dirs[2], data)
        two = search(2, args.trials, [*extra, *args.search], dirs[3], data)
    print(
        f"README sweep: joblib {local['total']:.1f} s, SLURM {cluster['total']:.1f} s "
        f"(SLURM / joblib {cluster['total'] / local['total']:.2f}); {args.trials}-trial search: "
        f"1 worker {one:.1f} s, 2 workers {two:.1f} s (speed-up {one / two:.2f}); "
        f"{os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
