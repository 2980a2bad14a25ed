"""Images streamed from files, a user's own network, and the stages of a fine-tuning run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import tailmix
from tailmix._validation import ParameterError
from tailmix.data.download import DatasetError
from tailmix.data.files import (
    IN_MEMORY_LIMIT,
    FileDataset,
    ImageFiles,
    decode_image,
    scan_images,
    stream_or_memory,
)
from tailmix.pipeline.build import build_run, load_data, restore
from tailmix.pipeline.config import resolve
from tailmix.pipeline.stages import param_groups
from tailmix.schedules import CosineSchedule, StepSchedule, Then

COUNTS = [40, 20, 10, 6]  # a long-tailed training profile over 4 classes
COLOURS = [(230, 30, 30), (30, 230, 30), (30, 30, 230), (230, 230, 30)]


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_folder(root: Path, counts=COUNTS, test_per_class: int = 6, size: int = 20,
                 seed: int = 0) -> Path:
    """SPLIT/CLASS/IMAGE JPEGs whose class is their colour (and a bright left stripe)."""
    rng = np.random.default_rng(seed)
    for split, per in (("train", counts), ("test", [test_per_class] * len(counts))):
        for c, n in enumerate(per):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(np.array(COLOURS[c]) + rng.normal(0, 20, (size, size + 4, 3)),
                                 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("stream") / "images")


def stream_config(root: Path, **over) -> dict:
    cfg = {"dataset": {"name": "imagefolder", "root": str(root), "profile": "original",
                       "in_memory": False, "image_size": 16, "workers": 0},
           "model": {"arch": "small_cnn"}, "strategy": "ERM",
           "train": {"epochs": 4, "batch_size": 16, "lr": 0.05, "warmup_epochs": 0,
                     "device": "cpu", "seed": 0},
           "eval": {"every": 1, "margins": False}, "log": {"progress": False}}
    for key, value in over.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return cfg


# --------------------------------------------------------------------------- decoding


def test_evaluation_decode_is_the_central_square():
    # 64 x 32 (w x h): left half black, right half white. Shorter side 32 -> 16 gives 32 x 16;
    # the central 16 x 16 spans x 8..24 of it: 8 black columns, then 8 white ones.
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, 32:] = 255
    out = decode_image(_png(pixels), 16, resize=16)
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8
    assert (out[:, :, :7] == 0).all() and (out[:, :, 9:] == 255).all()
    # The default resize is size / 0.875: shorter side 18, the centre 16 of a 36 x 18 image.
    assert decode_image(_png(pixels), 16).shape == (3, 16, 16)


def test_random_resized_crop_is_seeded_and_varies():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    data = _png(pixels)
    a = decode_image(data, 12, rng=np.random.default_rng(5))
    b = decode_image(data, 12, rng=np.random.default_rng(5))
    c = decode_image(data, 12, rng=np.random.default_rng(6))
    assert a.shape == (3, 12, 12) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_jpeg_draft_decode_matches_a_full_decode_closely():
    # A large smooth JPEG decoded at 1/8 scale (draft) is close to decoding it whole.
    yy, xx = np.mgrid[0:512, 0:512]
    pixels = np.stack([xx // 2, yy // 2, (xx + yy) // 4], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    fast = decode_image(buf.getvalue(), 32, resize=32).astype(float)
    slow = decode_image(_png(pixels), 32, resize=32).astype(float)
    assert np.abs(fast - slow).mean() < 3.0


def test_stream_or_memory():
    assert stream_or_memory(False, 10, 3) and not stream_or_memory(True, 10**9, 10**9)
    assert not stream_or_memory("auto", 1000, 3 * 32 * 32)
    assert stream_or_memory("auto", IN_MEMORY_LIMIT // (3 * 96 * 96) + 1, 3 * 96 * 96)


# --------------------------------------------------------------------------- bad files


def _files(root: Path) -> FileDataset:
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    return FileDataset(root=root, train_files=names, train_y=np.zeros(len(names), np.int64),
                       test_files=[], test_y=np.zeros(0, np.int64), classes=["a"])


def test_scan_refuses_or_skips_bad_files(tmp_path):
    root = write_folder(tmp_path / "bad", counts=[5, 5], test_per_class=1)
    good = (root / "train/class0/000.jpg").read_bytes()
    (root / "train/class0/001.jpg").write_bytes(good[:-10])  # cut short
    (root / "train/class1/002.jpg").write_text("not an image")
    data = _files(root)
    with pytest.raises(DatasetError, match=r"2 of 12 image files.*001\.jpg is cut short.*"
                                           r"002\.jpg is not an image"):
        scan_images(data)
    notes = []
    kept = scan_images(data, bad_images="skip", log=notes.append)
    assert len(kept.train_files) == 10 and "skipping 2 of 12" in notes[0]
    assert "train/class0/001.jpg" not in kept.train_files


def test_decode_failure_while_streaming_refuses_or_skips(tmp_path):
    root = write_folder(tmp_path / "late", counts=[4], test_per_class=0)
    files = ImageFiles(_files(root).reader, ["train/class0/000.jpg", "missing.jpg"], 8,
                       workers=0)
    plan = [torch.tensor([0, 1])]
    with pytest.raises(DatasetError, match="missing.jpg"):
        list(files.epoch_batches(plan, seed=3))
    files.bad_images = "skip"
    [(x, keep)] = list(files.epoch_batches(plan, seed=3))
    assert x.shape == (1, 3, 8, 8) and keep.tolist() == [True, False]


def test_a_file_gone_after_the_scan_is_skipped_from_its_batch(tmp_path):
    root = write_folder(tmp_path / "gone")
    cfg = stream_config(root, dataset={"bad_images": "skip"}, train={"epochs": 1})
    run = build_run(cfg, None, log=lambda _: None)
    (root / "train/class0/003.jpg").unlink()
    row = run.trainer.train_epoch(0)
    assert np.isfinite(row["train_loss"])
    refuse = build_run(stream_config(root, train={"epochs": 1}), None, log=lambda _: None)
    (root / "train/class0/004.jpg").unlink()
    with pytest.raises(DatasetError, match="004.jpg"):
        refuse.trainer.train_epoch(0)


# --------------------------------------------------------------------------- streamed runs


def test_streamed_data_has_the_profile_and_statistics(folder):
    data = load_data(stream_config(folder))
    assert data.streaming and data.class_counts == COUNTS
    assert data.train_inputs.shape == (sum(COUNTS), 3, 16, 16)
    assert data.augment.crop_padding == 0 and data.augment.hflip
    # Channel means estimated from the images: the classes' colours, weighted by count.
    expect = (np.array(COLOURS) * np.array(COUNTS)[:, None]).sum(0) / sum(COUNTS) / 255
    assert np.allclose(data.augment.mean.numpy(), expect, atol=0.03)
    # An exp profile cuts the listed files like an in-memory dataset.
    cut = load_data(stream_config(folder, dataset={"profile": "exp", "ratio": 4, "n_max": 20}))
    assert cut.class_counts == [20, 12, 7, 5] and len(cut.train_inputs) == 44


@pytest.mark.slow
@pytest.mark.parametrize("strategy, extra", [
    ("MAMix-DRW", {"weights": {"start_epoch": 3}}),  # with the x0.01 step, as written
    ("ERM", {"sampler": {"name": "class_balanced"}}),
])
def test_streamed_run_learns(folder, tmp_path, strategy, extra):
    cfg = stream_config(folder, strategy=strategy, **extra)
    m = tailmix.train(cfg, tmp_path / "run", log=lambda _: None)
    assert m["final"]["top1"] >= 75.0, m["final"]["top1"]  # chance is 25
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]["top1"] == \
        m["final"]["top1"]


@pytest.mark.slow
def test_worker_processes_do_not_change_the_run(folder):
    rows = []
    for workers in (0, 2):
        run = build_run(stream_config(folder, dataset={"workers": workers}), None,
                        log=lambda _: None)
        rows.append(run.trainer.train_epoch(0)["train_loss"])
    assert rows[0] == rows[1]


def test_streaming_refuses_what_needs_every_image_in_memory(folder):
    with pytest.raises(ParameterError, match="'mixer.space'.*'feature' when images stream"):
        build_run(stream_config(folder, strategy="SMOTE"), None, log=lambda _: None)
    with pytest.raises(ParameterError, match="'dataset.in_memory'.*DeepSMOTE"):
        build_run(stream_config(folder, strategy="DeepSMOTE"), None, log=lambda _: None)
    with pytest.raises(ParameterError, match="'dataset.in_memory'.*whole training set"):
        build_run(stream_config(folder, strategy="MAMix-DRW", mixer={"partner": "balanced"}),
                  None, log=lambda _: None)
    # What the error proposes works: SMOTE's partners from a feature-space table.
    run = build_run(stream_config(folder, strategy="SMOTE", mixer={"space": "feature"}), None,
                    log=lambda _: None)
    assert np.isfinite(run.trainer.train_epoch(0)["train_loss"])
    assert run.trainer.step.mixer.neighbours.fitted


def test_in_memory_folder_matches_the_cached_reader(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("TAILMIX_CACHE", str(tmp_path / "cache"))
    mem = load_data(stream_config(folder, dataset={"in_memory": True, "image_size": None}))
    auto = load_data(stream_config(folder, dataset={"in_memory": "auto", "image_size": None}))
    assert not mem.streaming and not auto.streaming
    assert torch.equal(mem.train_inputs, auto.train_inputs)
    assert mem.train_inputs.shape[1:] == (3, 20, 24)
    # image_size on in-memory images: shorter side to 16, then the central square.
    small = load_data(stream_config(folder, dataset={"in_memory": True, "image_size": 16}))
    assert small.train_inputs.shape[1:] == (3, 16, 16)


# --------------------------------------------------------------------------- a user's network


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU())
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.body(x))


def digits_config(**train) -> dict:
    return {"dataset": {"name": "digits", "profile": "exp", "ratio": 10, "n_max": 120},
            "strategy": "MAMix-DRW",
            "train": {"epochs": 6, "batch_size": 64, "lr": 0.05, "warmup_epochs": 0,
                      "device": "cpu", **train},
            "eval": {"every": 2}, "log": {"progress": False}}


def test_a_users_module_trains_resumes_and_restores(tmp_path):
    torch.manual_seed(0)
    net, lines = TinyNet(), []
    m = tailmix.train(digits_config(lr=0.2), tmp_path / "run", model=net, log=lines.append)
    assert m["final"]["top1"] > 60.0  # chance is 10
    assert any("'fc' (Linear 64 -> 10)" in line for line in lines)
    r = restore(tmp_path / "run" / "checkpoints" / "last.pt", device="cpu", model=net)
    assert r.logits(r.data.test_inputs).argmax(1).eq(r.data.test_labels).float().mean() \
        * 100 == pytest.approx(m["final"]["top1"], abs=1e-6)
    with pytest.raises(ParameterError, match="TinyNet module"):
        restore(tmp_path / "run" / "checkpoints" / "last.pt", device="cpu")
    # A longer run of the same module resumes from the checkpoint, when asked to.
    more = tailmix.train(digits_config(epochs=8, lr=0.2), tmp_path / "run", model=net,
                         resume=True, allow_changes=True, log=lines.append)
    history = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert len(history) == 8 and more["final"]["top1"] > 60.0


def test_a_module_without_a_classifier_is_refused():
    with pytest.raises(ParameterError, match="'model'"):
        tailmix.train(digits_config(epochs=1), None, model=nn.Sequential(nn.Flatten()))


# --------------------------------------------------------------------------- stages


def test_param_groups_scale_the_backbone():
    net = tailmix.models.build_model("small_cnn", num_classes=3, input_shape=(1, 8, 8))
    assert len(param_groups(net, lr=0.1, backbone_lr=None)) == 1
    body, head = param_groups(net, lr=0.1, backbone_lr=0.01)
    assert body["lr_scale"] == pytest.approx(0.1) and head["lr_scale"] == 1.0
    assert {id(p) for p in head["params"]} == {id(p) for p in net.head.parameters()}
    assert len(body["params"]) + len(head["params"]) == len(list(net.parameters()))


def _state(net: nn.Module, head: bool) -> dict:
    names = {n for n, _ in net.head.named_parameters(prefix="head")}
    return {k: v.clone() for k, v in net.state_dict().items()
            if (k in names or k.startswith("head.")) == head}


def test_frozen_backbone_then_crt(tmp_path):
    cfg = digits_config(epochs=3)
    cfg["model"] = {"arch": "small_cnn", "freeze_backbone_epochs": 1, "backbone_lr": 0.01}
    cfg["crt"] = {"epochs": 2, "lr": 0.1}
    run = build_run(cfg, None, log=lambda _: None)
    net, trainer = run.trainer.model, run.trainer
    assert trainer.epochs == 5
    assert [g["lr_scale"] for g in trainer.optimizer.param_groups] == [pytest.approx(0.2), 1.0]
    body, head = _state(net, False), _state(net, True)
    trainer.train_epoch(0)  # backbone frozen: weights and batch-norm statistics kept
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in body.items())
    assert not all(torch.equal(v, net.state_dict()[k]) for k, v in head.items())
    trainer.train_epoch(1)
    trainer.train_epoch(2)
    assert not all(torch.equal(v, net.state_dict()[k]) for k, v in body.items())
    body = _state(net, False)
    # cRT: class-balanced anchors, the head starts again, the backbone stays.
    idx, _ = trainer.sampler.epoch_plan(3, trainer.seed, torch.Generator())
    freq = np.bincount(run.data.train_labels[idx].numpy(), minlength=10) / len(idx)
    assert np.abs(freq - 0.1).max() < 0.04
    head_before = _state(net, True)
    trainer.train_epoch(3)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in body.items())
    assert not any(torch.equal(v, net.state_dict()[k]) for k, v in head_before.items())
    assert trainer.lr_schedule(3, 0.0) == pytest.approx(0.1)
    assert trainer.lr_schedule(4, 1.0) == pytest.approx(0.0)


def test_schedules():
    cos = CosineSchedule(base_lr=0.2, warmup_epochs=2, epochs=10)
    assert cos(0, 0.5) == pytest.approx(0.05)  # warm-up: 0.2 * 0.5 / 2
    assert cos(2, 0.0) == pytest.approx(0.2)
    assert cos(5, 1.0) == pytest.approx(0.1)  # half-way through the 8 cosine epochs
    assert cos(9, 1.0) == pytest.approx(0.0)
    step = StepSchedule(base_lr=0.1, warmup_epochs=0, milestones=[2], factors=[0.1])
    then = Then(step, cos, switch_epoch=4)
    assert then(1, 1.0) == 0.1 and then(3, 1.0) == pytest.approx(0.01)
    assert then(4, 0.0) == cos(0, 0.0)
    spec = resolve({"train": {"schedule": "cosine"}})
    assert spec.milestones == () and spec.train["lr_factors"] == []
    assert resolve({}).milestones == (160, 180)
    with pytest.raises(ParameterError, match="'train.milestones'.*cosine"):
        resolve({"train": {"schedule": "cosine", "milestones": [0.5], "lr_factors": [0.1]}})
    with pytest.raises(ParameterError, match="'model.freeze_backbone_epochs'"):
        resolve({"train": {"epochs": 5}, "model": {"freeze_backbone_epochs": 5}})
