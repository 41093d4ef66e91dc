"""How well an exported decoder draws: the data set's evaluator scores the images of the
PyTorch model, of the int8 reference and of the C decoder for the same fixed inputs.

The evaluator runs where it was placed (the export's device); the images that come from
numpy or from C are moved there to be scored.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from tinycvae import devices
from tinycvae.deploy.builds import host_images
from tinycvae.deploy.quantize import QuantModel, run_int8
from tinycvae.deploy.toolchain import ToolchainError
from tinycvae.evaluator import EvaluatorSettings, accuracy, check_floor, load_or_train
from tinycvae.models import CVAE
from tinycvae.sampling import balanced_labels

log = logging.getLogger(__name__)


@dataclass
class Scorer:
    """Fixed labels and latents (on the CPU), the PyTorch model's images for them, and the
    evaluator that scores any decoder's images for the same inputs."""

    evaluator: Any
    path: str
    labels: torch.Tensor
    z: torch.Tensor
    reference: torch.Tensor  # the PyTorch model's images in [0, 1], on the CPU

    def acc(self, images: torch.Tensor) -> float:
        """The evaluator's accuracy on ``images`` (one per label), on its device."""
        (images,) = devices.to_device(devices.device_of(self.evaluator), images)
        return accuracy(self.evaluator, images, self.labels)

    @cached_property
    def reference_acc(self) -> float:
        """The PyTorch model's accuracy: what the exported decoders are measured against."""
        return self.acc(self.reference)

    def int8(self, qm: QuantModel) -> torch.Tensor:
        """The integer reference's images (int8 or int4 weights: what the C decoder draws,
        byte for byte)."""
        px = run_int8(qm, qm.quantize_z(self.z), self.labels.numpy())
        return torch.from_numpy(px).float() / 255


JUDGE_SEED_OFFSET = 1  # the judge: the run's evaluator settings at seed + 1


def _evaluator(info: dict[str, Any], dm, device: torch.device, seed_offset: int = 0):
    """The run's evaluator (its settings, seed + ``seed_offset``), read from its cache or
    trained where ``dm``'s images are, checked against its floor, placed on ``device``."""
    # The run's settings (a run since conf/evaluator named their class also stores _target_)
    stored = info["config"].get("evaluator") or {}
    settings = EvaluatorSettings(**{k: v for k, v in stored.items() if k != "_target_"})
    settings = dataclasses.replace(settings, seed=settings.seed + seed_offset)
    data_dir = info["config"].get("paths", {}).get("data_dir")
    record = load_or_train(dm.splits, dm.spec, dm.cache_key(), data_dir, settings, progress=True)
    check_floor(record, settings.floor)
    devices.place(device, record.evaluator)
    return record


def judge_evaluator(info: dict[str, Any], dm, device: torch.device):
    """A second evaluator, the judge, for fine-tuning to choose its epoch by (the run's
    evaluator settings at another seed, cached beside the first), so that the scorer's
    evaluator never sees the fine-tuning: what it reports is not what was chosen by."""
    return _evaluator(info, dm, device, JUDGE_SEED_OFFSET)


def make_scorer(cfg: DictConfig, model: CVAE, dm, info: dict[str, Any]) -> Scorer:
    """The checkpoint's evaluator (read from its cache, or trained where ``dm``'s images
    are), placed where ``model`` is, and ``cfg.eval_samples`` balanced labels with latents
    drawn by the model's sampler (seed ``cfg.seed + 2``)."""
    device = devices.device_of(model)
    record = _evaluator(info, dm, device)
    labels = balanced_labels(cfg.eval_samples, model.num_classes)
    z = model.sampler(labels, torch.Generator().manual_seed(cfg.seed + 2)).cpu()
    with torch.no_grad():
        reference = torch.sigmoid(model.decoder(*devices.to_device(device, z, labels))).cpu()
    return Scorer(record.evaluator, str(record.path), labels, z, reference)


def c_quality(scorer: Scorer, qm: QuantModel, build: Path) -> dict[str, Any]:
    """The C decoder's own images (the host build under ``build``) for the scorer's
    inputs: equal to the integer reference's, scored by the evaluator (``acc_c_int8`` or
    ``acc_c_int4``, the model's precision), and their MSE against the PyTorch images."""
    p = qm.precision
    ref = scorer.int8(qm)
    y = scorer.labels.numpy()
    c_pixels = host_images(build / p, y, qm.quantize_z(scorer.z), ref[0].numel())
    c_images = torch.from_numpy(c_pixels.copy()).float().reshape(ref.shape) / 255
    if not torch.equal(c_images, ref):
        raise ToolchainError(f"the C decoder's images differ from the {p} reference")
    acc = scorer.acc(c_images)
    return {
        "c_matches_reference": True,
        f"acc_c_{p}": acc,
        "acc_drop": scorer.reference_acc - acc,
        f"{p}_vs_fp32_mse": float(((c_images - scorer.reference) ** 2).mean()),
    }


def score_shipped(
    scorer: Scorer, qm: QuantModel, build: Path, host_built: bool, max_drop: float
) -> dict[str, Any]:
    """The shipped decoder's scores: the C decoder's (:func:`c_quality`) when the host
    build exists, else none (the int8 reference stands for it); warns when the shipped
    images score more than ``max_drop`` below the PyTorch model's."""
    quality = c_quality(scorer, qm, build) if host_built else {}
    key = f"acc_c_{qm.precision}"
    shipped = quality[key] if key in quality else scorer.acc(scorer.int8(qm))
    drop = scorer.reference_acc - shipped
    if drop > max_drop:
        log.warning(
            "the %s decoder scores %.1f points below the PyTorch model", qm.precision, 100 * drop
        )
    return quality
