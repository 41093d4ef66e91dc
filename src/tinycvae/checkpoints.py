"""Read back what a run saved: the model and the data set of a checkpoint, rebuilt from
its own config through the project's builders only.

A checkpoint is data, never code: it is loaded with ``weights_only=True`` and nothing it
holds names code to run. Its ``model`` config is rebuilt through ``model.arch``
(:func:`rebuild`), its ``data`` config through the data modules the project ships
(:data:`DATA_MODULES`, :func:`rebuild_data`), both with plain values; a stored
``_target_`` outside that list, or any Hydra directive (``_target_``, ``_args_``,
``_partial_`` ...) inside the values, is refused in one line before anything is built."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tinycvae.data.base import DataSpec
from tinycvae.data.datamodule import DiceDataModule, TensorDataModule, TorchvisionDataModule
from tinycvae.errors import ConfigError, TinyCVAEError
from tinycvae.models import CVAE, build_cvae

# Checkpoints written before each architecture had a builder of its own name this one,
# which took every architecture's keys and ignored the other architectures' ones.
LEGACY_TARGET = "tinycvae.models.build_cvae"
LEGACY_IGNORED = {"conv": ("hidden",), "mlp": ("dim1", "dim2", "dim3", "dim4")}

# The data modules conf/data/*.yaml name: the only ones a checkpoint's data config rebuilds.
DATA_MODULES: dict[str, type[TensorDataModule]] = {
    "tinycvae.data.datamodule.DiceDataModule": DiceDataModule,
    "tinycvae.data.datamodule.TorchvisionDataModule": TorchvisionDataModule,
}
PLAIN = (str, int, float, bool, type(None))


def _directive(value: Any, where: str) -> str | None:
    """The first Hydra directive (``_target_``, ``_args_`` ...) or non-plain value inside
    ``value``, as ``<key path>=<value>``; None when every value is plain data."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}"
            if str(key).startswith("_") and str(key).endswith("_"):
                return f"{path}={item}"
            if (found := _directive(item, path)) is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if (found := _directive(item, f"{where}[{i}]")) is not None:
                return found
        return None
    return None if isinstance(value, PLAIN) else f"{where}={type(value).__name__}"


def plain_settings(node: Any, where: str, origin: str) -> dict[str, Any]:
    """A stored config node as plain keyword values (its ``_target_`` left out); one-line
    ConfigError when it names code anywhere (a checkpoint is data, never code)."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{origin}: its {where} config is not a mapping ({node!r:.80})")
    keys = {k: v for k, v in node.items() if k != "_target_"}
    found = _directive(keys, where)
    if found is not None:
        raise ConfigError(
            f"{origin}: its config names code to run ({found:.200}); a checkpoint is data: "
            "allowed: plain values only"
        )
    return {str(k): v for k, v in keys.items()}


def rebuild_data(data_cfg: Any, origin: str = "the checkpoint") -> TensorDataModule:
    """The (unprepared) data module a stored ``data`` config describes, built through the
    class :data:`DATA_MODULES` maps its ``_target_`` to: the stored target is looked up,
    never imported or called."""
    target = data_cfg.get("_target_") if isinstance(data_cfg, Mapping) else None
    module = DATA_MODULES.get(str(target))
    if module is None:
        raise ConfigError(
            f"{origin}: its data config names data._target_={target!s:.200}, not a data "
            f"module tinycvae ships; allowed: {', '.join(DATA_MODULES)}"
        )
    settings = plain_settings(data_cfg, "data", origin)
    try:
        return module(**settings)
    except TinyCVAEError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"{origin}: its data set cannot be rebuilt: {str(err).splitlines()[0]}"
        ) from None


def rebuild(spec: DataSpec, model_cfg: Mapping[str, Any]) -> CVAE:
    """The (untrained) model a stored ``model`` config describes, through its ``arch``:
    a checkpoint's ``_target_`` is never called (a checkpoint is data, never code)."""
    keys = plain_settings(model_cfg, "model", "the checkpoint")
    arch = keys.pop("arch", "conv")
    if model_cfg.get("_target_") == LEGACY_TARGET:
        keys = {k: v for k, v in keys.items() if k not in LEGACY_IGNORED.get(arch, ())}
    return build_cvae(spec, arch, **keys)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[CVAE, dict[str, Any]]:
    """The CVAE in checkpoint ``path`` (eval mode) and the run info stored with it.

    Loaded with ``weights_only=True``: a checkpoint is data, never code."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # then moved
        info = ckpt["tinycvae"]
        spec = DataSpec.from_dict(info["spec"])
        model = rebuild(spec, info["config"]["model"])
        state = {
            k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
        }
        model.load_state_dict(state)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint {path} does not exist") from None
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - corrupt, foreign or incompatible
        raise ConfigError(
            f"checkpoint {path} is not a loadable tinycvae checkpoint "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from None
    return model.to(device).eval(), info
