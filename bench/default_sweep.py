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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TINYCVAE_ROOT": tmp, "WANDB_MODE": "offline"}
        cmd = [sys.executable, str(ROOT / "src" / "train.py"), *SWEEP, *sys.argv[1:]]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        total = time.perf_counter() - start
        print(f"command: {' '.join(cmd[1:])}")
        print(f"exit status {proc.returncode}; total wall time {total:.1f} s")
        for path in sorted(Path(tmp).glob("logs/multiruns/*/*/summary.json")):
            s = json.loads(path.read_text())
            m = s.get("metrics", {})
            nan = float("nan")
            print(
                f"  job {path.parent.name}: {s['wall_time_s']:6.1f} s  {s['status']:<4} "
                f"metrics {m.get('time/metrics_s', nan):4.1f} s  "
                f"gen/acc {m.get('gen/acc', nan):.3f}"
                f"  fid {m.get('gen/fid_evaluator', nan):7.2f}  mse {m.get('test/mse', nan):.4f}"
                f"  {s['name']}"
            )
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)


if __name__ == "__main__":
    main()
