"""Tests for `hf_distill.config`: validation, serialisation and method dispatch of the config classes."""

import dataclasses
import json

import pytest

import hf_distill
from hf_distill import DistillConfig, DistributionMatchingConfig, RandomSelectionConfig, SyntheticOptimizationConfig
from hf_distill.constants import CONFIG_NAME
from hf_distill.methods import METHODS


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"images_per_class": 0}, "images_per_class must be >= 1, got 0"),
        ({"images_per_class": -3}, "images_per_class must be >= 1, got -3"),
        ({"num_iterations": -1}, "num_iterations must be >= 0, got -1"),
        ({"init": "foo"}, "init must be 'real' or 'noise', got 'foo'"),
        ({"image_size": 0}, "image_size must be a positive integer, got 0"),
        ({"eval_num_models": 0}, "eval_num_models must be >= 1, got 0"),
        ({"eval_epochs": 0}, "eval_epochs must be >= 1, got 0"),
        ({"eval_batch_size": 0}, "eval_batch_size must be >= 1, got 0"),
        ({"eval_steps_num_models": 0}, "eval_steps_num_models must be >= 1, got 0"),
        ({"eval_steps": -5}, "eval_steps must be >= 0 (0 turns it off), got -5"),
        ({"save_steps": -1}, "save_steps must be >= 0 (0 turns it off), got -1"),
        ({"logging_steps": -2}, "logging_steps must be >= 0 (0 turns it off), got -2"),
        ({"save_total_limit": 0}, "save_total_limit must be >= 1 or None, got 0"),
        ({"optimizer": "rmsprop"}, "optimizer must be 'sgd' or 'adam', got 'rmsprop'"),
        ({"lr_images": 0.0}, "lr_images must be > 0, got 0.0"),
        ({"batch_real": 0}, "batch_real must be >= 1, got 0"),
    ],
)
def test_invalid_values_raise_helpful_value_error(overrides, message):
    with pytest.raises(ValueError) as excinfo:
        DistributionMatchingConfig(**overrides)
    assert message in str(excinfo.value)


def test_base_validation_applies_to_every_subclass():
    with pytest.raises(ValueError, match="images_per_class must be >= 1"):
        RandomSelectionConfig(images_per_class=0)
    with pytest.raises(ValueError, match="init must be 'real' or 'noise'"):
        DistillConfig(init="foo")
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adam'"):
        SyntheticOptimizationConfig(optimizer="rmsprop")


def test_zero_turns_optional_schedules_off_and_none_keeps_all_checkpoints():
    config = DistributionMatchingConfig(eval_steps=0, save_steps=0, logging_steps=0, num_iterations=0)
    assert (config.eval_steps, config.save_steps, config.logging_steps, config.num_iterations) == (0, 0, 0, 0)
    assert DistributionMatchingConfig(save_total_limit=None).save_total_limit is None
    assert DistributionMatchingConfig(init="noise", optimizer="adam").optimizer == "adam"


@pytest.mark.parametrize(("value", "expected"), [(True, "latest"), (False, None), ("latest", "latest"), (None, None)])
def test_resume_from_checkpoint_accepts_booleans(value, expected):
    # HF Trainer users (and YAML recipes) write `resume_from_checkpoint: true`; it means the newest checkpoint.
    assert DistributionMatchingConfig(resume_from_checkpoint=value).resume_from_checkpoint == expected


def test_method_names_and_paper_defaults():
    assert DistillConfig().method == ""
    assert DistributionMatchingConfig().method == "dm"
    assert RandomSelectionConfig().method == "random"
    dm = DistributionMatchingConfig()
    assert (dm.num_iterations, dm.lr_images, dm.momentum_images, dm.batch_real) == (20000, 1.0, 0.5, 256)
    assert (dm.net_width, dm.net_depth, dm.net_norm, dm.net_pooling) == (128, 3, "instancenorm", "avgpooling")
    assert RandomSelectionConfig().num_iterations == 0
    with pytest.raises(TypeError):
        DistributionMatchingConfig(method="random")  # the method is fixed by the class


@pytest.mark.parametrize("config_class", [DistillConfig, DistributionMatchingConfig, RandomSelectionConfig])
def test_every_field_has_help_text(config_class):
    for f in dataclasses.fields(config_class):
        assert f.metadata.get("help"), f"{config_class.__name__}.{f.name} has no help text"


def test_to_dict_and_json_string_hold_every_field():
    config = DistributionMatchingConfig(images_per_class=4, seed=7)
    values = config.to_dict()
    assert values["method"] == "dm"
    assert values["images_per_class"] == 4 and values["seed"] == 7
    assert set(values) == {f.name for f in dataclasses.fields(config)}
    assert json.loads(config.to_json_string()) == values


@pytest.mark.parametrize(
    "config",
    [
        DistributionMatchingConfig(images_per_class=3, num_iterations=17, lr_images=0.5, optimizer="adam", seed=4),
        RandomSelectionConfig(images_per_class=5, test_split=None, save_total_limit=None, init="noise"),
    ],
    ids=["dm", "random"],
)
def test_save_pretrained_from_pretrained_round_trip(tmp_path, config):
    path = config.save_pretrained(tmp_path / "run", extra={"source": {"dataset": "sklearn:digits"}})
    assert path == tmp_path / "run" / CONFIG_NAME
    payload = json.loads(path.read_text())
    assert payload["hf_distill_version"] == hf_distill.__version__
    assert payload["method"] == config.method
    assert payload["source"] == {"dataset": "sklearn:digits"}
    assert not list((tmp_path / "run").glob("*.tmp"))  # written atomically, nothing left behind

    for loader in (DistillConfig, type(config), RandomSelectionConfig):  # the file decides the class
        for location in (tmp_path / "run", path, str(path)):
            loaded = loader.from_pretrained(location)
            assert type(loaded) is type(config)
            assert loaded == config
            assert loaded.to_dict() == config.to_dict()


def test_save_pretrained_overwrites_an_older_file(tmp_path):
    DistributionMatchingConfig(images_per_class=1).save_pretrained(tmp_path)
    DistributionMatchingConfig(images_per_class=9).save_pretrained(tmp_path)
    assert DistillConfig.from_pretrained(tmp_path).images_per_class == 9


def test_from_dict_ignores_unknown_keys():
    values = {
        **DistributionMatchingConfig(images_per_class=6).to_dict(),
        "hf_distill_version": "99.0",
        "a_field_from_a_newer_version": [1, 2, 3],
        "source": {"dataset": "x"},
    }
    loaded = DistillConfig.from_dict(values)
    assert isinstance(loaded, DistributionMatchingConfig)
    assert loaded == DistributionMatchingConfig(images_per_class=6)
    assert not hasattr(loaded, "a_field_from_a_newer_version")


def test_from_dict_without_method_uses_the_calling_class():
    assert type(DistributionMatchingConfig.from_dict({"images_per_class": 2})) is DistributionMatchingConfig
    assert type(RandomSelectionConfig.from_dict({})) is RandomSelectionConfig
    base = DistillConfig.from_dict({"images_per_class": 2, "unknown": 1})
    assert type(base) is DistillConfig and base.images_per_class == 2


def test_from_dict_method_key_wins_over_the_calling_class():
    loaded = RandomSelectionConfig.from_dict({"method": "dm", "batch_real": 16})
    assert type(loaded) is DistributionMatchingConfig
    assert loaded.batch_real == 16


def test_from_dict_still_validates():
    with pytest.raises(ValueError, match="images_per_class must be >= 1"):
        DistillConfig.from_dict({"method": "dm", "images_per_class": 0})


def test_unknown_method_lists_available_methods(tmp_path):
    with pytest.raises(ValueError) as excinfo:
        DistillConfig.from_dict({"method": "no-such-method"})
    message = str(excinfo.value)
    assert "'no-such-method'" in message
    assert "Available methods" in message
    for name in METHODS:
        assert name in message

    (tmp_path / CONFIG_NAME).write_text(json.dumps({"method": "no-such-method"}))
    with pytest.raises(ValueError, match="Available methods: .*dm"):
        DistillConfig.from_pretrained(tmp_path)
