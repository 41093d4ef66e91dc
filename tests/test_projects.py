"""The board projects the export writes beside the model (deploy/model/{ch32fun,platformio,
library}): what can be built here is built with the real cross-compilers and the flags
ch32fun and PlatformIO use; ch32fun's headers, PlatformIO and Arduino are not installed
here, so their parts are stubbed (the stubs below) or checked by content (manifests,
keys, paths).

A tiny untrained decoder is built in-process (no training): a few seconds."""

from __future__ import annotations

import configparser
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from torch import nn

from tinycvae.data.dice import dice_spec
from tinycvae.deploy.firmware import write_firmware
from tinycvae.deploy.preflight import check_settings
from tinycvae.deploy.projects import (
    NO_CHAIN,
    NO_QSQ,
    NO_WINO,
    PROJECTS,
    TEMPLATES,
    ch32v003_tier,
    m0_stride1_kernel,
    write_projects,
)
from tinycvae.deploy.quantize import quantize
from tinycvae.errors import ConfigError
from tinycvae.mcu.footprint import RV_TIER_CHAIN, RV_TIER_PLAIN, RV_TIER_QSQ
from tinycvae.mcu.stages import extract
from tinycvae.models import build_cvae

from conftest import CONF, ROOT, needs_tools

DEPLOY = ROOT / "deploy"
RV, ARM = "riscv64-unknown-elf-gcc", "arm-none-eabi-gcc"


def need(*tools: str) -> pytest.MarkDecorator:
    return needs_tools(*tools, install="gcc-riscv64-unknown-elf, gcc-arm-none-eabi, g++")


# ch32fun.mk's flags for TARGET_MCU=CH32V003 (CFLAGS, CFLAGS_ARCH, the project's
# EXTRA_CFLAGS), with -Wextra -Werror on top.
CH32FUN_CFLAGS = (
    "-g -Os -flto -ffunction-sections -fdata-sections -fmessage-length=0 "
    "-msmall-data-limit=8 -fno-tree-loop-distribute-patterns -march=rv32ec "
    "-mabi=ilp32e -DCH32V003 -static-libgcc -I/usr/include/newlib -nostdlib -Wall "
    "-DNDEBUG -DCVAE_STREAM_ONLY"
).split()
# platform-ch32v's ch32v003fun framework (_bare.py + ch32v003fun.py): no -D flags, so the
# library's own cvae.c preamble must switch the asserts off.
PIO_CH32V_CFLAGS = (
    "-Os -ffunction-sections -fdata-sections -Wall -march=rv32ec -mabi=ilp32e "
    "-std=gnu11 -flto -static-libgcc -nostdlib"
).split()
# platform-ststm32's _bare.py for board demo_f030f4 (cpu cortex-m0, -DSTM32F030x6).
PIO_STM32_CFLAGS = (
    "-Os -ffunction-sections -fdata-sections -Wall -mthumb -mcpu=cortex-m0 -std=gnu11 "
    "-DF_CPU=48000000L -DSTM32F030x6"
).split()
PIO_STM32_LDFLAGS = (
    "-Os -Wl,--gc-sections,--relax -mthumb -mcpu=cortex-m0 --specs=nano.specs --specs=nosys.specs"
).split()

# What cvae_demo.c / main.c take from ch32fun.h, for a cross build (linked against the
# repo's CH32V003 startup and linker script; ch32fun's own printf is not linked) ...
STUB_CH32FUN_RV = """#include <stdint.h>
#include <stdio.h>
#define FUNCONF_SYSTEM_CORE_CLOCK 48000000
typedef struct { volatile uint32_t CTLR, SR, CNT, R0, CMP, R1; } SysTick_Type;
#define SysTick ((SysTick_Type *)0xE000F000)
void SystemInit(void);
void Delay_Ms(uint32_t ms);
"""
STUB_LINK_RV = """#include <stddef.h>
#include <stdint.h>
void SystemInit(void) {}
/* ch32fun.c defines these two (a compiler may call them for a loop) */
void *memset(void *d, int c, size_t n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}
void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}
void Delay_Ms(uint32_t ms) { (void)ms; }
int printf(const char *fmt, ...) { (void)fmt; return 0; }
void board_exit(int code) { (void)code; for (;;) ; }
"""
# ... and for the host: printf to stdout, the third pause ends the program.
STUB_CH32FUN_HOST = """#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#define FUNCONF_SYSTEM_CORE_CLOCK 48000000
typedef struct { uint32_t CTLR, SR, CNT; } SysTick_Type;
static SysTick_Type systick_stub;
#define SysTick (&systick_stub)
static inline void SystemInit(void) {}
static inline void Delay_Ms(uint32_t ms)
{
    static int pauses;
    (void)ms;
    if (++pauses == 3)
        exit(0);
}
"""
# Arduino's Serial, micros() and delay(), and a main() that calls setup() and loop() x3.
STUB_ARDUINO = """#include <stdint.h>
#include <stdio.h>
struct StubSerial {
    void begin(unsigned long) {}
    void print(const char *s) { fputs(s, stdout); }
    void print(unsigned long v) { printf("%lu", v); }
    void println(const char *s) { puts(s); }
    void println(unsigned long v) { printf("%lu\\n", v); }
    void println(int v) { printf("%d\\n", v); }
};
static StubSerial Serial;
static unsigned long micros() { return 0; }
static void delay(unsigned long) {}
void setup();
void loop();
int main() { setup(); for (int i = 0; i < 3; i++) loop(); return 0; }
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """An export's model folder (int8/, fp32/, decoder.onnx) and its three projects: a
    3_3_3_3 bypass dice decoder with random weights (the CH32V003-sized one)."""
    torch.manual_seed(0)
    m = build_cvae(
        dice_spec(32),
        arch="conv",
        latent=1,
        latent_mode="bypass",
        conditioning={"kind": "onehot"},
        dim1=3,
        dim2=3,
        dim3=3,
        dim4=3,
    ).eval()
    for p in m.decoder.parameters():
        nn.init.normal_(p, std=0.4)
    fm = extract(m.decoder, m.latent, m.num_classes)
    labels = torch.arange(256) % m.num_classes
    qm = quantize(fm, m.sampler(labels, torch.Generator().manual_seed(1)), labels, bypass=True)
    out = tmp_path_factory.mktemp("export") / "model"
    write_firmware(out, m, fm, qm, 4, 1)
    write_projects(out, list(PROJECTS))
    return out


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout}{done.stderr}"
    return done


def _link_ch32v003(flags: list, objs: list, elf: Path) -> dict[str, int]:
    """Link ``objs`` with boards/ch32v003's startup and 16 KB / 2 KB linker script (an
    overflow fails the link); the image's flash and RAM."""
    board = DEPLOY / "boards" / "ch32v003"
    _run([RV, *flags, "-nostartfiles", "-T", board / "link.ld", board / "startup.S", *objs,
          "-lgcc", "-Wl,--gc-sections", "-o", elf])  # fmt: skip
    return _size("riscv64-unknown-elf-size", elf)


def _size(tool: str, elf: Path) -> dict[str, int]:
    text, data, bss = (int(v) for v in _run([tool, "-B", elf]).stdout.splitlines()[1].split()[:3])
    return {"flash": text + data, "ram": data + bss}


def _compile(cc: str, flags: list[str], sources: list[Path], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    objs = []
    for src in sources:
        obj = out / (src.stem + ".o")
        _run([cc, *flags, "-Wextra", "-Werror", "-c", src, "-o", obj])
        objs.append(obj)
    return objs


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --- content: what each project holds, and that every file it names exists


def test_the_export_writes_three_self_contained_projects(model):
    runtime = ["cvae.c", "cvae.h", "cvae_num.h", "cvae_model.c", "cvae_model.h", "cvae_roll.h"]
    assert _files(model / "ch32fun") == sorted(["Makefile", "funconfig.h", "cvae_demo.c", *runtime])
    library = [
        "library.json",
        "library.properties",
        "examples/RollDie/RollDie.ino",
        *(f"src/{f}" for f in [*runtime, "tinycvae.h"]),
    ]
    assert _files(model / "library") == sorted(library)
    assert _files(model / "platformio") == sorted(
        ["platformio.ini", "src/main.c", "src/funconfig.h", *(f"lib/tinycvae/{f}" for f in library)]
    )
    # the PlatformIO project carries the same library
    cmp = filecmp.dircmp(model / "library", model / "platformio" / "lib" / "tinycvae")
    assert not (cmp.diff_files or cmp.left_only or cmp.right_only)
    # copies: the model is the int8 export, the runtime deploy/'s (after the library's
    # preamble, which sets what deploy/Makefile passes as flags to the MCU images)
    for folder in (model / "ch32fun", model / "library" / "src"):
        for name in ("cvae_model.c", "cvae_model.h"):
            assert (folder / name).read_bytes() == (model / "int8" / name).read_bytes()
        for name in ("cvae.h", "cvae_num.h"):
            assert (folder / name).read_bytes() == (DEPLOY / name).read_bytes()
    assert (model / "ch32fun" / "cvae.c").read_text() == (DEPLOY / "cvae.c").read_text()
    lib_c = (model / "library" / "src" / "cvae.c").read_text()
    assert lib_c.endswith((DEPLOY / "cvae.c").read_text())
    assert "#define NDEBUG" in lib_c and "#define CVAE_STREAM_ONLY" in lib_c
    main = (TEMPLATES / "main.c").read_bytes()
    assert (model / "ch32fun" / "cvae_demo.c").read_bytes() == main
    assert (model / "platformio" / "src" / "main.c").read_bytes() == main


def test_ch32fun_makefile_and_funconfig(model):
    mk = (model / "ch32fun" / "Makefile").read_text()
    assert re.search(r"^CH32FUN \?= \S+", mk, re.M)
    assert re.search(r"^TARGET_MCU \?= CH32V003$", mk, re.M)
    assert re.search(r"^include \$\(CH32FUN\)/ch32fun\.mk$", mk, re.M)
    assert re.search(r"^flash : cv_flash$", mk, re.M)
    target = re.search(r"^TARGET := (\S+)$", mk, re.M).group(1)
    named = [f"{target}.c"]
    for key in ("ADDITIONAL_C_FILES", "EXTRA_ELF_DEPENDENCIES"):
        named += re.search(rf"^{key} := (.+)$", mk, re.M).group(1).split()
    for name in named:
        assert (model / "ch32fun" / name).is_file(), name
    assert "-DNDEBUG -DCVAE_STREAM_ONLY" in mk
    fc = (model / "ch32fun" / "funconfig.h").read_text()
    assert "#define FUNCONF_USE_DEBUGPRINTF 1" in fc and "#define FUNCONF_SYSTICK_USE_HCLK 1" in fc
    demo = (model / "ch32fun" / f"{target}.c").read_text()
    assert "SysTick->CNT" in demo and "SystemInit()" in demo and "printf" in demo


def test_a_ch32fun_path_that_does_not_exist_is_one_make_error(model):
    done = subprocess.run(
        ["make", "-C", model / "ch32fun", "CH32FUN=/nonexistent"], capture_output=True, text=True
    )
    assert done.returncode == 2
    errors = [ln for ln in done.stderr.splitlines() if "***" in ln]
    assert len(errors) == 1 and "CH32FUN=/nonexistent has no ch32fun.mk" in errors[0], done.stderr
    assert not list((model / "ch32fun").glob("*.elf"))


def test_platformio_ini(model):
    ini = configparser.ConfigParser()
    ini.read(model / "platformio" / "platformio.ini")
    assert ini["platformio"]["default_envs"] == "ch32v003"
    ch = ini["env:ch32v003"]
    assert ch["platform"] == "https://github.com/Community-PIO-CH32V/platform-ch32v.git"
    assert (ch["board"], ch["framework"]) == ("genericCH32V003F4P6", "ch32v003fun")
    st = ini["env:stm32f030f4"]
    assert (st["platform"], st["board"], st["framework"]) == ("ststm32", "demo_f030f4", "cmsis")
    assert ini["env"]["monitor_speed"] == "115200"
    # ch32v003fun puts the project's src/ on the include path for funconfig.h
    fc = (model / "platformio" / "src" / "funconfig.h").read_text()
    assert "#define FUNCONF_USE_UARTPRINTF 1" in fc and "#define FUNCONF_SYSTICK_USE_HCLK 1" in fc


def test_library_manifests(model):
    lib = model / "library"
    manifest = json.loads((lib / "library.json").read_text())
    assert manifest["name"] == "tinycvae" and re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    assert manifest["frameworks"] == "*" and manifest["platforms"] == "*"
    src = lib / manifest["build"]["srcDir"]
    assert (lib / manifest["build"]["includeDir"]) == src and src.is_dir()
    for header in manifest["headers"]:
        assert (src / header).is_file()
    for example in manifest["examples"]:
        for name in example["files"]:
            assert (lib / example["base"] / name).is_file()
    assert "6 classes, latent 1 (bypass), 1x32x32 image, 5 stages, int8" in manifest["description"]
    props = dict(
        line.split("=", 1) for line in (lib / "library.properties").read_text().splitlines()
    )
    required = {
        "name",
        "version",
        "author",
        "maintainer",
        "sentence",
        "paragraph",
        "category",
        "url",
        "architectures",
    }
    assert required <= set(props), required - set(props)
    assert props["name"] == manifest["name"] and props["version"] == manifest["version"]
    assert props["category"] in {
        "Display",
        "Communication",
        "Signal Input/Output",
        "Sensors",
        "Device Control",
        "Timing",
        "Data Storage",
        "Data Processing",
        "Other",
        "Uncategorized",
    }
    assert (src / props["includes"]).is_file()
    # Arduino compiles every .c/.cpp under src/: only the runtime and the model
    assert sorted(p.name for p in src.rglob("*.c*")) == ["cvae.c", "cvae_model.c"]


# --- builds: the cross-compilers here, with the frameworks' flags


@need(RV)
def test_ch32fun_project_compiles_and_links_for_the_ch32v003(model, tmp_path):
    """ch32fun.mk's CH32V003 flags on the folder's own sources; cvae_demo.c against a stub
    ch32fun.h, linked (-nostdlib, libgcc) with deploy/boards/ch32v003's startup and its
    16 KB / 2 KB linker script."""
    folder, stub = model / "ch32fun", tmp_path / "stub"
    stub.mkdir()
    (stub / "ch32fun.h").write_text(STUB_CH32FUN_RV)
    (stub / "link.c").write_text(STUB_LINK_RV)
    flags = [*CH32FUN_CFLAGS, f"-I{folder}", f"-I{stub}"]
    objs = _compile(
        RV,
        flags,
        [folder / "cvae.c", folder / "cvae_model.c", folder / "cvae_demo.c"],
        tmp_path / "o",
    )
    _run([RV, *flags, "-c", stub / "link.c", "-o", tmp_path / "link.o"])
    elf = tmp_path / "demo.elf"
    size = _link_ch32v003(flags, [*objs, tmp_path / "link.o"], elf)
    assert size["flash"] <= 16384 and size["ram"] <= 2048, size
    syms = _run(["riscv64-unknown-elf-nm", elf]).stdout
    assert "cvae_generate_rows" in syms and "__assert_func" not in syms
    assert " cvae_generate\n" not in syms  # -DCVAE_STREAM_ONLY
    assert " cvae_qsq\n" in syms  # the rv32ec quarter-square kernels: 3_3_3_3 has the room


def test_the_rv32ec_tier_is_the_fastest_that_the_ch32v003_has_room_for():
    """The estimator's choice for the projects, as deploy/Makefile's ch32v003 link makes it:
    3_3_3_3 int8 fits the CH32V003 with the quarter-square table, 16_16_16_16 int8 only
    without it, 12_12_18_20 int8 (12,628 B of constants) only without the table-free
    kernels' assembly requantisation too (tests/test_code_size.py links them)."""
    tiers = {}
    for dims in ((3, 3, 3, 3), (16, 16, 16, 16), (12, 12, 18, 20)):
        m = build_cvae(dice_spec(32), arch="conv", latent=1, latent_mode="bypass",
                       **dict(zip(("dim1", "dim2", "dim3", "dim4"), dims)))  # fmt: skip
        tiers[dims[-1]] = ch32v003_tier(extract(m.decoder, m.latent, m.num_classes), "int8")
    assert tiers == {3: RV_TIER_QSQ, 16: RV_TIER_CHAIN, 20: RV_TIER_PLAIN}


def _ch32fun_symbols(folder: Path, tmp_path: Path) -> str:
    """``nm`` of the ch32fun project in ``folder`` compiled with ch32fun's flags and linked
    for the CH32V003 (stub ch32fun.h)."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "ch32fun.h").write_text(STUB_CH32FUN_RV)
    (stub / "link.c").write_text(STUB_LINK_RV)
    flags = [*CH32FUN_CFLAGS, f"-I{folder}", f"-I{stub}"]
    objs = _compile(RV, flags, [folder / "cvae.c", folder / "cvae_model.c",
                                folder / "cvae_demo.c"], tmp_path / "o")  # fmt: skip
    _run([RV, *flags, "-c", stub / "link.c", "-o", tmp_path / "link.o"])
    _link_ch32v003(flags, [*objs, tmp_path / "link.o"], tmp_path / "demo.elf")
    return _run(["riscv64-unknown-elf-nm", tmp_path / "demo.elf"]).stdout


@need(RV)
@pytest.mark.parametrize(
    "tier, head",
    [(RV_TIER_CHAIN, NO_QSQ), (RV_TIER_PLAIN, NO_CHAIN)],
    ids=[RV_TIER_CHAIN, RV_TIER_PLAIN],
)
def test_projects_without_room_for_the_rv32ec_table_build_the_table_free_kernels(
    tier, head, model, tmp_path
):
    """``rv_tier`` table-free (the export's choice for a model that leaves no room for the
    table): every copy of cvae.c starts with ``#define CVAE_RV_QSQ 0``, and the ch32fun
    project links without the table; table-free-c (no room for the assembly
    requantisation either): with ``#define CVAE_RV_CHAIN 0`` too, and links without it."""
    out = tmp_path / "model"
    shutil.copytree(model / "int8", out / "int8")
    write_projects(out, list(PROJECTS), rv_tier=tier)
    for cvae in ("ch32fun/cvae.c", "platformio/lib/tinycvae/src/cvae.c", "library/src/cvae.c"):
        assert (out / cvae).read_text().startswith(head), cvae
    syms = _ch32fun_symbols(out / "ch32fun", tmp_path)
    assert "cvae_generate_rows" in syms and " cvae_qsq\n" not in syms
    assert " cvae_rv_krow_s1\n" not in syms
    # the table-free build still requantises its convT rows in the RV32E assembly (the
    # chain over m's NAF, written by the looped writer); the third tier in C only
    chain = tier == RV_TIER_CHAIN
    assert (" cvae_rv_finish_hidden\n" in syms) == chain
    assert (" cvae_rv_chain_setup\n" in syms) == chain


@need(RV)
def test_platformio_ch32v003_env_builds_the_library_without_flags(model, tmp_path):
    """The library as platform-ch32v's ch32v003fun framework compiles it (no -D flags):
    its cvae.c preamble turns the asserts off (-nostdlib has no __assert_func)."""
    lib, src, stub = (
        model / "platformio" / "lib" / "tinycvae" / "src",
        model / "platformio" / "src",
        tmp_path / "stub",
    )
    stub.mkdir()
    (stub / "ch32fun.h").write_text(STUB_CH32FUN_RV)
    (stub / "link.c").write_text(STUB_LINK_RV)
    flags = [*PIO_CH32V_CFLAGS, "-I/usr/include/newlib", f"-I{lib}", f"-I{src}", f"-I{stub}"]
    objs = _compile(
        RV,
        flags,
        [lib / "cvae.c", lib / "cvae_model.c", src / "main.c", stub / "link.c"],
        tmp_path / "o",
    )
    elf = tmp_path / "firmware.elf"
    size = _link_ch32v003(flags, objs, elf)
    assert size["flash"] <= 16384 and size["ram"] <= 2048, size
    assert "__assert_func" not in _run(["riscv64-unknown-elf-nm", elf]).stdout


def _link_stm32f030(platformio: Path, tmp_path: Path) -> tuple[dict[str, int], str]:
    """The PlatformIO project ``platformio``'s env:stm32f030f4 with platform-ststm32's flags
    for demo_f030f4 (Cortex-M0): the library and src/main.c (no vendor header needed),
    linked with deploy/'s Cortex-M startup and the 16 KB / 4 KB linker script of
    boards/cortex_m0plus; its sizes and ``nm``."""
    lib, src = platformio / "lib" / "tinycvae" / "src", platformio / "src"
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "exit.c").write_text("void board_exit(int c) { (void)c; for (;;) ; }\n")
    flags = [*PIO_STM32_CFLAGS, f"-I{lib}", f"-I{DEPLOY}"]
    objs = _compile(
        ARM,
        flags,
        [
            lib / "cvae.c",
            lib / "cvae_model.c",
            src / "main.c",
            DEPLOY / "boards" / "cortex_m" / "startup.c",
            tmp_path / "exit.c",
        ],
        tmp_path / "o",
    )
    elf = tmp_path / "firmware.elf"
    _run(
        [
            ARM,
            *PIO_STM32_LDFLAGS,
            "-nostartfiles",
            "-T",
            DEPLOY / "boards" / "cortex_m0plus" / "link.ld",
            *objs,
            "-lc",
            "-lgcc",
            "-o",
            elf,
        ]
    )
    return _size("arm-none-eabi-size", elf), _run(["arm-none-eabi-nm", elf]).stdout


@need(ARM)
def test_platformio_stm32f030_env_compiles_and_links(model, tmp_path):
    size, syms = _link_stm32f030(model / "platformio", tmp_path)
    assert size["flash"] <= 16384 and size["ram"] <= 4096, size
    assert "__assert_func" not in syms and "printf" not in syms


@need(ARM)
def test_a_model_without_room_for_the_winograd_kernel_links_the_direct_one(tmp_path):
    """14_14_14_14 int8: the Winograd kernel's weights and code leave the 16 KB Cortex-M0
    no room (as the cortex-m0plus link finds), so every copy of cvae.h starts with
    ``#define CVAE_ARM_WINO 0`` and env:stm32f030f4 links the direct kernel within 16 KB."""
    from test_code_size import write_random_model

    fm = write_random_model(tmp_path / "model" / "int8", (14, 14, 14, 14), "int8")
    assert m0_stride1_kernel(fm, "int8") == "direct"
    assert m0_stride1_kernel(fm, "int4") is None  # int4 has no Winograd stage
    write_projects(tmp_path / "model", list(PROJECTS), rv_tier=ch32v003_tier(fm, "int8"),
                   arm_wino=False)  # fmt: skip
    for cvae in ("ch32fun/cvae.h", "platformio/lib/tinycvae/src/cvae.h", "library/src/cvae.h"):
        assert (tmp_path / "model" / cvae).read_text().startswith(NO_WINO), cvae
    size, syms = _link_stm32f030(tmp_path / "model" / "platformio", tmp_path / "link")
    assert size["flash"] <= 16384 and size["ram"] <= 4096, size
    assert "cvae_arm_wino_pair" not in syms and "cvae_arm_row_s1" in syms


@pytest.fixture(scope="module")
def reference_rolls(model, tmp_path_factory) -> str:
    """What deploy/'s own demo prints for this model on the host (3 rolls)."""
    build = tmp_path_factory.mktemp("hostbuild")
    _run(["make", "-s", "-C", DEPLOY, f"MODEL_DIR={model / 'int8'}", f"BUILD={build}", "host"])
    return _run([build / "host" / "demo"]).stdout


@need("cc")
def test_the_board_main_rolls_the_same_dice_as_the_deploy_demo(model, tmp_path, reference_rolls):
    """cvae_demo.c (ch32fun's main, also PlatformIO's src/main.c) on the host against a
    stub ch32fun.h: the same three rolls, image for image, as deploy/main.c."""
    folder, stub = model / "ch32fun", tmp_path / "stub"
    stub.mkdir()
    (stub / "ch32fun.h").write_text(STUB_CH32FUN_HOST)
    exe = tmp_path / "demo"
    _run(
        [
            "cc",
            "-std=c99",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-DNDEBUG",
            "-DCVAE_STREAM_ONLY",
            f"-I{folder}",
            f"-I{stub}",
            folder / "cvae_demo.c",
            folder / "cvae.c",
            folder / "cvae_model.c",
            "-o",
            exe,
        ]
    )
    out = _run([exe]).stdout
    cycles = re.findall(r"^cycles per image: \d+ at 48000000 Hz\n", out, re.M)
    assert len(cycles) == 3
    assert re.sub(r"^cycles per image: .*\n", "", out, flags=re.M) == reference_rolls
    assert reference_rolls.count("roll ") == 3


@need("cc", "g++")
def test_the_arduino_example_is_cpp_and_rolls_the_same_dice(model, tmp_path, reference_rolls):
    """examples/RollDie/RollDie.ino as the Arduino IDE compiles it (C++, Arduino.h first)
    against a stub Arduino.h, linked with the library's C sources (extern "C")."""
    lib = model / "library"
    (tmp_path / "Arduino.h").write_text(STUB_ARDUINO)
    objs = _compile(
        "cc",
        ["-std=c99", "-O2", "-Wall", f"-I{lib / 'src'}"],
        [lib / "src" / "cvae.c", lib / "src" / "cvae_model.c"],
        tmp_path / "o",
    )
    sketch = tmp_path / "RollDie.ino.cpp"
    sketch.write_text('#include "Arduino.h"\n' + (lib / "examples/RollDie/RollDie.ino").read_text())
    exe = tmp_path / "sketch"
    _run(
        [
            "g++",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{tmp_path}",
            f"-I{lib / 'src'}",
            sketch,
            *objs,
            "-o",
            exe,
        ]
    )
    out = _run([exe]).stdout
    assert len(re.findall(r"^microseconds per image: 0\n", out, re.M)) == 3
    assert re.sub(r"^microseconds per image: .*\n", "", out, flags=re.M) == reference_rolls


# --- bad input


def _export_cfg(*overrides: str, out_dir: Path):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("export", overrides=list(overrides))
    with open_dict(cfg):
        cfg.out_dir = str(out_dir)
    return cfg


def test_the_default_export_writes_every_project(tmp_path):
    assert list(_export_cfg(out_dir=tmp_path).projects) == list(PROJECTS)


@pytest.mark.parametrize(
    "value, says",
    [
        (
            "[ch32fun,arduino]",
            "projects: arduino is unknown; allowed: ch32fun, platformio, library",
        ),
        ("ch32fun", "projects=ch32fun is invalid; allowed: a list of ch32fun, platformio, library"),
    ],
)
def test_an_unknown_project_is_refused_by_the_preflight(value, says, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(says)):
        check_settings(_export_cfg(f"projects={value}", out_dir=tmp_path))
    check_settings(_export_cfg("projects=[]", out_dir=tmp_path))  # none: fine


def test_cli_unknown_project_is_one_line_and_exit_2_before_any_work(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "export.py"),
            "checkpoint=missing.ckpt",
            "projects=[ch32fun,teensy]",
            f"out_dir={tmp_path}/d",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == ["error: projects: teensy is unknown; allowed: ch32fun, platformio, library"]
    assert not (tmp_path / "d" / "model").exists()


# --- optional: with the real ch32fun / PlatformIO, where a user provides them


@pytest.mark.skipif(
    not (Path(os.environ.get("CH32FUN", "/nonexistent")) / "ch32fun.mk").is_file(),
    reason="set CH32FUN=<clone of github.com/cnlohr/ch32fun>/ch32fun to build with it",
)
@need(RV)
def test_ch32fun_make_build_with_a_real_ch32fun(model, tmp_path):
    """`make build` (ch32fun.mk: ch32fun.c, its printf and linker script): the .bin a
    `make flash` would write, and ch32fun's own memory report."""
    folder = tmp_path / "ch32fun"
    shutil.copytree(model / "ch32fun", folder)
    done = _run(["make", "-C", folder, "build", f"CH32FUN={os.environ['CH32FUN']}"])
    used = dict(re.findall(r"^\s+(FLASH|RAM):\s+(\d+) B", done.stdout, re.M))
    assert int(used["FLASH"]) <= 16384 and int(used["RAM"]) <= 2048, done.stdout
    assert (folder / "cvae_demo.bin").stat().st_size > 1000
    assert "warning" not in done.stdout + done.stderr


PIO = shutil.which("pio")
PIO_PYTHON = Path(PIO).parent / "python" if PIO else None
# PlatformIO's own manifest parsers and schema (its SPDX list of licences needs the
# network: MIT is given)
VALIDATE = """import sys
from platformio.package.manifest import schema
from platformio.package.manifest.parser import ManifestParserFactory
schema.ManifestSchema.load_spdx_licenses = staticmethod(
    lambda: {"licenses": [{"licenseId": "MIT"}]})
for path in sys.argv[1:]:
    parsed = ManifestParserFactory.new_from_file(path).as_dict()
    data = schema.ManifestSchema().load_manifest(parsed)
    print(data["name"], data["version"])
"""


@pytest.mark.skipif(
    PIO_PYTHON is None or not PIO_PYTHON.is_file(), reason="PlatformIO (pio) not installed"
)
def test_platformio_reads_the_project_and_both_manifests(model, tmp_path):
    env = {**os.environ, "PLATFORMIO_CORE_DIR": str(tmp_path / "core")}
    done = _run([PIO, "project", "config", "-d", model / "platformio"], env=env)
    for line in ("env:ch32v003", "genericCH32V003F4P6", "ch32v003fun", "env:stm32f030f4",
                 "demo_f030f4", "cmsis"):  # fmt: skip
        assert line in done.stdout
    lib = model / "library"
    done = _run([PIO_PYTHON, "-c", VALIDATE, lib / "library.json", lib / "library.properties"])
    assert done.stdout.splitlines() == ["tinycvae 0.1.0", "tinycvae 0.1.0"]
