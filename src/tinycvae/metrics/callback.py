"""Quality metrics every N epochs during training (``metrics.every_n_epochs``)."""

from __future__ import annotations

import pytorch_lightning as pl

from tinycvae.metrics import QualitySettings, evaluate_quality
from tinycvae.sampling import fit_sampler


class PeriodicQuality(pl.Callback):
    """After every ``every_n_epochs``-th validation: fit the sampler on the current
    weights and log the quality metrics (same keys as at the end of training)."""

    def __init__(self, every_n_epochs: int, evaluator, settings: QualitySettings) -> None:
        self.every_n_epochs = every_n_epochs
        self.evaluator = evaluator
        self.settings = settings

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        splits = trainer.datamodule.splits
        fit_sampler(pl_module.model, splits.train)
        metrics, _, _ = evaluate_quality(
            pl_module.model, splits.test, self.evaluator, self.settings
        )
        pl_module.log_dict(
            {k: float(v) for k, v in metrics.items() if k.startswith(("gen/", "test/"))}
        )
