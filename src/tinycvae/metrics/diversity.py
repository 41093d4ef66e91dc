"""Within-class diversity of images: how much the images of one class differ.

The from-scratch article (docs/references.md) found that with the full KL weight its
CVAE drew nearly the same image for every sample of a class, and that a tiny weight
(``beta=1e-5``) kept them diverse. :class:`ClassDiversity` measures that: for each class,
the variance of every pixel across that class's images (unbiased), averaged over the
pixels; then averaged over the classes that have at least two images. Identical images
score 0; images in [0, 1] score at most 0.25 (half black, half white). Logged as
``gen/diversity`` (generated images) beside ``test/diversity`` (the real test split, the
value to aim for).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class ClassDiversity(Metric):
    """Mean per-pixel variance between the images of one class, averaged over classes.

    ``update(images [N, ...], labels [N])`` accumulates per-class pixel sums and sums of
    squares (float64), so batches can be fed in any order and size."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ValueError(f"num_classes={num_classes} is invalid; allowed: an integer >= 1")
        self.num_classes = num_classes
        k = num_classes
        self.add_state("count", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        # [K, pixels], sized by the first update (the pixel count is the data's)
        self.add_state("total", torch.zeros(k, 0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("squares", torch.zeros(k, 0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images: Tensor, labels: Tensor) -> None:
        flat = images.detach().flatten(1).to(torch.float64)
        labels = labels.to(flat.device).long()
        if len(flat) != len(labels):
            raise ValueError(f"{len(flat)} images but {len(labels)} labels")
        if self.total.shape[1] == 0:
            shape = (self.num_classes, flat.shape[1])
            self.total = torch.zeros(shape, dtype=torch.float64, device=flat.device)
            self.squares = torch.zeros(shape, dtype=torch.float64, device=flat.device)
        elif self.total.shape[1] != flat.shape[1]:
            raise ValueError(f"images of {flat.shape[1]} pixels after {self.total.shape[1]}")
        self.count.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        self.total.index_add_(0, labels, flat)
        self.squares.index_add_(0, labels, flat * flat)

    def compute(self) -> Tensor:
        seen = self.count >= 2
        if not bool(seen.any()):
            return torch.tensor(float("nan"), device=self.count.device)
        n = self.count[seen].unsqueeze(1)
        mean = self.total[seen] / n
        variance = ((self.squares[seen] - n * mean * mean) / (n - 1)).clamp_min(0.0)
        return variance.mean(1).mean().float()


def class_diversity(images: Tensor, labels: Tensor, num_classes: int) -> float:
    """:class:`ClassDiversity` of one set of images."""
    metric = ClassDiversity(num_classes).to(images.device)
    metric.update(images, labels)
    return float(metric.compute())
