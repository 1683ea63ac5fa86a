"""Tests for the data layer (`hf_distill.data`). All offline, on tiny in-memory datasets."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Array3D, ClassLabel, Dataset, DatasetDict, Features, Image, List, Value
from datasets.exceptions import DatasetNotFoundError

import hf_distill.data as data_module
from hf_distill.constants import DIGITS_SOURCE
from hf_distill.data import load_source, make_digits_dataset
from hf_distill.modalities.image_data import ImageData, find_columns, validate_image_dataset
from hf_distill.modalities.image_decoding import prepare_images
from hf_distill.splits import ClassBalancedSampler

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NAMES = ["cat", "dog", "frog"]


def _gray(rng: np.random.Generator, size=(6, 6)) -> np.ndarray:
    return rng.integers(0, 256, size=size, dtype=np.uint8)


def _rgb(rng: np.random.Generator, size=(6, 6)) -> np.ndarray:
    return rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)


def _image_dataset(arrays, labels, *, column="image", names=NAMES, label_column="label") -> Dataset:
    features = Features({column: Image(), label_column: ClassLabel(names=names)})
    return Dataset.from_dict(
        {column: [PIL.Image.fromarray(a) for a in arrays], label_column: list(labels)}, features=features
    )


@pytest.fixture
def gray_arrays():
    rng = np.random.default_rng(0)
    return [_gray(rng) for _ in range(12)]


@pytest.fixture
def gray_ds(gray_arrays):
    return _image_dataset(gray_arrays, [i % 3 for i in range(12)])


@pytest.fixture
def rgb_arrays():
    rng = np.random.default_rng(1)
    return [_rgb(rng) for _ in range(6)]


@pytest.fixture
def rgb_ds(rgb_arrays):
    return _image_dataset(rgb_arrays, [0, 1, 2, 0, 1, 2], column="img")


# ---------------------------------------------------------------------------------------------------------------------
# find_columns
# ---------------------------------------------------------------------------------------------------------------------


def test_find_columns_image_and_img(gray_ds, rgb_ds):
    assert find_columns(gray_ds) == ("image", "label")
    assert find_columns(rgb_ds) == ("img", "label")


def test_find_columns_prefers_label_classlabel():
    ds = Dataset.from_dict(
        {"coarse": [0, 1], "image": [PIL.Image.new("L", (2, 2))] * 2, "label": [1, 0]},
        features=Features(
            {"coarse": ClassLabel(names=["x", "y"]), "image": Image(), "label": ClassLabel(names=["p", "q"])}
        ),
    )
    assert find_columns(ds) == ("image", "label")


def test_find_columns_array_column_and_int_labels():
    ds = Dataset.from_dict(
        {"pixel_values": np.zeros((2, 1, 3, 3), dtype=np.float32).tolist(), "labels": [0, 1]},
        features=Features({"pixel_values": List(List(List(Value("float32")))), "labels": Value("int64")}),
    )
    assert find_columns(ds) == ("pixel_values", "labels")
    ds3d = Dataset.from_dict(
        {"pixel_values": np.zeros((2, 1, 3, 3), dtype=np.float32), "label": [0, 1]},
        features=Features({"pixel_values": Array3D((1, 3, 3), "float32"), "label": ClassLabel(names=["a", "b"])}),
    )
    assert find_columns(ds3d) == ("pixel_values", "label")


def test_find_columns_custom_mapping():
    features = Features({"a": Image(), "photo": Image(), "y": Value("int32")})
    img = PIL.Image.new("L", (2, 2))
    ds = Dataset.from_dict({"a": [img, img], "photo": [img, img], "y": [0, 1]}, features=features)
    # "y" is not a recognised label name: the error says how to fix it, with options that exist.
    with pytest.raises(ValueError, match=r"label_column=<column> \(--image_column / --text_column / --label_column\)"):
        find_columns(ds)
    assert find_columns(ds, column_mapping={"image": "photo", "label": "y"}) == ("photo", "y")
    with pytest.raises(ValueError, match=r"image_column='nope' \(--image_column\) is not a column"):
        find_columns(ds, column_mapping={"image": "nope"})
    with pytest.raises(ValueError, match="Unknown column_mapping keys"):
        find_columns(ds, column_mapping={"pixels": "a"})


def test_find_columns_no_label_column():
    ds = Dataset.from_dict({"image": [PIL.Image.new("L", (2, 2))]}, features=Features({"image": Image()}))
    with pytest.raises(ValueError, match=r"Could not find a label column.*--label_column"):
        find_columns(ds)


def test_find_columns_string_labels():
    ds = Dataset.from_dict(
        {"image": [PIL.Image.new("L", (2, 2))] * 2, "label": ["cat", "dog"]},
        features=Features({"image": Image(), "label": Value("string")}),
    )
    with pytest.raises(ValueError, match="class_encode_column"):
        find_columns(ds)
    with pytest.raises(ValueError, match="ClassLabel or an integer"):
        find_columns(ds, column_mapping={"label": "label"})


def test_find_columns_no_image_column():
    ds = Dataset.from_dict({"text": ["a"], "label": [0]})
    with pytest.raises(ValueError, match=r"Could not find an image column.*--image_column"):
        find_columns(ds)


# ---------------------------------------------------------------------------------------------------------------------
# validate_image_dataset
# ---------------------------------------------------------------------------------------------------------------------


def test_validate_ok(gray_ds):
    validate_image_dataset(gray_ds, "image", "label", images_per_class=4)


def test_validate_too_few_rows_per_class(gray_arrays):
    ds = _image_dataset(gray_arrays[:9], [0, 0, 0, 0, 1, 1, 1, 1, 2])
    with pytest.raises(ValueError) as excinfo:
        validate_image_dataset(ds, "image", "label", images_per_class=2)
    message = str(excinfo.value)
    assert "'frog'" in message and "1 rows" in message
    assert "images_per_class" in message and "init='noise'" in message
    # noise init does not need real rows
    validate_image_dataset(ds, "image", "label", images_per_class=2, init="noise")


def test_validate_empty_split(gray_ds):
    with pytest.raises(ValueError, match=r"'test' split is empty"):
        validate_image_dataset(gray_ds.select([]), "image", "label", split="test")


def test_validate_labels_out_of_range(gray_arrays):
    ds = Dataset.from_dict(
        {"image": [PIL.Image.fromarray(a) for a in gray_arrays[:3]], "label": [0, -1, 1]},
        features=Features({"image": Image(), "label": Value("int64")}),
    )
    with pytest.raises(ValueError, match=r"outside \[0, 2\).*filter"):
        validate_image_dataset(ds, "image", "label")


def test_validate_does_not_decode_images(gray_ds, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("images were decoded")

    monkeypatch.setattr(Image, "decode_example", fail)
    validate_image_dataset(gray_ds, "image", "label", images_per_class=1)


# ---------------------------------------------------------------------------------------------------------------------
# prepare_images
# ---------------------------------------------------------------------------------------------------------------------


def test_prepare_gray(gray_ds, gray_arrays):
    data = prepare_images(gray_ds, "image", "label")
    assert data.images.shape == (12, 1, 6, 6) and data.images.dtype == torch.float32
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == [i % 3 for i in range(12)]
    assert data.class_names == NAMES and data.num_classes == 3
    assert data.image_shape == (1, 6, 6) and data.num_channels == 1 and data.image_size == (6, 6)
    pixels = np.stack(gray_arrays).astype(np.float64) / 255.0
    np.testing.assert_allclose(data.mean, [pixels.mean()], rtol=1e-6)
    np.testing.assert_allclose(data.std, [pixels.std()], rtol=1e-6)
    # denormalize inverts the normalisation
    np.testing.assert_allclose(data.denormalize(data.images)[:, 0].numpy(), pixels, atol=1e-6)
    np.testing.assert_allclose(data.denormalize(data.images[0])[0].numpy(), pixels[0], atol=1e-6)
    np.testing.assert_allclose(data.normalize(data.denormalize(data.images)), data.images, atol=1e-5)


def test_prepare_mean_std_given(gray_ds, gray_arrays):
    data = prepare_images(gray_ds, "image", "label", mean=[0.5], std=[0.25])
    assert data.mean == [0.5] and data.std == [0.25]
    expected = (np.stack(gray_arrays).astype(np.float32) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(data.images[:, 0].numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="one value per channel"):
        prepare_images(gray_ds, "image", "label", mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])


def test_prepare_rgb_and_channel_conversion(rgb_ds, rgb_arrays):
    data = prepare_images(rgb_ds, "img", "label")
    assert data.images.shape == (6, 3, 6, 6) and len(data.mean) == 3
    np.testing.assert_allclose(
        data.denormalize(data.images).permute(0, 2, 3, 1).numpy(), np.stack(rgb_arrays) / 255.0, atol=1e-6
    )
    gray = prepare_images(rgb_ds, "img", "label", num_channels=1, mean=[0.0], std=[1.0])
    luminance = (np.stack(rgb_arrays) / 255.0) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(gray.images[:, 0].numpy(), luminance, atol=1e-5)


def test_prepare_gray_repeated_to_three_channels(gray_ds, gray_arrays):
    data = prepare_images(gray_ds, "image", "label", num_channels=3, mean=[0.0] * 3, std=[1.0] * 3)
    assert data.images.shape == (12, 3, 6, 6)
    for c in range(3):
        np.testing.assert_allclose(data.images[:, c].numpy(), np.stack(gray_arrays) / 255.0, atol=1e-6)


def test_prepare_rgba_composited_on_black():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[1, :, 3] = 255, 0, 128
    ds = _image_dataset([rgba], [0])
    data = prepare_images(ds, "image", "label", mean=[0.0] * 3, std=[1.0] * 3)
    assert data.images.shape == (1, 3, 2, 2)
    assert data.images[0, :, 0, 0].tolist() == pytest.approx([200 / 255] * 3, abs=1e-6)
    assert data.images[0, :, 0, 1].tolist() == pytest.approx([0.0] * 3)
    assert data.images[0, 0, 1, 0].item() == pytest.approx(100 / 255, abs=1e-6)


def test_prepare_mixed_modes_majority(gray_arrays, rgb_arrays, caplog):
    ds = _image_dataset(gray_arrays[:3] + rgb_arrays[:1], [0, 1, 2, 0])
    with caplog.at_level(logging.WARNING, logger="hf_distill.data"):
        data = prepare_images(ds, "image", "label")
    assert data.images.shape == (4, 1, 6, 6)
    assert "mixes images" in caplog.text
    data3 = prepare_images(ds, "image", "label", num_channels=3)
    assert data3.images.shape == (4, 3, 6, 6)
    assert data3.labels.tolist() == [0, 1, 2, 0]


def test_prepare_mixed_sizes(gray_arrays):
    rng = np.random.default_rng(2)
    ds = _image_dataset(gray_arrays[:2] + [_gray(rng, (8, 10))], [0, 1, 2])
    with pytest.raises(ValueError, match=r"different sizes.*image_size=<side> \(--image_size\)"):
        prepare_images(ds, "image", "label")
    data = prepare_images(ds, "image", "label", image_size=(4, 5))
    assert data.images.shape == (3, 1, 4, 5)
    assert prepare_images(ds, "image", "label", image_size=6).image_size == (6, 6)


def test_prepare_resize_constant_image_keeps_value():
    ds = _image_dataset([np.full((8, 8), 51, dtype=np.uint8)], [0])
    data = prepare_images(ds, "image", "label", image_size=(3, 3), mean=[0.0], std=[1.0])
    np.testing.assert_allclose(data.images.numpy(), np.full((1, 1, 3, 3), 0.2), atol=1e-5)


def test_prepare_float_array_column_used_as_is():
    values = np.random.default_rng(3).random((4, 1, 3, 3)).astype(np.float32)
    ds = Dataset.from_dict(
        {"pixel_values": values, "label": [0, 1, 0, 1]},
        features=Features({"pixel_values": Array3D((1, 3, 3), "float32"), "label": Value("int64")}),
    )
    data = prepare_images(ds, "pixel_values", "label", mean=[0.0], std=[1.0])
    np.testing.assert_allclose(data.images.numpy(), values, atol=1e-7)
    assert data.class_names == ["0", "1"]


def test_prepare_channel_last_int_arrays_and_ragged_rows():
    rng = np.random.default_rng(4)
    hwc = rng.integers(0, 256, (3, 4, 4, 3)).astype(np.uint8)
    ds = Dataset.from_dict(
        {"pixel_values": hwc, "label": [0, 1, 1]},
        features=Features({"pixel_values": Array3D((4, 4, 3), "uint8"), "label": Value("int64")}),
    )
    data = prepare_images(ds, "pixel_values", "label", mean=[0.0] * 3, std=[1.0] * 3)
    np.testing.assert_allclose(data.images.permute(0, 2, 3, 1).numpy(), hwc / 255.0, atol=1e-6)
    small, large = rng.integers(0, 256, (4, 4, 3)), rng.integers(0, 256, (6, 6, 3))
    ragged = Dataset.from_dict({"img": [small.tolist(), large.tolist()], "label": [0, 1]})
    with pytest.raises(ValueError, match="image_size"):
        prepare_images(ragged, "img", "label")
    data = prepare_images(ragged, "img", "label", image_size=4, mean=[0.0] * 3, std=[1.0] * 3)
    assert data.images.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(data.images[0].permute(1, 2, 0).numpy(), small / 255.0, atol=1e-6)


def test_prepare_undecoded_image_feature(rgb_ds, rgb_arrays):
    ds = rgb_ds.cast_column("img", Image(decode=False)).with_format("torch")
    assert find_columns(ds) == ("img", "label")
    data = prepare_images(ds, "img", "label", mean=[0.0] * 3, std=[1.0] * 3)
    np.testing.assert_allclose(data.images.permute(0, 2, 3, 1).numpy(), np.stack(rgb_arrays) / 255.0, atol=1e-6)


def test_prepare_nan_in_float_column():
    values = np.zeros((3, 1, 2, 2), dtype=np.float32)
    values[1, 0, 0, 0] = np.nan
    values[2, 0, 1, 1] = np.inf
    ds = Dataset.from_dict(
        {"pixel_values": values.tolist(), "label": [0, 1, 0]},
        features=Features({"pixel_values": List(List(List(Value("float32")))), "label": Value("int64")}),
    )
    with pytest.raises(ValueError, match=r"'pixel_values' contains 2 NaN/inf"):
        prepare_images(ds, "pixel_values", "label")


def test_prepare_after_select_keeps_row_order(gray_ds, gray_arrays):
    subset = gray_ds.select([5, 0, 7])
    data = prepare_images(subset, "image", "label", mean=[0.0], std=[1.0], batch_size=2)
    expected = np.stack([gray_arrays[i] for i in (5, 0, 7)]) / 255.0
    np.testing.assert_allclose(data.images[:, 0].numpy(), expected, atol=1e-6)
    assert data.labels.tolist() == [2, 0, 1]


# ---------------------------------------------------------------------------------------------------------------------
# ImageData
# ---------------------------------------------------------------------------------------------------------------------


def test_image_data_subset_and_indices_by_class(gray_ds):
    data = prepare_images(gray_ds, "image", "label")
    by_class = data.indices_by_class()
    assert [t.tolist() for t in by_class] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    assert data.indices_by_class() is by_class
    sub = data.subset(by_class[1])
    assert len(sub) == 4 and sub.labels.tolist() == [1] * 4
    assert sub.mean == data.mean and sub.class_names == data.class_names
    assert torch.equal(sub.images, data.images[by_class[1]])


def test_image_data_direct_denormalize_and_checks():
    x = torch.rand(5, 3, 4, 4)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    normed = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    data = ImageData(images=normed, labels=torch.zeros(5, dtype=torch.long), class_names=["a"], mean=mean, std=std)
    torch.testing.assert_close(data.denormalize(normed), x, atol=1e-6, rtol=0)
    assert data.denormalize(normed * 100).max() <= 1.0 and data.denormalize(normed * 100).min() >= 0.0
    with pytest.raises(ValueError, match="one value per channel"):
        ImageData(images=normed, labels=torch.zeros(5, dtype=torch.long), class_names=["a"], mean=[0.5], std=[0.5])


# ---------------------------------------------------------------------------------------------------------------------
# load_source / make_digits_dataset
# ---------------------------------------------------------------------------------------------------------------------


def test_load_source_dataset_and_dict(gray_ds, caplog):
    assert load_source(gray_ds) == (gray_ds, None)
    dd = DatasetDict({"train": gray_ds, "test": gray_ds.select(range(3))})
    train, test = load_source(dd)
    assert len(train) == 12 and len(test) == 3
    with pytest.raises(ValueError, match=r"available splits: \['train', 'test'\]"):
        load_source(dd, train_split="training")
    with caplog.at_level(logging.WARNING, logger="hf_distill.data"):
        train, test = load_source(DatasetDict({"train": gray_ds}))
    assert test is None and "'test' not found" in caplog.text
    assert load_source(dd, test_split=None)[1] is None


def test_load_source_save_to_disk(gray_ds, tmp_path):
    gray_ds.save_to_disk(str(tmp_path / "single"))
    train, test = load_source(str(tmp_path / "single"))
    assert test is None and len(train) == 12 and find_columns(train) == ("image", "label")
    DatasetDict({"train": gray_ds, "test": gray_ds.select(range(2))}).save_to_disk(str(tmp_path / "dict"))
    train, test = load_source(tmp_path / "dict")
    assert len(train) == 12 and len(test) == 2


def test_load_source_parquet_folder(gray_ds, tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    gray_ds.to_parquet(str(folder / "train.parquet"))
    gray_ds.select(range(3)).to_parquet(str(folder / "test.parquet"))
    train, test = load_source(str(folder), cache_dir=str(tmp_path / "cache"))
    assert len(train) == 12 and len(test) == 3
    assert isinstance(train.features["image"], Image) and train.features["label"].names == NAMES


def test_load_source_imagefolder(tmp_path):
    for split in ("train", "test"):
        for name in ("ant", "bee"):
            (tmp_path / "tree" / split / name).mkdir(parents=True)
            PIL.Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / "tree" / split / name / "0.png")
    train, test = load_source(str(tmp_path / "tree"), cache_dir=str(tmp_path / "cache"))
    assert len(train) == 2 and len(test) == 2
    assert find_columns(train) == ("image", "label") and train.features["label"].names == ["ant", "bee"]


def test_load_source_missing_local_path(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_source(str(tmp_path / "missing"))


def test_load_source_hub_errors_are_wrapped(monkeypatch):
    import hf_distill.data

    # Errors raised by `load_dataset` itself, past the one-request access check (tested in test_hub.py).
    monkeypatch.setattr(hf_distill.data, "check_hub_access", lambda *args, **kwargs: None)

    def not_found(*args, **kwargs):
        raise DatasetNotFoundError("Dataset 'someone/nothing' doesn't exist on the Hub")

    monkeypatch.setattr(data_module, "load_dataset", not_found)
    with pytest.raises(ValueError, match=r"'someone/nothing'.*spelled correctly"):
        load_source("someone/nothing")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(data_module, "load_dataset", offline)
    with pytest.raises(RuntimeError, match=r"'someone/nothing'.*network"):
        load_source("someone/nothing")


def test_digits_source():
    train, test = load_source(DIGITS_SOURCE)
    assert len(train) + len(test) == 1797
    assert abs(len(test) - 0.2 * 1797) <= 10
    assert train.features["label"].names == [str(i) for i in range(10)]
    image = train[0]["image"]
    assert image.mode == "L" and image.size == (8, 8)
    assert np.asarray(image).max() <= 255
    test_counts = np.bincount(np.asarray(test["label"]), minlength=10)
    train_counts = np.bincount(np.asarray(train["label"]), minlength=10)
    np.testing.assert_allclose(test_counts / (test_counts + train_counts), 0.2, atol=0.01)
    again = make_digits_dataset()
    assert again["test"]["label"][:] == test["label"][:]
    assert make_digits_dataset(seed=1)["test"]["label"][:] != test["label"][:]
    data = prepare_images(train, "image", "label")
    assert data.images.shape == (len(train), 1, 8, 8)


# ---------------------------------------------------------------------------------------------------------------------
# ClassBalancedSampler
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def labels():
    return torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 2, 2])


def test_sampler_determinism_and_membership(labels):
    sampler = ClassBalancedSampler(labels, 3)
    a = sampler.sample(2, 3, torch.Generator().manual_seed(7))
    b = sampler.sample(2, 3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.dtype == torch.int64
    assert (labels[a] == 2).all()
    assert len(set(a.tolist())) == 3  # without replacement
    full = sampler.sample(0, 4, torch.Generator().manual_seed(0))
    assert sorted(full.tolist()) == [0, 3, 6, 9]
    more = sampler.sample(1, 10, torch.Generator().manual_seed(0))  # more than the class has: with replacement
    assert more.numel() == 10 and (labels[more] == 1).all()


def test_sampler_sample_classes_and_global_rng(labels):
    sampler = ClassBalancedSampler(labels, 3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    out = sampler.sample_classes([2, 0], 2, torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert out.shape == (4,)
    assert labels[out].tolist() == [2, 2, 0, 0]


def test_sampler_empty_class():
    with pytest.raises(ValueError, match=r"Classes \[1\] have no rows"):
        ClassBalancedSampler(torch.tensor([0, 2, 2]), 3)


# ---------------------------------------------------------------------------------------------------------------------
# Real data (optional)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="shared MNIST data not available")
def test_real_mnist_statistics():
    train, test = load_source(str(SHARED_DATA / "mnist"))
    assert find_columns(train) == ("image", "label")
    validate_image_dataset(train, "image", "label", images_per_class=50)
    start = time.perf_counter()
    train_data = prepare_images(train, "image", "label")
    elapsed = time.perf_counter() - start
    assert train_data.images.shape == (60000, 1, 28, 28)
    assert train_data.mean[0] == pytest.approx(0.1307, abs=1e-3)
    assert train_data.std[0] == pytest.approx(0.3081, abs=1e-3)
    assert elapsed < 60, f"decoding 60k MNIST images took {elapsed:.1f}s"
    test_data = prepare_images(test, "image", "label", mean=train_data.mean, std=train_data.std)
    assert test_data.images.shape == (10000, 1, 28, 28) and test_data.mean == train_data.mean
    assert test_data.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
