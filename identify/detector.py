"""The bird finder: a birder detection network, loaded from a checkpoint in birder's layout the way birder loads
one (`birder.common.fs_ops.load_detection_model`), that finds the birds in a photo sent without a crop.

Its boxes come back as fractions of the photo (identify.framing.Detection), the birds only (the classes named
by `detector_classes`), best first; the service identifies a square around the best one (with a margin) and
reports them all. Anything with a `find` method of the same shape (a test's stand-in) can take its place."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from PIL import Image

from identify.checkpoints import read_checkpoint
from identify.errors import IdentifyError
from identify.framing import Crop, Detection
from identify.images import sha256_file

log = logging.getLogger(__name__)


class BirdFinder(Protocol):
    def find(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """For each photo, the birds found in it, best first."""
        ...


@dataclass(frozen=True)
class DetectorIdentity:
    network: str
    backbone: str
    sha256: str
    classes: dict[int, str]  # label index -> class name
    size: tuple[int, int]  # (height, width) of the network's input


class Detector:
    def __init__(self, net: Any, identity: DetectorIdentity, rgb_stats: dict[str, Any], bird_labels: frozenset[str],
                 threshold: float, device: torch.device) -> None:
        import birder

        self.net = net
        self.identity = identity
        self.device = device
        self.threshold = threshold
        self.bird_indices = {i for i, name in identity.classes.items() if name.lower() in bird_labels}
        # birder's detection preset: the photo resized to the network's size, so boxes come back in it
        self.transform = birder.detection_transform(identity.size, rgb_stats)  # type: ignore[arg-type]  # birder's RGBType is this dict

    def find(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        from birder.inference.detection import infer_batch

        if not images:
            return []
        batch = torch.stack([self.transform(image) for image in images]).to(self.device)
        with torch.inference_mode():
            found = infer_batch(self.net, batch)
        height, width = self.identity.size
        return [self._birds(detections, width, height) for detections in found]

    def _birds(self, detections: dict[str, torch.Tensor], width: int, height: int) -> list[Detection]:
        birds = []
        for box, score, label in zip(detections["boxes"].tolist(), detections["scores"].tolist(),
                                     detections["labels"].tolist(), strict=True):
            if int(label) not in self.bird_indices or score < self.threshold:
                continue
            left, top = max(0.0, box[0] / width), max(0.0, box[1] / height)
            right, bottom = min(1.0, box[2] / width), min(1.0, box[3] / height)
            if right - left <= 0 or bottom - top <= 0:
                continue
            birds.append(Detection(Crop(left, top, right - left, bottom - top), float(score),
                                   self.identity.classes[int(label)]))
        return sorted(birds, key=lambda d: -d.score)


def detection_networks() -> list[str]:
    from birder.model_registry import Task, registry

    return registry.list_models(task=Task.OBJECT_DETECTION)


def networks_from_filename(path: Path) -> tuple[str | None, str | None]:
    """(network, backbone) as birder names detection checkpoints: NETWORK_BACKBONE[_EPOCH].pt, each the
    longest registered name that fits."""
    from identify.checkpoints import classification_networks, network_from_filename

    network = network_from_filename(path, detection_networks())
    if network is None:
        return None, None
    rest = Path(path.stem[len(network) + 1:] + ".pt")
    return network, network_from_filename(rest, classification_networks())


def load_detector(path: Path, *, network: str | None = None, backbone: str | None = None,
                  bird_labels: frozenset[str] = frozenset({"bird"}), threshold: float = 0.5,
                  device: torch.device | None = None) -> Detector:
    """A birder detection checkpoint as a bird finder. Raises IdentifyError when the file is not one, when its
    network or backbone cannot be told, or when none of its classes is a bird."""
    from birder.common.fs_ops import load_detection_model
    from birder.common.lib import get_size_from_signature

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    payload = read_checkpoint(path)
    named_network, named_backbone = networks_from_filename(path)
    network, backbone = network or named_network, backbone or named_backbone
    if network is None or backbone is None:
        raise IdentifyError("bad_detector", f"cannot tell which birder detection network and backbone {path} "
                            "holds: set IDENTIFY_DETECTOR_NETWORK and IDENTIFY_DETECTOR_BACKBONE, or name the file "
                            "NETWORK_BACKBONE.pt as birder does")
    classes = {int(i): str(name) for name, i in payload["class_to_idx"].items()}
    if not any(name.lower() in bird_labels for name in classes.values()):
        raise IdentifyError("bad_detector", f"{path} has no bird class (its classes: "
                            f"{', '.join(sorted(classes.values())[:8])}): set IDENTIFY_DETECTOR_CLASSES")
    try:
        net, info = load_detection_model(device, network, path=path, backbone=backbone, inference=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise IdentifyError("bad_detector", f"{path} does not load as {network} on {backbone}: {exc}") from None
    net.eval()  # type: ignore[union-attr]  # a .pt checkpoint loads as a Module
    height, width = get_size_from_signature(info.signature)
    identity = DetectorIdentity(network, backbone, sha256_file(path), classes, (int(height), int(width)))
    return Detector(net, identity, dict(info.rgb_stats), bird_labels, threshold, device)


def write_detection_checkpoint(net: torch.nn.Module, class_to_idx: dict[str, int], size: tuple[int, int],
                               rgb_stats: dict[str, Any], path: Path) -> Path:
    """Save a detection network in birder's layout (as birder's training script checkpoints one). Class
    indices start at 1: 0 is the background."""
    import birder
    from birder.net.detection.base import get_detection_signature

    signature = get_detection_signature(input_shape=(1, 3, *size), num_outputs=len(class_to_idx) + 1, dynamic=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": net.state_dict(), "birder_version": birder.__version__, "task": net.task,
                "signature": signature, "class_to_idx": class_to_idx, "rgb_stats": rgb_stats}, path)
    return path
