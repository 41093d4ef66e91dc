"""The files an export writes into its model folder: ``int8/`` (or ``int4/``, the shipped
integer precision) and ``fp32/`` (the C model
and its golden vectors, see :mod:`tinycvae.deploy.codegen`) and ``decoder.onnx`` (the
float decoder, for users who bring their own toolchain)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from tinycvae.deploy import codegen
from tinycvae.deploy.quantize import QuantModel, run_int8
from tinycvae.mcu.stages import FloatModel, run_fp32
from tinycvae.models import CVAE
from tinycvae.sampling import balanced_labels


def export_onnx(model: CVAE, path: Path) -> None:
    """The float decoder, ``(z [N, latent], label [N] int64) -> image [N, C, H, W]``,
    exported from a CPU copy (the model stays where it is)."""

    class Images(torch.nn.Module):
        def __init__(self, decoder: torch.nn.Module) -> None:
            super().__init__()
            self.decoder = decoder

        def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.decoder(z, label))

    z = torch.zeros(1, model.latent)
    label = torch.zeros(1, dtype=torch.long)
    torch.onnx.export(
        Images(copy.deepcopy(model.decoder).cpu()).eval(),
        (z, label),
        str(path),
        input_names=["z", "label"],
        output_names=["image"],
        dynamic_axes={"z": {0: "n"}, "label": {0: "n"}, "image": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )


def write_firmware(
    model_dir: Path, model: CVAE, fm: FloatModel, qm: QuantModel, golden_count: int, seed: int
) -> None:
    """Write the integer model ``qm`` (into ``int8/`` or ``int4/``, its precision), the fp32
    model ``fm`` and the ONNX decoder into ``model_dir``. Both C models carry
    ``golden_count`` golden vectors: balanced labels, latents drawn by the model's sampler
    (seed ``seed``), and the outputs the Python references compute for them, which the C
    builds must reproduce."""
    gen = torch.Generator().manual_seed(seed)
    labels = balanced_labels(golden_count, model.num_classes)
    z = model.sampler(labels, gen).cpu()
    zq = qm.quantize_z(z)
    y = labels.numpy().astype(np.uint8)
    codegen.write_model(
        model_dir / qm.precision, qm.float_model.to("cpu"), qm.precision, model.bypass,
        model.sample_std,
        (y, zq, run_int8(qm, zq, y).reshape(len(y), -1)), qm,
    )  # fmt: skip
    codegen.write_model(
        model_dir / "fp32", fm.to("cpu"), "fp32", model.bypass, model.sample_std,
        (y, z.numpy(), run_fp32(fm, z, labels).reshape(len(y), -1).numpy()),
    )  # fmt: skip
    export_onnx(model, model_dir / "decoder.onnx")
