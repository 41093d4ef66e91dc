"""Instructions of the stride-1 stage on ARMv6-M with the Winograd kernel and without,
on random-weight c_c_c_c dice decoders: the measurement behind the exporter's gate
(``WINO_MIN_IN_C`` in tinycvae.mcu.footprint; docs/results.md, "ARMv6-M Winograd F(2,3)").

    python bench/winograd_gate.py 4 5 6 7 8

The stride-1 kernels skip no zero input, so the counts do not depend on the weights.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tinycvae.data.dice import dice_spec  # noqa: E402
from tinycvae.deploy import toolchain  # noqa: E402
from tinycvae.deploy.firmware import write_firmware  # noqa: E402
from tinycvae.deploy.quantize import quantize  # noqa: E402
from tinycvae.mcu import footprint  # noqa: E402
from tinycvae.mcu.stages import extract  # noqa: E402
from tinycvae.models import build_cvae  # noqa: E402

K = dice_spec(32).num_classes


def stride1_instructions(c: int, gate: int, folder: Path) -> int:
    """The stride-1 stage's instructions per image (check-qemu, golden 12/12) of the
    c_c_c_c decoder exported with WINO_MIN_IN_C = gate."""
    footprint.WINO_MIN_IN_C = gate
    torch.manual_seed(0)
    dims = {f"dim{i}": c for i in range(1, 5)}
    model = build_cvae(dice_spec(32), latent=1, latent_mode="bypass", **dims)
    for p in model.decoder.parameters():
        nn.init.normal_(p, std=0.3)
    model.eval()
    fm = extract(model.decoder, 1, K)
    labels = torch.arange(256) % K
    z = model.sampler(labels, torch.Generator().manual_seed(1))
    write_firmware(folder / "model", model, fm, quantize(fm, z, labels, bypass=True), 12, 0)
    out = toolchain.make("check-qemu", folder / "model" / "int8", folder / "build")
    if toolchain.golden_result(out) != (12, 12):
        raise SystemExit(f"c={c}, gate {gate}: golden vectors differ: {out[-400:]}")
    stages = re.search(r"instructions per stage: (.*)", out).group(1).split()
    k = next(i for i, st in enumerate(fm.stages) if st.kind == "convT" and st.stride == 1)
    return int(stages[k])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("channels", nargs="+", type=int, help="c of the c_c_c_c decoders")
    args = parser.parse_args()
    toolchain.check_targets(["qemu"])
    with tempfile.TemporaryDirectory() as tmp:
        for c in args.channels:
            direct = stride1_instructions(c, c + 1, Path(tmp) / f"{c}d")
            wino = stride1_instructions(c, 1, Path(tmp) / f"{c}w")
            print(f"c={c}: direct {direct:,}, Winograd {wino:,} ({wino / direct - 1:+.0%})")


if __name__ == "__main__":
    main()
