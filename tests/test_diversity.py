"""gen/diversity: the within-class pixel variance, pinned on tiny inputs."""

from __future__ import annotations

import pytest
import torch

from tinycvae.metrics import ClassDiversity, class_diversity


def test_identical_images_of_a_class_have_no_diversity():
    images = torch.rand(1, 1, 4, 4).expand(6, -1, -1, -1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert class_diversity(images, labels, 2) == pytest.approx(0.0, abs=1e-7)


def test_black_and_white_images_have_the_hand_computed_variance():
    # class 0: one black and one white image -> unbiased variance 0.5 per pixel;
    # class 1: two equal grey images -> 0; the mean over the two classes is 0.25
    grey = torch.full((1, 2, 2), 0.3)
    images = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2), grey, grey])
    labels = torch.tensor([0, 0, 1, 1])
    assert class_diversity(images, labels, 2) == pytest.approx(0.25)


def test_batches_accumulate_like_one_update_and_lone_or_absent_classes_are_skipped():
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(40, 1, 3, 3, generator=g), torch.arange(40) % 4
    labels[labels == 3] = 2  # class 3 absent
    labels[0] = 4  # class 4 has one image only: skipped
    whole = class_diversity(images, labels, 5)
    metric = ClassDiversity(5)
    for i in range(0, 40, 7):
        metric.update(images[i : i + 7], labels[i : i + 7])
    assert float(metric.compute()) == pytest.approx(whole)
    expected = torch.stack([images[labels == c].flatten(1).var(0).mean() for c in (0, 1, 2)]).mean()
    assert whole == pytest.approx(float(expected), rel=1e-5)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):  # torchmetrics' own
        assert torch.isnan(metric.compute())


def test_bad_inputs_are_one_clear_error():
    with pytest.raises(ValueError, match="num_classes=0"):
        ClassDiversity(0)
    metric = ClassDiversity(2)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        metric.update(torch.zeros(3, 1, 2, 2), torch.zeros(2))
    metric.update(torch.zeros(2, 1, 2, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="images of 9 pixels after 4"):
        metric.update(torch.zeros(2, 1, 3, 3), torch.zeros(2))
