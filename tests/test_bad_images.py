"""``dataset.bad_images``: a file that cannot be decoded is refused in one line naming it, or
with ``skip`` left out wherever images are read (the scan, decoding into memory, the first
size, the channel-statistics sample, streamed batches), logged and counted in metrics.json."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tailmix.data.download import DatasetError
from tailmix.data.files import FileDataset, ImageFiles
from tailmix.pipeline.build import load_data

COUNTS = [6, 4]


def _jpeg(rng: np.random.Generator, colour: int) -> bytes:
    pixels = np.clip(colour + rng.normal(0, 25, (16, 16, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _scrambled(jpeg: bytes) -> bytes:
    """A JPEG whose header and end marker are intact (the scan passes it) but whose Huffman
    table is bogus: Pillow fails only when it decodes the pixels."""
    data = bytearray(jpeg)
    counts = data.find(b"\xff\xc4") + 5  # the marker, its length, the table's class and id
    data[counts:counts + 16] = b"\xff" * 16
    return bytes(data)


def write_folder(root: Path) -> Path:
    """SPLIT/CLASS/IMAGE JPEGs of 16x16, two classes."""
    rng = np.random.default_rng(0)
    for split, per in (("train", COUNTS), ("test", [2, 2])):
        for c, n in enumerate(per):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"{i:03d}.jpg").write_bytes(_jpeg(rng, 60 + 120 * c))
    return root


def config(root: Path, **dataset) -> dict:
    return {"dataset": {"name": "imagefolder", "root": str(root), "profile": "original",
                        "workers": 0, **dataset},
            "model": {"arch": "small_cnn"}, "strategy": "ERM",
            "train": {"epochs": 1, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0,
                      "device": "cpu", "seed": 0},
            "eval": {"every": 1, "margins": False}, "log": {"progress": False}}


def _one_line(error: pytest.ExceptionInfo, *names: str) -> str:
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text
    for name in names:
        assert name in text
    return text


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_folder(tmp_path / "images")


def test_skip_in_memory_leaves_out_unreadable_files(folder):
    (folder / "train/class0/002.jpg").write_bytes(b"")  # a zero-byte file
    (folder / "train/class1/001.jpg").write_bytes(_scrambled(
        (folder / "train/class1/001.jpg").read_bytes()))
    with pytest.raises(DatasetError) as err:
        load_data(config(folder, in_memory=True))
    _one_line(err, "002.jpg", "dataset.bad_images: skip")
    notes = []
    data = load_data(config(folder, in_memory=True, bad_images="skip"), log=notes.append)
    assert not data.streaming and data.class_counts == [5, 3]
    assert data.skipped_images == 2
    [note] = [n for n in notes if "skipping" in n]
    assert "002.jpg" in note and "001.jpg" in note


def test_skip_when_a_file_list_is_decoded_into_memory(tmp_path, folder):
    """The scan passes a file whose pixels do not decode; decoding into memory leaves it
    out with its label."""
    for split in ("train", "test"):
        names = sorted(p.relative_to(folder).as_posix() for p in (folder / split).rglob("*"))
        (folder / f"{split}.txt").write_text(
            "".join(f"{n} {int('class1' in n)}\n" for n in names if n.endswith(".jpg")))
    bad = folder / "train/class1/002.jpg"
    bad.write_bytes(_scrambled(bad.read_bytes()))
    cfg = config(folder, name="filelist", in_memory=True, image_size=16,
                 options={"train": "train.txt", "test": "test.txt"})
    with pytest.raises(DatasetError) as err:
        load_data(cfg)
    _one_line(err, "class1/002.jpg", "dataset.bad_images: skip")
    cfg["dataset"]["bad_images"] = "skip"
    data = load_data(cfg)
    assert data.class_counts == [6, 3] and data.skipped_images == 1
    assert len(data.train_labels) == len(data.train_inputs) == 9


def test_skip_while_streaming_reaches_the_statistics_sample(folder):
    """Every training image is in the channel-statistics sample; a file that fails there is
    left out of it and counted once, also when its batches meet it again."""
    bad = folder / "train/class0/004.jpg"
    bad.write_bytes(_scrambled(bad.read_bytes()))
    with pytest.raises(DatasetError) as err:
        load_data(config(folder, in_memory=False, image_size=16))
    _one_line(err, "004.jpg")
    data = load_data(config(folder, in_memory=False, image_size=16, bad_images="skip"))
    assert data.streaming and data.skipped_images == 1
    assert torch.isfinite(data.augment.mean).all()
    slices = [torch.arange(len(data.train_inputs))]
    [(x, keep)] = list(data.train_inputs.epoch_batches(slices, seed=1))
    assert len(x) == sum(COUNTS) - 1 and int(keep.sum()) == len(x)
    assert data.skipped_images == 1


def test_the_first_size_comes_from_the_first_usable_image(folder):
    (folder / "train/class0/000.jpg").write_bytes(b"")
    with pytest.raises(DatasetError) as err:
        load_data(config(folder, in_memory="auto"))
    _one_line(err, "000.jpg")
    data = load_data(config(folder, in_memory="auto", bad_images="skip"))
    assert data.input_shape == (3, 16, 16) and data.class_counts == [5, 4]


def test_a_worker_reports_an_undecodable_file_in_one_line(folder):
    """A decoding worker's exception would reach the training process wrapped in its
    traceback; the file comes back as one line instead."""
    bad = folder / "train/class1/000.jpg"
    bad.write_bytes(_scrambled(bad.read_bytes()))
    names = sorted(p.relative_to(folder).as_posix() for p in (folder / "train").rglob("*"))
    names = [n for n in names if n.endswith(".jpg")]
    data = FileDataset(root=folder, train_files=names, train_y=np.zeros(len(names), np.int64),
                       test_files=[], test_y=np.zeros(0, np.int64), classes=["a", "b"])
    files = ImageFiles(data.reader, names, 16, workers=1)
    slices = [torch.arange(len(names))]
    with pytest.raises(DatasetError) as err:
        list(files.epoch_batches(slices, seed=0))
    _one_line(err, "class1/000.jpg", "dataset.bad_images: skip")
    files.bad_images = "skip"
    [(x, keep)] = list(files.epoch_batches(slices, seed=0))
    assert len(x) == len(names) - 1 and not keep[names.index("train/class1/000.jpg")]
    assert list(files.skipped) == [str(bad)]
    with pytest.raises(DatasetError) as err:  # evaluation needs every image
        list(files.batches(4))
    _one_line(err, "class1/000.jpg", "fix or remove it")


def test_a_run_counts_skipped_images_in_its_metrics(folder, tmp_path, capsys):
    from tailmix.cli import main

    (folder / "test/class1/001.jpg").write_bytes(b"not an image")
    bad = folder / "train/class0/001.jpg"
    bad.write_bytes(_scrambled(bad.read_bytes()))
    args = ["train", "--dataset", "imagefolder", "--data-root", str(folder), "--arch",
            "small_cnn", "--epochs", "1", "--no-progress", "--set", "train.device=cpu",
            "--set", "dataset.workers=0", "--set", "dataset.in_memory=false",
            "--set", "dataset.image_size=16", "--set", "train.batch_size=8"]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tailmix: error: ") and "\n" not in err and "001.jpg" in err
    out = tmp_path / "run"
    assert main([*args, "--out", str(out), "--set", "dataset.bad_images=skip"]) == 0
    logged = capsys.readouterr()
    assert "test/class1/001.jpg" in logged.out + logged.err
    assert "data: 2 image files left out as unusable" in logged.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_images"] == 2  # one by the scan, one met while streaming
    margins = json.loads((out / "margins.json").read_text())  # over the images that decode
    assert margins["train"]["count"] == [COUNTS[0] - 1, COUNTS[1]]
