"""``src/generate.py``: prompts matched to classes, the grid it draws, one-line bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from PIL import Image

from tinycvae.checkpoints import load_model
from tinycvae.commands.generate import Vocabulary, generate, words
from tinycvae.commands.train import run
from tinycvae.data.base import DataError
from tinycvae.data.dice import dice_spec
from tinycvae.data.torchvision_sets import TORCHVISION_SPECS
from tinycvae.deploy.source import load_data
from tinycvae.errors import ConfigError
from tinycvae.job import build
from tinycvae.pictures import SEP, tile, upscale

from conftest import CONF, ROOT, TINY, compose_train

SPECS = {"dice": dice_spec(32), **TORCHVISION_SPECS}


def vocab(name: str) -> Vocabulary:
    classes = OmegaConf.load(CONF / "data" / f"{name}.yaml").get("classes")
    return Vocabulary.of(SPECS[name], classes)


def named(name: str, prompt: str) -> str:
    return SPECS[name].class_names[vocab(name).match(prompt)]


@pytest.mark.parametrize(
    "data, prompt, cls",
    [
        ("dice", "roll a six", "6"),
        ("dice", "Five Pips", "5"),
        ("dice", "5 pips", "5"),
        ("dice", "double sixes", "6"),  # plural
        ("dice", "a 3", "3"),
        ("fashion_mnist", "a red coat", "Coat"),
        ("fashion_mnist", "sneakers", "Sneaker"),
        ("fashion_mnist", "white trainers", "Sneaker"),
        ("fashion_mnist", "a tee", "T-shirt/top"),
        ("fashion_mnist", "a red T-shirt", "T-shirt/top"),  # not a Shirt: the longer phrase
        ("fashion_mnist", "a dress shirt", "Shirt"),  # not a Dress
        ("fashion_mnist", "two summer dresses", "Dress"),
        ("fashion_mnist", "ankle boots", "Ankle boot"),
        ("mnist", "a handwritten seven", "7"),
        ("mnist", "7", "7"),
        ("cifar10", "a red car", "automobile"),
        ("cifar10", "lorries", "truck"),
        ("cifar10", "puppies", "dog"),
        ("cifar10", "HORSES", "horse"),
    ],
)
def test_prompts_match_classes_by_name_synonym_and_plural(data, prompt, cls):
    assert named(data, prompt) == cls


def test_plurals_are_singular_on_both_sides():
    assert words("Sixes, dresses & puppies; boxes, horses") == (
        "six", "dress", "puppy", "box", "horse"
    )  # fmt: skip
    assert words("dress bus glass") == ("dress", "bus", "glass")


def test_a_prompt_naming_two_classes_names_them_in_one_line():
    with pytest.raises(ConfigError) as err:
        vocab("fashion_mnist").match("a shirt and a coat")
    assert str(err.value) == (
        'prompt "a shirt and a coat" matches more than one class of data=fashion_mnist: '
        'Coat ("Coat"), Shirt ("Shirt"); allowed: a prompt that names one class'
    )
    with pytest.raises(ConfigError, match=r'1 \("one"\), 6 \("six"\)'):
        vocab("dice").match("one or six")


def test_a_prompt_matching_nothing_is_one_line_with_the_class_names():
    with pytest.raises(ConfigError) as err:
        vocab("dice").match("a red coat")
    assert str(err.value) == (
        'prompt "a red coat" matches no class of data=dice; allowed: 1, 2, 3, 4, 5, 6'
    )
    with pytest.raises(ConfigError, match="matches no class"):
        vocab("cifar10").match("")


def test_labels_by_name_or_index():
    dice, fashion = vocab("dice"), vocab("fashion_mnist")
    assert dice.label(6) == 5 and dice.label("6") == 5 and dice.label(1) == 0
    with pytest.raises(ConfigError) as err:
        dice.label(0)  # dice faces are named 1-6: no index form
    assert str(err.value) == "label=0 is not a class of data=dice; allowed: 1, 2, 3, 4, 5, 6"
    assert fashion.label("coat") == 4 and fashion.label(4) == 4
    assert fashion.label("ankle boot") == 9 and fashion.label("T-shirt/top") == 0
    with pytest.raises(ConfigError, match=r"label=10 .* or an index 0\.\.9$"):
        fashion.label(10)


def test_every_data_config_has_valid_class_words():
    for name in SPECS:
        v = vocab(name)
        assert len(v.phrases) > len(v.names)  # names plus synonyms
        for label, cls in enumerate(v.names):
            assert v.match(f"a {cls}") == label  # every name matches itself


def test_class_words_for_an_unknown_class_are_refused():
    with pytest.raises(DataError, match=r"data.classes.seven is not a class of data=dice; allowed"):
        Vocabulary.of(SPECS["dice"], {"seven": ["seven"]})
    with pytest.raises(DataError, match=r"data.classes.6=six is invalid"):
        Vocabulary.of(SPECS["dice"], {"6": "six"})


def test_a_typo_in_the_class_words_stops_a_training_job_before_any_work(tmp_path):
    with pytest.raises(DataError, match="data.classes.seven is not a class"):
        build(compose_train(["+data.classes.seven=[x]", "logger=none"], tmp_path))


# --- end to end: tiny dice checkpoints ----------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny real VAE and a tiny bypass model (latent = the die's angle), trained once."""
    out = {}
    for kind, extra in (("vae", []), ("bypass", ["model.latent=1", "model.latent_mode=bypass"])):
        tmp = tmp_path_factory.mktemp(kind)
        cfg = compose_train([*TINY, "logger=none", "metrics=none", *extra], tmp)
        out[kind] = Path(run(cfg)["run_dir"])
    return out


def gen(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TINYCVAE_ROOT": str(cwd), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / "generate.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def png(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def expected(ckpt: Path, label: int, n: int, seed: int) -> np.ndarray:
    """The grid drawn here without the picture code's sampler: z from the model's prior
    (uniform [-1, 1] angles for bypass) with the same seeded generator, decoded for label."""
    model, _ = load_model(ckpt)
    g = torch.Generator().manual_seed(seed)
    if model.bypass:
        z = torch.rand(n, model.latent, generator=g) * 2 - 1
    else:
        z = torch.randn(n, model.latent, generator=g) * model.sample_std
    with torch.no_grad():
        images = torch.sigmoid(model.decode(z, torch.full((n,), label)))
    return upscale(tile(images, rows=1), 2)  # 32 px tiles upscaled to 64


@pytest.mark.parametrize("kind", ["vae", "bypass"])
def test_a_prompt_draws_a_row_of_that_class(runs, kind, tmp_path):
    folder = runs[kind]
    proc = gen([f"run={folder}", 'prompt="roll a six"', "n=5", "seed=3"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path == folder / "generated" / "roll-a-six_n5_seed3_prior.png" and path.is_file()
    grid = png(path)
    assert grid.shape == (2 * 32, 2 * (5 * 32 + 4 * SEP))  # 1 row x 5 tiles, upscaled x2
    ckpt = folder / "checkpoints" / "best.ckpt"
    assert np.array_equal(grid, expected(ckpt, 5, 5, 3))  # label 5 is the face "6"
    assert not np.array_equal(grid, expected(ckpt, 0, 5, 3))


def test_every_class_by_default_and_a_label_with_out(runs, tmp_path):
    folder = runs["bypass"]
    ckpt = folder / "checkpoints" / "best.ckpt"
    proc = gen([f"ckpt_path={ckpt}", "n=3"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grid = png(folder / "generated" / "all-classes_n3_seed0_prior.png")
    assert grid.shape == (2 * (6 * 32 + 5 * SEP), 2 * (3 * 32 + 2 * SEP))  # 6 rows x 3
    out = tmp_path / "x" / "two.png"
    proc = gen([f"run={folder}", "label=2", "n=3", "seed=0", f"out={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    row = png(out)
    assert np.array_equal(grid[: 2 * 32], expected(ckpt, 0, 3, 0))  # row 1: the first draws
    assert np.array_equal(row, expected(ckpt, 1, 3, 0))  # label 1 is the face "2"


def test_another_seed_or_sampler_never_replaces_a_grid_and_typos_are_warned(runs, tmp_path):
    """Issue 20, item 9: the default out= names n, seed and sampler; ``+lable=6`` is said."""
    folder = runs["vae"]
    first = gen([f"run={folder}", "label=6", "n=2", "seed=0"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    again = gen([f"run={folder}", "label=6", "n=2", "seed=1", "+sampler=class_gaussian",
                 "+lable=5"], tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    paths = [Path(p.stdout.strip().splitlines()[-1]) for p in (first, again)]
    assert [p.name for p in paths] == ["class-6_n2_seed0_prior.png",
                                       "class-6_n2_seed1_class-gaussian.png"]  # fmt: skip
    assert all(p.is_file() for p in paths)
    (line,) = [ln for ln in again.stderr.splitlines() if "lable" in ln]
    assert line.startswith("warning: lable=5 is not a setting tinycvae reads; it is ignored")
    assert "label" in line.split("(", 1)[1]  # names the settings generate reads


def test_style_draws_a_test_images_z_with_every_label(runs, tmp_path):
    folder = runs["vae"]
    result = generate(compose_generate([f"run={folder}", "style=3"], tmp_path))
    assert result["style"] == 3 and result["labels"] == [0, 1, 2, 3, 4, 5]
    assert result["png"] == str(folder / "generated" / "style-of-test-3.png")
    model, info = load_model(folder / "checkpoints" / "best.ckpt")
    test = load_data(info).splits.test
    x, y = test.images[3:4], test.labels[3:4]
    with torch.no_grad():
        mu = model.eval().encode(x, y)[0].expand(6, -1)
        images = torch.sigmoid(model.decode(mu, torch.arange(6)))
    want = upscale(tile(torch.cat([x, images]), rows=1), 2)  # the image, then labels 0-5
    assert np.array_equal(png(result["png"]), want)


def compose_generate(overrides: list[str], tmp_path: Path):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("generate", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "data")
    return cfg


@pytest.mark.parametrize(
    "args, message",
    [
        (["n=0"], "n=0 is invalid; allowed: an integer from 1 to 1024"),
        (["n=-1"], "n=-1 is invalid; allowed: an integer from 1 to 1024"),
        (['prompt="a red coat"'], 'prompt "a red coat" matches no class of data=dice; '
                                  "allowed: 1, 2, 3, 4, 5, 6"),
        (["label=7"], "label=7 is not a class of data=dice; allowed: 1, 2, 3, 4, 5, 6"),
        (["label=Coat"], "label=Coat is not a class of data=dice; allowed: 1, 2, 3, 4, 5, 6"),
        (["prompt=dog"], 'prompt "dog" matches no class of data=dice; allowed: 1, 2, 3, 4, 5, 6'),
        (["label=6", "prompt=six"], 'label=6 and prompt="six" both name a class; allowed: one'),
        (["out=x.jpg"], "out=x.jpg is invalid; allowed: a path ending in .png"),
        (["+sampler=nosuch"], "model.sampler=nosuch is unknown; allowed: prior, class_gaussian"),
        (["+sample_std=-1"], "sample_std=-1 is invalid; allowed: a finite number > 0"),
        (["style=-1"], "style=-1 is invalid; allowed: an integer >= 0"),
        (["style=2", "label=6"], "style=2 decodes the image's z with every label; allowed: "),
        (["style=100000"], "style=100000 is not a test image; allowed: an index from 0 to "),
    ],
)
def test_bad_input_is_refused_before_drawing(runs, tmp_path, args, message):
    folder = runs["vae"]
    before = set((folder / "generated").glob("*"))
    with pytest.raises(ConfigError) as err:
        generate(compose_generate([f"run={folder}", *args], tmp_path))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert set((folder / "generated").glob("*")) == before  # nothing drawn


def test_bad_sources_are_refused(tmp_path):
    (tmp_path / "empty_run").mkdir()
    cases = [
        ([], "name exactly one checkpoint to draw from (given: none); allowed: ckpt_path="),
        ([f"ckpt_path={tmp_path}/no.ckpt"], f"ckpt_path={tmp_path}/no.ckpt does not exist"),
        ([f"run={tmp_path}/empty_run"], "empty_run has no checkpoints/best.ckpt; allowed: a run"),
        ([f"run={tmp_path}", f"ckpt_path={tmp_path}/a.ckpt"], "(given: ckpt_path, run)"),
    ]
    for args, message in cases:
        with pytest.raises(ConfigError, match=None) as err:
            generate(compose_generate(args, tmp_path))
        assert message in str(err.value), str(err.value)


def test_the_command_line_says_one_line_and_exits_2(runs, tmp_path):
    folder = runs["vae"]
    # (a bad value such as n=-1 or an unmatched prompt: test_bad_input_is_refused_before_drawing)
    for args, line in (
        ([f"run={tmp_path}"], f"error: run={tmp_path} has no checkpoints/best.ckpt; allowed: "
                              "a run folder"),
        (["data=mnist"], f"error: run={folder} was trained on data=dice; allowed: data=dice "
                         "(or leave data= out)"),
    ):  # fmt: skip
        before = set((folder / "generated").glob("*"))
        proc = gen([f"run={folder}", *args] if "run=" not in args[0] else args, tmp_path)
        assert proc.returncode == 2 and proc.stderr.strip() == line, proc.stderr
        assert set((folder / "generated").glob("*")) == before  # nothing drawn
