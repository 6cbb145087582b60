"""Made-up inputs for tests and benchmarks: random-weight checkpoints in birder's own layout (no weights can
be downloaded here) and photos of made-up species (each a colour and a shape, with position and noise varying).

Kept in the package, not in tests/, so that the benchmarks use the same inputs without importing the tests."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def write_birder_checkpoint(network: str, classes: list[str], size: int, path: Path) -> Path:
    """A random-weight checkpoint exactly as birder writes one (no `network` entry: birder does not store it)."""
    import birder
    import torch
    from birder.data.transforms.classification import get_rgb_stats
    from birder.model_registry import registry
    from birder.net.base import get_signature

    torch.manual_seed(0)
    net = registry.net_factory(network, len(classes), 3, size=(size, size)).eval()
    torch.save(
        {
            "state": net.state_dict(),
            "birder_version": birder.__version__,
            "task": net.task,
            "signature": get_signature(input_shape=(1, 3, size, size), num_outputs=len(classes)),
            "class_to_idx": {name: i for i, name in enumerate(classes)},
            "rgb_stats": get_rgb_stats("birder"),
        },
        path,
    )
    return path


def species_photo(species_index: int, variant: int, size: int = 96) -> Image.Image:
    """A photo of a made-up species: its own colour and shape, with position and noise varying."""
    rng = random.Random(1000 * species_index + variant)
    base = [(200, 40, 40), (40, 160, 60), (40, 60, 200), (200, 180, 40)][species_index % 4]
    image = Image.new("RGB", (size, size), tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in base))
    draw = ImageDraw.Draw(image)
    x, y = rng.randint(5, size // 2), rng.randint(5, size // 2)
    if species_index % 2:
        draw.ellipse([x, y, x + size // 3, y + size // 3], fill=(255, 255, 255))
    else:
        draw.rectangle([x, y, x + size // 3, y + size // 4], fill=(0, 0, 0))
    noise = np.random.default_rng(1000 * species_index + variant).integers(-10, 10, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image).astype(np.int16) + noise, 0, 255).astype(np.uint8))


def make_species_folder(root: Path, species: list[str], per: int, first_variant: int = 0) -> Path:
    """Class-folder layout (`root/<species>/<species>_<n>.jpg`) of made-up species photos."""
    for s_index, name in enumerate(species):
        (root / name).mkdir(parents=True, exist_ok=True)
        for variant in range(first_variant, first_variant + per):
            species_photo(s_index, variant).save(root / name / f"{name}_{variant}.jpg", quality=92)
    return root


def jpeg_bytes(image: Image.Image, **save_options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save_options)
    return buffer.getvalue()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
