"""Diagnostic pictures of a CVAE, as uint8 numpy arrays ready for PNG files and W&B.

Every picture is ``uint8`` scaled 0..255 (W&B casts floats to uint8 *without*
scaling, so a float image in [0, 1] would show as black): ``H x W`` for 1-channel
data, ``H x W x 3`` for 3-channel data (``latent_pca`` is always RGB). Tiles are
separated by :data:`SEP` grey pixels; there is no outer border, so a grid of
``rows x cols`` tiles of ``h x w`` is ``rows*h + (rows-1)*SEP`` by ``cols*w + (cols-1)*SEP``.

The picture functions run under ``torch.no_grad`` with the model in eval mode, restore
every module's training flag afterwards, and draw their latents from a
``torch.Generator`` seeded with ``seed`` (never the global RNG): same seed, same
picture. Latents come from N(0, sample_std^2), or uniform in [-1, 1] for bypass models
(whose z is the known factors); a ``sampler(labels, generator) -> z`` replaces that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from tinycvae.data.base import Split
from tinycvae.devices import device_of
from tinycvae.sampling import Sampler, draw_latents, in_evaluation, latents_of

SEP = 2  # separator between tiles, pixels
GROUP_SEP = 3 * SEP  # separator between the per-class grids of a 2-D latent scan
FILL = 128  # separator grey: visible against both black and white images
NAMES = ("reconstructions", "samples", "latent_scan", "style_transfer", "latent_pca")


def _grid(arrays: list[np.ndarray], rows: int, sep: int = SEP) -> np.ndarray:
    """Equal-shaped uint8 arrays laid out row by row in ``rows`` rows (empty slots grey)."""
    rows = max(1, min(rows, len(arrays)))
    cols = math.ceil(len(arrays) / rows)
    h, w = arrays[0].shape[:2]
    shape = (rows * h + (rows - 1) * sep, cols * w + (cols - 1) * sep, *arrays[0].shape[2:])
    out = np.full(shape, FILL, dtype=np.uint8)
    for i, a in enumerate(arrays):
        r, c = divmod(i, cols)
        out[r * (h + sep) : r * (h + sep) + h, c * (w + sep) : c * (w + sep) + w] = a
    return out


def to_uint8(images: Tensor) -> list[np.ndarray]:
    """[N, C, H, W] in [0, 1] -> N uint8 arrays, ``H x W`` (C=1) or ``H x W x 3`` (C=3)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, 1|3, H, W], got {tuple(images.shape)}")
    x = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    x = x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)
    return list(x.numpy())


def tile(images: Tensor, rows: int) -> np.ndarray:
    """The shared grid maker: ``images`` [N, C, H, W] in [0, 1], row-major in ``rows`` rows."""
    return _grid(to_uint8(images), rows)


def upscale(array: np.ndarray, k: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor ``k``."""
    return array if k <= 1 else array.repeat(k, axis=0).repeat(k, axis=1)


def tile_factor(height: int, min_tile: int = 64) -> int:
    """The integer upscaling that makes a tile ``height`` px high at least ``min_tile`` px."""
    return max(1, math.ceil(min_tile / height))


def save_png(path: str | Path, array: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)
    return path


def _images(model, z: Tensor, labels: Tensor) -> Tensor:
    dev = device_of(model)
    return torch.sigmoid(model.decode(z.to(dev), labels.to(dev))).cpu()


def _latents(model, split: Split, idx: Tensor) -> Tensor:
    """z of the samples ``idx`` (CPU): the encoder's mean, or the known factors for bypass."""
    return latents_of(model, split, batch_size=512, idx=idx).cpu()


@in_evaluation
def reconstruction_pairs(model, split: Split, n: int = 8, seed: int = 0) -> np.ndarray:
    """Top row: ``n`` test images picked with ``seed``; bottom row: their reconstructions."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[: min(n, len(split))]
    recon = _images(model, _latents(model, split, idx), split.labels[idx])
    return tile(torch.cat([split.images[idx].cpu(), recon]), rows=2)


@in_evaluation
def class_samples(
    model,
    per_class: int = 8,
    seed: int = 0,
    sampler: Sampler | None = None,
    classes: Sequence[int] | None = None,
) -> np.ndarray:
    """One row per class of ``per_class`` samples (``classes``: which classes, in this
    order; default every class)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(model.num_classes) if classes is None else torch.tensor(list(classes))
    labels = rows.repeat_interleave(per_class)
    return tile(_images(model, draw_latents(model, labels, g, sampler), labels), len(rows))


@in_evaluation
def latent_scan(model, steps: int = 11) -> np.ndarray:
    """Per class, latent dim 0 from -1 to 1 (other dims 0): one row per class. With a
    2-D latent, per class a ``steps x steps`` grid (dim 0 left to right, dim 1 bottom to
    top), the class grids row-major in a near-square layout, ``GROUP_SEP`` apart."""
    k, values = model.num_classes, torch.linspace(-1.0, 1.0, steps)
    if model.latent != 2:
        z = torch.zeros(k * steps, model.latent)
        z[:, 0] = values.repeat(k)
        return tile(_images(model, z, torch.arange(k).repeat_interleave(steps)), k)
    dim1, dim0 = torch.meshgrid(values.flip(0), values, indexing="ij")
    z = torch.stack([dim0.flatten(), dim1.flatten()], dim=1)
    grids = [tile(_images(model, z, torch.full((steps * steps,), c)), steps) for c in range(k)]
    return _grid(grids, rows=max(1, math.isqrt(k)), sep=GROUP_SEP)


@in_evaluation
def style_transfer(model, split: Split, index: int = 0) -> np.ndarray:
    """One row: [test image ``index`` | its z decoded with label 0 | ... | label K-1]."""
    idx = torch.tensor([index])
    z = _latents(model, split, idx).expand(model.num_classes, -1)
    images = _images(model, z, torch.arange(model.num_classes))
    return tile(torch.cat([split.images[idx].cpu(), images]), rows=1)


@in_evaluation
def latent_pca(
    model, split: Split, n: int = 2000, class_names: list[str] | None = None
) -> np.ndarray:
    """Scatter of the first ``n`` latents coloured by class, ``H x W x 3`` uint8: the 2-D
    PCA for latent >= 3, z itself for latent 2, z against jittered class for latent 1."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    idx = torch.arange(min(n, len(split)))
    z, labels = _latents(model, split, idx).double(), split.labels[idx].cpu()
    keep = torch.isfinite(z).all(1)  # a diverged model must not crash the plot
    z, labels, k = z[keep], labels[keep], model.num_classes
    names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    if model.latent == 1:
        g = torch.Generator().manual_seed(0)
        jitter = (torch.rand(len(z), generator=g, dtype=torch.float64) - 0.5) * 0.6
        xy, axes = torch.stack([labels + jitter, z[:, 0]], 1), ("class", "z0")
    elif model.latent == 2:
        xy, axes = z, ("z0", "z1")
    else:
        zc = z - z.mean(0)
        _, s, vh = torch.linalg.svd(zc, full_matrices=False)
        ratio = [*(s**2 / (s**2).sum().clamp_min(1e-12))[:2].tolist(), 0.0, 0.0][:2]
        xy = torch.zeros(len(z), 2, dtype=z.dtype)  # 2 columns even with < 2 samples
        xy[:, : min(2, len(vh))] = zc @ vh[:2].T
        axes = tuple(f"PC{i + 1} ({r:.0%})" for i, r in enumerate(ratio))

    fig = Figure(figsize=(5.0, 4.0), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    for c in range(k):
        pts = xy[labels == c].numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.6, color=cmap(c % cmap.N), label=names[c])
    if model.latent == 1:
        ax.set_xticks(range(k), names)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.legend(markerscale=3, fontsize=7, loc="best", framealpha=0.7)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def make_pictures(
    model,
    split: Split,
    out_dir: str | Path,
    class_names: list[str] | None = None,
    seed: int = 0,
    sampler: Sampler | None = None,
    min_tile: int = 64,
) -> dict[str, np.ndarray]:
    """All five pictures, written to ``out_dir/<name>.png`` and returned as {name: array}.
    Tiled pictures are upscaled (nearest) so that a tile is at least ``min_tile`` px."""
    k = tile_factor(split.images.shape[-2], min_tile)
    pictures = {
        "reconstructions": upscale(reconstruction_pairs(model, split, seed=seed), k),
        "samples": upscale(class_samples(model, seed=seed, sampler=sampler), k),
        "latent_scan": upscale(latent_scan(model), k),
        "style_transfer": upscale(style_transfer(model, split), k),
        "latent_pca": latent_pca(model, split, class_names=class_names),
    }
    for name, array in pictures.items():
        save_png(Path(out_dir) / f"{name}.png", array)
    return pictures
