"""The LightningModule that trains any :class:`~tinycvae.models.CVAE` variant."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

from tinycvae.checks import require_number
from tinycvae.distill import Teacher
from tinycvae.errors import NonFiniteLossError
from tinycvae.losses import beta_at, check_recon, elbo_terms
from tinycvae.models import CVAE


def plans_over_run(scheduler: Callable[..., Any] | None) -> bool:
    """Whether a scheduler factory (a ``functools.partial``, or the class) is given the
    run's total step count (OneCycleLR): its schedule then fixes the run's length."""
    if scheduler is None:
        return False
    target = getattr(scheduler, "func", scheduler)
    given = getattr(scheduler, "keywords", {})
    return "total_steps" in inspect.signature(target).parameters and "total_steps" not in given


class CVAEModule(pl.LightningModule):
    """Trains a CVAE on ``(images, labels, factors)`` batches with the ELBO of
    :mod:`tinycvae.losses`; logs ``{train,val,test}/{loss,recon,kl}`` per epoch."""

    def __init__(
        self,
        model: CVAE,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        beta: float = 1.0,
        beta_warmup: float = 0.0,
        recon_loss: str = "bce",
        run_info: dict | None = None,
        teacher: Teacher | None = None,
    ) -> None:
        super().__init__()
        require_number(beta, "beta", 0)
        require_number(beta_warmup, "beta_warmup", 0)
        check_recon(recon_loss)
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.beta = float(beta)
        self.beta_warmup = float(beta_warmup)
        self.recon_loss = recon_loss
        self.run_info = run_info or {}  # resolved config etc., stored in every checkpoint
        # Distillation (tinycvae.distill): a plain attribute, so the frozen teacher is in
        # neither the optimizer, the checkpoints nor the parameter counts.
        self.teacher = teacher
        self.train_keys = ("loss", "recon", "kl") + (("distill",) if teacher is not None else ())
        # This epoch's sums of each term x batch size (float64 where the device has it),
        # and its image count: two tensor ops a step, read once per epoch.
        self._sums: torch.Tensor | None = None
        self._count = 0

    def _terms(self, batch, beta: float, generator=None, teach=False) -> dict[str, torch.Tensor]:
        x, y, f = batch
        out = self.model(x, y, f, sample=True, generator=generator)
        terms = elbo_terms(out.logits, x, out.mu, out.logvar, beta, self.recon_loss)
        if teach and self.teacher is not None:  # training steps only: val/test stay the ELBO
            terms = self.teacher.join(terms, out.logits, out.z, y, beta, self.recon_loss)
        return terms

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        progress = self.current_epoch + batch_idx / max(1, self.trainer.num_training_batches)
        terms = self._terms(batch, beta_at(self.beta, self.beta_warmup, progress), teach=True)
        # Nothing here waits for the device: the epoch's sums stay a tensor on the device
        # and are read once per epoch (_check_finite, on_train_epoch_end). A sync per step
        # (an `if` on a tensor, .item()) costs a quarter of a tiny model's GPU speed. One
        # stack and one add a step (three torchmetrics means and a finiteness flag cost
        # about 130 us a step on a CPU); a NaN or infinite loss makes the loss sum so.
        values = torch.stack([terms[k].detach() for k in self.train_keys])
        if self._sums is None:
            wide = torch.float32 if values.device.type == "mps" else torch.float64
            self._sums = torch.zeros(len(self.train_keys), dtype=wide, device=values.device)
        n = batch[0].shape[0]
        self._sums.add_(values, alpha=n)  # weighted by the batch size
        self._count += n
        return terms["loss"]

    def _check_finite(self) -> None:
        """Raise when a training step of this epoch had a NaN or infinite loss (read before
        the epoch's checkpoints are written, so none holds non-finite weights)."""
        if self._sums is not None and not bool(torch.isfinite(self._sums[0])):
            raise NonFiniteLossError(
                f"non-finite loss in epoch {self.current_epoch} (by step {self.global_step})"
            )

    def on_train_epoch_start(self) -> None:
        self._sums, self._count = None, 0  # nothing carried over from a stopped epoch

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self._check_finite()

    def on_train_epoch_end(self) -> None:
        self._check_finite()
        sums, count = self._sums, self._count
        self._sums, self._count = None, 0  # the next epoch starts afresh
        if sums is not None:
            means = (sums / count).float()
            self.log_dict({f"train/{k}": m for k, m in zip(self.train_keys, means)}, prog_bar=True)
        self.log("train/beta", beta_at(self.beta, self.beta_warmup, self.current_epoch + 1.0))

    def _eval_step(self, batch, batch_idx: int, stage: str) -> None:
        # A fixed noise stream per batch: evaluation is repeatable, and it leaves the
        # training's random stream alone (so checkpoint choice is not a noise draw).
        gen = torch.Generator(device=self.device).manual_seed(batch_idx)
        terms = self._terms(batch, self.beta, gen)
        self.log_dict(
            {f"{stage}/{k}": v for k, v in terms.items()},
            prog_bar=stage == "val",
            batch_size=batch[0].shape[0],
        )

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def setup(self, stage: str) -> None:
        # Conv weights channels-last while training on a CPU: oneDNN's NHWC kernels ran the
        # dice conv CVAEs' steps 1.11-1.39x as fast as NCHW at 1 torch thread
        # (bench/conv_layout.py; docs/results.md, Speed). Values are unchanged; on_fit_end
        # and the checkpoints give the usual layout back. GPUs keep cuDNN's default layout
        # (not measured there).
        if stage == "fit" and self.trainer.strategy.root_device.type == "cpu":
            self.model.to(memory_format=torch.channels_last)

    def on_fit_end(self) -> None:
        self.model.to(memory_format=torch.contiguous_format)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {}
        if plans_over_run(self.scheduler_factory):
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer=optimizer, **kwargs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        weights = checkpoint["state_dict"]  # the usual layout, whatever training ran in
        for key, value in weights.items():
            weights[key] = value.contiguous()
        checkpoint["tinycvae"] = self.run_info
        # The global RNG drives the reparameterisation noise: a resumed run continues
        # the stream where it stopped instead of replaying it from the seed.
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and torch.cuda.is_available():  # a CPU checkpoint has none
            for index, state in enumerate(rng["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(state.cpu(), index)
