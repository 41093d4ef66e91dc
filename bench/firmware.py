"""Instructions per image of the exported decoder under QEMU: int8 runtime vs the fp32
reference path (soft float + expf) built from the same export, in the same run.

    python src/export.py run=<run folder>        # writes deploy/model
    python bench/firmware.py [--model deploy/model]

QEMU (mps2-an385, -icount shift=0) counts ARMv6-M (Cortex-M0+) instructions, not cycles.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tinycvae.deploy import toolchain  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deploy/model", help="an export's model folder")
    args = parser.parse_args()
    model = Path(args.model).resolve()
    toolchain.check_targets(["qemu"])
    counts = {}
    with tempfile.TemporaryDirectory() as build:
        for precision in ("int8", "fp32"):
            out = toolchain.make("check-qemu", model / precision, Path(build) / precision)
            counts[precision] = toolchain.instructions_per_image(out)
            print(f"{precision}: {counts[precision]:,} instructions per image")
    print(f"fp32 / int8: {counts['fp32'] / counts['int8']:.1f}x")


if __name__ == "__main__":
    main()
