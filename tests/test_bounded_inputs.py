"""Small inputs cannot make tailmix size something huge: a label far above the classes a list
can hold, a label that is no integer, an image whose header promises more pixels than
``dataset.max_pixels`` - each is a one-line error (or, for images, skipped) before anything
is allocated or decoded by it."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from tailmix._validation import ParameterError
from tailmix.data import from_arrays
from tailmix.data.download import DatasetError
from tailmix.data.files import FileDataset, decode_image, scan_images
from tailmix.data.imagefolder import read_imagefolder
from tailmix.data.lists import read_csv_file, read_list_file
from tailmix.pipeline.config import SCHEMA, resolve_config

HUGE = "99999999999"  # only under the memory limit: 100 billion class names do not fit
FAR = 10**6  # far above the classes a few rows can hold, yet cheap where it is not refused
SIDE = 12000  # a 12000 x 12000 image: 144 megapixels, 432 MB as RGB, a 17 KB 1-bit PNG


def _png(path: Path, value: int = 0, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def _huge_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("1", (SIDE, SIDE)).save(path)


def _folder(root: Path) -> Path:
    """SPLIT/CLASS/IMAGE PNGs of 8x8, two classes of three images a split."""
    for split in ("train", "test"):
        for c in range(2):
            for i in range(3):
                _png(root / split / f"class_{c}" / f"{i:03d}.png", 40 * c + i)
    return root


# --------------------------------------------------------------------------- under a limit

# Runs `tailmix train` for each argument list in one process (one torch import) whose address
# space may grow by at most 2 GiB beyond what importing tailmix takes (an import of a CUDA
# build of torch alone can map more than 2 GiB), and reports each exit code and standard error.
_CHILD = r"""
import contextlib, io, json, resource, sys
import tailmix.pipeline.build, tailmix.data.lists  # torch and the data readers, before measuring
from tailmix.cli import main

status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
limit = int(status["VmSize"].split()[0]) * 1024 + (2 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(args)
    except BaseException as e:  # what a user would see as a traceback
        rc = f"{type(e).__name__}: {str(e)[:200]}"
    results.append([rc, err.getvalue()])
print(json.dumps(results))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_huge_labels_and_images_are_one_line_errors_under_a_memory_limit(tmp_path):
    root = _folder(tmp_path / "data")
    _huge_png(root / "train" / "class_0" / "big.png")
    (root / "test.txt").write_text("test/class_0/000.png 0\ntest/class_1/000.png 1\n")
    (root / "huge.txt").write_text(f"train/class_0/000.png 0\ntrain/class_1/000.png {HUGE}\n")
    (root / "e26.txt").write_text("train/class_0/000.png 0\ntrain/class_1/000.png 1" + "0" * 26)
    (root / "big.txt").write_text("train/class_0/big.png 0\ntrain/class_1/000.png 1\n")
    (root / "test.csv").write_text("path,label\ntest/class_0/000.png,0\ntest/class_1/000.png,1\n")
    (root / "huge.csv").write_text(f"path,label\ntrain/class_0/000.png,0\n"
                                   f"train/class_1/000.png,{HUGE}\n")
    (root / "float.csv").write_text("path,label\ntrain/class_0/000.png,0\n"
                                    "train/class_1/000.png,1e26\n")
    common = ["--arch", "small_cnn", "--epochs", "1", "--no-progress", "--set",
              "train.device=cpu", "--set", "dataset.workers=0"]

    def lists(source: str, train: str, test: str) -> list[str]:
        return ["--dataset", source, "--set", f"dataset.options.train={train}",
                "--set", f"dataset.options.test={test}"]

    cases = {  # the arguments, and what the one line must name
        "list label": (lists("filelist", "huge.txt", "test.txt"), ["huge.txt, line 2", HUGE]),
        "csv label": (lists("csv", "huge.csv", "test.csv"), ["huge.csv, line 3", HUGE]),
        "csv float": (lists("csv", "float.csv", "test.csv"), ["float.csv, line 3", "1e26"]),
        "1e26 label": (lists("filelist", "e26.txt", "test.txt"), ["e26.txt, line 2", "large"]),
        "listed image": (lists("filelist", "big.txt", "test.txt"),
                         ["big.png", "12000x12000", "dataset.max_pixels"]),
        "folder image": (["--dataset", "imagefolder", "--set", "dataset.in_memory=true"],
                         ["big.png", "12000x12000", "dataset.max_pixels"]),
    }
    argv = [["train", *args, "--data-root", str(root), "--out", str(tmp_path / f"run{k}"),
             *common] for k, (args, _) in enumerate(cases.values())]
    child = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(argv)],
                           capture_output=True, text=True, timeout=240)
    assert child.returncode == 0, child.stderr[-2000:]
    results = json.loads(child.stdout.strip().splitlines()[-1])
    for (case, (_, names)), (rc, err) in zip(cases.items(), results, strict=True):
        assert rc == 2, f"{case}: {rc} {err[-500:]}"
        line = err.strip()
        assert line.startswith("tailmix: error: ") and "\n" not in line, f"{case}: {err}"
        for name in names:
            assert name in line, f"{case}: {name!r} not in {line!r}"


# --------------------------------------------------------------------------- labels


def test_a_list_label_is_bounded_by_the_images_listed(tmp_path):
    root = _folder(tmp_path)
    lines = "train/class_0/000.png 0\ntrain/class_0/001.png 1\n\ntrain/class_1/000.png 3\n"
    (root / "l.txt").write_text(lines)
    with pytest.raises(DatasetError) as err:
        read_list_file(root / "l.txt", root=root)
    text = str(err.value)
    assert f"{root / 'l.txt'}, line 4: the label 3 is not below 3" in text
    assert "'train/class_1/000.png 3'" in text
    names, labels = read_list_file(root / "l.txt", root=root, num_classes=4)  # declared
    assert labels.tolist() == [0, 1, 3]
    (root / "l.txt").write_text(f"train/class_0/000.png {'9' * 5000}\n")  # past int()'s limit
    with pytest.raises(DatasetError, match="line 1: the label 9999.* is too large"):
        read_list_file(root / "l.txt", root=root, num_classes=4)


def test_a_test_list_label_is_bounded_by_the_training_classes(tmp_path):
    from tailmix.data import load_source

    root = _folder(tmp_path)
    (root / "train.txt").write_text("train/class_0/000.png 0\ntrain/class_1/000.png 1\n")
    (root / "test.txt").write_text("test/class_0/000.png 0\ntest/class_1/000.png 7\n")
    with pytest.raises(DatasetError, match=r"test.txt, line 2: the label 7 is not below the "
                                           r"number of classes \(2\)"):
        load_source("filelist", root=root, train="train.txt", test="test.txt")


def test_csv_labels_that_are_numbers_but_not_integers(tmp_path):
    root = _folder(tmp_path)
    (root / "t.csv").write_text("train/class_0/000.png,0\ntrain/class_1/000.png,2.0\n")
    with pytest.raises(DatasetError, match=r"t.csv, line 2: the label '2.0' is a number but "
                                           "not an integer"):
        read_csv_file(root / "t.csv", root=root)
    names, labels, classes = read_csv_file(root / "t.csv", root=root, classes=["0", "2.0"])
    assert labels.tolist() == [0, 1] and classes == ["0", "2.0"]
    (root / "t.csv").write_text("train/class_0/000.png,cat\ntrain/class_1/000.png,1e26\n")
    assert read_csv_file(root / "t.csv", root=root)[2] == ["1e26", "cat"]  # names after all
    (root / "t.csv").write_text(f"train/class_0/000.png,0\ntrain/class_1/000.png,{FAR}\n")
    with pytest.raises(DatasetError, match=f"t.csv, line 2: the label {FAR} is not below 2"):
        read_csv_file(root / "t.csv", root=root)


def test_from_arrays_bounds_labels_by_the_examples():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ParameterError) as err:
        from_arrays(x, [0, 1, FAR], x, [0, 1, 2])
    assert err.value.name == "train_y" and str(FAR) in str(err.value)
    assert from_arrays(x, [0, 1, 5], x, [0, 1, 2], classes=list("abcdef")).num_classes == 6


# --------------------------------------------------------------------------- pixels


def test_max_pixels_is_read_from_the_header_in_place_of_pillows_limit(tmp_path, monkeypatch):
    root = _folder(tmp_path)
    _huge_png(root / "train" / "class_0" / "big.png")
    names = sorted(p.relative_to(root).as_posix() for p in (root / "train").rglob("*.png"))
    data = FileDataset(root=root, train_files=names, train_y=np.zeros(len(names), np.int64),
                       test_files=[], test_y=np.zeros(0, np.int64), classes=["a"])

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("an image was decoded")

    with monkeypatch.context() as m, warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning included
        m.setattr(ImageFile.ImageFile, "load", no_decoding)
        with pytest.raises(DatasetError, match=r"big.png is 12000x12000 pixels \(144.0 "
                                               r"megapixels\), more than dataset.max_pixels"):
            scan_images(data)
        notes = []
        kept = scan_images(data, bad_images="skip", log=notes.append)
        assert "train/class_0/big.png" not in kept.train_files and "big.png" in notes[0]
        assert len(kept.skipped) == 1
        assert scan_images(data, max_pixels=0) is data  # no limit: Pillow's is not used
        assert scan_images(data, max_pixels=None) is data
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own limit is left as it was
    with pytest.raises(DatasetError, match="12000x12000"):
        decode_image((root / "train" / "class_0" / "big.png").read_bytes(), 8,
                     max_pixels=50_000_000)
    with pytest.raises(DatasetError, match=r"big.png: it is 12000x12000.*bad_images: skip"):
        read_imagefolder(root, cache_dir=tmp_path / "cache")
    raw = read_imagefolder(root, cache_dir=tmp_path / "cache", bad_images="skip")
    assert len(raw.train_x) == 6 and len(raw.skipped) == 1


def test_max_pixels_setting():
    from tailmix.data.files import MAX_PIXELS

    assert SCHEMA["dataset"]["max_pixels"][1] == MAX_PIXELS
    assert resolve_config({"dataset": {"max_pixels": 0}})["dataset"]["max_pixels"] == 0
    for bad in (-1, 1.5, "many"):
        with pytest.raises(ParameterError) as err:
            resolve_config({"dataset": {"max_pixels": bad}})
        assert err.value.name == "dataset.max_pixels"
    with pytest.raises(ParameterError, match="not an option: set dataset.max_pixels"):
        resolve_config({"dataset": {"name": "digits", "options": {"max_pixels": 1}}})

