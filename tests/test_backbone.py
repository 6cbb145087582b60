"""Backbones from birder-layout checkpoints: the five seed architectures at native size, and loading errors."""

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from identify.backbone import load_backbone
from identify.errors import IdentifyError
from tests.conftest import species_photo, write_birder_checkpoint

# network, native size, classes, embedding size, detection feature maps (design notes' measured facts)
SEEDS = [
    ("crossformer_s", 384, 735, 768, 4),
    ("biformer_s", 384, 550, 512, 4),
    ("xcit_nano12_p16", 256, 371, 128, 4),
    ("vit_parallel_s16_18x2_ls_avg", 384, 735, 384, 1),
    ("rope_deit3_reg4_m14", 252, 735, 512, 1),
]


@pytest.mark.slow
@pytest.mark.parametrize("network, size, classes, dim, stages", SEEDS, ids=[s[0] for s in SEEDS])
def test_seed_architecture_gives_probabilities_and_embedding_in_one_pass(tmp_path, network, size, classes, dim, stages):
    names = [f"sp_{i:03d}" for i in range(classes)]
    path = write_birder_checkpoint(network, names, size, tmp_path / f"{network}.pt")
    backbone = load_backbone(str(path))
    assert backbone.identity.network == network
    assert backbone.identity.size == (size, size)
    assert backbone.identity.classes == names
    assert backbone.identity.embedding_dim == dim
    batch = torch.stack([backbone.transform(species_photo(i, 0, size=160)) for i in range(2)])
    assert batch.shape == (2, 3, size, size)
    output = backbone.forward(batch)
    assert output.probabilities.shape == (2, classes) and output.embeddings.shape == (2, dim)
    np.testing.assert_allclose(output.probabilities.sum(axis=1), 1.0, rtol=1e-4)
    # the probabilities are the classifier head applied to these very embeddings (one pass)
    with torch.inference_mode():
        logits = backbone.net.classify(torch.from_numpy(output.embeddings))
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), output.probabilities, atol=1e-5)
    features = backbone.detection_features(batch[:1])
    assert len(features) == stages and all(f.shape[0] == 1 for f in features.values())


def test_network_is_found_from_the_weights_when_the_file_name_does_not_say(tiny_checkpoint):
    backbone = load_backbone(str(tiny_checkpoint))
    assert backbone.identity.network == "mobilenet_v3_small_0_25"
    assert backbone.identity.name == "tiny" and len(backbone.identity.sha256) == 64


def load_error(model: str, **kwargs) -> IdentifyError:
    with pytest.raises(IdentifyError) as error:
        load_backbone(model, **kwargs)
    return error.value


def test_loading_errors_name_the_problem(tmp_path, tiny_checkpoint):
    assert load_error(str(tmp_path / "missing.pt")).code == "model_not_found"
    assert load_error("no_such_model_anywhere").code == "unknown_model"
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert load_error(str(tmp_path / "junk.pt")).code == "bad_checkpoint"
    torch.save({"weights": 1}, tmp_path / "other.pt")
    assert load_error(str(tmp_path / "other.pt")).code == "bad_checkpoint"
    assert load_error(str(tiny_checkpoint), network="no_such_network").code == "unknown_network"
    assert load_error(str(tiny_checkpoint), network="xcit_nano12_p16").code == "bad_checkpoint"


def test_pretrained_name_reads_birders_models_directory(tmp_path, monkeypatch):
    """The real loading path: birder's registry and models directory. Offline, a missing file is one clear line."""
    from birder.conf import settings

    monkeypatch.setattr(settings, "MODELS_DIR", tmp_path)

    def offline(*_args, **_kwargs):
        raise URLError("no network")

    monkeypatch.setattr("birder.common.cli.download_file", offline)
    error = load_error("xcit_nano12_p16_il-common")
    assert error.code == "model_unavailable" and "missing" in error.message
    # a file in the models directory is used as it is (birder checks it against the registry's sha256)
    names = [f"sp_{i}" for i in range(371)]
    write_birder_checkpoint("xcit_nano12_p16", names, 256, Path(tmp_path) / "xcit_nano12_p16_il-common.pt")
    monkeypatch.undo()
    monkeypatch.setattr(settings, "MODELS_DIR", tmp_path)
    error = load_error("xcit_nano12_p16_il-common")
    assert error.code == "model_unavailable" and "found" in error.message and "SHA256" in error.message


def test_the_split_transform_gives_birders_numbers_and_ships_uint8(tmp_path):
    """Decode workers apply the per-photo half (uint8 out, a quarter of the bytes); the batch half scales and
    normalises: together exactly birder's own transform, so built references and queries stay comparable."""
    path = write_birder_checkpoint("xcit_nano12_p16", ["a", "b"], 256, tmp_path / "xcit_nano12_p16.pt")
    backbone = load_backbone(str(path))
    photos = [species_photo(i, 3, size=300).resize((400, 300)) for i in range(3)]
    halves = [backbone.decode_transform(photo) for photo in photos]
    assert all(half.dtype == torch.uint8 and half.shape == (3, 256, 256) for half in halves)
    whole = torch.stack([backbone.transform(photo) for photo in photos])
    assert torch.equal(backbone.finish_batch(torch.stack(halves)), whole)
    assert torch.equal(backbone.batch(photos), whole)
    # the build copies the uint8 batch to the device and finishes it there: the same answer
    np.testing.assert_array_equal(backbone.forward_decoded(torch.stack(halves)).embeddings,
                                  backbone.forward(whole).embeddings)


def test_the_channels_last_layout_gives_the_plain_layouts_numbers(tmp_path):
    """The backbone runs in channels-last memory layout (faster convolutions); what it says must not change."""
    path = write_birder_checkpoint("xcit_nano12_p16", ["a", "b"], 256, tmp_path / "xcit_nano12_p16.pt")
    backbone = load_backbone(str(path))
    assert backbone.memory_format == torch.channels_last
    batch = backbone.batch([species_photo(i, 1, size=256) for i in range(2)])
    fast = backbone.forward(batch)
    backbone.use_memory_format(torch.contiguous_format)
    plain = backbone.forward(batch)
    np.testing.assert_allclose(fast.embeddings, plain.embeddings, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast.probabilities, plain.probabilities, atol=1e-6)


@pytest.mark.slow
def test_a_compiled_forward_gives_the_eager_numbers_and_compiles_once(tiny_checkpoint):
    """`build-index --compile`: torch.compile's forward, each batch padded to the batch size (a smaller last
    batch would compile a second graph), must say what the eager forward says."""
    from torch._dynamo.utils import counters

    eager, compiled = load_backbone(str(tiny_checkpoint)), load_backbone(str(tiny_checkpoint))
    compiled.compile(batch_size=4)
    photos = [species_photo(i % 3, i, size=96) for i in range(7)]
    counters.clear()
    for batch in (photos[:4], photos[4:]):  # a full batch, then a last batch of 3
        fast, plain = compiled.forward_images(batch), eager.forward_images(batch)
        assert fast.embeddings.shape == plain.embeddings.shape == (len(batch), eager.identity.embedding_dim)
        np.testing.assert_allclose(fast.embeddings, plain.embeddings, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(fast.probabilities, plain.probabilities, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1
