"""FID, KID and precision/recall through torch-fidelity, on a named feature network.

``evaluator``: the data set's own evaluator CNN (its 128-d penultimate features),
registered with torch-fidelity as a feature extractor, so the metrics work offline.
``inception``: torch-fidelity's standard Inception-v3 (needs its weights: a file, or a
download where there is internet). Numbers from different networks are not comparable,
so every key names its network: ``gen/fid_evaluator``, ``gen/fid_inception``, ...
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from tinycvae.errors import ConfigError

FEATURES = ("evaluator", "inception")
EXTRACTOR_NAME = "tinycvae-evaluator"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
)


class UInt8Images(Dataset):
    """Images [N, C, H, W] in [0, 1] served as uint8 tensors, as torch-fidelity expects
    (3 channels when ``rgb``, for the Inception network)."""

    def __init__(self, images: Tensor, rgb: bool = False) -> None:
        x = (images.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
        self.images = x.expand(-1, 3, -1, -1).contiguous() if rgb and x.shape[1] == 1 else x

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def _register_evaluator_extractor() -> None:
    """Register the evaluator's features with torch-fidelity (once per process)."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if EXTRACTOR_NAME in FEATURE_EXTRACTORS_REGISTRY:
        return

    class EvaluatorFeatures(FeatureExtractorBase):
        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            from tinycvae.evaluator import load_evaluator_file

            self.net = load_evaluator_file(feature_extractor_weights_path)

        @staticmethod
        def get_provided_features_list():
            return ("penultimate",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "penultimate"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):
            return (self.net.features(x.float() / 255.0).double(),)

    register_feature_extractor(EXTRACTOR_NAME, EvaluatorFeatures)


def inception_weights(path: str | None) -> str:
    """The Inception weights file to use, fetched once where there is internet;
    a ConfigError (before any training) where there is none."""
    if path:
        if not Path(path).is_file():
            raise ConfigError(
                f"metrics.fid.inception_weights={path} does not exist; allowed: a path to "
                f"{INCEPTION_FILE}, or null to download it"
            )
        return str(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not cached.is_file():
        try:
            torch.hub.download_url_to_file(INCEPTION_URL, str(cached), progress=False)
        except Exception as err:  # noqa: BLE001 - offline: say what to do instead
            raise ConfigError(
                f"metrics.fid.features=inception needs the Inception weights, and the download "
                f"failed ({type(err).__name__}); allowed: metrics.fid.inception_weights=<path "
                f"to {INCEPTION_FILE}>, or metrics.fid.features=evaluator"
            ) from None
    return str(cached)


def fidelity_metrics(
    generated: Tensor,
    real: Tensor,
    features: str,
    weights_path: str,
    kid: bool = True,
    prc: bool = True,
) -> dict[str, float]:
    """FID (and KID, precision, recall) of ``generated`` against ``real`` images, with the
    feature network on the generated images' device (the device rule of
    :mod:`tinycvae.devices`: torch-fidelity's ``cuda`` flag means "the current CUDA device")."""
    import torch_fidelity

    if features not in FEATURES:
        raise ConfigError(f"metrics.fid.features={features} is unknown; allowed: {FEATURES}")
    rgb = features == "inception"
    if features == "evaluator":
        _register_evaluator_extractor()
        extractor = EXTRACTOR_NAME
    else:
        extractor = "inception-v3-compat"
    n = min(len(generated), len(real))
    out = torch_fidelity.calculate_metrics(
        input1=UInt8Images(generated, rgb),
        input2=UInt8Images(real, rgb),
        cuda=generated.device.type == "cuda",
        fid=True,
        kid=kid,
        prc=prc,
        kid_subset_size=min(1000, n),
        kid_subsets=50,
        feature_extractor=extractor,
        feature_extractor_weights_path=weights_path,
        batch_size=256,
        save_cpu_ram=True,  # no worker processes
        cache=False,
        verbose=bool(os.environ.get("TINYCVAE_VERBOSE_FIDELITY")),
    )
    names = {
        "frechet_inception_distance": "fid",
        "kernel_inception_distance_mean": "kid",
        "precision": "precision",
        "recall": "recall",
    }
    return {f"gen/{short}_{features}": float(out[k]) for k, short in names.items() if k in out}
