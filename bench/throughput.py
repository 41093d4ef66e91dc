"""Training throughput of the harness against a plain PyTorch loop, same model and data.

    python bench/throughput.py [--device cpu|cuda] [--epochs 3] [--repeats 6] [--by epoch|run]
                               [overrides ...]

Both paths train the model that the composed config builds (default: the README's
conv CVAE on dice) for the same epochs with the same optimizer and OneCycle schedule,
in this process. The harness runs as users run it (Lightning Trainer, checkpoints,
progress bar, and on a CPU the conv weights channels-last while training, which
``tinycvae.lit_module`` does and a plain loop does not) but without validation and
without W&B, whose costs are not training throughput. Both run on the job's torch CPU
threads (``threads=``, as a training job sets them). ``--device cuda`` runs both on the
GPU (the harness with ``trainer.accelerator=gpu``, the plain loop with the model and the
splits on cuda; each clock stops after a CUDA synchronise).

``--by epoch`` (the default) interleaves the two loops epoch by epoch in each of
``--repeats`` runs: a callback of the harness runs one epoch of the plain loop before
each harness epoch and one after the last (P0 H0 P1 H1 ... P(E-1) H(E-1) PE), and each
harness epoch k is compared with the mean of plain epochs k and k+1 around it. A
harness epoch is timed from its start to the next one's, so it includes what the
harness does between epochs (the checkpoint of each epoch, logging, the progress bar),
less the plain epoch run inside that span. The VM this project is measured on changes
speed from one run to the next by more than the effect measured (whole-run pairs gave
medians from 0.87 to 1.04 on the same commit), and sandwiching each harness epoch between
two plain ones cancels that drift. ``--by run`` times whole runs in alternating pairs
(fixed costs included: the Trainer's set-up and teardown).

Prints images/s for both (best) and two ratios harness / plain, each the median over
the pairs with the pairs' range and their middle half: of images per wall-clock second,
and of images per CPU-second of this process (``time.process_time``), which a loaded,
shared machine disturbs less than the wall clock.
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

import pytorch_lightning as pl  # noqa: E402
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


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


class PlainLoop:
    """The loop a user would write: the job's model, Adam and OneCycle over ``epochs``."""

    def __init__(self, cfg, epochs: int) -> None:
        job = build(cfg)
        job.datamodule.setup()
        job.datamodule.to(job.device)
        self.cfg, self.device, self.tr = cfg, job.device, job.datamodule.splits.train
        self.model, self.bs = job.model.to(job.device), cfg.data.batch_size
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.optimizer.lr)
        steps = epochs * -(-len(self.tr) // self.bs)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=cfg.optimizer.lr, total_steps=steps
        )
        self.model.train()

    def epoch(self) -> tuple[int, float, float]:
        """One epoch: (images, wall seconds, CPU seconds)."""
        tr, cfg, model = self.tr, self.cfg, self.model
        sync(self.device)
        (wall, cpu) = clocks()
        order = torch.randperm(len(tr)).to(self.device)
        for i in range(0, len(tr), self.bs):
            idx = order[i : i + self.bs]
            x, y, f = tr.images[idx], tr.labels[idx], tr.factors[idx]
            out = model(x, y, f)
            loss = elbo_terms(out.logits, x, out.mu, out.logvar, cfg.beta, cfg.recon_loss)["loss"]
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.sched.step()
        sync(self.device)
        now_wall, now_cpu = clocks()
        return len(tr), now_wall - wall, now_cpu - cpu


class Interleave(pl.Callback):
    """Runs a plain epoch before each harness epoch and one after the last; records the
    harness epochs' times (start to the next start, less the plain epoch inside)."""

    def __init__(self, plain: PlainLoop) -> None:
        self.plain, self.plain_times, self.harness_times = plain, [], []
        self.started: tuple[float, float] | None = None

    def _harness_epoch_ended(self, pl_module) -> None:
        if self.started is not None:
            sync(pl_module.device)
            wall, cpu = clocks()
            self.harness_times.append((wall - self.started[0], cpu - self.started[1]))

    def _plain_epoch(self) -> None:
        _, wall, cpu = self.plain.epoch()
        self.plain_times.append((wall, cpu))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._harness_epoch_ended(pl_module)
        self._plain_epoch()
        self.started = clocks()

    def on_train_end(self, trainer, pl_module) -> None:
        self._harness_epoch_ended(pl_module)
        self.started = None
        self._plain_epoch()


def fresh_job(cfg):
    cfg = cfg.copy()
    with open_dict(cfg):  # a fresh run folder each time: runs never overwrite checkpoints
        cfg.paths.output_dir = tempfile.mkdtemp(dir=cfg.paths.output_dir)
    return build(cfg)


def harness(cfg, extra: list | None = None) -> tuple[float, float]:
    """One whole harness run: (images per wall second, images per CPU second)."""
    from tinycvae.trainer import make_callbacks, make_trainer

    job = fresh_job(cfg)
    trainer = make_trainer(job, False, make_callbacks(job.cfg, False) + (extra or []))
    job.datamodule.setup()
    n = len(job.datamodule.splits.train) * cfg.trainer.max_epochs
    start, cpu = clocks()
    trainer.fit(job.module, datamodule=job.datamodule)  # fit ends with a sync (teardown)
    sync(job.device)
    wall_end, cpu_end = clocks()
    return n / (wall_end - start), n / (cpu_end - cpu)


def plain(cfg) -> tuple[float, float]:
    loop = PlainLoop(cfg, cfg.trainer.max_epochs)
    n = wall = cpu = 0.0
    for _ in range(cfg.trainer.max_epochs):
        images, w, c = loop.epoch()
        n, wall, cpu = n + images, wall + w, cpu + c
    return n / wall, n / cpu


def by_run(cfg, repeats: int) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """(plain, harness) images per wall and CPU second, for whole runs in alternating pairs."""
    pairs = []
    for i in range(repeats):  # alternate which goes first, against drift
        if i % 2:
            h = harness(cfg)
            pairs.append((plain(cfg), h))
        else:
            pairs.append((plain(cfg), harness(cfg)))
        report(f"run {i}", *pairs[-1])
    return pairs


def by_epoch(cfg, repeats: int) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """(plain, harness) images per wall and CPU second, per harness epoch against the mean
    of the two plain epochs around it, over ``repeats`` interleaved runs."""
    epochs, pairs = cfg.trainer.max_epochs, []
    for i in range(repeats):
        loop = PlainLoop(cfg, epochs + 1)
        inter = Interleave(loop)
        harness(cfg, [inter])
        n = len(loop.tr)
        for k, h in enumerate(inter.harness_times):
            around = inter.plain_times[k : k + 2]
            p = tuple(sum(t[j] for t in around) / len(around) for j in (0, 1))
            pairs.append(((n / p[0], n / p[1]), (n / h[0], n / h[1])))
            report(f"run {i} epoch {k}", *pairs[-1])
    return pairs


def report(what: str, p: tuple[float, float], h: tuple[float, float]) -> None:
    print(
        f"{what}: images/s plain {p[0]:.0f} harness {h[0]:.0f} (x{h[0] / p[0]:.3f}); "
        f"images/CPU-s plain {p[1]:.0f} harness {h[1]:.0f} (x{h[1] / p[1]:.3f})",
        file=sys.stderr,
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (both paths)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument(
        "--by",
        choices=("epoch", "run"),
        default="epoch",
        help="pairs of epochs interleaved in one run (default) or of whole runs",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.latent=1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = job_config(args.overrides, Path(tmp), args.epochs, args.device)
        probe = build(cfg)
        torch.set_num_threads(probe.threads)  # threads=: both paths, as a training job sets them
        probe.datamodule.prepare_data()  # render / cache the data outside the timing
        where = torch.cuda.get_device_name(probe.device) if probe.device.type == "cuda" else "CPU"
        pairs = (by_epoch if args.by == "epoch" else by_run)(cfg, args.repeats)
    print(
        f"device: {where}  threads: {torch.get_num_threads()}  epochs: {args.epochs}  "
        f"by: {args.by}  overrides: {args.overrides}  load average: {load_average()}"
    )
    for i, what in enumerate(("images/s", "images/CPU-s")):
        print(f"plain PyTorch loop: {max(p[i] for p, _ in pairs):8.0f} {what} (best)")
        print(f"tinycvae harness:   {max(h[i] for _, h in pairs):8.0f} {what} (best)")
    for i, what in enumerate(("wall", "CPU ")):
        ratios = sorted(h[i] / p[i] for p, h in pairs)
        q1, _, q3 = statistics.quantiles(
            ratios if len(ratios) > 1 else ratios * 2, n=4, method="inclusive"
        )
        print(
            f"ratio harness/plain, {what}: {statistics.median(ratios):.3f} (median of "
            f"{len(ratios)} {args.by} pairs; range {ratios[0]:.3f}-{ratios[-1]:.3f}, "
            f"middle half {q1:.3f}-{q3:.3f})"
        )


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


if __name__ == "__main__":
    main()
