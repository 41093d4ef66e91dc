"""Projects a board owner can flash, written by the export beside the model (``projects:``
in ``conf/export.yaml``):

``ch32fun/``
    a ch32fun project for the CH32V003 (``make flash CH32FUN=<ch32fun>/ch32fun``): Makefile,
    ``funconfig.h`` (debug printf, SysTick at HCLK), ``cvae_demo.c`` and copies of the
    runtime and the int8 model, so the folder builds on its own.
``platformio/``
    a PlatformIO project (``pio run -e ch32v003 -t upload``; ``-e stm32f030f4``):
    ``platformio.ini``, ``src/main.c``, ``src/funconfig.h`` and the library in
    ``lib/tinycvae``.
``library/``
    the runtime and the int8 model as an Arduino (``library.properties``) and PlatformIO
    (``library.json``) library, with an example sketch.

The sources come from ``deploy/`` (the runtime) and ``deploy/templates/`` (mains, build
files); the model from the export's ``int8/`` folder. Where the model leaves the CH32V003
no flash for the rv32ec quarter-square table (:func:`ch32v003_tier`), each copy of
``cvae.c`` starts with ``#define CVAE_RV_QSQ 0`` (and where not even for the table-free
kernels' assembly requantisation, ``#define CVAE_RV_CHAIN 0`` too), as
``deploy/Makefile``'s ch32v003 build falls back by itself; where it leaves the 16 KB
Cortex-M0 of the stm32f030f4 env no flash for the ARMv6-M Winograd kernel
(:func:`m0_stride1_kernel`), each copy of ``cvae.h`` (read by ``cvae.c`` and the
model both) starts with ``#define CVAE_ARM_WINO 0``, as the cortex-m0plus build falls
back to the direct kernel. The export does not build these
projects (its targets are built from ``deploy/``); ``tests/test_projects.py`` builds them
with the cross-compilers and the frameworks' flags.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from omegaconf import ListConfig

from tinycvae.deploy.toolchain import DEPLOY_SRC
from tinycvae.errors import ConfigError
from tinycvae.mcu.footprint import (
    RV_TIER_CHAIN,
    RV_TIER_PLAIN,
    RV_TIER_QSQ,
    estimate_stages,
    load_mcu,
    rv_tier,
)
from tinycvae.mcu.stages import FloatModel

PROJECTS = ("ch32fun", "platformio", "library")
TEMPLATES = DEPLOY_SRC / "templates"
LIBRARY_NAME = "tinycvae"
VERSION = "0.1.0"  # the library's version (semantic, as both registries require)


def check_projects(value: object) -> list[str]:
    """The project names of ``projects=`` (a list, possibly empty or null); ConfigError in
    one line naming the allowed ones otherwise."""
    allowed = ", ".join(PROJECTS)
    if value is None:
        return []
    if not isinstance(value, (list, tuple, ListConfig)):
        raise ConfigError(f"projects={value} is invalid; allowed: a list of {allowed}")
    names = [str(v) for v in value]
    for name in names:
        if name not in PROJECTS:
            raise ConfigError(f"projects: {name} is unknown; allowed: {allowed}")
    return list(dict.fromkeys(names))


NO_QSQ = (
    "/* Written by the export: this model leaves the CH32V003 no flash for the rv32ec\n"
    " * quarter-square table, so the table-free kernels (docs/firmware.md, rv32ec kernels). */\n"
    "#define CVAE_RV_QSQ 0\n"
)
NO_CHAIN = (
    "/* Written by the export: this model leaves the CH32V003 no flash for the rv32ec\n"
    " * quarter-square table, nor for the table-free kernels' assembly requantisation, so\n"
    " * the table-free kernels with the C one (docs/firmware.md, rv32ec kernels). */\n"
    "#define CVAE_RV_QSQ 0\n"
    "#define CVAE_RV_CHAIN 0\n"
)
NO_WINO = (
    "/* Written by the export: this model leaves a 16 KB Cortex-M0/M0+ (PlatformIO's\n"
    " * stm32f030f4 env) no flash for the ARMv6-M Winograd kernel, so its direct kernel and\n"
    " * the model's int8 weights (docs/firmware.md, ARMv6-M kernels; a part with the room\n"
    " * can drop this line, or build with -DCVAE_ARM_WINO=1). */\n"
    "#ifndef CVAE_ARM_WINO\n#define CVAE_ARM_WINO 0\n#endif\n"
)
NO_ROWS = (
    "/* Written by the export: this model leaves a 16 KB Cortex-M0/M0+ (PlatformIO's\n"
    " * stm32f030f4 env) no flash for the generated ARMv6-M row kernels, so the runtime's\n"
    " * (docs/firmware.md, ARMv6-M kernels; a part with the room can drop this line, or\n"
    " * build with -DCVAE_ARM_ROWS=1). */\n"
    "#ifndef CVAE_ARM_ROWS\n#define CVAE_ARM_ROWS 0\n#endif\n"
)
# what each copy of cvae.c starts with, by the CH32V003 tier (tinycvae.mcu.footprint.rv_tier)
TIER_HEAD = {RV_TIER_QSQ: "", RV_TIER_CHAIN: NO_QSQ, RV_TIER_PLAIN: NO_CHAIN}


def ch32v003_tier(fm: FloatModel, precision: str) -> str:
    """The rv32ec build the CH32V003 image of ``fm`` (streamed) gets, as deploy/Makefile's
    ch32v003 link picks it (the estimator's :func:`~tinycvae.mcu.footprint.rv_tier`)."""
    ch32 = load_mcu("ch32v003")
    fp = estimate_stages(fm, precision, stream=True, mcu=ch32)
    tier = rv_tier(precision, ch32, fp.model_flash(ch32), fp.last_acc_row)
    assert tier is not None  # an integer path on a core without a multiplier
    return tier


def m0_stride1_kernel(fm: FloatModel, precision: str) -> str | None:
    """The ARMv6-M stride-1 kernel the projects' 16 KB Cortex-M0 (the stm32f030f4 env,
    conf/mcu's cortex_m0plus_16k) links for ``fm``, as deploy/Makefile's cortex-m0plus link
    decides: ``winograd``, ``direct`` where the Winograd kernel's weights and code leave it
    no flash, or None where no stage has Winograd weights."""
    m0 = load_mcu("cortex_m0plus_16k")
    return estimate_stages(fm, precision, stream=True, mcu=m0).armv6m_stride1(m0)


def m0_row_kernels(fm: FloatModel, precision: str) -> str | None:
    """The kernels the projects' 16 KB Cortex-M0 links for the stages with a generated row
    kernel: ``generated``, ``runtime`` where the build falls back (as deploy/Makefile's
    cortex-m0plus link), or None where no stage has one."""
    m0 = load_mcu("cortex_m0plus_16k")
    return estimate_stages(fm, precision, stream=True, mcu=m0).armv6m_row_kernels(m0)


def write_projects(
    model_dir: Path,
    names: list[str],
    precision: str = "int8",
    rv_tier: str = RV_TIER_QSQ,
    arm_wino: bool = True,
    arm_rows: bool = True,
) -> list[Path]:
    """Write the projects ``names`` into ``model_dir`` (which holds ``<precision>/``, the
    shipped integer model: int8 or int4); their folders. ``rv_tier``: the CH32V003's
    rv32ec build (:func:`ch32v003_tier`; every ``cvae.c`` starts with its ``TIER_HEAD``);
    ``arm_wino`` False: the 16 KB Cortex-M0's has no room for the ARMv6-M Winograd kernel
    (:func:`m0_stride1_kernel` direct; every ``cvae.h`` starts with ``NO_WINO``), and
    ``arm_rows`` False none for the generated row kernels (:func:`m0_row_kernels` runtime:
    ``NO_ROWS``)."""
    if rv_tier not in TIER_HEAD:
        raise ConfigError(f"rv_tier={rv_tier} is unknown; allowed: {', '.join(TIER_HEAD)}")
    int8 = model_dir / precision
    summary = _model_summary(int8 / "cvae_model.h")
    heads = {
        "cvae.c": TIER_HEAD[rv_tier],
        "cvae.h": ("" if arm_wino else NO_WINO) + ("" if arm_rows else NO_ROWS),
    }
    written = []
    for name in names:
        folder = model_dir / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        if name == "ch32fun":
            _write_ch32fun(folder, int8, heads)
        elif name == "platformio":
            _write_platformio(folder, int8, summary, heads)
        else:
            _write_library(folder, int8, summary, heads)
        written.append(folder)
    return written


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _runtime_and_model(folder: Path, int8: Path, preamble: bool, heads: dict[str, str]) -> None:
    """cvae.h, cvae_num.h, cvae.c (each after its entry in ``heads``, cvae.c after the
    library's preamble too when ``preamble``), the model and cvae_roll.h into ``folder``."""
    _copy(DEPLOY_SRC / "cvae_num.h", folder / "cvae_num.h")
    (folder / "cvae.h").write_text(heads.get("cvae.h", "") + (DEPLOY_SRC / "cvae.h").read_text())
    runtime = (DEPLOY_SRC / "cvae.c").read_text()
    if preamble:
        runtime = (TEMPLATES / "library" / "cvae_preamble.c").read_text() + runtime
    (folder / "cvae.c").write_text(heads.get("cvae.c", "") + runtime)
    for name in ("cvae_model.h", "cvae_model.c"):
        _copy(int8 / name, folder / name)
    _copy(TEMPLATES / "cvae_roll.h", folder / "cvae_roll.h")


def _write_ch32fun(folder: Path, int8: Path, heads: dict[str, str]) -> None:
    for name in ("Makefile", "funconfig.h"):
        _copy(TEMPLATES / "ch32fun" / name, folder / name)
    _copy(TEMPLATES / "main.c", folder / "cvae_demo.c")
    _runtime_and_model(folder, int8, preamble=False, heads=heads)


def _write_platformio(folder: Path, int8: Path, summary: str, heads: dict[str, str]) -> None:
    _copy(TEMPLATES / "platformio" / "platformio.ini", folder / "platformio.ini")
    _copy(TEMPLATES / "platformio" / "funconfig.h", folder / "src" / "funconfig.h")
    _copy(TEMPLATES / "main.c", folder / "src" / "main.c")
    _write_library(folder / "lib" / LIBRARY_NAME, int8, summary, heads)


def _write_library(folder: Path, int8: Path, summary: str, heads: dict[str, str]) -> None:
    src = folder / "src"
    _runtime_and_model(src, int8, preamble=True, heads=heads)
    _copy(TEMPLATES / "library" / "tinycvae.h", src / "tinycvae.h")
    example = Path("examples") / "RollDie" / "RollDie.ino"
    _copy(TEMPLATES / "library" / example, folder / example)
    precision = "int4" if "CVAE_INT4" in (int8 / "cvae_model.h").read_text() else "int8"
    sentence = f"A tiny conditional-VAE decoder that draws a die: {precision}, integer-only C."
    paragraph = (
        f"Generated by tinycvae's src/export.py: {summary}. cvae_generate_rows() draws "
        "the image row by row from a static arena; cvae_roll.h draws a face and a latent."
    )
    manifest = {
        "name": LIBRARY_NAME,
        "version": VERSION,
        "description": f"{sentence} {paragraph}",
        "keywords": ["cvae", "generative", precision, "tinyml", "ch32v003", "cortex-m0"],
        "license": "MIT",
        "frameworks": "*",
        "platforms": "*",
        "headers": ["tinycvae.h"],
        "build": {"srcDir": "src", "includeDir": "src"},
        "examples": [{"name": "RollDie", "base": "examples/RollDie", "files": ["RollDie.ino"]}],
    }
    (folder / "library.json").write_text(json.dumps(manifest, indent=2) + "\n")
    properties = {
        "name": LIBRARY_NAME,
        "version": VERSION,
        "author": "tinycvae export",
        "maintainer": "tinycvae export",
        "sentence": sentence,
        "paragraph": paragraph,
        "category": "Data Processing",
        "url": "",  # no public home yet: fill in where you publish it
        "architectures": "*",
        "includes": "tinycvae.h",
    }
    (folder / "library.properties").write_text("".join(f"{k}={v}\n" for k, v in properties.items()))


def _model_summary(header: Path) -> str:
    """E.g. ``6 classes, latent 1 (bypass), 1x32x32 image, 5 stages, int8``."""
    defines = dict(re.findall(r"#define (CVAE_\w+) (\S+)", header.read_text()))
    return (
        f"{defines['CVAE_NUM_CLASSES']} classes, latent {defines['CVAE_LATENT']}"
        f"{' (bypass)' if defines.get('CVAE_BYPASS') == '1' else ''}, "
        f"{defines['CVAE_OUT_C']}x{defines['CVAE_OUT_H']}x{defines['CVAE_OUT_W']} image, "
        f"{defines['CVAE_NUM_STAGES']} stages, {'int4' if 'CVAE_INT4' in defines else 'int8'}"
    )
