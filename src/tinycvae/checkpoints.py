"""Read back what a run saved: the model of a checkpoint, rebuilt from its own config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tinycvae.data.base import DataSpec
from tinycvae.errors import ConfigError
from tinycvae.models import CVAE, build_cvae

# Checkpoints written before each architecture had a builder of its own name this one,
# which took every architecture's keys and ignored the other architectures' ones.
LEGACY_TARGET = "tinycvae.models.build_cvae"
LEGACY_IGNORED = {"conv": ("hidden",), "mlp": ("dim1", "dim2", "dim3", "dim4")}


def rebuild(spec: DataSpec, model_cfg: Mapping[str, Any]) -> CVAE:
    """The (untrained) model a stored ``model`` config describes, through its ``arch``:
    a checkpoint's ``_target_`` is never called (a checkpoint is data, never code)."""
    keys = {k: v for k, v in model_cfg.items() if k != "_target_"}
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
