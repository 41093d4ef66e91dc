"""Quality metrics of a trained CVAE, under stable keys.

* ``test/mse``, ``test/ssim``: reconstructions of the test split (images in [0, 1];
  SSIM by torchmetrics with ``data_range=1.0``).
* ``gen/acc``: the share of ``num_samples`` generated images (balanced over classes) that
  the data set's evaluator classifies as the requested class (the headline metric of the
  electronic-die article, see docs/references.md).
* ``gen/{fid,kid,precision,recall}_<features>``: torch-fidelity on the same samples
  against the test split (see :mod:`tinycvae.metrics.fidelity`).
* ``gen/diversity``: the per-pixel variance between the generated images of one class,
  averaged over pixels and classes; ``test/diversity``: the same on the real test split
  (see :mod:`tinycvae.metrics.diversity`).
* ``params/{total,encoder,decoder}``: parameter counts (the decoder is what ships).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import InitVar, dataclass
from typing import Any

import torch
from torch import Tensor
from torchmetrics.image import StructuralSimilarityIndexMeasure
from torchmetrics.regression import MeanSquaredError

from tinycvae.data.base import Split
from tinycvae.data.datamodule import TensorBatches
from tinycvae.devices import device_of, to_device
from tinycvae.errors import ConfigError
from tinycvae.evaluator import accuracy as generation_accuracy
from tinycvae.metrics.diversity import ClassDiversity, class_diversity
from tinycvae.metrics.fidelity import FEATURES, fidelity_metrics, inception_weights
from tinycvae.models import CVAE, count_params
from tinycvae.sampling import balanced_labels, draw_images, in_evaluation

__all__ = [
    "FEATURES",
    "ClassDiversity",
    "class_diversity",
    "QualitySettings",
    "evaluate_quality",
    "generation_accuracy",
    "PairMetrics",
    "param_counts",
    "reconstruction_metrics",
]


@dataclass
class QualitySettings:
    """How the quality metrics are computed; checks itself on creation, each bad value one
    line naming its key in the ``metrics`` group. ``num_classes`` (not stored): the data's
    classes, of which ``num_samples`` must cover each at least once."""

    num_samples: int = 600
    batch_size: int = 1024
    features: str = "evaluator"  # feature network for FID/KID/precision/recall
    weights_path: str | None = None  # that network's weights file
    kid: bool = True
    prc: bool = True
    seed: int = 0
    num_classes: InitVar[int] = 1

    def __post_init__(self, num_classes: int) -> None:
        if self.features not in FEATURES:
            raise ConfigError(
                f"metrics.fid.features={self.features} is unknown; allowed: {', '.join(FEATURES)}"
            )
        if not (isinstance(self.num_samples, int) and self.num_samples >= num_classes):
            raise ConfigError(
                f"metrics.num_samples={self.num_samples} is invalid; allowed: an integer >= "
                f"{num_classes} (one per class)"
            )

    @classmethod
    def from_config(cls, metrics: Mapping[str, Any], num_classes: int = 1) -> QualitySettings:
        """The settings of a ``metrics`` config group (conf/metrics/default.yaml); a key it
        leaves out keeps its default. Not a ``_target_``: the group's ``fid`` block holds
        three of them, ``fid.inception_weights`` becomes ``weights_path`` here (a file,
        fetched where there is internet) when the features are Inception's, and
        ``enabled``, ``every_n_epochs`` and ``pictures`` are the training job's
        (``every_n_epochs`` is checked here with the rest)."""
        fid = metrics.get("fid") or {}
        where = {"num_samples": metrics, "batch_size": metrics, "seed": metrics}
        where |= {"features": fid, "kid": fid, "prc": fid}
        given = {key: group[key] for key, group in where.items() if key in group}
        settings = cls(**given, num_classes=num_classes)
        every = metrics.get("every_n_epochs", 0)
        if not every >= 0:
            raise ConfigError(f"metrics.every_n_epochs={every} is invalid; allowed: >= 0")
        if settings.features == "inception":
            settings.weights_path = inception_weights(fid.get("inception_weights"))
        return settings


def param_counts(model: CVAE) -> dict[str, int]:
    return {
        "params/total": count_params(model),
        "params/encoder": count_params(model.encoder),
        "params/decoder": count_params(model.decoder),
    }


class PairMetrics:
    """Per-pixel MSE and SSIM of image pairs in [0, 1], accumulated over batches."""

    def __init__(self, device=None) -> None:
        self.mse = MeanSquaredError().to(device)
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(device)

    def update(self, output: Tensor, target: Tensor) -> None:
        self.mse.update(output, target)
        self.ssim.update(output, target)

    def compute(self, prefix: str = "test") -> dict[str, float]:
        return {
            f"{prefix}/mse": float(self.mse.compute()),
            f"{prefix}/ssim": float(self.ssim.compute()),
        }


@in_evaluation
def reconstruction_metrics(model: CVAE, split: Split, batch_size: int = 1024) -> dict[str, float]:
    device = device_of(model)
    pairs = PairMetrics(device)
    for batch in TensorBatches(split, batch_size, shuffle=False):
        x, y, f = to_device(device, *batch)
        pairs.update(torch.sigmoid(model(x, y, f).logits), x)
    return pairs.compute("test")


def evaluate_quality(
    model: CVAE, test: Split, evaluator, settings: QualitySettings
) -> tuple[dict[str, float], Tensor, Tensor]:
    """All quality metrics, computed where the model is; also returns the generated images
    and their labels."""
    metrics: dict[str, float] = {}
    metrics.update(reconstruction_metrics(model, test, settings.batch_size))
    labels = balanced_labels(settings.num_samples, model.num_classes, device_of(model))
    images = draw_images(model, labels, settings.seed, settings.batch_size)
    metrics["gen/acc"] = generation_accuracy(evaluator, images, labels)
    metrics["gen/diversity"] = class_diversity(images, labels, model.num_classes)
    metrics["test/diversity"] = class_diversity(test.images, test.labels, model.num_classes)
    metrics.update(
        fidelity_metrics(
            images,
            test.images.to(images.device),
            settings.features,
            settings.weights_path,
            settings.kid,
            settings.prc,
        )
    )
    metrics.update(param_counts(model))
    return metrics, images, labels
