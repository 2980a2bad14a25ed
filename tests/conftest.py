import os
from pathlib import Path

import pytest
import torch

# Tests read the device from the environment so the same suite can run on a GPU machine:
#   TAILMIX_TEST_DEVICE=cuda pytest
DEVICE = os.environ.get("TAILMIX_TEST_DEVICE", "cpu")

SHARED_ZIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-lt-jpeg.zip"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def device() -> str:
    return DEVICE


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    # Decoded image caches go to a per-session temporary folder, never the user's cache.
    monkeypatch.setenv("TAILMIX_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def shared_zip_or_skip() -> Path:
    if not SHARED_ZIP.is_file():
        pytest.skip(f"shared CIFAR-10-LT zip not found at {SHARED_ZIP.name} beside the repo "
                    "(only development machines have it)")
    return SHARED_ZIP


def digits_config(**train) -> dict:
    """A fast digits config for end-to-end tests."""
    cfg = {
        "dataset": {"name": "digits", "profile": "exp", "ratio": 20, "n_max": 120},
        "model": {"arch": "small_cnn"},
        "strategy": "ERM",
        "train": {"epochs": 4, "batch_size": 64, "lr": 0.05, "warmup_epochs": 1,
                  "precision": "fp32", "device": DEVICE, **train},
        "eval": {"every": 2, "many_threshold": 60},
        "log": {"progress": False},
    }
    return cfg


def train_interrupted(cfg: dict, out, *, at_epoch: int, monkeypatch, **train_kw) -> None:
    """Train ``cfg`` into ``out`` as if the process were stopped when epoch ``at_epoch``
    (0-based) begins, leaving the checkpoint of the epochs before it."""
    from tailmix.pipeline.build import train
    from tailmix.pipeline.engine import Trainer

    original = Trainer.train_epoch
    reached = []

    def interrupted(self, epoch):
        if epoch == at_epoch:
            reached.append(epoch)
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, **train_kw)
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert reached == [at_epoch]  # stopped by the patch, not by something else
