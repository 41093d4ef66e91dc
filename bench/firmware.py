"""Instructions per image of the exported decoder under QEMU, on both cores the firmware
targets, against an earlier runtime built from git in the same run; and the int8 runtime
against the fp32 reference path (soft float + expf) built from the same export.

    python src/export.py run=<run folder>        # writes deploy/model
    python bench/firmware.py [--model deploy/model] [--baseline 7158036]

QEMU counts instructions, not cycles: ARMv6-M (Cortex-M0+) code on mps2-an385
(-icount shift=0) and the CH32V003's rv32ec code on virt (minstret). Beside each count,
cycles and microseconds per image on every part in conf/mcu that runs that code, from the
executed instruction mix (a QEMU plugin, tinycvae.deploy.insn_mix) and the timing model
of tinycvae.deploy.cycles (docs/firmware.md). The baseline is
``deploy/`` (runtime, boards, Makefile) at the git revision ``--baseline`` (default: the
gather-form runtime before the scatter kernels), built against the same model files.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tinycvae.deploy import insn_mix, toolchain  # noqa: E402
from tinycvae.deploy.cycles import timing_report  # noqa: E402

BASELINE = "7158036"  # deploy/cvae.c before the scatter kernels (gather form, tap lists)
CORES = (("check-qemu", "ARMv6-M"), ("check-qemu-rv32", "rv32ec"))


def count(goal: str, model: Path, build: Path, deploy: Path | None = None) -> int:
    """Instructions per image of ``make <goal>`` (golden vectors must all match)."""
    cmd = ["make", "-s", "-C", str(deploy or toolchain.DEPLOY_SRC), f"MODEL_DIR={model}",
           f"BUILD={build}", goal]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"make {goal} failed ({deploy or 'deploy/'}): {out[-400:]}")
    ok, n = toolchain.golden_result(out)
    if ok != n:
        raise SystemExit(f"make {goal}: {ok}/{n} golden vectors")
    return toolchain.instructions_per_image(out)


def cycle_lines(goal: str, model: Path, build: Path, functions: int = 0) -> list[str]:
    """Cycles and microseconds per image on each part that runs ``goal``'s code; with
    ``functions``, each stage's instructions and the ``functions`` functions that ran most
    of them."""
    target = goal.removeprefix("check-")
    text, executed = insn_mix.run_with_mix(target, model, build)
    report = timing_report(executed.segments, executed.isa)
    n = toolchain.instructions_per_image(text)
    lines = [f"    mix of {report['instructions_per_image']:,} instructions (board: {n:,}): "
             + ", ".join(f"{k} {v:,}" for k, v in report["mix"].items())]  # fmt: skip
    for p in report["parts"]:
        c = p["cycles_per_image"]
        lines.append(f"    {p['part']:12s} {p['core']:13s} {p['clock_mhz']:5.0f} MHz "
                     f"{p['flash_wait_states']} WS: {c:>11,} cycles ({c / n:.2f} per "
                     f"instruction), {p['us_per_image'] / 1000:8.2f} ms per image")  # fmt: skip
    if functions:
        emu = insn_mix.EMULATORS[target]
        per_seg = insn_mix.by_function(executed, emu, build / target / "golden_test.elf")
        for k, counts in enumerate(per_seg):
            name = "before stage 0" if k == 0 else f"stage {k - 1}"
            top = ", ".join(f"{f} {c:,}" for f, c in counts.most_common(functions))
            lines.append(f"    {name:14s} {sum(counts.values()):>9,}: {top}")
    return lines


def for_older_runtime(model: Path, into: Path) -> Path:
    """A copy of the model folder whose arena constants suit a runtime (before
    ``CVAE_LAST_ACC_ROW``; later ones read the export as it is) that streamed fewer
    layers and shared one accumulator row: the streaming arena as large as the whole-image
    one (which covers what such a runtime streamed), the accumulator row as wide as the
    last layer's own (the weights, and so the images, are the same)."""
    shutil.copytree(model, into)
    header = into / "cvae_model.h"
    text = header.read_text()
    consts = {k: int(v) for k, v in re.findall(r"#define (CVAE_\w+) (\d+)", text)}
    widest = max(consts["CVAE_ACC_ROW"], consts.get("CVAE_LAST_ACC_ROW", 0))
    text = re.sub(r"#define CVAE_ACC_ROW \d+", f"#define CVAE_ACC_ROW {widest}", text)
    text = re.sub(r"#define CVAE_ARENA_STREAM \d+",
                  f"#define CVAE_ARENA_STREAM {consts['CVAE_ARENA_IMAGE']}", text)  # fmt: skip
    header.write_text(text)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deploy/model", help="an export's model folder")
    parser.add_argument(
        "--precision",
        default="int8",
        choices=["int8", "int4"],
        help="the integer model folder to time (the export's precision)",
    )
    parser.add_argument("--baseline", default=BASELINE,
                        help="git revision of the runtime to compare with ('' : none)")  # fmt: skip
    parser.add_argument("--by-function", type=int, default=0, metavar="N",
                        help="per stage, the N functions that ran most instructions")  # fmt: skip
    args = parser.parse_args()
    if args.by_function < 0:
        parser.error(f"--by-function {args.by_function}: allowed: 0 (off) or more functions")
    model = Path(args.model).resolve()
    toolchain.check_targets(["qemu", "qemu-rv32"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old_deploy = None
        if args.baseline:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "deploy"],
                                     capture_output=True, check=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
            old_deploy = tmp / "deploy"
            old_model = model / args.precision
            if "CVAE_LAST_ACC_ROW" not in (old_deploy / "cvae.c").read_text():
                old_model = for_older_runtime(old_model, tmp / "old_model")
        print(f"{args.precision} model {model / args.precision}: instructions per image (QEMU)")
        for goal, core in CORES:
            new = count(goal, model / args.precision, tmp / "new")
            line = f"  {core:8s} {new:>11,}"
            if old_deploy:
                old = count(goal, old_model, tmp / "old", old_deploy)
                line += f"   runtime {args.baseline}: {old:>11,}   {old / new:.2f}x fewer"
            print(line)
            print(
                "\n".join(cycle_lines(goal, model / args.precision, tmp / "new", args.by_function))
            )
        fp32 = count("check-qemu", model / "fp32", tmp / "fp32")
        fixed = count("check-qemu", model / args.precision, tmp / "new")
        print(f"  fp32 reference path, ARMv6-M: {fp32:,} ({fp32 / fixed:.1f}x the "
              f"{args.precision} runtime)")  # fmt: skip


if __name__ == "__main__":
    main()
