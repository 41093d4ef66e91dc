"""Procedural dice: the default data set, rendered by the project itself (no download).

Each image is one face of a die (classes 0..5 = 1..6 pips), drawn large on a
``supersample``-times bigger canvas, rotated by an angle drawn uniformly from
[-45°, 45°) (the die's outline repeats every 90°, so this range covers every pose
exactly once), and downscaled with a box filter (anti-aliasing). The die side is
``scale * fit(angle)`` where ``fit`` is the largest side whose rotated square still
fits inside the canvas margin: the die is never clipped. ``scale`` is drawn uniformly
from ``scale_range`` (the electronic-die article used a fixed shrink-to-fit, i.e.
``[1.0, 1.0]``).

Generating factors, both normalised to [-1, 1]:
  * ``angle`` = angle / 45°;
  * ``scale`` = die side relative to the canvas, mapped linearly from its attainable
    range ``[scale_min * fit(45°), scale_max * fit(0°)]``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from tinycvae.cache import load_or_build
from tinycvae.checks import require_int, require_number
from tinycvae.data.base import DataError, DataSpec, Split, Splits
from tinycvae.errors import ConfigError

CLASS_NAMES = ("1", "2", "3", "4", "5", "6")
FACTOR_NAMES = ("angle", "scale")
MAX_ANGLE = 45.0
MIN_IMAGE_SIZE = 8
RENDER_VERSION = 2  # bump when the drawing changes, so caches are rebuilt

# Pip positions on a 3x3 grid, (column, row) in {-1, 0, 1}.
PIPS: dict[int, tuple[tuple[int, int], ...]] = {
    1: ((0, 0),),
    2: ((-1, -1), (1, 1)),
    3: ((-1, -1), (0, 0), (1, 1)),
    4: ((-1, -1), (1, -1), (-1, 1), (1, 1)),
    5: ((-1, -1), (1, -1), (0, 0), (-1, 1), (1, 1)),
    6: ((-1, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (1, 1)),
}


@dataclass(frozen=True)
class DiceSettings:
    """Everything that determines the rendered data set (and so its cache key)."""

    num_train: int = 8192
    num_val: int = 1024
    num_test: int = 1024
    image_size: int = 32
    supersample: int = 4
    scale_min: float = 1.0
    scale_max: float = 1.0
    margin: float = 0.04
    seed: int = 1234

    def validate(self) -> None:
        for key in ("num_train", "num_val", "num_test", "supersample"):
            require_int(getattr(self, key), f"data.{key}", 1)
        require_int(self.image_size, "data.image_size", MIN_IMAGE_SIZE)
        require_int(self.seed, "data.render_seed")
        lo = require_number(self.scale_min, "data.scale_range[0]", 0, exclusive=True)
        hi = require_number(self.scale_max, "data.scale_range[1]", 0, exclusive=True)
        if not lo <= hi <= 1.0:
            raise ConfigError(
                f"data.scale_range=[{lo}, {hi}] is invalid; allowed: 0 < min <= max <= 1"
            )
        if not 0.0 <= require_number(self.margin, "data.margin", 0) < 0.5:
            raise ConfigError(f"data.margin={self.margin} is invalid; allowed: 0 <= margin < 0.5")

    def cache_key(self) -> str:
        blob = json.dumps({"version": RENDER_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dice_spec(image_size: int = 32) -> DataSpec:
    return DataSpec("dice", 1, image_size, image_size, 6, CLASS_NAMES, FACTOR_NAMES)


def fit_fraction(angle_deg: float) -> float:
    """Largest die side (relative to the free canvas) whose rotation stays inside it."""
    a = math.radians(angle_deg)
    return 1.0 / (abs(math.cos(a)) + abs(math.sin(a)))


def render_die(pips: int, angle_deg: float, scale: float, s: DiceSettings) -> np.ndarray:
    """One die face as a float32 [H, W] array in [0, 1]: white die, black pips."""
    big = s.image_size * s.supersample
    free = big * (1.0 - 2.0 * s.margin)
    side = scale * fit_fraction(angle_deg) * free
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    c = big / 2.0
    h = side / 2.0
    draw.rounded_rectangle((c - h, c - h, c + h, c + h), radius=side * 0.15, fill=255)
    r = side * 0.1
    for col, row in PIPS[pips]:
        x, y = c + col * side * 0.27, c + row * side * 0.27
        draw.ellipse((x - r, y - r, x + r, y + r), fill=0)
    img = img.rotate(angle_deg, resample=Image.Resampling.BICUBIC, center=(c, c))
    img = img.resize((s.image_size, s.image_size), resample=Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32) / 255.0


def scale_bounds(s: DiceSettings) -> tuple[float, float]:
    """The attainable range of the relative die side, for normalising the scale factor."""
    return s.scale_min * fit_fraction(MAX_ANGLE), s.scale_max * fit_fraction(0.0)


def render_split(n: int, rng: np.random.Generator, s: DiceSettings) -> Split:
    labels = rng.integers(0, 6, size=n)
    angles = rng.uniform(-MAX_ANGLE, MAX_ANGLE, size=n)
    scales = rng.uniform(s.scale_min, s.scale_max, size=n)
    images = np.stack(
        [
            render_die(int(lbl) + 1, float(a), float(sc), s)
            for lbl, a, sc in zip(labels, angles, scales)
        ]
    )
    lo, hi = scale_bounds(s)
    side = scales * np.array([fit_fraction(a) for a in angles])
    factors = np.stack([angles / MAX_ANGLE, 2.0 * (side - lo) / (hi - lo) - 1.0], axis=1)
    return Split(
        torch.from_numpy(images).unsqueeze(1),
        torch.from_numpy(labels).long(),
        torch.from_numpy(factors).float(),
    )


def render_dice(s: DiceSettings) -> Splits:
    s.validate()
    # One independent stream per split: the val and test images do not change when
    # the training set's size does (a sweep over num_train is scored on the same tests).
    train, val, test = (np.random.default_rng(q) for q in np.random.SeedSequence(s.seed).spawn(3))
    return Splits(
        train=render_split(s.num_train, train, s),
        val=render_split(s.num_val, val, s),
        test=render_split(s.num_test, test, s),
    )


def load_dice(s: DiceSettings, cache_dir: str | Path | None) -> Splits:
    """Render the dice once per settings; later calls read the cached tensors (a cache
    file that cannot be read is re-rendered, with a warning naming it)."""
    s.validate()
    if cache_dir is None:
        return render_dice(s)

    def read(path: Path) -> Splits:
        blob = torch.load(path, weights_only=True)
        splits = Splits(**{k: Split(**blob[k]) for k in ("train", "val", "test")})
        sizes = tuple(len(getattr(splits, k)) for k in ("train", "val", "test"))
        expected = (s.num_train, s.num_val, s.num_test)
        if sizes != expected or splits.train.images.shape[-1] != s.image_size:
            raise DataError(f"it holds splits of {sizes}, not {expected}")
        return splits

    def build() -> tuple[Splits, dict]:
        splits = render_dice(s)
        return splits, {k: vars(getattr(splits, k)) for k in ("train", "val", "test")}

    path = Path(cache_dir) / "dice" / f"dice-{s.cache_key()}.pt"
    return load_or_build(path, read, build, "re-rendering")
