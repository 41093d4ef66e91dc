"""Training throughput of the harness against a plain PyTorch loop, same model and data.

    python bench/throughput.py [--device cpu|cuda] [--epochs 3] [--repeats 6] [overrides ...]

Both paths train the model that the composed config builds (default: the README's
conv CVAE on dice) for the same epochs with the same optimizer and OneCycle schedule,
in this process, in alternating pairs; the ratio is the median over ``--repeats`` pairs
(the pairs cancel most of the machine's drift). The harness runs
as users run it (Lightning Trainer, checkpoints, progress bar) but without validation
and without W&B, whose costs are not training throughput. Prints images/s for both and
two ratios harness / plain, each the median over the pairs with the pairs' range: of
images per wall-clock second, and of images per CPU-second of this process
(``time.process_time``: plain / harness CPU time per image), which a loaded, shared
machine disturbs far less than the wall clock. Both paths run on the job's torch CPU
threads (``threads=``, as a training job sets them). ``--device cuda`` runs both on
the GPU (the harness with ``trainer.accelerator=gpu``, the plain loop with the model and
the splits on cuda; the clock stops after a CUDA synchronise).
"""

from __future__ import annotations

import argparse
import os
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
from tinycvae.losses import elbo_terms  # noqa: E402


def job_config(overrides: list[str], out: Path, epochs: int, device: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "logger=none",
                f"trainer.max_epochs={epochs}",
                "+trainer.limit_val_batches=0",
                "+trainer.num_sanity_val_steps=0",
                f"trainer.accelerator={device}",
                *overrides,
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.paths.data_dir = str(ROOT / "data")
        cfg.callbacks.model_checkpoint.monitor = None  # no val loss: keep the last only
        cfg.callbacks.last_checkpoint = None  # ... in one checkpoint callback
    return cfg


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def harness(cfg) -> tuple[float, float]:
    from tinycvae.trainer import make_callbacks, make_trainer

    cfg = cfg.copy()
    with open_dict(cfg):  # a fresh run folder each time: runs never overwrite checkpoints
        cfg.paths.output_dir = tempfile.mkdtemp(dir=cfg.paths.output_dir)
    job = build(cfg)
    trainer = make_trainer(job, False, make_callbacks(cfg, False))
    job.datamodule.setup()
    n = len(job.datamodule.splits.train) * cfg.trainer.max_epochs
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(job.module, datamodule=job.datamodule)  # fit ends with a sync (teardown)
    sync(job.device)
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def plain(cfg) -> tuple[float, float]:
    job = build(cfg)
    job.datamodule.setup()
    job.datamodule.to(job.device)
    tr = job.datamodule.splits.train
    model, bs, epochs = job.model.to(job.device), cfg.data.batch_size, cfg.trainer.max_epochs
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    steps = epochs * -(-len(tr) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.optimizer.lr, total_steps=steps)
    model.train()
    sync(job.device)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        order = torch.randperm(len(tr)).to(job.device)
        for i in range(0, len(tr), bs):
            idx = order[i : i + bs]
            x, y, f = tr.images[idx], tr.labels[idx], tr.factors[idx]
            out = model(x, y, f)
            loss = elbo_terms(out.logits, x, out.mu, out.logvar, cfg.beta, cfg.recon_loss)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    sync(job.device)
    n = len(tr) * epochs
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (both paths)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.latent=1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = job_config(args.overrides, Path(tmp), args.epochs, args.device)
        probe = build(cfg)
        torch.set_num_threads(probe.threads)  # threads=: both paths, as a training job sets them
        probe.datamodule.prepare_data()  # render / cache the data outside the timing
        where = torch.cuda.get_device_name(probe.device) if probe.device.type == "cuda" else "CPU"
        pairs = []
        for i in range(args.repeats):  # alternate which goes first, against drift
            if i % 2:
                h = harness(cfg)
                pairs.append((plain(cfg), h))
            else:
                pairs.append((plain(cfg), harness(cfg)))
            (pw, pc), (hw, hc) = pairs[-1]
            print(
                f"pair {i}: images/s plain {pw:.0f} harness {hw:.0f} (x{hw / pw:.3f}); "
                f"images/CPU-s plain {pc:.0f} harness {hc:.0f} (x{hc / pc:.3f})",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"device: {where}  threads: {torch.get_num_threads()}  epochs: {args.epochs}  "
        f"overrides: {args.overrides}  load average: {load_average()}"
    )
    for i, what in enumerate(("images/s", "images/CPU-s")):
        print(f"plain PyTorch loop: {max(p[i] for p, _ in pairs):8.0f} {what} (best)")
        print(f"tinycvae harness:   {max(h[i] for _, h in pairs):8.0f} {what} (best)")
    for i, what in enumerate(("wall", "CPU ")):
        ratios = sorted(h[i] / p[i] for p, h in pairs)
        print(
            f"ratio harness/plain, {what}: {statistics.median(ratios):.3f} (median of "
            f"{len(ratios)} pairs; range {ratios[0]:.3f}-{ratios[-1]:.3f})"
        )


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


if __name__ == "__main__":
    main()
