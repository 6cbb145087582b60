"""The one real model offline: converted EfficientNet-Lite0 classifies scikit-image's photos correctly."""

import pytest
import skimage.data
from PIL import Image

from identify.backbone import load_backbone
from identify.demo_model import convert_demo_model


@pytest.fixture(scope="module")
def demo_backbone(tmp_path_factory):
    return load_backbone(str(convert_demo_model(tmp_path_factory.mktemp("demo") / "lite0.pt")))


@pytest.mark.parametrize("photo, expected", [("chelsea", "Egyptian cat"), ("coffee", "espresso")])
def test_real_photo_top1(demo_backbone, photo, expected):
    image = Image.fromarray(getattr(skimage.data, photo)()).convert("RGB")
    output = demo_backbone.forward_images([image])
    classes = demo_backbone.identity.classes
    assert classes[int(output.probabilities[0].argmax())] == expected
    assert output.embeddings.shape == (1, 1280)


def test_converted_checkpoint_names_its_network_and_imagenet_classes(demo_backbone):
    assert demo_backbone.identity.network == "efficientnet_lite0"
    assert len(demo_backbone.identity.classes) == 1000 and demo_backbone.identity.classes[0] == "tench"
