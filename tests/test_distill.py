"""Distillation from a teacher decoder (distill.teacher=): a tiny teacher and student end
to end, the loss against the teacher's images, and the refusals before any work."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tinycvae.checkpoints import load_model
from tinycvae.commands.train import run
from tinycvae.errors import ConfigError
from tinycvae.job import build

from conftest import TINY, compose_train, run_train

BYPASS = ["model.latent_mode=bypass", "model.latent=1", "logger=none", "metrics=none"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A finished tiny bypass run, wider than the students (its folder)."""
    root = tmp_path_factory.mktemp("teacher")
    cfg = compose_train([*TINY, *BYPASS, "model.dim1=4", "model.dim2=4"], root)
    assert run(cfg)["status"] == "ok"
    return root / "run"


def student(tmp_path, *overrides: str):
    return compose_train([*TINY, *BYPASS, *overrides], tmp_path)


def fixed_batch(n: int = 8):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 32, 32, generator=g)
    y = torch.arange(n) % 6
    f = torch.rand(n, 2, generator=g) * 2 - 1
    return x, y, f


def test_a_student_trains_on_the_teacher_and_records_it(teacher, tmp_path):
    summary = run(student(tmp_path, f"distill.teacher={teacher}"))
    assert summary["status"] == "ok"
    record = summary["distill"]
    assert record["teacher"]["checkpoint"] == str(teacher / "checkpoints" / "best.ckpt")
    assert record["teacher"]["dims"] == "4_4_4_4" and record["weight"] == 1.0
    m = summary["metrics"]
    for key in ("train/loss", "train/recon", "train/distill", "val/loss", "test/loss"):
        assert math.isfinite(m[key]), key
    # The checkpoint holds the student only: it loads like any run's, teacher-free.
    ckpt = torch.load(summary["checkpoints"]["best"], weights_only=True)
    assert not any("teacher" in k for k in ckpt["state_dict"])
    model, _ = load_model(summary["checkpoints"]["best"])
    assert summary["params"]["params/decoder"] == sum(p.numel() for p in model.parameters())


def test_the_loss_is_the_weighted_sum_against_data_and_teacher_images(teacher, tmp_path):
    job = build(student(tmp_path, f"distill.teacher={teacher}", "distill.weight=0.25"))
    module, x, y, f = job.module, *fixed_batch()
    terms = module._terms((x, y, f), beta=1.0, teach=True)
    teacher_model, _ = load_model(teacher / "checkpoints" / "best.ckpt")
    logits = module.model.decode(f[:, :1], y)
    with torch.no_grad():
        target = torch.sigmoid(teacher_model.decode(f[:, :1], y))

    def bce(t):
        return F.binary_cross_entropy_with_logits(logits, t, reduction="sum") / len(x)

    expected = 0.75 * bce(x) + 0.25 * bce(target)
    torch.testing.assert_close(terms["loss"], expected)
    torch.testing.assert_close(terms["distill"], bce(target))
    torch.testing.assert_close(terms["recon"], bce(x))  # the data term, as every run logs it
    # Validation and test stay the plain ELBO against the data.
    torch.testing.assert_close(module._terms((x, y, f), beta=1.0)["loss"], bce(x))


def test_with_weight_one_the_teacher_replaces_the_data_target(teacher, tmp_path):
    module = build(student(tmp_path, f"distill.teacher={teacher}")).module
    x, y, f = fixed_batch()

    def grads(images):
        module.zero_grad()
        module._terms((images, y, f), beta=1.0, teach=True)["loss"].backward()
        return [p.grad.clone() for p in module.model.parameters()]

    same = grads(x), grads(torch.rand_like(x))  # other data images: the same gradient
    for a, b in zip(*same):
        torch.testing.assert_close(a, b)
    plain = build(student(tmp_path)).module  # same seed, same initial weights, no teacher
    plain._terms((x, y, f), beta=1.0, teach=True)["loss"].backward()
    diffs = [(p.grad - g).abs().max() for p, g in zip(plain.model.parameters(), same[0])]
    assert max(diffs) > 1e-4  # the teacher's images, not the data, drive the student


def _garbage(_teacher, tmp_path):
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"not a checkpoint")
    return path


@pytest.mark.parametrize(
    "teacher_of, extra, message",
    [
        (lambda t, tmp: tmp / "nosuch", [], "does not exist; allowed: a run folder or a .ckpt"),
        (lambda t, tmp: tmp, [], "is a folder without checkpoints/best.ckpt"),
        (_garbage, [], "is not a loadable tinycvae checkpoint"),
        (lambda t, tmp: t, ["model.latent_mode=reparam"], "its latent mode is bypass"),
        (lambda t, tmp: t, ["data.image_size=28"], "its image size is 1x32x32"),
        (lambda t, tmp: t, ["distill.weight=1.5"], "allowed: 0 < weight <= 1"),
        (lambda t, tmp: t, ["+distill.layers=3"], "distill.layers is not a distillation"),
    ],
)
def test_a_bad_teacher_is_refused_before_any_data(teacher, tmp_path, teacher_of, extra, message):
    cfg = student(tmp_path, f"distill.teacher={teacher_of(teacher, tmp_path)}", *extra)
    with pytest.raises(ConfigError, match=message) as err:
        build(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "data").exists()  # nothing rendered


def test_the_command_line_refusal_is_one_line_and_exit_2(teacher, tmp_path):
    args = [*TINY, "model.latent=1", "logger=none", f"distill.teacher={teacher}"]
    done = run_train(args, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: distill.teacher={teacher} cannot teach this run: its")
    assert "latent mode is bypass, this run's is reparam" in lines[-1]
    assert not (tmp_path / "data").exists()


def test_the_narrow_search_draws_each_width_on_its_own():
    from hydra import compose, initialize_config_dir
    from optuna.distributions import IntDistribution

    from tinycvae.search.space import search_space

    from conftest import CONF

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", ["hparams_search=dice_optuna_narrow"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert list(sweeper.direction) == ["minimize", "maximize"] and len(cfg.objective) == 2
    space, fixed = search_space(dict(sweeper.params), ["distill.teacher=runs/wide"])
    assert space == {
        "model.dim1": IntDistribution(1, 6),
        "model.dim2": IntDistribution(1, 6),
        "model.dim3": IntDistribution(1, 6),
        "model.dim4": IntDistribution(1, 4),
    }
    assert fixed == ["distill.teacher=runs/wide"]  # every trial learns from the teacher


@pytest.mark.slow
def test_an_optuna_search_distils_every_trial(teacher, tmp_path):
    tiny = [o for o in TINY if not o.startswith("model.dim")]
    args = [
        "-m",
        "hparams_search=dice_optuna_narrow",
        "hydra.sweeper.n_trials=2",
        "logger=none",
        "metrics=none",
        "objective=[mcu/int8/flash_bytes,val/loss]",
        "hydra.sweeper.direction=[minimize,minimize]",
        f"distill.teacher={teacher}",
        *tiny,
    ]
    done = run_train(args, tmp_path, timeout=900)  # two trials: minutes on a busy machine
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [
        json.loads(p.read_text()) for p in tmp_path.glob("logs/multiruns/*/*/summary.json")
    ]
    assert len(summaries) == 2
    for s in summaries:
        assert s["status"] == "ok"
        assert s["distill"]["teacher"]["run_dir"] == str(teacher)
        assert math.isfinite(s["metrics"]["train/distill"])
