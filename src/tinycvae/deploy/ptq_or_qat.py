"""The integer decoder an export ships (``precision``: int8, or int4 weights): post-training
quantisation, calibrated on the latents the decoder sees, and quantisation-aware
fine-tuning at the same weight width when post-training costs too much evaluator accuracy
(``qat=auto`` and ``max_acc_drop``; ``qat=true`` always tries it). int4 starts from the
cross-layer equalised stages (:mod:`tinycvae.deploy.equalize`: the same decoder, weights
that 4-bit codes per output channel can hold).

Calibration and fine-tuning run where the float stages are (the export's device); the
latents are drawn on the CPU with fixed seeds, so they are the same on every device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig

from tinycvae import devices
from tinycvae.deploy.equalize import equalize
from tinycvae.deploy.qat import KeepBest, finetune
from tinycvae.deploy.quantize import BITS, QuantModel, quantize, run_int8
from tinycvae.deploy.score import Scorer
from tinycvae.errors import ConfigError
from tinycvae.evaluator import accuracy
from tinycvae.mcu.stages import FloatModel
from tinycvae.models import CVAE
from tinycvae.sampling import balanced_labels, latents_of

log = logging.getLogger(__name__)


def calibration_latents(model: CVAE, dm, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The latents the decoder sees, with their labels (on the CPU): the first ``n``
    training images' (posterior means, or the known factors) and ``n`` draws of the
    model's sampler (seed ``seed``)."""
    train = dm.splits.train
    k = min(n, len(train.labels))
    sub = type(train)(train.images[:k], train.labels[:k], train.factors[:k])
    z_train = latents_of(model, sub)
    labels = balanced_labels(n, model.num_classes)
    z_drawn = model.sampler(labels, torch.Generator().manual_seed(seed))
    return torch.cat([z_train.cpu(), z_drawn.cpu()]), torch.cat([sub.labels.cpu(), labels])


def quantise_for_export(
    cfg: DictConfig,
    model: CVAE,
    fm: FloatModel,
    dm,
    scorer: Scorer,
    precision: str = "int8",
    judge_of: Callable[[], Any] | None = None,
) -> tuple[QuantModel, dict[str, Any], int]:
    """The ``precision`` model to ship, the quality block of the report so far (precision,
    PyTorch and integer accuracies ``acc_<precision>_ptq`` / ``_qat``, whether QAT ran,
    which one ships, the judge's part) and the number of calibration latents.
    ``judge_of()`` gives the judge evaluator (:func:`tinycvae.deploy.score.judge_evaluator`)
    when the fine-tuning's settings ask for one."""
    bits = BITS[precision]
    z_cal, y_cal = calibration_latents(model, dm, cfg.calib_samples, cfg.seed)
    z_cal, y_cal = z_cal.to(fm.device), y_cal.to(fm.device)
    if bits == 4:  # the same function, input channels of one scale (4-bit codes need it)
        fm = equalize(fm)
    qm = quantize(fm, z_cal, y_cal, model.bypass, bits)
    ptq, qat = f"acc_{precision}_ptq", f"acc_{precision}_qat"
    quality: dict[str, Any] = {
        "precision": precision,
        "samples": len(scorer.labels),
        "evaluator": scorer.path,
        "acc_pytorch": scorer.reference_acc,
        ptq: scorer.acc(scorer.int8(qm)),
    }
    drop = quality["acc_pytorch"] - quality[ptq]
    quality["qat"] = cfg.qat is True or (cfg.qat == "auto" and drop > cfg.max_acc_drop)
    if quality["qat"]:
        log.info(
            "%s post-training costs %.1f points: quantisation-aware fine-tuning",
            precision, 100 * drop,
        )  # fmt: skip
        qm_tuned, block = _finetuned(cfg, model, fm, qm, (z_cal, y_cal), scorer, judge_of)
        quality |= block
        if quality[qat] >= quality[ptq]:
            qm = qm_tuned  # else the post-training model ships: fine-tuning did not help
    quality["shipped"] = "qat" if quality.get(qat, -1) >= quality[ptq] else "ptq"
    return qm, quality, len(y_cal)


def _finetuned(cfg, model: CVAE, fm, qm: QuantModel, cal, scorer: Scorer, judge_of):
    """The fine-tuned integer model and its part of the report (epochs, its accuracy,
    the judge's word)."""
    z_cal, y_cal = cal
    epochs, lr, batch, best = _schedule(cfg, qm.precision)
    judge = judge_of() if judge_of is not None and best else None
    keep = _keep_best(cfg, model, z_cal, y_cal, qm.bits, judge) if best else None
    tuned, steps = finetune(fm, qm, z_cal, y_cal, epochs, lr, batch, cfg.seed, keep)
    tuned_qm = quantize(tuned, z_cal, y_cal, model.bypass, qm.bits, steps)
    acc = scorer.acc(scorer.int8(tuned_qm))
    block = {"qat_epochs": int(epochs), f"acc_{qm.precision}_qat": acc}
    return tuned_qm, block | _judge_block(judge, keep)


def _keep_best(cfg, model: CVAE, z_cal, y_cal, bits: int, judge) -> KeepBest:
    """:class:`KeepBest` rating each epoch's integer model by the judge's accuracy on its
    images for ``eval_samples`` latents of their own (the sampler's, seed ``seed + 3``:
    neither the scorer's nor the calibration's)."""
    if judge is None:
        raise ConfigError("keeping the best fine-tuning epoch needs the judge evaluator")
    labels = balanced_labels(cfg.eval_samples, model.num_classes)
    z = model.sampler(labels, torch.Generator().manual_seed(cfg.seed + 3)).cpu()

    def rate(tuned: FloatModel, steps) -> float:
        qm = quantize(tuned, z_cal, y_cal, model.bypass, bits, steps)
        px = torch.from_numpy(run_int8(qm, qm.quantize_z(z), labels.numpy())).float() / 255
        (px,) = devices.to_device(devices.device_of(judge.evaluator), px)
        return accuracy(judge.evaluator, px, labels)

    return KeepBest(rate)


def _judge_block(judge, keep: KeepBest | None) -> dict[str, Any]:
    """The report's word on the judge: which evaluator, the epoch kept and its rating."""
    if judge is None or keep is None:
        return {}
    return {"qat_judge": str(judge.path), "qat_best_epoch": keep.epoch, "qat_judge_acc": keep.best}


def _schedule(cfg: DictConfig, precision: str) -> tuple[int, float, int, bool]:
    """Fine-tuning's epochs, learning rate, batch size and whether to keep the epoch the
    judge rates best: ``qat_*``, or for int4 the ``qat_*_int4`` settings where given
    (4-bit weights need more and smaller steps, and the choice of epoch)."""
    keys = ("qat_epochs", "qat_lr", "qat_batch_size", "qat_keep_best")
    values = [cfg.get(k) for k in keys]
    if precision == "int4":
        values = [v if cfg.get(f"{k}_int4") is None else cfg.get(f"{k}_int4")
                  for k, v in zip(keys, values)]  # fmt: skip
    epochs, lr, batch, best = values
    return int(epochs), float(lr), int(batch or 256), bool(best)
