"""Distillation from a wide teacher decoder (``conf/distill/``; ``distill.teacher=<run>``).

A trained run's decoder (the teacher) is loaded data-only from its checkpoint
(:func:`tinycvae.checkpoints.load_model`: ``weights_only``, rebuilt by the project's
builders from plain values), frozen, and asked for its images for each training batch's
labels and latents: in bypass mode the batch's own angles (teacher and student share their
inputs exactly), for a VAE student the student's own z. The student's reconstruction
term becomes

    recon = (1 - weight) * R(student, data) + weight * R(student, teacher image)

with ``R`` the run's ``recon_loss`` (bce takes the teacher's probabilities as soft
targets): ``weight=1`` replaces the data target, ``0 < weight < 1`` joins it. Validation
and test losses stay the plain data ELBO, so a distilled run's ``val/loss`` compares with
any other run's. Everything is checked in :func:`load_teacher`, before any data is
rendered: a missing teacher, a file that is not a tinycvae checkpoint, or a teacher of
another data set, image size, class set, latent mode or latent size is one ConfigError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tinycvae.checkpoints import load_model
from tinycvae.checks import require_number
from tinycvae.data.base import DataSpec
from tinycvae.errors import ConfigError
from tinycvae.losses import reconstruction
from tinycvae.models import CVAE, count_params

CHECKPOINT_NAMES = ("best.ckpt", "last.ckpt")  # a run folder's, in order of preference


def teacher_checkpoint(value: str) -> Path:
    """The checkpoint ``distill.teacher`` names: a ``.ckpt`` file, or a run folder (its
    ``checkpoints/best.ckpt``, else ``last.ckpt``)."""
    path = Path(value)
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise ConfigError(
            f"distill.teacher={value} is a folder without checkpoints/best.ckpt or last.ckpt; "
            "allowed: a finished run folder or a .ckpt file"
        )
    if not path.is_file():
        raise ConfigError(
            f"distill.teacher={value} does not exist; allowed: a run folder or a .ckpt file"
        )
    return path


def _mismatch(spec: DataSpec, student: CVAE, info: dict[str, Any], teacher: CVAE) -> str | None:
    """What makes the teacher unfit to teach this student, or None."""
    theirs = DataSpec.from_dict(info["spec"])
    pairs = [
        ("data set", theirs.name, spec.name),
        ("image size", "x".join(map(str, theirs.shape)), "x".join(map(str, spec.shape))),
        ("classes", theirs.num_classes, spec.num_classes),
        ("latent mode", teacher.latent_mode, student.latent_mode),
        ("latent size", teacher.latent, student.latent),
    ]
    if student.bypass:
        pairs.append(("known factors", theirs.factor_names, spec.factor_names))
    for what, t, s in pairs:
        if t != s:
            return f"its {what} is {t}, this run's is {s}"
    return None


def load_teacher(value: str, spec: DataSpec, student: CVAE, weight: float) -> Teacher:
    """The frozen teacher ``distill.teacher=value`` names, checked against the student."""
    require_number(weight, "distill.weight", 0.0, exclusive=True)
    if weight > 1:
        raise ConfigError(f"distill.weight={weight} is invalid; allowed: 0 < weight <= 1")
    path = teacher_checkpoint(str(value))
    try:
        model, info = load_model(path)
    except ConfigError as err:
        raise ConfigError(f"distill.teacher={value}: {err}") from None
    wrong = _mismatch(spec, student, info, model)
    if wrong:
        raise ConfigError(
            f"distill.teacher={value} cannot teach this run: {wrong}; allowed: a teacher "
            "trained on the same data set, image size and latent mode"
        )
    return Teacher(model.decoder, path, weight, _record(path, info, model))


def _record(path: Path, info: dict[str, Any], model: CVAE) -> dict[str, Any]:
    """What the student's summary says about its teacher."""
    cfg = info["config"].get("model", {})
    run_dir = path.parent.parent
    record = {
        "checkpoint": str(path),
        "run_dir": str(run_dir),
        "dims": "_".join(str(cfg.get(f"dim{i}")) for i in range(1, 5)),
        "params_decoder": count_params(model.decoder),
    }
    try:  # the teacher's own score, when its run folder still has its summary
        acc = json.loads((run_dir / "summary.json").read_text())["metrics"]["gen/acc"]
        record["gen_acc"] = float(acc)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return record


@dataclass
class Teacher:
    """A frozen decoder and the weight of its images in the student's target."""

    decoder: nn.Module
    checkpoint: Path
    weight: float
    record: Mapping[str, Any]

    def __post_init__(self) -> None:
        self.decoder.eval().requires_grad_(False)

    def summary(self) -> dict[str, Any]:
        """The student's ``summary.json`` entry ``distill``: the teacher and the weight."""
        return {"teacher": dict(self.record), "weight": self.weight}

    @torch.no_grad()
    def images(self, z: Tensor, c: Tensor) -> Tensor:
        """The teacher's images in [0, 1] for latents ``z`` and labels ``c`` (moved to
        their device on first use: the teacher is no part of the trained module)."""
        first = next(self.decoder.parameters())
        if first.device != z.device:
            self.decoder.to(z.device)
        return torch.sigmoid(self.decoder(z.detach(), c))

    def join(self, terms: dict, logits: Tensor, z: Tensor, c: Tensor, beta: float, kind: str):
        """A training step's loss terms with the teacher's images joined into the target
        (the module's formula): ``recon`` stays the data term (comparable with any run's),
        ``distill`` is the term against the teacher, ``loss`` uses both."""
        taught = reconstruction(logits, self.images(z, c), kind)
        joined = (1 - self.weight) * terms["recon"] + self.weight * taught
        return {**terms, "loss": joined + beta * terms["kl"], "distill": taught}


def from_config(node: Mapping[str, Any] | None, spec: DataSpec, student: CVAE) -> Teacher | None:
    """The teacher of a job's ``distill`` settings, or None when ``distill.teacher`` is null."""
    node = node or {}
    unknown = set(node) - {"teacher", "weight"}
    if unknown:
        raise ConfigError(
            f"distill.{sorted(unknown)[0]} is not a distillation setting; allowed: "
            "distill.teacher, distill.weight"
        )
    teacher = node.get("teacher")
    if teacher in (None, "", "null"):
        return None
    # Building the teacher draws initial weights: the student's random stream stays as if
    # there were no teacher (same seed, same batches, with or without distillation).
    with torch.random.fork_rng(devices=[]):
        return load_teacher(str(teacher), spec, student, node.get("weight", 1.0))
