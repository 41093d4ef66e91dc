"""Diagnostic pictures: uint8 0..255, the grid arithmetic, determinism, no side effects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tinycvae.data.base import Split
from tinycvae.data.dice import DiceSettings, dice_spec, render_dice
from tinycvae.models import build_cvae
from tinycvae.pictures import (
    GROUP_SEP,
    NAMES,
    SEP,
    class_samples,
    latent_pca,
    latent_scan,
    make_pictures,
    reconstruction_pairs,
    save_png,
    style_transfer,
    tile,
)

SPEC = dice_spec(32)
S = 32  # tile size
K = SPEC.num_classes
SMALL = {"dim1": 2, "dim2": 2, "dim3": 4, "dim4": 4}
# (latent, latent_mode): reparam with 1, 2, 3 dims, and a bypass model (no encoder)
VARIANTS = [(1, "reparam"), (2, "reparam"), (3, "reparam"), (1, "bypass"), (2, "bypass")]


def span(n: int, size: int = S, sep: int = SEP) -> int:
    return n * size + (n - 1) * sep


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convs are fastest on one thread, and a busy 2-core box thrashes with two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def split() -> Split:
    s = DiceSettings(num_train=1, num_val=1, num_test=24, image_size=S, supersample=1)
    return render_dice(s).test


def build(latent: int, mode: str):
    torch.manual_seed(0)
    m = build_cvae(SPEC, latent=latent, latent_mode=mode, **SMALL)
    m.train()  # the pictures must switch to eval and back
    return m


@pytest.fixture(params=VARIANTS, ids=lambda v: f"{v[1]}-z{v[0]}")
def model(request):
    return build(*request.param)


def check_uint8(a: np.ndarray, shape: tuple[int, ...]) -> None:
    assert a.dtype == np.uint8
    assert a.shape == shape
    assert int(a.max()) - int(a.min()) > 50  # real content, not all black / flat


def tiles(a: np.ndarray, rows: int, cols: int, size: int = S) -> list[list[np.ndarray]]:
    step = size + SEP
    return [[a[r * step : r * step + size, c * step : c * step + size] for c in range(cols)]
            for r in range(rows)]  # fmt: skip


def as_uint8(image: torch.Tensor) -> np.ndarray:
    return (image[0] * 255).round().to(torch.uint8).numpy()


# ---- tile ------------------------------------------------------------------------------


def test_tile_grey_and_rgb_shapes_and_values():
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(7, 1, 5, 4, generator=g)
    a = tile(grey, rows=2)  # 2 rows x 4 cols, the last slot empty
    assert a.dtype == np.uint8 and a.shape == (span(2, 5), span(4, 4))
    assert np.array_equal(a[:5, :4], (grey[0, 0] * 255).round().to(torch.uint8).numpy())
    assert np.array_equal(a[7:12, 12:16], (grey[6, 0] * 255).round().byte().numpy())
    assert (a[5:7] == 128).all() and (a[7:12, 18:22] == 128).all()  # separator, empty slot
    rgb = torch.rand(3, 3, 5, 4, generator=g)
    b = tile(rgb, rows=1)
    assert b.shape == (5, span(3, 4), 3) and b.dtype == np.uint8
    assert np.array_equal(b[:, 6:10], (rgb[1].permute(1, 2, 0) * 255).round().byte().numpy())
    # floats in [0, 1] are scaled: an all-ones image becomes 255, never 1
    assert tile(torch.ones(1, 1, 2, 2), rows=1).max() == 255
    with pytest.raises(ValueError):
        tile(torch.rand(2, 2, 4, 4), rows=1)


# ---- every picture, every model variant ----------------------------------------------


def test_reconstruction_pairs(model, split):
    a = reconstruction_pairs(model, split, n=8, seed=3)
    check_uint8(a, (span(2), span(8)))
    originals = {as_uint8(img).tobytes() for img in split.images}
    grid = tiles(a, 2, 8)
    assert all(t.tobytes() in originals for t in grid[0])  # exact test images, rescaled
    assert np.array_equal(a, reconstruction_pairs(model, split, n=8, seed=3))
    assert not np.array_equal(a[:S], reconstruction_pairs(model, split, n=8, seed=4)[:S])
    assert model.training and all(m.training for m in model.modules())


def test_class_samples(model):
    a = class_samples(model, per_class=5, seed=1)
    assert a.dtype == np.uint8 and a.shape == (span(K), span(5))  # one row per class
    assert np.array_equal(a, class_samples(model, per_class=5, seed=1))
    assert model.training


def test_class_samples_sampler_replaces_the_prior(model):
    seen = []

    def sampler(labels, g):
        seen.append(labels.clone())
        return torch.zeros(len(labels), model.latent)

    a = class_samples(model, per_class=3, sampler=sampler)
    assert torch.equal(seen[0], torch.arange(K).repeat_interleave(3))
    row = tiles(a, K, 3)[2]
    assert np.array_equal(row[0], row[1]) and np.array_equal(row[0], row[2])  # same z


def test_latent_scan(model):
    steps = 5
    a = latent_scan(model, steps=steps)
    if model.latent == 2:
        # per class a steps x steps grid; 6 classes laid out as 2 rows x 3 columns
        g = span(steps)
        assert a.shape == (span(2, g, GROUP_SEP), span(3, g, GROUP_SEP))
        first = a[:g, :g]
        assert (a[:g, g : g + GROUP_SEP] == 128).all()
        # the centre tile of a class grid is z = 0, equal to the 1-D scan's middle tile
        z0 = tiles(first, steps, steps)[steps // 2][steps // 2]
        centre = torch.sigmoid(model.decode(torch.zeros(1, 2), torch.tensor([0])))
        assert np.array_equal(z0, as_uint8(centre.detach()[0]))
    else:
        assert a.shape == (span(K), span(steps))
    assert a.dtype == np.uint8
    assert np.array_equal(a, latent_scan(model, steps=steps))
    assert model.training


def test_style_transfer(model, split):
    a = style_transfer(model, split, index=5)
    check_uint8(a, (S, span(K + 1)))
    assert np.array_equal(a[:, :S], as_uint8(split.images[5]))
    assert model.training


@pytest.mark.parametrize("names", [None, list("abcdef")])
def test_latent_pca(model, split, names):
    a = latent_pca(model, split, n=20, class_names=names)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert a.shape[0] > 100 and a.shape[1] > 100
    assert int(a.max()) - int(a.min()) > 100
    assert np.array_equal(a, latent_pca(model, split, n=20, class_names=names))
    assert model.training


@pytest.mark.parametrize("latent, mode", [(2, "reparam"), (1, "bypass")])  # the slowest test
def test_make_pictures_writes_five_pngs(latent, mode, split, tmp_path):
    model = build(latent, mode)
    out = make_pictures(model, split, tmp_path / "pics", class_names=list("abcdef"), seed=2)
    assert tuple(out) == NAMES
    for name, array in out.items():
        assert array.dtype == np.uint8
        back = np.asarray(Image.open(tmp_path / "pics" / f"{name}.png"))
        assert back.shape == array.shape and np.array_equal(back, array)
    # 32 px tiles are upscaled x2 (nearest): the grid arithmetic scales with them
    assert out["style_transfer"].shape == (2 * S, 2 * span(K + 1))
    assert np.array_equal(out["style_transfer"][::2, ::2], style_transfer(model, split))
    again = make_pictures(model, split, tmp_path / "again", class_names=list("abcdef"), seed=2)
    assert all(np.array_equal(out[k], again[k]) for k in NAMES)
    assert model.training


def test_bypass_pictures_use_the_factors(split):
    torch.manual_seed(0)
    model = build_cvae(SPEC, latent=2, latent_mode="bypass", **SMALL).eval()
    assert model.encoder is None
    a = style_transfer(model, split, index=4)
    z = split.factors[4:5, :2]
    want = torch.sigmoid(model.decode(z, torch.tensor([3]))).detach()
    assert np.array_equal(tiles(a, 1, K + 1)[0][4], as_uint8(want[0]))
    assert not model.training  # eval stays eval


def test_save_png_roundtrip(tmp_path):
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    p = save_png(tmp_path / "x" / "a.png", a)
    assert np.array_equal(np.asarray(Image.open(p)), a)
