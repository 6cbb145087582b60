"""The backbone: one birder classification network, loaded by pretrained name or from a `.pt` checkpoint.

`forward` returns class probabilities and embeddings from one pass (birder's `infer_batch`), so what the
classifier says and what the neighbours are always come from the same look at the photo."""

from __future__ import annotations

import functools
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from identify.checkpoints import read_checkpoint, resolve_network
from identify.errors import IdentifyError
from identify.identity import ModelIdentity
from identify.images import sha256_file

log = logging.getLogger(__name__)


# Forward of a batch of 8 at native size, channels-last against the plain layout, on a 2-core machine
# (BENCHMARKS.md: build): xcit_nano12_p16 1.18x, crossformer_s 1.16x, vit_parallel_s16 1.04x, rope_deit3 1.00x,
# biformer_s 0.87x. Networks listed here keep the plain layout.
PLAIN_LAYOUT_NETWORKS = ("biformer",)


@dataclass(frozen=True)
class BackboneOutput:
    probabilities: np.ndarray  # (batch, classes) float32, rows sum to 1
    embeddings: np.ndarray  # (batch, embedding_dim) float32, as the network gives them (not normalised)


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class Backbone:
    def __init__(self, net: Any, identity: ModelIdentity, device: torch.device, half: bool = False):
        # Any: a birder network (its embedding, classify and detection_features are not nn.Module's)
        self.net = net
        self.use_memory_format(torch.contiguous_format if identity.network.startswith(PLAIN_LAYOUT_NETWORKS)
                               else torch.channels_last)
        self.identity = identity
        self.device = device
        if half and device.type != "cuda":
            log.warning("half precision needs a CUDA device; running in float32 on %s", device)
        self.half = half and device.type == "cuda"
        self.compiled_batch: int | None = None  # set by `compile`: every batch is padded to this many photos

    def compile(self, batch_size: int) -> None:
        """Compile the embedding path with torch.compile (inductor), as `birder-predict --compile` does. For long
        builds only: the first compile of a model on a machine takes tens of seconds (43 s for xcit_nano12_p16
        on 2 cores; about 5 s once inductor's cache in /tmp holds it), for a forward 1.22-1.40x faster there
        (a 2-core build was no faster: its decode workers set the pace; BENCHMARKS.md: build).
        Every batch is padded to `batch_size` so that the graph compiles once: a smaller last batch would
        compile a second one."""
        self.net.embedding = torch.compile(self.net.embedding, dynamic=False)
        self.compiled_batch = batch_size

    @functools.cached_property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """Birder's own inference transform for this model's size and normalisation."""
        import birder

        return birder.classification_transform(self.identity.size, self.identity.rgb_stats)  # type: ignore[arg-type]  # birder's RGBType is this dict

    def use_memory_format(self, memory_format: torch.memory_format) -> None:
        """The layout of the network's weights and of every batch. Channels-last unless the network is measured
        slower on it: convolutions run faster on it, and the numbers are the same to float precision."""
        self.memory_format = memory_format
        self.net.to(memory_format=memory_format)  # in place

    @functools.cached_property
    def _split_transform(self) -> tuple[Callable[[Image.Image], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
        """Birder's transform cut after its PILToTensor: (photo -> uint8 tensor, uint8 batch -> the model's input).
        The two halves compose to the same numbers as the whole, but a decode worker then ships a quarter of
        the bytes and the scaling and normalising run once per batch, vectorised."""
        from torchvision.transforms import v2

        steps = list(getattr(self.transform, "transforms", []))
        cut = next((i + 1 for i, step in enumerate(steps) if isinstance(step, v2.PILToTensor)), None)
        if cut is None:  # not the preset we know: the whole transform per photo, nothing per batch
            return self.transform, lambda batch: batch
        return v2.Compose(steps[:cut]), v2.Compose(steps[cut:])

    @property
    def decode_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """A photo to the uint8 tensor at the model's size (the per-photo half of birder's transform)."""
        return self._split_transform[0]

    def finish_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """Stacked `decode_transform` tensors to the model's input (the per-batch half of birder's transform)."""
        return self._split_transform[1](batch)

    def _autocast(self) -> Any:
        return torch.autocast(device_type="cuda", dtype=torch.float16) if self.half else nullcontext()

    def forward(self, batch: torch.Tensor) -> BackboneOutput:
        """Probabilities and embeddings for a batch of transformed images (B, 3, H, W), in one pass."""
        from birder.inference.classification import infer_batch

        count = len(batch)
        if self.compiled_batch is not None and count < self.compiled_batch:
            batch = torch.cat([batch, batch.new_zeros((self.compiled_batch - count, *batch.shape[1:]))])
        with torch.inference_mode(), self._autocast():
            batch = batch.to(self.device).contiguous(memory_format=self.memory_format)
            probabilities, embeddings = infer_batch(self.net, batch, return_embedding=True)
        assert embeddings is not None
        return BackboneOutput(probabilities[:count].astype(np.float32), embeddings[:count].astype(np.float32))

    def forward_decoded(self, batch: torch.Tensor) -> BackboneOutput:
        """`forward` of stacked `decode_transform` tensors (uint8): copied to the device as they are, a quarter
        of the bytes of the float input, and finished there (on a GPU the scaling runs on the GPU)."""
        return self.forward(self.finish_batch(batch.to(self.device, non_blocking=True)))

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The transformed photos, stacked: the input of `forward`."""
        decode = self.decode_transform
        return self.finish_batch(torch.stack([decode(image) for image in images]))

    def forward_images(self, images: Sequence[Image.Image]) -> BackboneOutput:
        return self.forward(self.batch(images))

    def detection_features(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Multi-scale feature maps for detection heads (birder's `DetectorBackbone`), for library users."""
        if not hasattr(self.net, "detection_features"):
            raise IdentifyError("no_detection_features", f"{self.identity.network} has no detection features")
        with torch.inference_mode(), self._autocast():
            return self.net.detection_features(batch.to(self.device).contiguous(memory_format=self.memory_format))


def _identity(name: str, network: str, sha256: str, net: Any, info: Any) -> ModelIdentity:
    from birder.common.lib import class_list_from_class_to_idx, get_size_from_signature

    height, width = get_size_from_signature(info.signature)
    return ModelIdentity(
        name=name,
        network=network,
        sha256=sha256,
        classes=list(class_list_from_class_to_idx(info.class_to_idx)),
        signature=info.signature,
        rgb_stats={key: list(value) for key, value in info.rgb_stats.items()},
        size=(int(height), int(width)),
        embedding_dim=int(net.embedding_size),
    )


def _model_info(model_info: Any) -> Any:
    """birder 0.8 returns a ModelInfo NamedTuple; older releases a plain 4-tuple in the same order."""
    from birder.common.fs_ops import ModelInfo

    return model_info if hasattr(model_info, "class_to_idx") else ModelInfo(*model_info)


def load_checkpoint_backbone(path: Path, *, network: str | None = None, device: torch.device | None = None,
                             half: bool = False) -> Backbone:
    from birder.common.fs_ops import load_model

    device = device or default_device()
    payload = read_checkpoint(path)
    network = resolve_network(path, payload, network)
    try:
        net, info = load_model(device, network, path=path, inference=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise IdentifyError("bad_checkpoint", f"{path} does not load as {network}: {exc}") from None
    return Backbone(net, _identity(path.stem, network, sha256_file(path), net, _model_info(info)), device, half)


def load_pretrained_backbone(name: str, *, device: torch.device | None = None, half: bool = False) -> Backbone:
    """A model from birder's registry, read from birder's models directory (downloaded there if missing)."""
    import birder
    from birder.common.lib import get_pretrained_model_url
    from birder.conf import settings
    from birder.model_registry import registry

    device = device or default_device()
    weights_file = Path(settings.MODELS_DIR) / get_pretrained_model_url(name, "pt")[0]
    try:
        net, model_info = birder.load_pretrained_model(name, inference=True, device=device, progress_bar=False)
    except Exception as exc:  # download (URLError, SSL, hash) or load failure: one line for the user
        where = "found" if weights_file.exists() else "missing, and the download failed"
        raise IdentifyError("model_unavailable", f"{name}: weights {weights_file} {where} ({exc})") from None
    network = registry.get_pretrained_metadata(name)["net"]["network"]
    return Backbone(net, _identity(name, network, sha256_file(weights_file), net, _model_info(model_info)), device, half)


def load_backbone(model: str, *, network: str | None = None, device: torch.device | None = None,
                  half: bool = False) -> Backbone:
    """`model` is a path to a birder `.pt` checkpoint or the name of a pretrained birder model."""
    from birder.model_registry import registry

    path = Path(model).expanduser()
    if path.is_file() or path.suffix == ".pt":
        return load_checkpoint_backbone(path, network=network, device=device, half=half)
    if registry.pretrained_exists(model):
        return load_pretrained_backbone(model, device=device, half=half)
    raise IdentifyError("unknown_model", f"{model!r} is neither a checkpoint file nor a birder pretrained model name")


def model_classes(model: str, network: str | None = None) -> list[str]:
    """The class labels of a model, in class-index order: read from a checkpoint file without building the
    network, or from a pretrained model once loaded."""
    path = Path(model).expanduser()
    if path.is_file() or path.suffix == ".pt":
        class_to_idx = read_checkpoint(path)["class_to_idx"]
        return [name for name, _ in sorted(class_to_idx.items(), key=lambda item: item[1])]
    return list(load_backbone(model, network=network).identity.classes)
