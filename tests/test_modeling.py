"""Tests for hf_distill.modeling (tiny CPU models built from configs; no Hub access)."""

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    ConvNextConfig,
    ResNetConfig,
    ViTConfig,
)

from hf_distill.modeling import (
    build_model,
    extract_features,
    fresh_model,
    reinitialize_,
)
from hf_distill.models.convnet import (
    CONVNET_ACTIVATIONS,
    CONVNET_NORMS,
    CONVNET_POOLINGS,
    ConvNetConfig,
    ConvNetForImageClassification,
    default_convnet_config,
)


def tiny_convnet_config(**kwargs):
    defaults = {"num_channels": 3, "image_size": 16, "net_width": 8, "net_depth": 2, "num_labels": 10}
    defaults.update(kwargs)
    return ConvNetConfig(**defaults)


HF_CONFIGS = {
    "resnet": lambda: ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10
    ),
    "vit": lambda: ViTConfig(
        image_size=16,
        patch_size=4,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=10,
    ),
    "convnext": lambda: ConvNextConfig(
        num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10
    ),
}


def make_model(name):
    config = tiny_convnet_config() if name == "convnet" else HF_CONFIGS[name]()
    return build_model(config).eval()


def state_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- ConvNet architecture --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channels,size,depth,expected_hw",
    [(1, 28, 3, 4), (3, 28, 3, 3), (3, 32, 3, 4), (1, 32, 3, 4), (3, 8, 3, 1), (1, 8, 2, 3)],
)
def test_forward_shapes(channels, size, depth, expected_hw):
    config = ConvNetConfig(num_channels=channels, image_size=size, net_width=4, net_depth=depth, num_labels=7)
    model = ConvNetForImageClassification(config)
    pixel_values = torch.randn(2, channels, size, size)
    out = model(pixel_values, output_hidden_states=True)
    assert out.logits.shape == (2, 7)
    assert model.feature_dim == 4 * expected_hw * expected_hw
    assert model.embed(pixel_values).shape == (2, model.feature_dim)
    assert len(out.hidden_states) == depth
    assert out.hidden_states[-1].shape == (2, 4, expected_hw, expected_hw)
    assert out.loss is None


def test_feature_dim_grayscale_28():
    # The papers' MNIST ConvNet: 28x28 padded to 32x32 by the first conv -> 4x4x128.
    config = ConvNetConfig(num_channels=1, image_size=28, net_width=128, net_depth=3)
    assert ConvNetForImageClassification(config).feature_dim == 2048
    assert config.num_labels == 10


def test_first_layer_padding_override():
    model = ConvNetForImageClassification(tiny_convnet_config(num_channels=1, first_layer_padding=1))
    assert model.features[0].padding == (1, 1)
    assert model.feature_dim == 8 * 4 * 4


def test_matches_reference_layout_and_init():
    # Same module creation order as the reference ConvNet -> same weights under the same seed.
    config = tiny_convnet_config()
    torch.manual_seed(0)
    model = ConvNetForImageClassification(config)
    torch.manual_seed(0)
    reference = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.GroupNorm(8, 8),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.GroupNorm(8, 8),
        torch.nn.Linear(8 * 4 * 4, 10),
    )
    ours = [p for n, p in model.named_parameters()]
    assert len(ours) == len(list(reference.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ours, reference.parameters()))


@pytest.mark.parametrize("norm", CONVNET_NORMS)
@pytest.mark.parametrize("act", CONVNET_ACTIVATIONS)
@pytest.mark.parametrize("pooling", CONVNET_POOLINGS)
def test_all_options_build_and_run(norm, act, pooling):
    config = tiny_convnet_config(net_norm=norm, net_act=act, net_pooling=pooling, image_size=8)
    model = ConvNetForImageClassification(config)
    pixel_values = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = model(pixel_values, labels=torch.tensor([1, 2]))
    assert out.logits.shape == (2, 10)
    out.loss.backward()
    assert pixel_values.grad is not None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"net_norm": "weirdnorm"}, "instancenorm"),
        ({"net_act": "gelu"}, "leakyrelu"),
        ({"net_pooling": "strided"}, "maxpooling"),
        ({"net_depth": 0}, "net_depth"),
        ({"image_size": 4, "net_depth": 3}, "too small"),
    ],
)
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvNetConfig(**kwargs)


def test_loss_with_labels():
    model = ConvNetForImageClassification(tiny_convnet_config())
    pixel_values = torch.randn(3, 3, 16, 16)
    labels = torch.tensor([0, 5, 9])
    out = model(pixel_values, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits, labels)
    torch.testing.assert_close(out.loss, expected)
    # Soft labels (class probabilities) give the same loss for one-hot targets.
    soft = torch.nn.functional.one_hot(labels, 10).float()
    torch.testing.assert_close(model(pixel_values, labels=soft).loss, expected)
    # Tuple output.
    loss, logits = model(pixel_values, labels=labels, return_dict=False)
    torch.testing.assert_close(loss, expected)


def test_save_and_load_round_trip(tmp_path):
    config = tiny_convnet_config(net_norm="batchnorm", num_channels=1, image_size=28)
    model = ConvNetForImageClassification(config)
    pixel_values = torch.randn(4, 1, 28, 28)
    model.train()
    model(pixel_values)  # populate BatchNorm running statistics so buffers are checked too
    model.eval()
    model.save_pretrained(tmp_path)

    loaded = ConvNetForImageClassification.from_pretrained(tmp_path).eval()
    assert state_equal(model, loaded)
    with torch.no_grad():
        assert torch.equal(model(pixel_values).logits, loaded(pixel_values).logits)

    auto_config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(auto_config, ConvNetConfig)
    assert auto_config.net_norm == "batchnorm" and auto_config.image_size == 28
    auto_model = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert isinstance(auto_model, ConvNetForImageClassification)
    with torch.no_grad():
        assert torch.equal(model(pixel_values).logits, auto_model(pixel_values).logits)


def test_default_convnet_config():
    config = default_convnet_config(1, 28, 10)
    assert (config.net_width, config.net_depth, config.net_norm) == (128, 3, "instancenorm")
    assert default_convnet_config(3, 64, 200).net_depth == 4
    assert default_convnet_config(3, 128, 10).net_depth == 5
    assert default_convnet_config(3, 32, 10, net_width=16).net_width == 16
    assert isinstance(build_model(default_convnet_config(3, 32, 10, net_width=4)), ConvNetForImageClassification)


# --- Re-initialisation -----------------------------------------------------------------------------------------------


def test_reinitialize_deterministic_and_rng_neutral():
    model = ConvNetForImageClassification(tiny_convnet_config(net_norm="batchnorm"))
    params_before = [p for p in model.parameters()]
    rng_before = torch.get_rng_state()

    reinitialize_(model, torch.Generator().manual_seed(1))
    first = {k: v.clone() for k, v in model.state_dict().items()}
    reinitialize_(model, torch.Generator().manual_seed(1))
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())
    reinitialize_(model, torch.Generator().manual_seed(2))
    assert not torch.equal(first["features.0.weight"], model.features[0].weight)

    assert torch.equal(rng_before, torch.get_rng_state())
    # In place: the very same Parameter objects (optimisers keep working).
    assert all(a is b for a, b in zip(params_before, model.parameters()))


def test_reinitialize_redraws_loaded_weights(tmp_path):
    # Loaded tensors carry transformers' "already initialised" flag; a re-draw must ignore it.
    model = make_model("vit")
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    reinitialize_(loaded, torch.Generator().manual_seed(0))
    assert not torch.equal(loaded.vit.embeddings.cls_token, model.vit.embeddings.cls_token)
    assert not torch.equal(loaded.classifier.weight, model.classifier.weight)


@pytest.mark.parametrize("name", ["convnet", "resnet", "vit", "convnext"])
def test_fresh_model(name):
    template = make_model(name)
    rng_before = torch.get_rng_state()
    a = fresh_model(template, torch.Generator().manual_seed(3))
    b = fresh_model(template, torch.Generator().manual_seed(3))
    c = fresh_model(template.config, torch.Generator().manual_seed(3))
    d = fresh_model(template.config, torch.Generator().manual_seed(4))
    assert torch.equal(rng_before, torch.get_rng_state())
    assert type(a) is type(template) and type(c) is type(template)
    assert state_equal(a, b)
    assert not state_equal(a, template)
    assert not state_equal(c, d)
    # Every parameter was re-drawn (no stale tensor left from the template).
    for (key, p_new), p_old in zip(a.named_parameters(), template.parameters()):
        if p_new.numel() > 1 and p_new.std() > 0:
            assert not torch.equal(p_new, p_old), key


# --- Feature extraction ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["convnet", "resnet", "vit", "convnext"])
def test_extract_features(name):
    model = make_model(name)
    pixel_values = torch.randn(2, 3, 16, 16, requires_grad=True)

    features = extract_features(model, pixel_values)
    assert features.dim() == 2 and features.shape[0] == 2
    features.pow(2).sum().backward()
    assert pixel_values.grad is not None and pixel_values.grad.abs().sum() > 0

    # The embedding is what the classifier head consumes.
    head = model.classifier[-1] if isinstance(model.classifier, torch.nn.Sequential) else model.classifier
    with torch.no_grad():
        torch.testing.assert_close(head(extract_features(model, pixel_values)), model(pixel_values).logits)

    per_layer = extract_features(model, pixel_values, layers=[0, -1])
    assert isinstance(per_layer, list) and len(per_layer) == 2
    assert all(f.dim() == 2 and f.shape[0] == 2 for f in per_layer)
    with pytest.raises(ValueError, match="out of range"):
        extract_features(model, pixel_values, layers=[100])


def test_extract_features_convnet_layers_flatten():
    model = make_model("convnet")
    pixel_values = torch.randn(2, 3, 16, 16)
    first, last = extract_features(model, pixel_values, layers=[0, -1])
    assert first.shape == (2, 8 * 8 * 8)
    torch.testing.assert_close(last, model.embed(pixel_values))
