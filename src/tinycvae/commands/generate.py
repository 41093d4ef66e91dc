"""``src/generate.py``: draw images from a trained checkpoint, for one class, for every
class, or for a short text prompt matched to a class.

The checkpoint is ``ckpt_path=<file.ckpt>`` or ``run=<run folder>`` (its
``checkpoints/best.ckpt``, resolved as ``src/export.py`` does). A prompt is matched to a
class by the class names and the words of ``classes:`` in the data set's config
(``conf/data/<name>.yaml``): whole words or phrases, case-insensitive, plurals too; a
phrase inside a longer matched phrase of another class gives way to it ("t-shirt" is
not a "shirt"). The sampler is the checkpoint's own, or ``+sampler=...`` as in
``src/evaluate.py``; bypass models draw their known factors from it like any other
latent. ``style=<test image index>`` draws the memo article's style transfer instead:
that test image, then its z (the encoder's mean) decoded with every label. The grid
(one row per class, ``n`` images each) is written as a PNG with the
project's picture code (tiles upscaled to at least 64 px), and logged to W&B with
``wandb=true``. The default PNG, ``<run>/generated/<what>_n<n>_seed<seed>_<sampler>.png``,
is named after everything that decides the images, so another draw never replaces it.

Every bad value (no or two sources, a missing checkpoint or run folder without
best.ckpt, an unknown label, a prompt that matches no class or several, n < 1, an
output that is not a writable .png) is one line and exit status 2, before any drawing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tinycvae import devices
from tinycvae.checkpoints import load_model
from tinycvae.checks import require_int, writable_dir
from tinycvae.data.base import DataSpec, check_classes
from tinycvae.deploy.source import load_data, resolve_source
from tinycvae.errors import ConfigError
from tinycvae.known_keys import warn_unknown_keys
from tinycvae.repo import CONF_DIR
from tinycvae.sampling import choose_sampler, fit_sampler

log = logging.getLogger(__name__)

MAX_N = 1024  # images per class: a grid, not a data set
MIN_TILE = 64  # px: tiles are upscaled (nearest) to at least this, as in the run's pictures


def _singular(word: str) -> str:
    """A crude singular, applied alike to prompts and vocabulary ("sixes" -> "six",
    "horses" -> "horse", "dresses" -> "dress", "puppies" -> "puppy"; "bus", "dress" stay)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> tuple[str, ...]:
    """``text`` as lower-case singular words (letters and digits; the rest separates)."""
    return tuple(_singular(w) for w in re.findall(r"[^\W_]+", str(text).casefold()))


@dataclass(frozen=True)
class Vocabulary:
    """What ``label=`` and ``prompt=`` may name for one data set."""

    data: str
    names: tuple[str, ...]  # class names, in label order
    phrases: tuple[tuple[int, tuple[str, ...], str], ...]  # (label, words, as written)

    @classmethod
    def of(cls, spec: DataSpec, classes: Mapping[str, Sequence[str]] | None) -> Vocabulary:
        """The class names of ``spec`` and the words of ``data.classes`` for each."""
        extra = check_classes(spec, classes)
        phrases = []
        for label, name in enumerate(spec.class_names):
            for text in (name, *extra.get(name, ())):
                if words(text):
                    phrases.append((label, words(text), str(text)))
        return cls(spec.name, tuple(spec.class_names), tuple(phrases))

    @property
    def allowed(self) -> str:
        return ", ".join(self.names)

    def label(self, value: Any) -> int:
        """``label=``: a class name (any case), or its index when the names are not
        themselves numbers (dice faces are named 1-6, so ``label=6`` is the six)."""
        text = str(value).strip().casefold()
        for i, name in enumerate(self.names):
            if text == name.casefold():
                return i
        numeric = all(n.isdigit() for n in self.names)
        if type(value) is int and not numeric and 0 <= value < len(self.names):
            return value
        indices = "" if numeric else f", or an index 0..{len(self.names) - 1}"
        raise ConfigError(
            f"label={value} is not a class of data={self.data}; allowed: {self.allowed}{indices}"
        )

    def match(self, prompt: str) -> int:
        """The one class ``prompt`` names; else a one-line ConfigError (none, or which
        classes it could mean)."""
        tokens = words(prompt)
        spans = []  # (start, end, label, phrase as written)
        for label, phrase, written in self.phrases:
            k = len(phrase)
            for start in range(len(tokens) - k + 1):
                if tokens[start : start + k] == phrase:
                    spans.append((start, start + k, label, written))
        # A phrase inside a longer matched phrase of another class gives way to it.
        kept = [
            s for s in spans
            if not any(o[2] != s[2] and o[0] <= s[0] and s[1] <= o[1] and o[1] - o[0] > s[1] - s[0]
                       for o in spans)
        ]  # fmt: skip
        found: dict[int, list[str]] = {}
        for _, _, label, written in sorted(kept):
            found.setdefault(label, []).append(written)
        if not found:
            raise ConfigError(
                f'prompt "{prompt}" matches no class of data={self.data}; allowed: {self.allowed}'
            )
        if len(found) > 1:
            could = ", ".join(f'{self.names[k]} ("{found[k][0]}")' for k in sorted(found))
            raise ConfigError(
                f'prompt "{prompt}" matches more than one class of data={self.data}: {could}; '
                "allowed: a prompt that names one class"
            )
        return next(iter(found))


def _data_chosen() -> bool:
    """Whether the command line chose ``data=`` (else it is generate.yaml's default)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    return any(o.split("=", 1)[0].lstrip("+~") == "data" for o in HydraConfig.get().overrides.task)


def _classes(cfg: DictConfig, trained_on: str, where: str) -> Any:
    """``data.classes`` for the data set the checkpoint was trained on: the composed
    config's when it is that data set (so ``data.classes...`` overrides work), else
    conf/data/<that data set>.yaml's; a ``data=`` for other data is refused."""
    if cfg.data.get("name") == trained_on:
        return cfg.data.get("classes")
    if _data_chosen():
        raise ConfigError(
            f"{where} was trained on data={trained_on}; allowed: data={trained_on} (or leave "
            "data= out)"
        )
    path = CONF_DIR / "data" / f"{trained_on}.yaml"
    return OmegaConf.load(path).get("classes") if path.is_file() else None


def _checkpoint(cfg: DictConfig) -> tuple[Path, str]:
    given = [k for k in ("ckpt_path", "run") if cfg.get(k) not in (None, "")]
    if len(given) != 1:
        raise ConfigError(
            f"name exactly one checkpoint to draw from (given: {', '.join(given) or 'none'}); "
            "allowed: ckpt_path=<file.ckpt>, run=<run folder>"
        )
    key = given[0]
    if key == "ckpt_path":
        path = Path(str(cfg.ckpt_path))
        if not path.is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path} does not exist; allowed: a .ckpt file")
        return path, f"ckpt_path={cfg.ckpt_path}"
    # run=<folder>: resolved as src/export.py resolves it
    return resolve_source(OmegaConf.create({"run": str(cfg.run)}), Path(".")).checkpoint, (
        f"run={cfg.run}"
    )


def slug(text: str) -> str:
    """``text`` as a file-name stem: lower-case words joined by '-' (at most 60 chars)."""
    return "-".join(re.findall(r"[^\W_]+", str(text).casefold()))[:60].strip("-") or "x"


def default_stem(what: str, n: int, seed: int, sampler: str, sample_std: float | None) -> str:
    """The default PNG's name: what is drawn and everything else that decides the images
    (``n``, ``seed``, the sampler and a ``+sample_std``), so that another draw never
    replaces an earlier grid: ``class-6_n8_seed0_prior``."""
    std = "" if sample_std is None else f"_std{sample_std:g}"
    return f"{what}_n{n}_seed{seed}_{slug(sampler)}{std}"


def _out_path(cfg: DictConfig, ckpt: Path, stem: str) -> Path:
    if cfg.get("out"):
        out = Path(str(cfg.out))
        if out.suffix.lower() != ".png":
            raise ConfigError(f"out={cfg.out} is invalid; allowed: a path ending in .png")
    else:  # next to the run's own pictures: <run>/generated/<stem>.png
        run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        out = run_dir / "generated" / f"{stem}.png"
    if out.is_dir() or not writable_dir(out.parent):
        raise ConfigError(f"out={out} cannot be written; allowed: a writable path ending in .png")
    return out


def _test_image_split(info: dict[str, Any], index: int):
    """The test split of the checkpoint's data set, which must hold image ``index``."""
    test = load_data(info).splits.test
    if index >= len(test):
        raise ConfigError(
            f"style={index} is not a test image; allowed: an index from 0 to {len(test) - 1}"
        )
    return test


def _request(cfg: DictConfig) -> tuple[int, int, Any, Any, int | None]:
    """``n``, ``seed``, ``label``, ``prompt`` and ``style``, checked together (one line
    for a bad value or a combination that names two things)."""
    n = cfg.get("n")
    if type(n) is not int or not 1 <= n <= MAX_N:
        raise ConfigError(f"n={n} is invalid; allowed: an integer from 1 to {MAX_N}")
    seed = require_int(cfg.get("seed"), "seed")
    label, prompt, style = cfg.get("label"), cfg.get("prompt"), cfg.get("style")
    if label is not None and prompt is not None:
        raise ConfigError(
            f'label={label} and prompt="{prompt}" both name a class; allowed: one of them'
        )
    if style is not None:
        require_int(style, "style", 0)
        if label is not None or prompt is not None:
            raise ConfigError(
                f"style={style} decodes the image's z with every label; allowed: style= "
                "without label= or prompt="
            )
    return n, seed, label, prompt, style


def _classes_and_stem(
    spec: DataSpec, vocab: Vocabulary, label: Any, prompt: Any, style: int | None
) -> tuple[list[int], str]:
    """The classes drawn (a row each) and the file name's stem for them."""
    if style is not None:
        return list(range(spec.num_classes)), f"style-of-test-{style}"
    if prompt is not None:
        return [vocab.match(str(prompt))], slug(prompt)
    if label is not None:
        classes = [vocab.label(label)]
        return classes, f"class-{slug(spec.class_names[classes[0]])}"
    return list(range(spec.num_classes)), "all-classes"


def _result(ckpt: Path, spec: DataSpec, model, classes: list[int], n: int, seed: int,
            out: Path, prompt: Any, style: int | None) -> dict[str, Any]:  # fmt: skip
    """What was drawn, as the command returns it (and W&B records it)."""
    result: dict[str, Any] = {
        "checkpoint": str(ckpt),
        "data": spec.name,
        "classes": [spec.class_names[c] for c in classes],
        "labels": classes,
        "n": n,
        "seed": seed,
        "sampler": model.sampler.kind,
        "sample_std": model.sampler.sample_std,
        "bypass": bool(model.bypass),
        "png": str(out),
    }
    if prompt is not None:
        result["prompt"] = str(prompt)
    if style is not None:
        result["style"] = style
    return result


def _log_drawn(where: str, result: dict[str, Any]) -> None:
    names, prompt = ", ".join(result["classes"]), result.get("prompt")
    if "style" in result:
        log.info("%s: test image %d and its z decoded with %s", where, result["style"], names)
        return
    log.info(
        "%s: %d x %d images of %s (%s sampler, seed %d)%s",
        where, len(result["classes"]), result["n"], names, result["sampler"], result["seed"],
        f' for prompt "{prompt}"' if prompt is not None else "",
    )  # fmt: skip


def generate(cfg: DictConfig) -> dict[str, Any]:
    """Draw the grid ``cfg`` asks for, write it, print its path; return what was done."""
    from tinycvae.pictures import class_samples, save_png, style_transfer, tile_factor, upscale

    warn_unknown_keys(cfg, "generate")
    n, seed, label, prompt, style = _request(cfg)
    ckpt, where = _checkpoint(cfg)
    device = devices.resolve(cfg.trainer.get("accelerator", "auto"), "trainer.accelerator")
    model, info = load_model(ckpt, "cpu")
    spec = DataSpec.from_dict(info["spec"])
    vocab = Vocabulary.of(spec, _classes(cfg, spec.name, where))
    classes, stem = _classes_and_stem(spec, vocab, label, prompt, style)
    unfitted = choose_sampler(model, cfg.get("sampler"), "cpu", cfg.get("sample_std"))
    if style is None:  # style= decodes the image's own z: n, seed and sampler play no part
        stem = default_stem(stem, n, seed, model.sampler.kind, cfg.get("sample_std"))
    out = _out_path(cfg, ckpt, stem)
    # +sampler=class_gaussian that the checkpoint did not fit: fit it here (style= draws
    # the image's own z, no sampler: nothing to fit)
    if unfitted and style is None:
        fit_sampler(model, load_data(info).splits.train)
    devices.place(device, model)

    if style is not None:
        grid = style_transfer(model, _test_image_split(info, style), style)
    else:
        grid = class_samples(model, per_class=n, seed=seed, sampler=model.sampler, classes=classes)
    grid = upscale(grid, tile_factor(spec.height, MIN_TILE))
    save_png(out, grid)
    result = _result(ckpt, spec, model, classes, n, seed, out, prompt, style)
    _log_drawn(where, result)
    if cfg.get("wandb"):
        result["wandb"] = log_wandb(cfg, grid, result)
    print(out, flush=True)
    return result


def log_wandb(cfg: DictConfig, grid: np.ndarray, result: dict[str, Any]) -> str | None:
    """The grid as a W&B run (``job_type=generate``), offline unless logged in, with the
    project, entity, mode and tags of the logger config (``logger.wandb``). Its files go
    beside the PNG (``<out folder>/wandb``). Returns the run's folder (None: disabled)."""
    import wandb

    from tinycvae.tracking import finish_wandb, resolve_mode

    node = (cfg.get("logger") or {}).get("wandb") or {}
    settings = OmegaConf.to_container(node, resolve=True) if node else {}
    mode = resolve_mode(settings.get("mode", "auto"))
    if mode == "disabled":
        return None
    run = wandb.init(
        project=settings.get("project", "tinycvae"),
        entity=settings.get("entity"),
        tags=settings.get("tags"),
        job_type="generate",
        mode=mode,
        dir=str(Path(result["png"]).parent),
        config=result,
    )
    ok = False
    try:
        caption = result.get("prompt") or ", ".join(result["classes"])
        run.log({"generated": wandb.Image(grid, caption=caption)})
        ok = True
        return str(Path(run.dir).parent)
    finally:
        finish_wandb(ok)
