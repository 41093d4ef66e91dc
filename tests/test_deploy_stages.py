"""One walk describes the deployed decoder: the footprint estimator and the exporter's
int8 quantiser read the same stages, and refuse the same layers with the same line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tinycvae.data.dice import dice_spec
from tinycvae.deploy.quantize import QuantModel, quantize, run_int8
from tinycvae.mcu.footprint import SIGMOID_LUT_BYTES, TABLE_INT_BYTES, WORD_BYTES, estimate
from tinycvae.mcu.stages import KINDS, UnsupportedModelError, extract, run_fp32
from tinycvae.models import CONDITIONINGS, Decoder, build_cvae
from tinycvae.models.conditioning import OneHotConcat

LATENT, K = 2, 3


def decoder_with(*layers: nn.Module) -> Decoder:
    """Linear(latent + K -> 64), ReLU, Unflatten to 4x4x4, then ``layers`` (body.3 on)."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(LATENT + K, 64), nn.ReLU(), nn.Unflatten(1, (4, 4, 4)), *layers)
    return Decoder(OneHotConcat(K, LATENT), body).eval()


def conv_t(*args, **kwargs) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(4, *args, **kwargs)


ACCEPTED = {
    "stride 2, output padding": [conv_t(2, 3, 2, padding=1, output_padding=1)],
    "stride 2, no output padding": [conv_t(2, 3, 2, padding=1)],
    "stride 1": [conv_t(2, 3, 1, padding=1)],
    "no bias": [conv_t(2, 3, 2, padding=1, output_padding=1, bias=False)],
    "two convs": [conv_t(4, 3, 2, padding=1, output_padding=1), nn.ReLU(),
                  nn.ConvTranspose2d(4, 1, 3, 1, padding=1)],
    "conv then linear": [conv_t(2, 3, 2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * 7 * 7, 10)],
    "flatten, linear": [nn.Flatten(), nn.Linear(64, 12)],
    "identity": [nn.Identity(), conv_t(1, 3, 2, padding=1, output_padding=1)],
}  # fmt: skip

REFUSED = {
    "grouped": ([conv_t(4, 3, 2, padding=1, output_padding=1, groups=2)], "groups 2"),
    "dilated": ([conv_t(4, 3, 2, padding=2, output_padding=1, dilation=2)], "dilation (2, 2)"),
    "kernel 5": ([conv_t(4, 5, 2, padding=2, output_padding=1)], "kernel (5, 5)"),
    "padding 0": ([conv_t(4, 3, 2, padding=0)], "padding (0, 0)"),
    "stride 3": ([conv_t(4, 3, 3, padding=1)], "stride (3, 3)"),
    "uneven stride": ([conv_t(4, 3, (2, 1), padding=1)], "stride (2, 1)"),
    "Conv2d": ([nn.Conv2d(4, 4, 3, padding=1)], "Conv2d is not supported"),
    "Tanh": ([conv_t(1, 3, padding=1), nn.Tanh()], "Tanh is not supported"),
    "BatchNorm2d": ([nn.BatchNorm2d(4), conv_t(1, 3, padding=1)], "BatchNorm2d is not supported"),
    "Linear on an image": ([nn.Linear(4, 8)], "Linear reads a 3-D input"),
    "two ReLUs": ([nn.ReLU(), conv_t(1, 3, padding=1)], "a ReLU must follow"),
    "no ReLU": ([conv_t(4, 3, padding=1), conv_t(1, 3, padding=1)], "convT has no ReLU"),
    "ReLU last": ([conv_t(1, 3, padding=1), nn.ReLU()], "ends with a ReLU"),
}


def export_int8(decoder: nn.Module) -> QuantModel:
    """What the exporter does with a decoder: its stages, quantised on sampler draws."""
    fm = extract(decoder, LATENT, K)
    z, y = torch.randn(64, LATENT, generator=torch.Generator().manual_seed(1)), torch.arange(64) % K
    return quantize(fm, z, y, bypass=False)


def assert_same_stages(decoder: nn.Module, latent: int, num_classes: int) -> None:
    fp = estimate(decoder, latent, num_classes, "int8")
    fm = extract(decoder, latent, num_classes)
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(64, latent, generator=g), torch.arange(64) % num_classes
    qm = quantize(fm, z, y, bypass=False)
    costed = [
        (c.name, c.kind, c.in_shape, c.out_shape, c.weights, c.biases)
        for c in fp.layers
        if c.kind in KINDS
    ]
    shipped = [
        (q.stage.name, q.stage.kind, q.stage.in_shape, q.stage.out_shape, q.weight.size,
         0 if q.bias is None else q.bias.size)
        for q in qm.stages
    ]  # fmt: skip
    assert costed == shipped
    assert fp.layers[0].kind == "class_table" and fp.layers[0].weights == qm.table.size
    # the estimator's int8 constants are the arrays the exporter writes, byte for byte
    arrays = qm.table.size * TABLE_INT_BYTES + qm.sigmoid_lut.size
    for q in qm.stages:
        words = len(q.requant.m) + (0 if q.bias is None else q.bias.size)
        arrays += q.weight.size + words * WORD_BYTES
    assert qm.sigmoid_lut.size == SIGMOID_LUT_BYTES
    assert fp.data_flash_bytes == arrays
    # and those stages compute the decoder
    with torch.no_grad():
        want = torch.sigmoid(decoder(z, y))
    torch.testing.assert_close(run_fp32(fm, z, y).reshape(want.shape), want)
    px = run_int8(qm, qm.quantize_z(z), y.numpy())
    assert px.shape == (64, *fm.out_shape)


@pytest.mark.parametrize("layers", ACCEPTED.values(), ids=list(ACCEPTED))
def test_estimator_and_exporter_read_the_same_stages(layers):
    assert_same_stages(decoder_with(*layers), LATENT, K)


def test_a_layer_without_bias_ships_zeros_and_is_costed_so():
    fm = extract(decoder_with(*ACCEPTED["no bias"]), LATENT, K)
    assert torch.equal(fm.stages[1].bias, torch.zeros(2))
    assert estimate(decoder_with(*ACCEPTED["no bias"]), LATENT, K).layers[2].biases == 2


@pytest.mark.parametrize("kind", sorted(CONDITIONINGS))
@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_every_architecture_and_conditioning(arch, kind):
    spec = dice_spec(32)
    kw = {"dim1": 2, "dim2": 3, "dim3": 4, "dim4": 5} if arch == "conv" else {"hidden": 16}
    model = build_cvae(spec, arch=arch, latent=3, conditioning={"kind": kind}, **kw).eval()
    assert_same_stages(model.decoder, 3, spec.num_classes)


@pytest.mark.parametrize("layers, says", REFUSED.values(), ids=list(REFUSED))
def test_estimator_and_exporter_refuse_the_same_layers(layers, says):
    with pytest.raises(UnsupportedModelError) as by_estimator:
        estimate(decoder_with(*layers), LATENT, K)
    with pytest.raises(UnsupportedModelError) as by_exporter:
        export_int8(decoder_with(*layers))
    message = str(by_estimator.value)
    assert message == str(by_exporter.value)
    assert len(message.splitlines()) == 1 and says in message and "allowed: " in message
    if says != "ends with a ReLU":  # the one refusal of the whole chain, not of a layer
        assert message.startswith("decoder.body.")


@pytest.mark.parametrize(
    "body, says",
    [(nn.Sequential(nn.Flatten(), conv_t(4, 3, padding=1)),
      "decoder.body.1: ConvTranspose2d fails on a (5,) input (RuntimeError: "),
     (nn.Sequential(nn.Unflatten(1, (5, 1, 1)), nn.ConvTranspose2d(5, 1, 3, padding=1)),
      "decoder.body.1: the decoder starts with ConvTranspose2d, not a Linear"),
     (nn.Sequential(nn.ReLU(), nn.Linear(5, 8)), "decoder.body.0: a ReLU must follow"),
     (nn.Sequential(nn.Flatten()), "the decoder has no Linear layer"),
     (nn.Linear(5, 8), "the decoder's body is Linear, not an nn.Sequential")],
)  # fmt: skip
def test_bodies_that_are_not_a_chain_of_stages(body, says):
    decoder = Decoder(OneHotConcat(K, LATENT), body)
    with pytest.raises(UnsupportedModelError, match="allowed: ") as err:
        estimate(decoder, LATENT, K)
    assert says in str(err.value)
    with pytest.raises(UnsupportedModelError):
        export_int8(decoder)
