"""The procedural dice: labels, factors, determinism, no clipping, the disk cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinycvae.data.dice import DiceSettings, dice_spec, load_dice, render_dice, render_die
from tinycvae.errors import ConfigError

SMALL = DiceSettings(num_train=96, num_val=24, num_test=24, seed=7)


@pytest.fixture(scope="module")
def splits():
    return render_dice(SMALL)


def test_shapes_labels_and_factor_ranges(splits):
    tr = splits.train
    assert tr.images.shape == (96, 1, 32, 32) and tr.images.dtype == torch.float32
    assert 0.0 <= tr.images.min() and tr.images.max() <= 1.0
    assert tr.labels.dtype == torch.int64 and set(tr.labels.tolist()) == set(range(6))
    assert tr.factors.shape == (96, 2)
    assert tr.factors.min() >= -1.0 and tr.factors.max() <= 1.0
    assert len(splits.val) == 24 and len(splits.test) == 24
    assert dice_spec(32).factor_names == ("angle", "scale")


def test_same_seed_same_images_other_seed_other_images(splits):
    again = render_dice(SMALL)
    assert torch.equal(again.train.images, splits.train.images)
    assert torch.equal(again.train.factors, splits.train.factors)
    other = render_dice(DiceSettings(num_train=96, num_val=24, num_test=24, seed=8))
    assert not torch.equal(other.train.images, splits.train.images)


def test_splits_are_distinct_images(splits):
    assert not torch.equal(splits.train.images[:24], splits.val.images)


def test_val_and_test_do_not_change_with_the_training_size(splits):
    bigger = render_dice(DiceSettings(num_train=97, num_val=24, num_test=24, seed=7))
    assert torch.equal(bigger.val.images, splits.val.images)
    assert torch.equal(bigger.test.images, splits.test.images)


def test_the_rotated_die_is_never_clipped():
    s = DiceSettings(num_train=1, num_val=1, num_test=1, scale_min=1.0, scale_max=1.0)
    for angle in np.linspace(-45, 45, 19):
        img = render_die(6, float(angle), 1.0, s)
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        assert border.max() < 0.05, f"die touches the border at {angle} degrees"
        assert img.max() > 0.99  # and it is drawn


def test_more_pips_darken_the_face():
    s = DiceSettings()
    means = [render_die(p, 10.0, 1.0, s).mean() for p in range(1, 7)]
    assert all(a > b for a, b in zip(means, means[1:]))


def test_anti_aliased_edges():
    img = render_die(3, 20.0, 1.0, DiceSettings())
    grey = ((img > 0.1) & (img < 0.9)).sum()
    assert grey > 20  # soft edges, not a binary image


def test_angle_factor_is_the_angle_over_45_degrees():
    s = DiceSettings(num_train=200, num_val=1, num_test=1)
    tr = render_dice(s).train
    # a die at angle a and at -a are mirror images for the symmetric faces (1, 4, 5)
    assert tr.factors[:, 0].abs().max() <= 1.0
    sym = render_die(4, 30.0, 1.0, s)
    mirrored = render_die(4, -30.0, 1.0, s)[:, ::-1]
    assert np.abs(sym - mirrored).mean() < 0.02


def test_scale_range_sets_the_scale_factor():
    fixed = render_dice(DiceSettings(num_train=64, num_val=1, num_test=1)).train
    jitter = render_dice(
        DiceSettings(num_train=64, num_val=1, num_test=1, scale_min=0.5, scale_max=1.0)
    ).train
    # a fixed shrink-to-fit die's scale is a function of its angle alone
    order = fixed.factors[:, 0].abs().argsort()
    assert (fixed.factors[order, 1].diff() <= 1e-5).all()
    assert jitter.images.mean() < fixed.images.mean()  # smaller dice, less white


def test_cache_writes_once_and_reads_back(tmp_path):
    first = load_dice(SMALL, tmp_path)
    files = list((tmp_path / "dice").glob("*.pt"))
    assert len(files) == 1
    second = load_dice(SMALL, tmp_path)
    assert torch.equal(first.test.images, second.test.images)
    assert torch.equal(first.train.factors, second.train.factors)
    load_dice(DiceSettings(num_train=96, num_val=24, num_test=24, seed=9), tmp_path)
    assert len(list((tmp_path / "dice").glob("*.pt"))) == 2  # keyed by its settings


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        ({"image_size": 4}, "data.image_size=4"),
        ({"num_train": 0}, "data.num_train=0"),
        ({"scale_min": 0.9, "scale_max": 0.5}, "data.scale_range"),
    ],
)
def test_bad_settings_name_the_value(kwargs, bad):
    with pytest.raises(ConfigError, match=bad.replace("[", r"\[")):
        DiceSettings(**kwargs).validate()
