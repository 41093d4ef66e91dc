"""Wall time of the README's default sweep, run as a user runs it, in a scratch folder.

    python bench/default_sweep.py [extra overrides ...]

Runs ``python src/train.py -m model.latent=1,10 beta=1e-5,1`` (data rendered on first
use, as on a fresh clone) and prints the total wall time and each job's own wall time
and status from its summary.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "model.latent=1,10", "beta=1e-5,1"]


def run_sweep(overrides: list[str], root: str, data_dir: str | None = None) -> dict:
    """Run the README sweep with ``overrides`` under ``root``; its wall time and jobs."""
    env = {**os.environ, "TINYCVAE_ROOT": root, "WANDB_MODE": "offline"}
    if data_dir:
        env["TINYCVAE_DATA"] = data_dir
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *SWEEP, *overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    total = time.perf_counter() - start
    jobs = [
        json.loads(p.read_text())
        for p in sorted(Path(root).glob("logs/multiruns/*/*/summary.json"))
    ]
    return {"cmd": cmd, "proc": proc, "total": total, "jobs": jobs}


def report(result: dict) -> None:
    proc = result["proc"]
    print(f"command: {' '.join(result['cmd'][1:])}")
    print(f"exit status {proc.returncode}; total wall time {result['total']:.1f} s")
    nan = float("nan")
    for s in result["jobs"]:
        m = s.get("metrics", {})
        print(
            f"  job {Path(s['run_dir']).name}: {s['wall_time_s']:6.1f} s  {s['status']:<4} "
            f"threads {s.get('threads', '?')}  metrics {m.get('time/metrics_s', nan):4.1f} s  "
            f"gen/acc {m.get('gen/acc', nan):.3f}"
            f"  fid {m.get('gen/fid_evaluator', nan):7.2f}  mse {m.get('test/mse', nan):.4f}"
            f"  {s['name']}"
        )
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report(run_sweep(sys.argv[1:], tmp))


if __name__ == "__main__":
    main()
