"""The evaluator CNN: accuracy, augmentation, the disk cache, the floor, determinism."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import tinycvae.evaluator as ev
from tinycvae.data.base import DataSpec, Split, Splits
from tinycvae.data.dice import DiceSettings, dice_spec, render_dice
from tinycvae.evaluator import (
    Evaluator,
    EvaluatorError,
    EvaluatorRecord,
    EvaluatorSettings,
    accuracy,
    augment,
    check_floor,
    load_evaluator_file,
    load_or_train,
    train_evaluator,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
SPEC = dice_spec(32)
# 1536 dice, batch 64, 4 epochs: 100% clean test accuracy for every seed tried (0-3), ~2 s.
SMALL = EvaluatorSettings(epochs=4, batch_size=64, seed=0)
TINY = EvaluatorSettings(epochs=1, batch_size=64, seed=0)  # for cache / determinism checks


@pytest.fixture(scope="module")
def dice() -> Splits:
    return render_dice(DiceSettings(num_train=1536, num_val=128, num_test=512, seed=3))


@pytest.fixture(scope="module")
def small(dice) -> Splits:
    """A 384-image training split, for tests that only need some training."""
    tr = dice.train
    return Splits(Split(tr.images[:384], tr.labels[:384]), dice.val, dice.test)


@pytest.fixture(scope="module")
def trained(dice):
    return train_evaluator(dice, SPEC, SMALL, progress=False)


def test_trained_evaluator_classifies_clean_dice(trained, dice):
    model, test_acc = trained
    assert not model.training
    assert test_acc >= 0.95
    assert accuracy(model, dice.test.images, dice.test.labels) == test_acc
    x = dice.test.images[:10]
    feats = model.features(x)
    assert feats.shape == (10, 128) and feats.min() >= 0  # post-ReLU
    assert model(x).shape == (10, 6)
    assert torch.equal(model.predict(x, batch_size=3), model(x).argmax(1))


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 17, 23)])
def test_evaluator_takes_any_image_size_from_8(shape):
    c, h, w = shape
    spec = DataSpec("x", c, h, w, 10, tuple("abcdefghij"))
    model = Evaluator(spec, width=4)
    assert model(torch.rand(2, c, h, w)).shape == (2, 10)
    assert model.features(torch.rand(2, c, h, w)).shape == (2, 128)


def test_evaluator_refuses_images_below_8_pixels():
    with pytest.raises(EvaluatorError, match="7x8 are too small"):
        Evaluator(DataSpec("x", 1, 7, 8, 2, ("a", "b")))


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` [C, H, W] moved by (dy, dx) pixels, zero fill, no wrap-around."""
    out = torch.zeros_like(x)
    h, w = x.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_augment_keeps_shape_and_range_and_is_repeatable():
    x = torch.rand(64, 3, 16, 20)
    a = augment(x, gen(1), EvaluatorSettings(noise_std=0.5))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert torch.equal(a, augment(x, gen(1), EvaluatorSettings(noise_std=0.5)))
    assert not torch.equal(a, augment(x, gen(2), EvaluatorSettings(noise_std=0.5)))


def test_augment_shifts_by_whole_pixels_with_zero_fill():
    x = 0.01 + 0.98 * torch.rand(40, 2, 12, 12)  # no zeros inside: each shift is unique
    only_shift = EvaluatorSettings(max_shift=2, blur_prob=0.0, noise_prob=0.0)
    out = augment(x, gen(), only_shift)
    moves = []
    for i in range(len(x)):
        match = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(out[i], shifted(x[i], dy, dx))
        ]
        assert len(match) == 1, f"image {i} is not a zero-filled integer shift of its input"
        moves.append(match[0])
    assert len(set(moves)) > 5  # shifts vary per image, and are not all (0, 0)
    assert torch.equal(augment(x, gen(), replace(only_shift, max_shift=0)), x)


def high_freq_energy(x: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared difference of neighbouring pixels."""
    return (x.diff(dim=-1) ** 2).mean((1, 2, 3)) + (x.diff(dim=-2) ** 2).mean((1, 2, 3))


def test_blur_lowers_high_frequency_energy():
    x = torch.rand(32, 1, 16, 16)
    out = augment(x, gen(), EvaluatorSettings(max_shift=0, blur_prob=1.0, noise_prob=0.0))
    assert (high_freq_energy(out) < 0.5 * high_freq_energy(x)).all()
    flat = torch.full((4, 1, 16, 16), 0.3)  # a normalised kernel leaves flat images alone
    blurred = augment(flat, gen(), EvaluatorSettings(max_shift=0, blur_prob=1.0, noise_prob=0))
    assert torch.allclose(blurred, flat, atol=1e-6)


def test_noise_adds_variance_of_noise_std():
    x = torch.full((64, 1, 32, 32), 0.5)
    out = augment(x, gen(), EvaluatorSettings(max_shift=0, blur_prob=0.0, noise_prob=1.0))
    assert out.std().item() == pytest.approx(0.05, rel=0.05)
    assert out.mean().item() == pytest.approx(0.5, abs=0.005)


def test_about_half_the_images_are_blurred_and_half_noised():
    x = torch.rand(2000, 1, 8, 8)
    blurred = augment(x, gen(), EvaluatorSettings(max_shift=0, blur_prob=0.5, noise_prob=0.0))
    share = (blurred != x).flatten(1).any(1).float().mean().item()
    assert 0.45 <= share <= 0.55
    x = torch.full((2000, 1, 8, 8), 0.5)
    noised = augment(x, gen(), EvaluatorSettings(max_shift=0, blur_prob=0.0, noise_prob=0.5))
    share = (noised != x).flatten(1).any(1).float().mean().item()
    assert 0.45 <= share <= 0.55


def test_load_or_train_reads_its_cache_the_second_time(small, tmp_path, monkeypatch):
    first = load_or_train(small, SPEC, "dice-abc", tmp_path, TINY, progress=False)
    assert first.path == tmp_path / "evaluators" / f"dice-abc-{TINY.cache_key()}.pt"
    assert first.path.exists()
    # no temporary file left; the builders' lock file stays (see tinycvae.cache)
    left = sorted(p.name for p in first.path.parent.iterdir())
    assert left == sorted([first.path.name, f".{first.path.name}.lock"])

    def no_training(*args, **kwargs):
        raise AssertionError("train_evaluator called although the cache exists")

    monkeypatch.setattr(ev, "train_evaluator", no_training)
    again = load_or_train(small, SPEC, "dice-abc", tmp_path, TINY, progress=False)
    assert again.path == first.path and again.test_acc == first.test_acc
    assert not again.evaluator.training
    x = small.test.images
    assert torch.equal(again.evaluator.predict(x), first.evaluator.predict(x))
    blob = torch.load(first.path, weights_only=True)
    assert set(blob) == {"state_dict", "spec", "test_acc", "settings", "epochs_used"}
    assert blob["spec"]["name"] == "dice" and blob["settings"]["epochs"] == 1
    assert blob["epochs_used"] == 1 and first.epochs_used == again.epochs_used == 1
    from_file = load_evaluator_file(first.path)  # what FID's feature extractor loads
    assert from_file.spec == SPEC and not from_file.training
    assert torch.equal(from_file.features(x), first.evaluator.features(x))
    # The floor only judges: another floor finds the same file.
    floored = load_or_train(small, SPEC, "dice-abc", tmp_path, replace(TINY, floor=0.5))
    assert floored.path == first.path and floored.settings.floor == 0.5


def test_other_settings_or_data_use_another_file(small, tmp_path):
    a = load_or_train(small, SPEC, "dice-abc", tmp_path, TINY, progress=False)
    b = load_or_train(small, SPEC, "dice-abc", tmp_path, replace(TINY, seed=1), progress=False)
    c = load_or_train(small, SPEC, "dice-xyz", tmp_path, TINY, progress=False)
    assert len({a.path, b.path, c.path}) == 3 and all(r.path.exists() for r in (a, b, c))


def test_corrupt_cache_is_retrained_with_a_warning(small, tmp_path):
    path = tmp_path / "evaluators" / f"dice-abc-{TINY.cache_key()}.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a file")
    with pytest.warns(UserWarning, match="unreadable.*retraining"):
        record = load_or_train(small, SPEC, "dice-abc", tmp_path, TINY, progress=False)
    assert record.path == path
    assert set(torch.load(path, weights_only=True)) >= {"state_dict", "test_acc"}


def test_no_cache_dir_trains_and_writes_nothing(small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = load_or_train(small, SPEC, "dice-abc", None, TINY, progress=False)
    assert record.path is None and 0.0 <= record.test_acc <= 1.0
    assert list(tmp_path.iterdir()) == []


def test_check_floor_names_accuracy_floor_and_fix(trained):
    model, _ = trained
    record = EvaluatorRecord(model, 0.973, None, EvaluatorSettings(epochs=8, floor=0.99))
    with pytest.raises(EvaluatorError) as err:
        check_floor(record, 0.99)
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("dice", "0.973", "floor 0.99", "evaluator.epochs=", "evaluator.floor"):
        assert part in msg
    with pytest.raises(EvaluatorError, match="floor 0.99"):
        check_floor(record)  # default: the record's own floor
    check_floor(record, 0.97)
    with pytest.raises(EvaluatorError, match="scores 0.9899 on"):  # rounded down, not to 0.99
        check_floor(replace(record, test_acc=0.98996))
    check_floor(replace(record, test_acc=0.99))  # at the floor is enough


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("epochs", 0, ">= 1"),
        ("batch_size", 0, ">= 1"),
        ("lr", 0.0, "> 0"),
        ("width", 0, ">= 1"),
        ("max_shift", -1, ">= 0"),
        ("blur_prob", 1.5, "0 <= p <= 1"),
        ("noise_prob", -0.1, "0 <= p <= 1"),
        ("noise_std", -0.05, ">= 0"),
        ("floor", 1.2, "0 <= floor <= 1"),
        ("check_every", -1, ">= 0 (0: after every epoch)"),
    ],
)
def test_bad_settings_name_the_key(key, value, allowed):
    msg = f"evaluator.{key}={value} is invalid; allowed: {allowed}"
    with pytest.raises(EvaluatorError) as err:
        replace(EvaluatorSettings(), **{key: value})  # settings that exist are valid
    assert str(err.value) == msg


def test_images_of_the_wrong_shape_are_refused(small):
    with pytest.raises(EvaluatorError, match=r"expects images \[1, 28, 28\]; got \[1, 32, 32\]"):
        train_evaluator(small, dice_spec(28), TINY, progress=False)


def test_cache_key_covers_training_fields_but_not_the_floor():
    base = EvaluatorSettings()
    assert replace(base, floor=0.5).cache_key() == base.cache_key()
    assert replace(base, check_every=7).cache_key() == base.cache_key()  # no early stop
    for f in fields(base):
        if f.name not in ("floor", "check_every"):
            value = getattr(base, f.name)
            new = value / 2 if isinstance(value, float) else value * 2 + 1  # valid, and other
            if isinstance(value, bool):
                new = not value
            other = replace(base, **{f.name: new})
            assert other.cache_key() != base.cache_key(), f.name


def test_with_early_stop_the_floor_and_check_every_shape_the_key():
    stop = EvaluatorSettings(stop_at_floor=True)
    assert stop.cache_key() != EvaluatorSettings().cache_key()
    assert replace(stop, floor=0.5).cache_key() != stop.cache_key()
    assert replace(stop, check_every=7).cache_key() != stop.cache_key()


def test_the_dice_evaluator_keeps_its_cache_key():
    """Early stopping is off for dice: its cached evaluators stay valid (the key of
    conf/evaluator/dice.yaml before early stopping existed)."""
    settings = instantiate(OmegaConf.load(CONF / "evaluator" / "dice.yaml"))
    assert not settings.stop_at_floor and settings.cache_key() == "3e5a3dfa6cbaa95b"


def test_early_stop_ends_training_at_the_floor_before_the_epoch_cap(dice, tmp_path, caplog):
    full = EvaluatorSettings(epochs=6, batch_size=64, floor=0.9, seed=0)
    early = replace(full, stop_at_floor=True)
    with caplog.at_level("INFO", logger="tinycvae.evaluator"):
        record = load_or_train(dice, SPEC, "dice-abc", tmp_path, early, progress=False)
    assert 1 <= record.epochs_used < 6 and record.epochs_used == int(record.epochs_used)
    assert record.test_acc >= 0.9
    assert accuracy(record.evaluator, dice.val.images, dice.val.labels) >= 0.9
    assert f"stopped after {record.epochs_used:g} of 6 epochs" in caplog.text
    blob = torch.load(record.path, weights_only=True)
    assert blob["epochs_used"] == record.epochs_used
    # Checked every 5 steps: it may stop within an epoch, never later than once per epoch.
    steps = replace(early, check_every=5)
    model, acc = train_evaluator(dice, SPEC, steps, progress=False)
    assert model.epochs_used <= record.epochs_used and acc >= 0.9
    # Without early stop (or with a floor it never reaches) the cap is used.
    assert train_evaluator(dice, SPEC, replace(full, epochs=2), progress=False)[0].epochs_used == 2
    never = replace(early, epochs=2, floor=1.0, seed=1)
    model, acc = train_evaluator(dice, SPEC, never, progress=False)
    assert model.epochs_used == 2 or acc == 1.0


def test_same_seed_same_weights_other_seed_other_weights(small):
    state = torch.get_rng_state()
    a, acc_a = train_evaluator(small, SPEC, TINY, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    b, acc_b = train_evaluator(small, SPEC, TINY, progress=False)
    c, _ = train_evaluator(small, SPEC, replace(TINY, seed=1), progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and acc_a == acc_b
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize(
    "name, floor", [("dice", 0.99), ("mnist", 0.98), ("fashion_mnist", 0.88), ("cifar10", 0.60)]
)
def test_evaluator_configs_are_valid_settings_one_per_data_set(name, floor):
    assert (CONF / "data" / f"{name}.yaml").exists()
    cfg = OmegaConf.load(CONF / "evaluator" / f"{name}.yaml")
    assert set(cfg) == {"_target_"} | {f.name for f in fields(EvaluatorSettings)}
    settings = instantiate(cfg)
    assert isinstance(settings, EvaluatorSettings) and settings.floor == floor
