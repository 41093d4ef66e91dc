"""Training-step time with distillation against the same student without it.

    python bench/distill_overhead.py TEACHER [--steps 64] [--repeats 5] [--threads 1]
                                     [overrides ...]     e.g. dims=2x2x2x2

TEACHER is a run folder or .ckpt (``distill.teacher=``). Both students are built by the
project's own job builder from the same config (same seed, same initial weights), one
with ``distill.teacher=TEACHER``; each times ``--steps`` training steps (loss, backward,
Adam step) on batches of the data set's shape, in alternating pairs; the ratio is the
median over ``--repeats`` pairs. Only the step changes with distillation (the data, the
evaluator and the metrics stage cost the same), so the ratio is the cost it adds to
training. Prints both times per step and the ratio distilled / plain.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from tinycvae.job import build  # noqa: E402

BYPASS = ["model.latent_mode=bypass", "model.latent=1", "logger=none", "metrics=none"]


def module_for(overrides: list[str], out: Path):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*BYPASS, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    job = build(cfg)
    return job.module, job.datamodule.spec, cfg.data.batch_size


def time_steps(module, batches, steps: int) -> float:
    """Seconds per training step (loss, backward, optimizer step)."""
    optimizer = torch.optim.Adam(module.model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for i in range(steps):
        optimizer.zero_grad()
        loss = module._terms(batches[i % len(batches)], beta=1.0, teach=True)["loss"]
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        plain, spec, n = module_for(overrides, Path(tmp) / "a")
        taught, _, _ = module_for([*overrides, f"distill.teacher={args.teacher}"], Path(tmp) / "b")
    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.rand(n, *spec.shape, generator=g),
            torch.randint(0, spec.num_classes, (n,), generator=g),
            torch.rand(n, max(1, spec.num_factors), generator=g) * 2 - 1,
        )
        for _ in range(8)
    ]
    time_steps(plain, batches, 8), time_steps(taught, batches, 8)  # warm-up
    pairs = [
        (time_steps(plain, batches, args.steps), time_steps(taught, batches, args.steps))
        for _ in range(args.repeats)
    ]
    a = statistics.median(p for p, _ in pairs)
    b = statistics.median(t for _, t in pairs)
    ratio = statistics.median(t / p for p, t in pairs)
    print(f"plain    {1000 * a:.2f} ms/step ({n / a:.0f} images/s)")
    print(f"distill  {1000 * b:.2f} ms/step ({n / b:.0f} images/s)")
    print(f"ratio distill/plain (median of {args.repeats} pairs): {ratio:.2f}")


if __name__ == "__main__":
    main()
