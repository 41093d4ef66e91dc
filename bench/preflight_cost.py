"""What checking a train command before Hydra writes its record costs: the job's checks
run twice (RunGuard's preflight, then the job's own), so the preflight is extra time on
every start. Measured in-process against a whole smoke job of the same config.

    python bench/preflight_cost.py [repeats]

Prints the median preflight time, the smoke job's wall time and their ratio.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

JOB = ["debug=smoke", "logger=none", "metrics=none", "trainer.max_epochs=1"]


def main(repeats: int = 5) -> None:
    from tinycvae.commands.train import run
    from tinycvae.job import preflight

    from conftest import compose_train  # the real configs, folders in a scratch dir

    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for i in range(repeats):
            cfg = compose_train([*JOB, f"paths.output_dir={tmp}/p{i}"], Path(tmp))
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                preflight(cfg)
            times.append(time.perf_counter() - start)
        cfg = compose_train([*JOB, f"paths.output_dir={tmp}/job"], Path(tmp))
        run(cfg)  # renders the data once: the measured job below reads the cache
        cfg = compose_train([*JOB, f"paths.output_dir={tmp}/job2"], Path(tmp))
        start = time.perf_counter()
        run(cfg)
        job = time.perf_counter() - start
    pre = statistics.median(times)
    print(f"preflight median of {repeats}: {pre * 1e3:.1f} ms")
    print(f"smoke job ({' '.join(JOB)}), data cached: {job:.2f} s")
    print(f"preflight / job: {pre / job:.4f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
