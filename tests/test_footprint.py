"""The MCU footprint estimator against hand-computed layers and the electronic-die
article's anchors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from tinycvae.data.dice import dice_spec
from tinycvae.errors import ConfigError
from tinycvae.mcu.footprint import (
    CODE_ARMV6M_INT4_TAPS_BYTES,
    CODE_ARMV6M_KERNELS_BYTES,
    CODE_BASE_BYTES,
    CODE_FPU_EXPF_BYTES,
    CODE_INT4_SOFT_MULTIPLY_BYTES,
    CODE_INT4_UNPACK_BYTES,
    CODE_INT_EXTRA_BYTES,
    CODE_QSQ_BYTES,
    CODE_RV_CHAIN_BYTES,
    CODE_SOFT_FLOAT_BYTES,
    CODE_SOFT_MULTIPLY_BYTES,
    PRECISIONS,
    RAM_TABLE_FREE_STEPS_BYTES,
    RV_TIER_CHAIN,
    RV_TIER_PLAIN,
    RV_TIER_QSQ,
    RV_TIERS,
    MCUProfile,
    all_mcus,
    code_bytes,
    estimate,
    flat_metrics,
    layer_costs,
    load_mcu,
    runtime_ram_bytes,
    rv_tier,
    summary_dict,
)
from tinycvae.mcu.stages import extract, fold_label
from tinycvae.models import CONDITIONINGS, Decoder, build_cvae
from tinycvae.models.conditioning import OneHotConcat

from conftest import ANCHORS

DICE = dice_spec(32)
K = DICE.num_classes


def dice_decoder(dims, latent=1, **kwargs):
    d1, d2, d3, d4 = dims
    model = build_cvae(
        DICE, latent=latent, latent_mode="bypass", dim1=d1, dim2=d2, dim3=d3, dim4=d4, **kwargs
    )
    return model.decoder


def tiny_decoder() -> Decoder:
    """latent 2, 3 classes: Linear(2+3 -> 3*4*4), ConvTranspose 3->5, 4x4 -> 8x8."""
    body = nn.Sequential(
        nn.Linear(5, 48),
        nn.ReLU(),
        nn.Unflatten(1, (3, 4, 4)),
        nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1, output_padding=1),
    )
    return Decoder(OneHotConcat(3, 2), body)


@pytest.mark.parametrize("dims, anchor", ANCHORS.items())
def test_deployed_params_match_seed_000(dims, anchor):
    decoder = dice_decoder(dims)
    d4 = dims[3]
    fp = estimate(decoder, 1, K)
    assert fp.params == anchor
    table, z_linear = fp.layers[0], fp.layers[1]
    assert (table.kind, table.weights) == ("class_table", K * d4 * 16)
    assert (z_linear.kind, z_linear.weights, z_linear.biases) == ("linear", d4 * 16, 0)


def test_tiny_decoder_layers_by_hand():
    layers = layer_costs(extract(tiny_decoder(), 2, 3))
    assert [layer.kind for layer in layers] == ["class_table", "linear", "convT", "sigmoid_lut"]
    table, lin, conv, sig = layers
    assert (table.weights, table.biases, table.macs, table.out_elems) == (144, 0, 0, 48)
    assert (lin.in_shape, lin.weights, lin.biases, lin.macs) == ((2, 1, 1), 96, 0, 96)
    assert (conv.in_shape, conv.out_shape) == ((3, 4, 4), (5, 8, 8))
    assert (conv.weights, conv.biases) == (3 * 5 * 9, 5)
    # per axis, input i scatters to 2i-1+t (t=0..2) inside [0, 8): 2 taps for i=0, 3 after
    taps = 2 + 3 * 3
    assert conv.macs == taps * taps * 3 * 5 == 1815
    assert conv.macs < 4 * 4 * 3 * 5 * 9  # the scatter upper bound
    assert (sig.out_shape, sig.out_elems, sig.weights) == ((5, 8, 8), 320, 0)


def test_stride_one_conv_macs_by_hand():
    layers = layer_costs(extract(dice_decoder((2, 2, 2, 2)), 1, K))
    convs = [layer for layer in layers if layer.kind == "convT"]
    third = convs[2]  # stride 1, 16x16 -> 16x16, 2 -> 2 channels
    assert third.in_shape == third.out_shape == (2, 16, 16)
    assert third.macs == (3 * 16 - 2) ** 2 * 2 * 2


def test_int8_flash_formula_on_tiny_decoder():
    fp = estimate(tiny_decoder(), 2, 3, "int8")
    # the worst-case core (no multiplier) with the quarter-square table
    code = (CODE_BASE_BYTES + CODE_SOFT_MULTIPLY_BYTES + CODE_RV_CHAIN_BYTES + CODE_QSQ_BYTES
            + CODE_INT_EXTRA_BYTES)  # fmt: skip
    table = 144 * 2  # int16 entries
    linear = 96 * 1 + 0 * 4 + 48 * 4  # weights, (bias folded), requant word per feature
    conv = 135 * 1 + 5 * 4 + 5 * 4  # weights, int32 biases, requant word per channel
    lut = 256
    assert fp.code_bytes == code
    assert fp.data_flash_bytes == table + linear + conv + lut
    assert fp.flash_bytes == table + linear + conv + lut + code
    assert fp.macs == 96 + 1815
    assert fp.params == 144 + 96 + 135 + 5


def test_int4_and_fp32_flash_on_tiny_decoder():
    int4 = estimate(tiny_decoder(), 2, 3, "int4")
    assert int4.data_flash_bytes == 144 * 2 + (48 + 48 * 4) + (68 + 5 * 4 + 5 * 4) + 256
    # the worst-case core (no multiplier): the unpacking plus the int4 dot's inline MAC
    assert int4.code_bytes == (
        code_bytes("int8") + CODE_INT4_UNPACK_BYTES + CODE_INT4_SOFT_MULTIPLY_BYTES
    )
    m0 = load_mcu("cortex_m0plus_16k")
    # ARMv6-M: the Thumb-1 kernels on both, and their nibble taps on int4
    # the table-free rv32ec build keeps the row requantisation, not the table's code
    assert code_bytes("int8") - code_bytes("int8", tier=RV_TIER_CHAIN) == CODE_QSQ_BYTES
    table_free = code_bytes("int8", tier=RV_TIER_CHAIN)
    # a multiplier: no rv32ec kernels or requantisation either
    assert code_bytes("int8", m0) == (
        table_free - CODE_SOFT_MULTIPLY_BYTES - CODE_RV_CHAIN_BYTES + CODE_ARMV6M_KERNELS_BYTES
    )
    assert code_bytes("int4", m0) == (
        code_bytes("int8", m0) + CODE_INT4_UNPACK_BYTES + CODE_ARMV6M_INT4_TAPS_BYTES
    )
    fp32 = estimate(tiny_decoder(), 2, 3, "fp32")
    assert fp32.data_flash_bytes == 144 * 4 + 96 * 4 + 140 * 4
    assert fp32.code_bytes == CODE_BASE_BYTES + CODE_SOFT_MULTIPLY_BYTES + CODE_SOFT_FLOAT_BYTES
    assert fp32.layers[-1].kind == "sigmoid"
    fpu = MCUProfile("x", ("X",), "m4f", 64, 16, True, True, 0)
    assert code_bytes("fp32", fpu) == CODE_BASE_BYTES + CODE_FPU_EXPF_BYTES


def test_ram_peak_and_streaming_by_hand():
    # stages: linear (z from the caller + 48 out), conv (48 in, 320 out to the caller's
    # image buffer); int8 is 1 byte per element
    # + the conv kernel's 32-bit accumulator row: (8 + 2) x 4 bytes
    acc = (8 + 2) * 4
    fp = estimate(tiny_decoder(), 2, 3, "int8")
    assert fp.ram_bytes == max(0 + 48, 48) + 320 + acc == 408
    streamed = estimate(tiny_decoder(), 2, 3, "int8", stream=True)
    c, h, w = 5, 8, 8
    # the Linear's rows (3 channels x 4) into a ring of 2 (the conv's stride is 2), one
    # output row of the conv
    assert streamed.ram_bytes == 2 * 3 * 4 + c * w + acc
    assert fp.ram_bytes - streamed.ram_bytes == 48 + (h * w - w) * c - 2 * 3 * 4
    assert estimate(tiny_decoder(), 2, 3, "fp32").ram_bytes == 368 * 4 + acc
    assert estimate(tiny_decoder(), 2, 3, "int4").ram_bytes == 408
    ch32 = load_mcu("ch32v003")
    assert estimate(tiny_decoder(), 2, 3, mcu=ch32).ram_bytes == 408 + ch32.reserve_ram_bytes


def test_ram_of_a_dice_decoder():
    fp = estimate(dice_decoder((2, 2, 2, 2)), 1, K)
    # 0+32, 32+2*8*8, 128+2*16*16, 512+512 (stride 1), 512 in; + the 32x32 image; + the
    # accumulator row of the widest conv, (32 + 2) x 4 bytes
    assert fp.ram_bytes == 512 + 512 + 1024 + 136
    streamed = estimate(dice_decoder((2, 2, 2, 2)), 1, K, stream=True)
    # the Linear and every convT a row at a time into a ring of as many rows as the next
    # layer reads: 2 of 2x4 (next stride 2), 2 of 2x8 (next stride 2), 3 of 2x16 (next
    # stride 1), 2 of 2x16 (next stride 2); the last emits 32-pixel rows
    assert streamed.ram_bytes == 2 * 8 + 2 * 16 + 3 * 32 + 2 * 32 + 32 + 136 == 376


def test_a_wide_grey_decoder_gives_its_last_layer_an_accumulator_row_of_its_own():
    # 16_16_16_16: one 16x16 ring slot (256 B) costs more than a 34-word row of the last
    # layer's own (136 B), so the last layer reads its input from one slot, and the other
    # convs' accumulator row is only as wide as theirs (16 + 2)
    streamed = estimate(dice_decoder((16, 16, 16, 16)), 1, K, stream=True)
    assert streamed.last_acc_row
    rings = 2 * 16 * 4 + 2 * 16 * 8 + 3 * 16 * 16 + 1 * 16 * 16
    assert streamed.activation_bytes == rings + 32 + (18 + 34) * 4 == 1648
    # the firmware's measured CH32V003 image: 15588 B flash, 2044 B RAM
    fits = estimate(dice_decoder((16, 16, 16, 16)), 1, K, stream=True, mcu=load_mcu("ch32v003"))
    assert fits.fits()["ram_ok"] and fits.fits()["flash_ok"]
    # narrower ones keep the shared row: a slot of 8x16 (128 B) is smaller than 136 B
    assert not estimate(dice_decoder((8, 8, 8, 8)), 1, K, stream=True).last_acc_row


@pytest.mark.parametrize("kind", sorted(CONDITIONINGS))
def test_every_conditioning_deploys_the_same_table(kind):
    decoder = dice_decoder((2, 2, 4, 4), latent=2, conditioning={"kind": kind})
    table, z_linear = layer_costs(extract(decoder, 2, K))[:2]
    out = 4 * 4 * 4
    assert table.weights == K * out
    assert z_linear.weights == out * 2
    onehot = estimate(dice_decoder((2, 2, 4, 4), latent=2), 2, K)
    assert estimate(decoder, 2, K).params == onehot.params
    # the folded table reproduces the first layer exactly
    torch.manual_seed(0)
    for p in decoder.parameters():
        nn.init.normal_(p)
    values, z_weight = fold_label(decoder, 2, K)
    assert values.shape == (K, out) and z_weight.shape == (out, 2)
    z, y = torch.randn(7, 2), torch.randint(0, K, (7,))
    expected = decoder.body[0](decoder.condition(z, y))
    torch.testing.assert_close(z @ z_weight.T + values[y], expected, atol=1e-4, rtol=1e-4)


def test_mlp_decoder():
    decoder = build_cvae(DICE, arch="mlp", latent=2, hidden=16).decoder
    layers = layer_costs(extract(decoder, 2, K))
    assert [layer.kind for layer in layers] == [
        "class_table",
        "linear",
        "linear",
        "linear",
        "sigmoid_lut",
    ]
    fp = estimate(decoder, 2, K)
    assert fp.params == K * 16 + 16 * 2 + (16 * 16 + 16) + (16 * 1024 + 1024)
    assert fp.macs == 16 * 2 + 16 * 16 + 16 * 1024
    assert fp.ram_bytes == 16 + 16 + 1024  # the hidden pair + the caller's image
    assert estimate(decoder, 2, K, stream=True).ram_bytes == 16 + 32


def test_fits_and_over():
    ch32 = load_mcu("ch32v003")
    small = estimate(dice_decoder((2, 2, 2, 2)), 1, K, stream=True, mcu=ch32)
    assert small.fits() == {
        "flash_bytes": small.flash_bytes,  # what it needs there: the export's figure
        "ram_bytes": small.ram_bytes,
        "flash_ok": True,
        "ram_ok": True,
        "flash_over_bytes": 0,
        "ram_over_bytes": 0,
    }
    big = estimate(dice_decoder((64, 64, 64, 64)), 1, K, stream=True)
    check = big.fits(ch32)
    assert not check["flash_ok"] and not check["ram_ok"]
    # over by the smallest build: the table-free rv32ec kernels with the C requantisation
    code = code_bytes("int8", ch32, last_acc_row=True, tier=RV_TIER_PLAIN)
    assert check["flash_over_bytes"] == big.data_flash_bytes + code - 16384
    assert check["flash_over_bytes"] > 0
    # and the table-free kernels' static scratch (RAM_TABLE_FREE_STEPS_BYTES) with them
    ram = big.activation_bytes + ch32.reserve_ram_bytes + RAM_TABLE_FREE_STEPS_BYTES
    assert check["ram_over_bytes"] == ram - 2048
    assert big.fits(load_mcu("rp2040"))["flash_ok"]
    with pytest.raises(ConfigError, match="needs an MCU"):
        big.fits()


@pytest.mark.parametrize("last_acc_row", [False, True])
@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_the_rv32ec_tier_is_the_first_that_fits_as_the_ch32v003_link_picks_it(
    precision, last_acc_row
):
    """rv_tier at each tier's boundary: the quarter-square build while data + its code fit
    the flash, then the table-free kernels while theirs fit, then their C requantisation
    (also past every fit: the link's last try, the smallest); the code and the RAM are
    that tier's (RAM_TABLE_FREE_STEPS_BYTES in both table-free ones)."""
    ch32 = load_mcu("ch32v003")
    qsq = code_bytes(precision, ch32, last_acc_row)
    chain = code_bytes(precision, ch32, last_acc_row, tier=RV_TIER_CHAIN)
    plain = code_bytes(precision, ch32, last_acc_row, tier=RV_TIER_PLAIN)
    assert qsq - chain == CODE_QSQ_BYTES and chain - plain == CODE_RV_CHAIN_BYTES
    flash = ch32.flash_bytes
    cases = [
        (flash - qsq, RV_TIER_QSQ), (flash - qsq + 1, RV_TIER_CHAIN),
        (flash - chain, RV_TIER_CHAIN), (flash - chain + 1, RV_TIER_PLAIN),
        (flash - plain, RV_TIER_PLAIN), (flash - plain + 1, RV_TIER_PLAIN), (0, RV_TIER_QSQ),
    ]  # fmt: skip
    assert RV_TIERS == (RV_TIER_QSQ, RV_TIER_CHAIN, RV_TIER_PLAIN)  # fastest first
    for data, tier in cases:
        assert rv_tier(precision, ch32, data, last_acc_row) == tier, data
        ram = ch32.reserve_ram_bytes + (0 if tier == RV_TIER_QSQ else RAM_TABLE_FREE_STEPS_BYTES)
        assert runtime_ram_bytes(precision, ch32, data, last_acc_row) == ram
    # no tier: a core with a multiplier, fp32; no MCU: assumed to fit, the quarter-square one
    assert rv_tier(precision, load_mcu("cortex_m0plus_16k"), 0, last_acc_row) is None
    assert rv_tier("fp32", ch32, 0, last_acc_row) is None
    assert rv_tier(precision, None, 10**6, last_acc_row) == RV_TIER_QSQ


def test_summary_dict_schema_and_flat_metrics():
    block = summary_dict(dice_decoder((2, 2, 2, 2)), 1, K)
    assert set(block) == set(PRECISIONS)
    names = ["ch32v003", "cortex_m0plus_16k", "rp2040", "stm32g031"]
    for entry in block.values():
        assert set(entry) == {
            "params",
            "macs",
            "flash_bytes",
            "ram_bytes",
            "ram_bytes_streamed",
            "fits",
            "over",
            "need",
            "rv32ec_tier",
        }
        assert sorted(entry["fits"]) == sorted(entry["over"]) == sorted(entry["need"]) == names
        assert all(type(entry[k]) is int for k in ("params", "macs", "flash_bytes"))
        assert entry["ram_bytes_streamed"] <= entry["ram_bytes"]
        for over in entry["over"].values():
            assert set(over) == {"flash_bytes", "ram_bytes"}
    assert block["int8"]["params"] == 357
    assert block["int8"]["fits"]["ch32v003"] is True
    # the rv32ec build it is counted with, on the one core without a multiplier
    assert block["int8"]["rv32ec_tier"] == {"ch32v003": RV_TIER_QSQ}
    assert block["fp32"]["rv32ec_tier"] == {}
    assert not any("rv32ec_tier" in k for k in flat_metrics(block))
    assert json.loads(json.dumps(block)) == block
    flat = flat_metrics(block)
    assert flat["mcu/int8/params"] == 357.0
    assert flat["mcu/int8/fits/ch32v003"] == 1.0
    assert flat["mcu/int8/over/ch32v003/flash_bytes"] == 0.0
    # need: the streamed activations plus that MCU's RAM reserve, as the export counts
    reserve = load_mcu("cortex_m0plus_16k").reserve_ram_bytes
    need = block["int8"]["need"]["cortex_m0plus_16k"]
    assert need["ram_bytes"] == block["int8"]["ram_bytes_streamed"] + reserve
    assert flat["mcu/int8/need/cortex_m0plus_16k/ram_bytes"] == float(need["ram_bytes"])
    assert "mcu/fp32/ram_bytes_streamed" in flat
    assert all(isinstance(v, float) for v in flat.values())
    big = summary_dict(dice_decoder((64, 64, 64, 64)), 1, K, mcus=["ch32v003"])
    assert big["int8"]["fits"] == {"ch32v003": False}
    assert big["int8"]["over"]["ch32v003"]["flash_bytes"] > 0
    assert big["int8"]["rv32ec_tier"] == {"ch32v003": RV_TIER_PLAIN}  # the smallest


def test_unknown_mcu_and_precision():
    with pytest.raises(ConfigError) as err:
        load_mcu("xyz")
    assert str(err.value) == (
        "mcu=xyz is unknown; allowed: ch32v003, cortex_m0plus_16k, rp2040, stm32g031"
    )
    with pytest.raises(ConfigError, match="allowed: fp32, int8, int4"):
        estimate(tiny_decoder(), 2, 3, "int2")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("flash_kb", 0, "mcu.flash_kb=0 is invalid for mcu=x; allowed: > 0"),
        ("ram_kb", -2, "mcu.ram_kb=-2 is invalid for mcu=x; allowed: > 0"),
        ("fpu", "no", "mcu.fpu=no is invalid for mcu=x; allowed: true or false"),
        ("reserve_ram_bytes", 4096, "mcu.reserve_ram_bytes=4096 is invalid for mcu=x; allowed"),
    ],
)
def test_an_mcu_profile_checks_itself(key, value, message):
    good = {"name": "x", "parts": ["X1"], "core": "c", "flash_kb": 16, "ram_kb": 2}
    good |= {"hw_multiply": False, "fpu": False, "reserve_ram_bytes": 464}
    assert MCUProfile(**good).parts == ("X1",)  # a YAML list becomes a tuple
    with pytest.raises(ConfigError) as err:
        MCUProfile(**{**good, key: value})
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    "name, flash_kb, ram_kb, hw_multiply, fpu",
    [
        ("ch32v003", 16, 2, False, False),
        ("cortex_m0plus_16k", 16, 4, True, False),
        ("stm32g031", 64, 8, True, False),
        ("rp2040", 2048, 264, True, False),
    ],
)
def test_load_mcu_profiles(name, flash_kb, ram_kb, hw_multiply, fpu):
    mcu = load_mcu(name)
    assert (mcu.name, mcu.flash_kb, mcu.ram_kb) == (name, flash_kb, ram_kb)
    assert (mcu.hw_multiply, mcu.fpu) == (hw_multiply, fpu)
    assert mcu.flash_bytes == flash_kb * 1024 and mcu.ram_bytes == ram_kb * 1024
    assert mcu.parts and all(isinstance(p, str) for p in mcu.parts)
    assert 0 < mcu.reserve_ram_bytes < mcu.ram_bytes and mcu.core and mcu.notes
    assert [m.name for m in all_mcus()] == sorted(
        ["ch32v003", "cortex_m0plus_16k", "rp2040", "stm32g031"]
    )
    assert math.isclose(mcu.flash_bytes / 1024, flash_kb)


def test_an_unknown_rv32ec_tier_is_named_with_the_allowed_ones(tmp_path):
    from tinycvae.deploy.projects import write_projects

    with pytest.raises(ConfigError, match="^rv32ec tier=fast is unknown; allowed: quarter-square"):
        code_bytes("int8", load_mcu("ch32v003"), tier="fast")
    with pytest.raises(ConfigError, match="^rv_tier=fast is unknown; allowed: quarter-square"):
        write_projects(tmp_path, ["library"], rv_tier="fast")
