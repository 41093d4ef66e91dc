"""The evaluator: a small CNN that judges generated images by the class it sees in them.

Its accuracy on generated images (the share classified as the class that was asked
for) is the headline metric. It is trained on the real training split with
augmentation (random integer shifts, Gaussian blur on about half the images, Gaussian
noise on about half) so that slightly blurry or noisy generations are judged fairly,
and it refuses to score (:func:`check_floor`) when its accuracy on the clean real test
split is below a per-data-set floor.

Training stops early (``stop_at_floor``) once the accuracy on the clean validation split
reaches the floor (confirmed on the test split the floor judges), checked after every
epoch (or every ``check_every`` steps); ``epochs`` stays the cap. The epochs used are
logged and stored in the cache file.

Trained evaluators are cached per data set and training settings
(:func:`load_or_train`). Without early stopping the floor only judges, so it is not part
of the cache key; with it, the floor (and ``check_every``) decide when training ends, so
they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from tinycvae.cache import load_or_build
from tinycvae.data.base import DataSpec, Split, Splits
from tinycvae.errors import TinyCVAEError
from tinycvae.sampling import evaluation

log = logging.getLogger(__name__)

FEATURE_DIM = 128
MIN_IMAGE_SIZE = 8
BLUR_SIZE = 5  # blur kernel side; sigma is drawn from BLUR_SIGMA
BLUR_SIGMA = (0.5, 1.2)
MIN_TRAIN_PER_CLASS = 10  # fewer training images per class cannot make a judge
EVALUATOR_VERSION = 1  # bump when the network or its training changes, so caches retrain


class EvaluatorError(TinyCVAEError, ValueError):
    """The evaluator is misconfigured, or too weak to be trusted with scoring."""


@dataclass(frozen=True)
class EvaluatorSettings:
    """How the evaluator is trained (all but ``floor``) and judged (``floor``)."""

    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    width: int = 16  # channels of the first conv; then 2x and 4x
    max_shift: int = 2  # pixels, each axis
    blur_prob: float = 0.5
    noise_prob: float = 0.5
    noise_std: float = 0.05
    floor: float = 0.99  # least accuracy on the clean real test split to be allowed to score
    seed: int = 0
    stop_at_floor: bool = False  # stop once the clean val accuracy reaches the floor
    check_every: int = 0  # steps between those checks; 0: after every epoch

    def __post_init__(self) -> None:
        """Settings that exist are valid: conf/evaluator/<data>.yaml builds them (its
        ``_target_``), and a bad value is one line naming its ``evaluator.`` key."""
        checks = {
            "epochs": (self.epochs >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "width": (self.width >= 1, ">= 1"),
            "max_shift": (self.max_shift >= 0, ">= 0"),
            "blur_prob": (0.0 <= self.blur_prob <= 1.0, "0 <= p <= 1"),
            "noise_prob": (0.0 <= self.noise_prob <= 1.0, "0 <= p <= 1"),
            "noise_std": (self.noise_std >= 0, ">= 0"),
            "floor": (0.0 <= self.floor <= 1.0, "0 <= floor <= 1"),
            "stop_at_floor": (isinstance(self.stop_at_floor, bool), "true or false"),
            "check_every": (self.check_every >= 0, ">= 0 (0: after every epoch)"),
        }
        for key, (ok, allowed) in checks.items():
            if not ok:
                raise EvaluatorError(
                    f"evaluator.{key}={getattr(self, key)} is invalid; allowed: {allowed}"
                )

    def cache_key(self) -> str:
        """Hash of everything that shapes the trained weights. Without early stopping
        that is neither ``floor`` nor ``check_every`` (so such keys are the ones of the
        settings before early stopping existed); with it, both are."""
        stopping = ("floor", "stop_at_floor", "check_every")
        shaping = {k: v for k, v in asdict(self).items() if k not in stopping}
        if self.stop_at_floor:
            shaping["stop_at_floor"] = {"floor": self.floor, "check_every": self.check_every}
        blob = json.dumps({"version": EVALUATOR_VERSION, **shaping}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Evaluator(nn.Module):
    """Three conv blocks (w, 2w, 4w channels), pooled to 4x4, then 128-d features."""

    def __init__(self, spec: DataSpec, width: int = 16) -> None:
        super().__init__()
        if min(spec.height, spec.width) < MIN_IMAGE_SIZE:
            raise EvaluatorError(
                f"evaluator for {spec.name}: images {spec.height}x{spec.width} are too small; "
                f"allowed: height and width >= {MIN_IMAGE_SIZE}"
            )
        self.spec = spec
        w = width
        blocks: list[nn.Module] = []
        for c_in, c_out in ((spec.channels, w), (w, 2 * w), (2 * w, 4 * w)):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        self.conv = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.hidden = nn.Sequential(nn.Linear(4 * w * 16, FEATURE_DIM), nn.ReLU())
        self.out = nn.Linear(FEATURE_DIM, spec.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features [B, 128] (after the ReLU) of images [B, C, H, W] in [0, 1]."""
        return self.hidden(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x))

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        """Predicted labels [B] (on ``x``'s device), in eval mode, ``batch_size`` at a time."""
        device = next(self.parameters()).device
        with evaluation(self):
            preds = [
                self(x[i : i + batch_size].to(device)).argmax(1).to(x.device)
                for i in range(0, x.shape[0], batch_size)
            ]
        return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=x.device)


def _blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Gaussian blur, one sigma per image, as one grouped conv (edges replicated)."""
    b, c, h, w = x.shape
    r = torch.arange(BLUR_SIZE, device=x.device, dtype=x.dtype) - BLUR_SIZE // 2
    k1 = torch.exp(-(r[None, :] ** 2) / (2 * sigma[:, None] ** 2))  # [B, K]
    k1 = k1 / k1.sum(1, keepdim=True)
    k2 = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(c, 0)  # [B*C, K, K]
    pad = BLUR_SIZE // 2
    xp = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="replicate")
    return F.conv2d(xp, k2[:, None], groups=b * c).reshape(b, c, h, w)


def augment(
    x: Tensor, generator: torch.Generator, settings: EvaluatorSettings | None = None
) -> Tensor:
    """Randomly shift (zero fill), blur and add noise to a batch; result clamped to [0, 1].

    Every random number is drawn from ``generator`` in a fixed order, whatever the
    probabilities, so the same generator state always gives the same batch.
    """
    s = settings or EvaluatorSettings()
    b, _, h, w = x.shape
    gdev = generator.device

    def rand(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, device=gdev).to(x.device)

    # Shift: pad with zeros, then crop an H x W window at a random offset per image.
    m = s.max_shift
    offsets = torch.randint(0, 2 * m + 1, (2, b), generator=generator, device=gdev).to(x.device)
    blur_mask = rand(b) < s.blur_prob
    sigma = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * rand(b)
    noise_mask = rand(b) < s.noise_prob
    noise = torch.randn(x.shape, generator=generator, device=gdev).to(x.device)

    if m > 0:
        xp = F.pad(x, (m, m, m, m))
        rows = offsets[0][:, None] + torch.arange(h, device=x.device)  # [B, H]
        cols = offsets[1][:, None] + torch.arange(w, device=x.device)  # [B, W]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
    if blur_mask.any():
        x = x.clone()
        x[blur_mask] = _blur(x[blur_mask], sigma[blur_mask])
    x = x + s.noise_std * noise * noise_mask[:, None, None, None]
    return x.clamp(0.0, 1.0)


def accuracy(evaluator: Evaluator, images: Tensor, labels: Tensor) -> float:
    """Share of ``images`` the evaluator classifies as ``labels``."""
    if images.shape[0] == 0:
        raise EvaluatorError("accuracy of 0 images is undefined; allowed: at least 1 image")
    return (evaluator.predict(images) == labels.to(images.device)).float().mean().item()


def least_training_images(spec: DataSpec) -> int:
    """Fewest training images the evaluator of ``spec`` learns from: the per-class minimum
    (``MIN_TRAIN_PER_CLASS``) times the classes. The job's config check and
    :func:`train_evaluator` both ask this."""
    return MIN_TRAIN_PER_CLASS * spec.num_classes


def _check_training_split(train: Split, spec: DataSpec) -> None:
    """One line when the training images have the wrong shape or are too few."""
    if tuple(train.images.shape[1:]) != spec.shape:
        raise EvaluatorError(
            f"evaluator for {spec.name} expects images {list(spec.shape)}; "
            f"got {list(train.images.shape[1:])}"
        )
    least = least_training_images(spec)
    if len(train) < least:
        raise EvaluatorError(
            f"evaluator for {spec.name}: {len(train)} training images are too few; allowed: "
            f">= {least} ({MIN_TRAIN_PER_CLASS} per class), or metrics=none"
        )


@dataclass
class _Run:
    """One evaluator training: the model, its optimiser and schedule, and its progress."""

    model: Evaluator
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator
    steps: int  # per epoch
    every: int  # steps between floor checks
    stop: bool  # stop at the floor
    done: int = 0  # steps taken
    val_acc: float = math.nan


def _start(splits: Splits, spec: DataSpec, settings: EvaluatorSettings) -> _Run:
    """The seeded model (the caller's global RNG left alone), Adam + OneCycle over every
    epoch's steps, and the data-order generator."""
    device = splits.train.images.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = Evaluator(spec, settings.width).to(device)
    steps = -(-len(splits.train) // settings.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=settings.lr, total_steps=settings.epochs * steps
    )
    every = settings.check_every if 0 < settings.check_every < steps else steps
    gen = torch.Generator().manual_seed(settings.seed)
    stop = settings.stop_at_floor and len(splits.val) > 0
    return _Run(model, opt, sched, gen, steps, every, stop)


def _reached_floor(run: _Run, splits: Splits, floor: float) -> bool:
    """The clean validation accuracy reaches ``floor`` — confirmed on the test split, which
    :func:`check_floor` judges: a val accuracy that touches the floor by chance must not
    leave an evaluator that refuses."""
    run.val_acc = accuracy(run.model, splits.val.images, splits.val.labels)
    reached = run.val_acc >= floor and (
        accuracy(run.model, splits.test.images, splits.test.labels) >= floor
    )
    run.model.train()
    return reached


def _train_epoch(run: _Run, splits: Splits, settings: EvaluatorSettings) -> tuple[float, bool]:
    """One pass over the shuffled, augmented training split; the mean loss so far and whether
    the floor was reached (the epoch then ends at that step)."""
    train, model = splits.train, run.model
    device = train.images.device
    model.train()
    order = torch.randperm(len(train), generator=run.gen).to(device)
    total = torch.zeros((), device=device)  # summed on the device: no sync per step
    for step, start in enumerate(range(0, len(train), settings.batch_size), 1):
        idx = order[start : start + settings.batch_size]
        x = augment(train.images[idx], run.gen, settings)
        loss = F.cross_entropy(model(x), train.labels[idx])
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.sched.step()
        total += loss.detach()
        run.done += 1
        if run.stop and (step % run.every == 0 or step == run.steps):
            if _reached_floor(run, splits, settings.floor):
                return float(total) / step, True
    return float(total) / step, False


def _log_end(run: _Run, spec: DataSpec, settings: EvaluatorSettings, stopped: bool,
             test_acc: float) -> None:  # fmt: skip
    if stopped:
        log.info(
            "evaluator %s: stopped after %g of %d epochs (val acc %.4f >= floor %g; test acc %.4f)",
            spec.name, run.model.epochs_used, settings.epochs, run.val_acc, settings.floor,
            test_acc,
        )  # fmt: skip
    elif run.stop:
        log.info(
            "evaluator %s: trained all %d epochs (val acc %.4f < floor %g; test acc %.4f)",
            spec.name, settings.epochs, run.val_acc, settings.floor, test_acc,
        )  # fmt: skip


def train_evaluator(
    splits: Splits, spec: DataSpec, settings: EvaluatorSettings, progress: bool = True
) -> tuple[Evaluator, float]:
    """Train on ``splits.train`` (augmented); return the model (eval mode) and clean test acc.

    With ``settings.stop_at_floor`` training ends at the first check (after each epoch, or
    every ``check_every`` steps) where the clean validation accuracy reaches
    ``settings.floor`` (and the test accuracy, which :func:`check_floor` judges, does too);
    ``settings.epochs`` is the cap either way. The epochs used (a
    fraction when it stopped within an epoch) are ``model.epochs_used``.

    Deterministic given ``settings.seed``; the caller's global RNG state is left untouched.
    Trains on the device the training images are on.
    """
    _check_training_split(splits.train, spec)
    run = _start(splits, spec, settings)
    stopped = False
    bar = tqdm(range(settings.epochs), desc=f"evaluator {spec.name}", disable=not progress)
    for _ in bar:
        mean_loss, stopped = _train_epoch(run, splits, settings)
        if progress:
            if not run.stop:
                run.val_acc = accuracy(run.model, splits.val.images, splits.val.labels)
            bar.set_postfix(loss=f"{mean_loss:.4f}", val_acc=f"{run.val_acc:.4f}")
        if stopped:
            break
    bar.close()
    model = run.model.eval()
    model.epochs_used = round(run.done / run.steps, 3)
    test_acc = accuracy(model, splits.test.images, splits.test.labels)
    _log_end(run, spec, settings, stopped, test_acc)
    return model, test_acc


@dataclass
class EvaluatorRecord:
    """A trained evaluator, its clean real test accuracy, and where it is cached."""

    evaluator: Evaluator
    test_acc: float
    path: Path | None
    settings: EvaluatorSettings
    epochs_used: float | None = None  # None: read from a cache written before it was kept


def _read(path: str | Path) -> tuple[Evaluator, dict]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    spec = DataSpec.from_dict(blob["spec"])
    model = Evaluator(spec, int(blob["settings"]["width"]))
    model.load_state_dict(blob["state_dict"])
    return model.eval(), blob


def load_evaluator_file(path: str | Path) -> Evaluator:
    """The evaluator in a cache file written by :func:`load_or_train` (CPU, eval mode)."""
    return _read(path)[0]


def load_or_train(
    splits: Splits,
    spec: DataSpec,
    data_key: str,
    cache_dir: str | Path | None,
    settings: EvaluatorSettings,
    progress: bool = True,
) -> EvaluatorRecord:
    """The evaluator for ``data_key`` (a data module's ``cache_key()``) and ``settings``.

    Read from ``<cache_dir>/evaluators/<data_key>-<settings.cache_key()>.pt`` when there;
    else trained and written there atomically (parallel jobs never read half a file).
    A cache file that cannot be read (corrupt, truncated, for other data) is retrained
    and overwritten, with a warning. ``cache_dir=None`` trains and writes nothing.
    """
    device = splits.train.images.device
    if cache_dir is None:
        model, acc = train_evaluator(splits, spec, settings, progress)
        return EvaluatorRecord(model, acc, None, settings, model.epochs_used)
    path = Path(cache_dir) / "evaluators" / f"{data_key}-{settings.cache_key()}.pt"

    def read(path: Path) -> EvaluatorRecord:
        model, blob = _read(path)
        keys = ("channels", "height", "width", "num_classes")
        if any(getattr(model.spec, k) != getattr(spec, k) for k in keys):
            raise EvaluatorError(f"it holds an evaluator for other data: {model.spec}")
        used = blob.get("epochs_used")
        return EvaluatorRecord(
            model.to(device), float(blob["test_acc"]), path, settings,
            None if used is None else float(used),
        )  # fmt: skip

    def build() -> tuple[EvaluatorRecord, dict]:
        model, acc = train_evaluator(splits, spec, settings, progress)
        blob = {
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "spec": asdict(spec),
            "test_acc": acc,
            "settings": asdict(settings),
            "epochs_used": model.epochs_used,
        }
        return EvaluatorRecord(model, acc, path, settings, model.epochs_used), blob

    return load_or_build(path, read, build, "retraining")


def check_floor(record: EvaluatorRecord, floor: float | None = None) -> None:
    """Refuse to score with an evaluator below ``floor`` (default: its settings' floor)."""
    floor = record.settings.floor if floor is None else floor
    if record.test_acc < floor:
        name = record.evaluator.spec.name
        acc = math.floor(record.test_acc * 1e4) / 1e4  # rounded down: never shown at the floor
        raise EvaluatorError(
            f"evaluator for {name} scores {acc:g} on its real test split, "
            f"below its floor {floor:g}; it refuses to score: retrain it with more epochs "
            f"(evaluator.epochs={2 * record.settings.epochs}) or more training images, or "
            "lower evaluator.floor"
        )
