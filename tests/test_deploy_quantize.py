"""The deployed decoder in Python: stage extraction, int8 quantisation, the integer
reference and the generated C files (no compiler needed here; see test_export.py)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from tinycvae.data.dice import dice_spec
from tinycvae.deploy import codegen
from tinycvae.deploy.equalize import equalize
from tinycvae.deploy.qat import KeepBest, _fake_weight, finetune
from tinycvae.deploy.quantize import (
    A_LIMIT,
    Requant,
    _apply_requant,
    pack_nibbles,
    quantize,
    run_int8,
    unpack_nibbles,
)
from tinycvae.mcu.footprint import estimate
from tinycvae.mcu.stages import UnsupportedModelError, extract, run_fp32
from tinycvae.models import CONDITIONINGS, Decoder, build_cvae
from tinycvae.models.conditioning import OneHotConcat

DICE = dice_spec(32)
K = DICE.num_classes


def model(arch="conv", latent=1, mode="bypass", kind="onehot", seed=0):
    torch.manual_seed(seed)
    kw = {"dim1": 4, "dim2": 4, "dim3": 4, "dim4": 4} if arch == "conv" else {"hidden": 16}
    m = build_cvae(
        DICE, arch=arch, latent=latent, latent_mode=mode, conditioning={"kind": kind}, **kw
    )
    for p in m.decoder.parameters():  # varied outputs, not a constant grey
        nn.init.normal_(p, std=0.4)
    return m.eval()


def inputs(m, n=256, seed=1):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % K
    return m.sampler(labels, g), labels


@pytest.mark.parametrize("kind", sorted(CONDITIONINGS))
@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_deployed_stages_compute_the_decoder(arch, kind):
    m = model(arch, latent=2, mode="reparam", kind=kind)
    fm = extract(m.decoder, m.latent, K)
    z, y = inputs(m)
    with torch.no_grad():
        want = torch.sigmoid(m.decoder(z, y))
    assert torch.allclose(run_fp32(fm, z, y), want, atol=1e-5)
    assert fm.table.shape == (K, fm.stages[0].out_channels)
    assert fm.stages[0].bias is None and fm.stages[0].in_shape == (2, 1, 1)
    assert [s.relu for s in fm.stages] == [True] * (len(fm.stages) - 1) + [False]


def test_conv_stages_and_shapes():
    fm = extract(model().decoder, 1, K)
    assert [(s.kind, s.in_shape, s.out_shape, s.stride) for s in fm.stages] == [
        ("linear", (1, 1, 1), (64, 1, 1), 1),
        ("convT", (4, 4, 4), (4, 8, 8), 2),
        ("convT", (4, 8, 8), (4, 16, 16), 2),
        ("convT", (4, 16, 16), (4, 16, 16), 1),
        ("convT", (4, 16, 16), (1, 32, 32), 2),
    ]


@pytest.mark.parametrize(
    "layer, word",
    [(nn.Conv2d(3, 5, 3, padding=1), "Conv2d"), (nn.Tanh(), "Tanh"),
     (nn.ConvTranspose2d(3, 5, 5, stride=2, padding=2, output_padding=1), "kernel 3")],
)  # fmt: skip
def test_unsupported_layers_are_named(layer, word):
    body = nn.Sequential(nn.Linear(5, 48), nn.ReLU(), nn.Unflatten(1, (3, 4, 4)), layer)
    with pytest.raises(UnsupportedModelError, match=word):
        extract(Decoder(OneHotConcat(3, 2), body), 2, 3)


def test_requantisation_follows_the_contract():
    """Hand-computed: a = acc >> pre, clamp to int16, y = (a*m + 2^(shift-1)) >> shift."""
    rq = Requant(np.array([20000, 16384]), np.array([2, 0]), np.array([15, 14]))
    acc = torch.tensor([[1000, 100], [-1000, -3], [10_000_000, 40_000]])
    hidden = _apply_requant(acc, rq, 1, relu=True)
    last = _apply_requant(acc, rq, 1, relu=False)

    def ref(a, m, pre, shift, lo, hi):
        a = max(-A_LIMIT - 1, min(A_LIMIT, a >> pre))
        return max(lo, min(hi, (a * m + (1 << (shift - 1))) >> shift))

    for i in range(3):
        for o, (m, pre, shift) in enumerate([(20000, 2, 15), (16384, 0, 14)]):
            assert hidden[i, o] == ref(int(acc[i, o]), m, pre, shift, 0, 255)
            assert last[i, o] == ref(int(acc[i, o]), m, pre, shift, -128, 127)
    assert last[1, 1] == -3  # m = 2^14 at shift 14 is exactly 1.0, floors stay exact
    assert hidden[2].tolist() == [255, 255] and last[2].tolist() == [127, 127]  # saturates


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_int8_reference_tracks_the_float_model(arch):
    m = model(arch, latent=2, mode="reparam")
    fm = extract(m.decoder, m.latent, K)
    z, y = inputs(m, 1024)
    qm = quantize(fm, z, y, bypass=False)
    px = run_int8(qm, qm.quantize_z(z), y.numpy())
    assert px.dtype == np.uint8 and px.shape == (1024, 1, 32, 32)
    ref = run_fp32(fm, z, y).numpy()
    err = px / 255.0 - ref
    assert np.mean(err**2) < 2e-3
    assert np.abs(err).mean() < 0.03


def test_quantisation_never_overflows_int32():
    m = model()
    fm = extract(m.decoder, 1, K)
    z, y = inputs(m)
    qm = quantize(fm, z, y, bypass=True)
    assert qm.z_one == 127  # bypass factors: z = 1.0 is code 127
    for i, qs in enumerate(qm.stages):
        rq = qs.requant
        assert ((rq.m >= 0) & (rq.m < 2**15)).all()
        assert ((rq.shift >= 1) & (rq.shift <= 30)).all()
        wabs = np.abs(qs.weight.astype(np.int64)).reshape(len(rq.m), -1).sum(1)
        const = (
            np.abs(qm.table.astype(np.int64)).max(0) << qm.table_shift
            if qs.bias is None
            else np.abs(qs.bias.astype(np.int64))
        )
        worst = const + (127 if i == 0 else 255) * wabs  # int8 z, then uint8 activations
        assert (worst < 2**31).all()
        assert ((worst >> rq.pre) <= A_LIMIT).all()  # never saturates, even at worst
    assert np.abs(qm.table).max() <= 32767 and qm.table_shift == 0
    lut = qm.sigmoid_lut
    assert lut[128] in (127, 128)  # logit 0
    assert lut[0] == round(255 / (1 + math.exp(128 * qm.logit_scale)))
    assert (np.diff(lut.astype(int)) >= 0).all()


def test_float_literals_are_valid_c():
    assert [codegen._fmt(v, "fp32") for v in (1.0, -2.0, 0.5, 1e-12)] == [
        "1.0f",
        "-2.0f",
        "0.5f",
        "1e-12f",
    ]
    with pytest.raises(ValueError, match="non-finite"):
        codegen._fmt(float("nan"), "fp32")


# conv 4_4_4_4 streamed: rings of 2 x 4x4 (the Linear's rows), 2 x 4x8, 3 x 4x16 and 2 x
# 4x16, one 32-pixel row; + the transposed convs' accumulator row, (32 + 2) x 4 bytes
@pytest.mark.parametrize(
    "arch, stream", [("conv", 32 + 64 + 192 + 128 + 32 + 136), ("mlp", 16 + 32)]
)
def test_generated_arena_sizes_match_the_estimator(arch, stream):
    m = model(arch)
    fm = extract(m.decoder, 1, K)
    z, y = inputs(m)
    qm = quantize(fm, z, y, bypass=True)
    consts = dict(
        re.findall(r"#define (CVAE_\w+) (\d+)", codegen.model_header(fm, "int8", True, 1.0, qm))
    )
    whole = estimate(m.decoder, 1, K, "int8")
    streamed = estimate(m.decoder, 1, K, "int8", stream=True)
    assert int(consts["CVAE_ARENA_IMAGE"]) + 1024 == whole.activation_bytes
    # the MLP's last Linear streams 32-pixel rows: its input + one row
    assert int(consts["CVAE_ARENA_STREAM"]) == streamed.activation_bytes == stream


def test_hidden_layer_without_relu_is_refused():
    body = nn.Sequential(
        nn.Linear(5, 48), nn.ReLU(), nn.Unflatten(1, (3, 4, 4)),
        nn.ConvTranspose2d(3, 3, 3, stride=2, padding=1, output_padding=1),
        nn.ConvTranspose2d(3, 1, 3, stride=2, padding=1, output_padding=1),
    )  # fmt: skip
    with pytest.raises(UnsupportedModelError, match="decoder.body.3: convT has no ReLU"):
        extract(Decoder(OneHotConcat(3, 2), body), 2, 3)


def test_accumulators_past_int32_are_refused():
    m = model()
    fm = extract(m.decoder, 1, K)
    fm.stages[2].bias = fm.stages[2].bias * 1e9
    z, y = inputs(m)
    with pytest.raises(UnsupportedModelError, match="int32"):
        quantize(fm, z, y, bypass=True)


def test_fine_tuning_runs_on_fewer_latents_than_a_batch():
    m = model()
    fm = extract(m.decoder, 1, K)
    z, y = inputs(m, 100)
    qm = quantize(fm, z, y, bypass=True)
    tuned, _ = finetune(fm, qm, z, y, epochs=2, batch_size=256)
    assert not torch.equal(tuned.stages[1].weight, fm.stages[1].weight)
    assert not fm.stages[1].weight.requires_grad  # the original is left alone


def test_generated_sources():
    m = model()
    fm = extract(m.decoder, 1, K)
    z, y = inputs(m)
    qm = quantize(fm, z, y, bypass=True)
    header = codegen.model_header(fm, "int8", True, 1.0, qm)
    consts = dict(re.findall(r"#define (CVAE_\w+) (\d+)", header))
    assert consts["CVAE_NUM_STAGES"] == "5" and consts["CVAE_Z_ONE"] == "127"
    source = codegen.model_source(fm, "int8", qm)
    n_weights = sum(qs.weight.size for qs in qm.stages)
    arrays = re.findall(r"const int8_t w\d+\[(\d+)\]", source)
    assert sum(map(int, arrays)) == n_weights
    assert f"cvae_table[{K * 64}]" in source and "cvae_sigmoid_lut[256]" in source
    fp32 = codegen.model_source(fm, "fp32")
    assert "cvae_sigmoid_lut" not in fp32 and "requant" not in fp32.split("cvae_stages")[0]
    assert all(math.isfinite(float(v[:-1])) for v in re.findall(r"-?\d+\.?\d*(?:e-?\d+)?f", fp32))


# --- int4 ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 8, 9, 27, 64])
def test_nibbles_round_trip_in_the_runtimes_layout(n):
    rng = np.random.default_rng(n)
    codes = rng.integers(-8, 8, size=n).astype(np.int8)
    if n >= 2:
        codes[:2] = [-8, 7]  # the extremes, in a low and a high nibble
    packed = pack_nibbles(codes)
    assert packed.dtype == np.uint8 and len(packed) == (n + 1) // 2  # two per byte
    assert np.array_equal(unpack_nibbles(packed, n), codes)
    if n >= 2:
        assert packed[0] == 0x78  # element 0 in the low nibble (-8 = 0x8), 1 in the high (7)
    if n % 2:
        assert packed[-1] >> 4 == 0  # an odd count leaves the last high nibble 0


def test_nibble_extremes_and_bad_codes():
    assert pack_nibbles(np.array([-1, -8, 7, 0, 1])).tolist() == [0x8F, 0x07, 0x01]
    assert unpack_nibbles(np.array([0x8F, 0x07, 0x01], dtype=np.uint8), 5).tolist() == [
        -1, -8, 7, 0, 1,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="-8..7"):
        pack_nibbles(np.array([8]))
    with pytest.raises(ValueError, match="at most 2"):
        unpack_nibbles(np.array([0], dtype=np.uint8), 3)


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_int4_reference_uses_4_bit_weights_and_tracks_the_float_model(arch):
    m = model(arch, latent=2, mode="reparam")
    fm = extract(m.decoder, m.latent, K)
    z, y = inputs(m, 1024)
    qm = quantize(fm, z, y, bypass=False, bits=4)
    assert qm.bits == 4 and qm.precision == "int4"
    for qs in qm.stages:
        assert qs.weight.min() >= -7 and qs.weight.max() <= 7  # symmetric -7..7
        assert np.abs(qs.weight).max() == 7  # per-channel scales use the whole range
    px = run_int8(qm, qm.quantize_z(z), y.numpy())
    ref = run_fp32(fm, z, y).numpy()
    err = px / 255.0 - ref
    assert np.mean(err**2) < 2e-2  # coarser than int8, still the same images roughly
    px8 = run_int8(quantize(fm, z, y, bypass=False), qm.quantize_z(z), y.numpy())
    assert np.mean(err**2) > np.mean((px8 / 255.0 - ref) ** 2)  # int4 costs something


def test_int4_generated_sources_pack_the_weights():
    m = model()
    fm = extract(m.decoder, 1, K)
    z, y = inputs(m)
    qm = quantize(fm, z, y, bypass=True, bits=4)
    header = codegen.model_header(fm, "int4", True, 1.0, qm)
    assert "#define CVAE_INT4 1" in header and "CVAE_INT8" not in header
    source = codegen.model_source(fm, "int4", qm)
    arrays = [int(n) for n in re.findall(r"const uint8_t w\d+\[(\d+)\]", source)]
    assert arrays == [(qs.weight.size + 1) // 2 for qs in qm.stages]
    est = estimate(m.decoder, 1, K, "int4")
    assert [ly.flash_bytes for ly in est.layers[1:-1]] == [
        a + 4 * (2 * qs.weight.shape[0] if i else qs.weight.shape[0])
        for i, (a, qs) in enumerate(zip(arrays, qm.stages))
    ]  # packed weights + biases + requant words: the estimator counts the generated bytes
    first = re.search(r"w0\[\d+\] = \{\s*([^}]*)\}", source).group(1)
    packed = np.array([int(v) for v in first.split(",")], dtype=np.uint8)
    assert np.array_equal(unpack_nibbles(packed, qm.stages[0].weight.size),
                          qm.stages[0].weight.ravel())  # fmt: skip
    with pytest.raises(AssertionError):
        codegen.model_source(fm, "int8", qm)  # an int4 model is not written as int8


def test_int4_fine_tuning_fake_quantises_at_4_bits():
    m = model()
    fm = extract(m.decoder, 1, K)
    w = fm.stages[1].weight
    for bits, levels in ((8, 255), (4, 15)):
        fake = _fake_weight(w, None, bits)
        per_channel = [len(torch.unique(fake[o])) for o in range(w.shape[0])]
        assert max(per_channel) <= levels
    z, y = inputs(m, 100)
    qm = quantize(fm, z, y, bypass=True, bits=4)
    tuned, _ = finetune(fm, qm, z, y, epochs=1, batch_size=256)
    assert not torch.equal(tuned.stages[1].weight, fm.stages[1].weight)


def test_int4_accumulators_past_int32_are_refused_with_the_stage_and_bound():
    m = model()
    fm = extract(m.decoder, 1, K)
    fm.stages[3].bias = fm.stages[3].bias * 1e9
    z, y = inputs(m)
    with pytest.raises(UnsupportedModelError) as err:
        quantize(fm, z, y, bypass=True, bits=4)
    line = str(err.value)
    assert "\n" not in line
    assert re.search(r"precision=int4: stage 3 \(convT\) can overflow its int32 accumulator: "
                     r"channel \d+'s worst case \|sum\| = \|bias\| \+ sum \|w\| x 255 = \d+ > "
                     r"2\^31 - 1 = 2147483647", line), line  # fmt: skip


def test_unknown_weight_width_is_refused():
    m = model()
    fm = extract(m.decoder, 1, K)
    z, y = inputs(m, 64)
    with pytest.raises(ValueError, match="allowed: 8, 4"):
        quantize(fm, z, y, bypass=True, bits=5)


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_equalisation_keeps_the_decoder_and_balances_its_channels(arch):
    m = model(arch)
    fm = extract(m.decoder, 1, K)
    st = fm.stages[1]
    with torch.no_grad():  # channel 0 of stage 1's output: 50x too large, read 50x too small
        st.weight[:1] *= 50
        st.bias[:1] *= 50
        nxt = fm.stages[2].weight
        if fm.stages[2].kind == "linear":
            nxt[:, : nxt.shape[1] // fm.stages[2].in_shape[0]] /= 50
        else:
            nxt[:, :1] /= 50
    z, y = inputs(m)
    eq = equalize(fm)
    with torch.no_grad():
        assert torch.allclose(eq.forward(z, y), fm.forward(z, y), atol=1e-4)
    # the 4-bit integer model of the equalised stages is the closer one to the float model
    ref = run_fp32(fm, z, y).numpy()
    errs = [np.mean((run_int8(q, q.quantize_z(z), y.numpy()) / 255.0 - ref) ** 2)
            for q in (quantize(f, z, y, bypass=True, bits=4) for f in (fm, eq))]  # fmt: skip
    assert errs[1] < errs[0], errs


def test_keep_best_ships_the_epoch_it_rated_best():
    m = model()
    fm = extract(m.decoder, 1, K)
    z, y = inputs(m, 128)
    qm = quantize(fm, z, y, bypass=True, bits=4)
    scores, seen = iter([0.2, 0.9, 0.9, 0.5]), []

    def rate(tuned, steps):
        seen.append((tuned.stages[1].weight.clone(), steps.out))
        return next(scores)

    keep = KeepBest(rate)
    tuned, steps = finetune(fm, qm, z, y, epochs=4, lr=1e-2, batch_size=64, keep=keep)
    assert keep.epoch == 3 and keep.best == 0.9  # a tie: the later epoch
    assert torch.equal(tuned.stages[1].weight, seen[2][0]) and steps.out == seen[2][1]
    assert not torch.equal(tuned.stages[1].weight, seen[3][0])  # not the last epoch's
