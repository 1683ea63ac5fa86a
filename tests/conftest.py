"""Shared fixtures: tiny in-memory image datasets, a tiny distillation config and a local Hub server.

Nothing reaches the real Hugging Face Hub. The Hub clients read their endpoint when they are imported, so before
anything imports them this module points `HF_ENDPOINT` at a reserved localhost port, where the `hub_server`
fixture serves an in-memory Hub (`tests/hub_server.py`) on demand; a test that does not use it and still calls the
Hub gets a quick "connection refused". Xet is disabled (large files go through the server's Git LFS endpoints),
`HF_HOME` is a fresh temporary folder (no cached files or stored token leak in or out) and `HF_TOKEN` is a dummy.

`HF_HUB_OFFLINE` is deliberately left alone (a Hub test needs to control it); telemetry and progress bars are
turned off.
"""

import atexit
import os
import shutil
import socket
import tempfile


def _reserve_local_port() -> int:
    # Bind port 0 to let the OS pick a free port, then release it for the `hub_server` fixture to bind later.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Subprocesses that import this module (tests/distributed_worker.py) inherit the parent's settings instead of
# reserving another port and creating another HF_HOME.
if "HF_DISTILL_TESTS_HUB_PORT" not in os.environ:
    os.environ["HF_DISTILL_TESTS_HUB_PORT"] = str(_reserve_local_port())
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf_distill_tests_hf_home_")
    atexit.register(shutil.rmtree, os.environ["HF_HOME"], True)
HUB_PORT = int(os.environ["HF_DISTILL_TESTS_HUB_PORT"])
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{HUB_PORT}"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_TOKEN"] = "hf_local_test_token"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image  # noqa: E402
from hub_server import HubServer  # noqa: E402 - tests/ is on sys.path, as for this conftest
from text_helpers import save_tiny_encoder  # noqa: E402

from hf_distill import DistributionMatchingConfig  # noqa: E402

TINY_CONFIG_DEFAULTS = {
    "net_width": 8,
    "net_depth": 2,
    "batch_real": 8,
    "images_per_class": 2,
    "num_iterations": 3,
    "eval_epochs": 2,
    "eval_num_models": 1,
    "save_steps": 0,
    "logging_steps": 1,
}


#: A tiny student and teacher for `KDConfig(distilled_dataset=..., output_dir=..., **TINY_KD_SETTINGS)`.
TINY_KD_SETTINGS = {
    "student_config": '{"net_width": 8, "net_depth": 2}',
    "num_train_epochs": 1,
    "train_teacher": True,
    "teacher_epochs": 1,
    "teacher_net_width": 8,
    "teacher_net_depth": 2,
    "disable_tqdm": True,
    "report_to": "none",
}


def make_image_dataset_dict(
    num_classes: int = 3, rows_per_class: int = 10, size: int = 8, mode: str = "L", seed: int = 0
) -> DatasetDict:
    """A `DatasetDict(train, test)` of random `size`x`size` images with `Image()` and `ClassLabel` features.

    Class `c` has its own brightness and a bright horizontal band at its own height, so the problem is easy to
    learn (also for instance-normalised ConvNets, which ignore global brightness); rows are interleaved by class
    (0, 1, 2, 0, 1, 2, ...). The test split has `max(2, rows_per_class // 2)` rows per class.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}.")
    rng = np.random.default_rng(seed)
    names = [f"class_{c}" for c in range(num_classes)]
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    shape = (size, size) if mode == "L" else (size, size, 3)

    def split(rows: int) -> Dataset:
        images, labels = [], []
        for _ in range(rows):
            for c in range(num_classes):
                level = 200.0 * (c + 0.5) / num_classes
                values = rng.normal(level, 15.0, size=shape)
                values[c * size // num_classes : (c + 1) * size // num_classes] += 80.0
                pixels = np.clip(values, 0, 255).astype(np.uint8)
                images.append(PIL.Image.fromarray(pixels))  # uint8 (H, W) -> L, (H, W, 3) -> RGB
                labels.append(c)
        return Dataset.from_dict({"image": images, "label": labels}, features=features)

    return DatasetDict({"train": split(rows_per_class), "test": split(max(2, rows_per_class // 2))})


@pytest.fixture
def tiny_image_dataset():
    """Factory `make(num_classes=3, rows_per_class=10, size=8, mode="L", seed=0) -> DatasetDict(train, test)`."""
    return make_image_dataset_dict


@pytest.fixture
def tiny_config():
    """Factory `make(**overrides) -> DistributionMatchingConfig` with CPU-sized settings (no `output_dir`)."""

    def make(**overrides) -> DistributionMatchingConfig:
        return DistributionMatchingConfig(**{**TINY_CONFIG_DEFAULTS, **overrides})

    return make


@pytest.fixture(scope="session")
def hub_server():
    """The local in-memory Hub (`tests.hub_server.HubServer`) at `HF_ENDPOINT`, started once per session.

    State persists across tests: prefer the `hub` fixture, which resets it.
    """
    server = HubServer(port=HUB_PORT).start()
    yield server
    server.stop()


@pytest.fixture
def hub(hub_server, monkeypatch):
    """The `hub_server`, emptied (`reset()`), with `datasets`' parquet-export lookups turned off.

    `datasets.config.USE_PARQUET_EXPORT = False` keeps `load_dataset` away from the dataset viewer's host, and
    `HfFileSystem`'s instance cache is cleared so that no directory listing of a previous test's repo is reused.
    """
    import datasets
    from huggingface_hub import HfFileSystem

    hub_server.reset()
    HfFileSystem.clear_instance_cache()
    monkeypatch.setattr(datasets.config, "USE_PARQUET_EXPORT", False)
    yield hub_server
    HfFileSystem.clear_instance_cache()


#: Experts of `tiny_experts` hold this many epochs: enough for MTT's default settings at IPC 2 (max_start_epoch 20,
#: expert_epochs 2), so a config with only `expert_path` added (the generic method tests) works with them.
TINY_EXPERT_EPOCHS = 21


@pytest.fixture(scope="session")
def tiny_experts(tmp_path_factory) -> str:
    """A folder of 2 expert trajectories x 21 epochs for the tiny dataset (`make_image_dataset_dict()`: 3 classes,
    8x8 grayscale) and the tiny ConvNet (`net_width=8, net_depth=2`), for `TrajectoryMatchingConfig(expert_path=...)`.
    """
    from hf_distill.experts import train_experts_for_config
    from hf_distill.methods.trajectory_matching import TrajectoryMatchingConfig

    splits = make_image_dataset_dict()
    config = TrajectoryMatchingConfig(net_width=8, net_depth=2, images_per_class=2)
    output_dir = tmp_path_factory.mktemp("tiny_experts")
    train_experts_for_config(
        config, splits["train"], splits["test"], output_dir, 2, TINY_EXPERT_EPOCHS, show_progress=False
    )
    return str(output_dir)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tests on tiny tensors (`pytestmark = usefixtures("one_torch_thread")`).

    Thread-pool start-up dominates every op on tiny networks, and on a busy 2-core machine (tests beside a
    benchmark) spinning threads make each op many times slower.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A folder holding a tiny BERT and its WordPiece tokenizer (loaded by path like a Hub id)."""
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"))
