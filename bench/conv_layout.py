"""Training-step time with the conv weights channels-last against the usual NCHW layout.

    python bench/conv_layout.py [--steps 16] [--repeats 12] [--threads 1] [overrides ...]
                                                        e.g. dims=3x3x3x3, model=mlp

Two copies of the model that the composed config builds (the job builder's, same seed
and weights), one with its weights channels-last as ``tinycvae.lit_module`` lays them
out for training on a CPU, each with its own Adam, time ``--steps`` training steps (the
ELBO, backward, Adam step) on the data set's training images, in blocks N C N: each
channels-last block is compared with the mean of the NCHW blocks on either side, which
cancels the machine's drift at the scale of a block. Prints the median speed-up (NCHW
time / channels-last time) over ``--repeats`` blocks, with the range.
"""

from __future__ import annotations

import argparse
import copy
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


class Steps:
    """A model with its own Adam, trained ``steps`` batches at a time."""

    def __init__(self, model, tr, cfg) -> None:
        self.model, self.tr, self.cfg = model, tr, cfg
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
        model.train()

    def block(self, steps: int) -> float:
        tr, bs, cfg = self.tr, self.cfg.data.batch_size, self.cfg
        order = torch.randperm(len(tr))
        start = time.perf_counter()
        for s in range(steps):
            idx = order[(s * bs) % (len(tr) - bs) :][:bs]
            x, y, f = tr.images[idx], tr.labels[idx], tr.factors[idx]
            out = self.model(x, y, f)
            loss = elbo_terms(out.logits, x, out.mu, out.logvar, cfg.beta, cfg.recon_loss)
            self.opt.zero_grad()
            loss["loss"].backward()
            self.opt.step()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dims=3x3x3x3")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=["logger=none", *args.overrides])
        with open_dict(cfg):
            cfg.paths.output_dir, cfg.paths.data_dir = tmp, str(ROOT / "data")
        job = build(cfg)
        job.datamodule.prepare_data()
        job.datamodule.setup()
        tr = job.datamodule.splits.train
        nchw = Steps(job.model, tr, cfg)
        nhwc = Steps(copy.deepcopy(job.model).to(memory_format=torch.channels_last), tr, cfg)
        nchw.block(args.steps), nhwc.block(args.steps)  # warm-up: oneDNN's first calls
        ratios = []
        for _ in range(args.repeats):
            before, cl = nchw.block(args.steps), nhwc.block(args.steps)
            ratios.append((before + nchw.block(args.steps)) / 2 / cl)
    dims = "_".join(str(cfg.model.get(f"dim{i}", "-")) for i in range(1, 5))
    print(
        f"model: {cfg.model.arch} dims {dims}  threads: {args.threads}  "
        f"steps per block: {args.steps}  overrides: {args.overrides}"
    )
    print(
        f"speed-up channels-last (NCHW time / channels-last time): "
        f"{statistics.median(ratios):.3f} (median of {len(ratios)} blocks; range "
        f"{min(ratios):.3f}-{max(ratios):.3f})"
    )


if __name__ == "__main__":
    main()
