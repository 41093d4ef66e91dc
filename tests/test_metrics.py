"""Quality metrics pinned on inputs with known answers, and the metrics stage of a run."""

from __future__ import annotations

import glob
import json
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

import tinycvae.evaluator
import tinycvae.quality_stage
from tinycvae.commands.train import run
from tinycvae.data.dice import DiceSettings, dice_spec, render_dice
from tinycvae.errors import ConfigError
from tinycvae.evaluator import EvaluatorError, EvaluatorSettings, load_or_train
from tinycvae.metrics import PairMetrics, QualitySettings, generation_accuracy
from tinycvae.metrics.fidelity import fidelity_metrics, inception_weights
from tinycvae.sampling import balanced_labels


@pytest.fixture(scope="module")
def dice():
    return render_dice(DiceSettings(num_train=1536, num_val=64, num_test=600, seed=3))


@pytest.fixture(scope="module")
def evaluator(dice, tmp_path_factory):
    settings = EvaluatorSettings(epochs=4, batch_size=64)
    cache = tmp_path_factory.mktemp("cache")
    return load_or_train(dice, dice_spec(), "metrics-test", cache, settings, progress=False)


def test_identical_images_have_zero_mse_and_unit_ssim(dice):
    m = PairMetrics()
    m.update(dice.test.images, dice.test.images)
    out = m.compute()
    assert out["test/mse"] == 0.0 and out["test/ssim"] == pytest.approx(1.0, abs=1e-6)


def test_constant_images_have_the_hand_computed_mse():
    m = PairMetrics()
    m.update(torch.full((4, 1, 32, 32), 0.2), torch.full((4, 1, 32, 32), 0.5))
    assert m.compute()["test/mse"] == pytest.approx(0.09, rel=1e-5)


def test_shifted_images_score_worse_than_identical_ones(dice):
    x = dice.test.images[:64]
    m = PairMetrics()
    m.update(torch.roll(x, shifts=2, dims=3), x)
    out = m.compute()
    assert out["test/mse"] > 0.01 and out["test/ssim"] < 0.9


def test_a_perfect_generator_is_accurate_and_a_constant_one_scores_chance(dice, evaluator):
    real = generation_accuracy(evaluator.evaluator, dice.test.images, dice.test.labels)
    assert real >= 0.95
    labels = balanced_labels(600, 6)
    constant = torch.zeros(600, 1, 32, 32)
    assert generation_accuracy(evaluator.evaluator, constant, labels) == pytest.approx(1 / 6)


def test_fid_kid_precision_recall_on_known_cases(dice, evaluator):
    path = str(evaluator.path)
    same = fidelity_metrics(dice.test.images, dice.test.images, "evaluator", path)
    assert same["gen/fid_evaluator"] == pytest.approx(0.0, abs=1e-2)
    assert same["gen/precision_evaluator"] == 1.0 and same["gen/recall_evaluator"] == 1.0
    # KID is unbiased: for independent draws of one distribution it is ~0 (for the very
    # same images it is negative, since the cross term then holds k(x, x)).
    perfect = fidelity_metrics(dice.train.images[:600], dice.test.images, "evaluator", path)
    constant = fidelity_metrics(torch.zeros(600, 1, 32, 32), dice.test.images, "evaluator", path)
    assert perfect["gen/fid_evaluator"] < 0.05 * constant["gen/fid_evaluator"]
    assert abs(perfect["gen/kid_evaluator"]) < 0.05 * constant["gen/kid_evaluator"]
    assert perfect["gen/recall_evaluator"] > 0.8 and constant["gen/recall_evaluator"] < 0.05


def test_inception_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConfigError, match="metrics.fid.inception_weights"):
        inception_weights(None)
    with pytest.raises(ConfigError, match="does not exist"):
        inception_weights(str(tmp_path / "nope.pth"))


def test_quality_settings_come_from_the_metrics_group_and_check_themselves(tmp_path):
    group = {
        "enabled": True,
        "num_samples": 12,
        "every_n_epochs": 2,
        "seed": 3,
        "fid": {"features": "evaluator", "kid": False},
        "pictures": False,
    }
    s = QualitySettings.from_config(group, num_classes=6)
    assert (s.num_samples, s.batch_size, s.seed, s.features, s.kid, s.prc) == (
        12, 1024, 3, "evaluator", False, True
    )  # fmt: skip
    assert s.weights_path is None  # the evaluator's file, known once it is trained
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"")
    fid = {"features": "inception", "inception_weights": str(weights)}
    assert QualitySettings.from_config({"fid": fid}).weights_path == str(weights)
    for bad, message in [
        ({"num_samples": 5}, "metrics.num_samples=5 is invalid; allowed: an integer >= 6 (one "),
        ({"every_n_epochs": -1}, "metrics.every_n_epochs=-1 is invalid; allowed: >= 0"),
        ({"fid": {"features": "clip"}}, "metrics.fid.features=clip is unknown; allowed: evalu"),
    ]:
        with pytest.raises(ConfigError) as err:
            QualitySettings.from_config({**group, **bad}, num_classes=6)
        assert str(err.value).startswith(message)
    with pytest.raises(ConfigError, match="metrics.num_samples=0 is invalid"):
        QualitySettings(num_samples=0)


def test_a_run_records_every_metric_picture_and_wandb_key(tiny_cfg, tmp_path):
    summary = run(tiny_cfg(logger="wandb", metrics="default"))
    assert summary["status"] == "ok", summary["status"]
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    keys = [
        "test/mse",
        "test/ssim",
        "gen/acc",
        "gen/fid_evaluator",
        "gen/kid_evaluator",
        "gen/precision_evaluator",
        "gen/recall_evaluator",
        "gen/diversity",
        "test/diversity",
        "params/decoder",
    ]
    for key in keys:
        assert key in on_disk["metrics"], key
    (wandb_file,) = glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*" / "run-*.wandb"))
    blob = open(wandb_file, "rb").read()
    assert all(key.encode() in blob for key in keys)
    for name, path in on_disk["pictures"].items():
        png = np.asarray(Image.open(path))
        assert png.dtype == np.uint8 and png.max() > 0, name
    # the reconstructions hold the real (white) dice: scaled to 0-255, not cast to black
    assert np.asarray(Image.open(on_disk["pictures"]["reconstructions"])).max() > 200
    media = glob.glob(
        str(tmp_path / "run" / "wandb" / "offline-run-*" / "files" / "media" / "**" / "*.png"),
        recursive=True,
    )
    assert len(media) == 5
    assert max(np.asarray(Image.open(p)).max() for p in media) > 200


def test_the_class_gaussian_sampler_is_fitted_and_saved_with_the_best_checkpoint(
    tiny_cfg, tmp_path
):
    summary = run(tiny_cfg("model.sampler=class_gaussian", "model.latent=2", metrics="default"))
    assert summary["status"] == "ok", summary["status"]
    state = torch.load(summary["checkpoints"]["best"], weights_only=True)["state_dict"]
    assert bool(state["model.sampler.fitted"])
    assert state["model.sampler.means"].shape == (6, 2)


def test_a_metrics_failure_keeps_the_checkpoints(tiny_cfg, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("feature network exploded")

    monkeypatch.setattr(tinycvae.quality_stage, "evaluate_quality", broken)
    summary = run(tiny_cfg(metrics="default"))
    assert summary["status"] == "failed: metrics: RuntimeError: feature network exploded"
    assert set(summary["checkpoints"]) == {"best", "last"}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"].startswith(
        "failed: metrics"
    )


def test_an_evaluator_below_its_floor_refuses_before_training(tiny_cfg, tmp_path, monkeypatch):
    real = tinycvae.evaluator.train_evaluator
    monkeypatch.setattr(
        tinycvae.evaluator,
        "train_evaluator",
        lambda *a, **k: (real(*a, **k)[0], 0.5),
    )
    with pytest.raises(EvaluatorError, match="below its floor 0.99"):
        run(tiny_cfg("evaluator.floor=0.99", metrics="default"))
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained
