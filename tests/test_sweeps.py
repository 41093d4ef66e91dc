"""W&B sweep files (sweeps/*.yaml): every run an agent can draw composes and builds.

No W&B service is involved (``wandb.sweep()`` without a server can hang): the files are
read as ``wandb sweep`` reads them (PyYAML), the combinations are enumerated as the agent
would draw them, and each ``key=value`` list, formatted as the agent's
``${args_no_hyphens}`` formats it, is composed with the real Hydra configs and built.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import OmegaConf

from tinycvae.job import build

from conftest import CONF, ROOT, compose_train

SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
COMMAND = ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
GROUPS = {p.name for p in CONF.iterdir() if p.is_dir()}  # experiment, data, model, ...


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def choices(spec: dict[str, Any]) -> list[Any]:
    """The values one parameter can take (``value:`` is a constant)."""
    if "value" in spec:
        return [spec["value"]]
    assert set(spec) == {"values"}, f"only value/values parameters are enumerable: {spec}"
    return list(spec["values"])


def runs(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Every parameter set the agent can pass (grid: the product; random or bayes: each
    value of each parameter, the others at their first value, plus all-first/all-last)."""
    params = {name: choices(spec) for name, spec in sweep["parameters"].items()}
    if sweep["method"] == "grid":
        return [dict(zip(params, combo)) for combo in itertools.product(*params.values())]
    first = {k: v[0] for k, v in params.items()}
    drawn = [first, {k: v[-1] for k, v in params.items()}]
    drawn += [{**first, k: value} for k, values in params.items() for value in values[1:]]
    return drawn


def agent_args(run: dict[str, Any]) -> list[str]:
    """What ``${args_no_hyphens}`` expands to: ``f"{param}={value}"`` per parameter (wandb
    0.31, sdk/launch/sweeps/utils.py). The W&B backend may also turn an integral float into
    an int (1.0 -> 1); both forms are checked by the caller."""
    return [f"{k}={v}" for k, v in run.items()]


def integral_floats_as_ints(run: dict[str, Any]) -> dict[str, Any]:
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in run.items()}


def test_there_are_sweep_files():
    names = {p.stem for p in SWEEPS}
    assert {"latent_beta", "dims_pareto", "bypass_vs_vae"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_drives_train_py_through_hydra_overrides(path):
    sweep = load(path)
    assert sweep["program"] == "src/train.py" and (ROOT / sweep["program"]).is_file()
    assert sweep["command"] == COMMAND  # block style in the file, the agent's macros
    assert "- ${args_no_hyphens}" in path.read_text()
    assert sweep["method"] in ("grid", "random", "bayes")
    assert sweep["metric"]["goal"] in ("minimize", "maximize")
    assert sweep["metric"]["name"] in ("gen/acc", "val/loss", "test/mse", "test/ssim")
    for name, spec in sweep["parameters"].items():
        assert " " not in name
        for value in choices(spec):
            # None would reach Hydra as the string "None", a bool as True/False: write the
            # Hydra spelling ("null", true) instead.
            assert value is not None and not isinstance(value, bool), (name, value)
            assert isinstance(value, int | float | str), (name, value)
            assert " " not in str(value), f"{name}: {value!r} has a space"
            if isinstance(value, str):
                # PyYAML reads 1e-5 (no dot) as a string; W&B then treats it as a category
                with pytest.raises(ValueError):
                    float(value)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_run_the_agent_can_draw_composes_and_builds(path, tmp_path):
    sweep = load(path)
    drawn = runs(sweep)
    if sweep["method"] == "grid":
        sizes = [len(choices(s)) for s in sweep["parameters"].values()]
        assert len(drawn) == len(set(map(str, drawn))) == math.prod(sizes)
    seen = set()
    for run in drawn:
        for variant in (run, integral_floats_as_ints(run)):
            args = agent_args(variant)
            if tuple(args) in seen:
                continue
            seen.add(tuple(args))
            cfg = compose_train(args, tmp_path)
            for key, value in variant.items():
                if key in GROUPS:
                    continue  # a config group choice (experiment=...), not a value
                got = OmegaConf.select(cfg, key)
                assert got == value and type(got) is type(value), (args, key, got)
            build(cfg)  # validates every value; renders and trains nothing
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_each_agent_run_is_a_single_hydra_run(path):
    """The agent starts one process per run: no parameter may turn it into a multirun
    (some experiments, e.g. dice_bypass_vs_vae, are multiruns by themselves)."""
    sweep = load(path)
    spec = sweep["parameters"].get("experiment")
    overrides = [[f"experiment={e}"] for e in choices(spec)] if spec else [[]]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for args in overrides:
            cfg = compose("train", args, return_hydra_config=True)
            assert cfg.hydra.mode != RunMode.MULTIRUN, args
