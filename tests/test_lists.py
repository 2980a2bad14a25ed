"""List-file datasets: the generic readers and the ImageNet-LT, Places-LT and iNaturalist 2018
sources, on miniatures written in each release's layout with the released list-file names."""

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tailmix._validation import ParameterError
from tailmix.data import load_source
from tailmix.data.download import DatasetError
from tailmix.data.files import FileDataset
from tailmix.data.lists import RELEASES, read_class_names, read_csv_file, read_list_file
from tailmix.registry import DATASETS

# A long-tailed profile over 8 classes (largest 30, smallest 2), a balanced test split.
COUNTS = [30, 18, 11, 7, 5, 3, 2, 2]
TEST_PER_CLASS = 3
VAL_PER_CLASS = 2
WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331",
         "n01498041", "n01514668"]
SCENES = ["airfield", "airplane_cabin", "airport_terminal", "alcove", "alley",
          "amphitheater", "amusement_arcade", "amusement_park"]
SUPERS = ["Arachnida", "Arachnida", "Insecta", "Insecta", "Insecta", "Aves", "Aves", "Plantae"]


def _jpegs(n: int = 12) -> list[bytes]:
    """A few tiny JPEGs (solid colours with noise), encoded once and written many times."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        base = np.array([(37 * i) % 256, (91 * i) % 256, (53 * i + 80) % 256], dtype=np.int16)
        pixels = np.clip(base + rng.integers(-20, 21, size=(20, 24, 3)), 0, 255)
        buf = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buf, format="JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def _write(root: Path, lines: list[tuple[str, int]], data: list[bytes]) -> None:
    for k, (name, label) in enumerate(lines):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[(label + k) % len(data)])


def _list(path: Path, lines: list[tuple[str, int]]) -> None:
    path.write_text("".join(f"{name} {label}\n" for name, label in lines))


def _imagenet_lt(root: Path) -> dict[str, list[tuple[str, int]]]:
    train, test, val = [], [], []
    for c, w in enumerate(WNIDS):
        train += [(f"train/{w}/{w}_{1000 + 7 * k}.JPEG", c) for k in range(COUNTS[c])]
        val += [(f"train/{w}/{w}_{50 + k}.JPEG", c) for k in range(VAL_PER_CLASS)]
        test += [(f"val/{w}/ILSVRC2012_val_{c * 100 + k + 1:08d}.JPEG", c)
                 for k in range(TEST_PER_CLASS)]
    return {"train": train, "test": test, "val": val}


def _places_lt(root: Path) -> dict[str, list[tuple[str, int]]]:
    train, test, val = [], [], []
    for c, s in enumerate(SCENES):
        train += [(f"train/{s}/{4851 - 13 * k:08d}.jpg", c) for k in range(COUNTS[c])]
        val += [(f"train/{s}/{2049 + k:08d}.jpg", c) for k in range(VAL_PER_CLASS)]
        test += [(f"val/{s}/Places365_val_{c * 100 + k + 1:08d}.jpg", c)
                 for k in range(TEST_PER_CLASS)]
    return {"train": train, "test": test, "val": val}


def _inat2018(root: Path) -> dict[str, list[tuple[str, int]]]:
    def name(c: int, k: int, split: str) -> str:
        digest = hashlib.md5(f"{split}{c}-{k}".encode()).hexdigest()
        return f"train_val2018/{SUPERS[c]}/{c}/{digest}.jpg"

    train, val = [], []
    for c in range(len(COUNTS)):
        train += [(name(c, k, "train"), c) for k in range(COUNTS[c])]
        val += [(name(c, k, "val"), c) for k in range(TEST_PER_CLASS)]
    return {"train": train, "val": val}


LAYOUTS = {"imagenet_lt": _imagenet_lt, "places_lt": _places_lt, "inat2018": _inat2018}


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, tuple[Path, dict[str, list[tuple[str, int]]]]]:
    """Each release's miniature: its root and the lines written to each list file."""
    data = _jpegs()
    out = {}
    for source, layout in LAYOUTS.items():
        root = tmp_path_factory.mktemp(source)
        splits = layout(root)
        for split, lines in splits.items():
            _write(root, lines, data)
            _list(root / RELEASES[source]["files"][split], lines)
        out[source] = (root, splits)
    return out


@pytest.fixture
def images(tmp_path) -> Path:
    """A root with a few images in class folders, for the generic readers."""
    data = _jpegs(4)
    lines = [(f"img/{c}/{k}.jpg", i) for i, c in enumerate("abc") for k in range(4 - i)]
    lines += [("img/with space/x 1.jpg", 0)]
    _write(tmp_path, lines, data)
    return tmp_path


# --------------------------------------------------------------------------- the releases


@pytest.mark.parametrize("source", list(LAYOUTS))
def test_release_reads_what_was_written(releases, source):
    root, splits = releases[source]
    data = load_source(source, root=root, in_memory=False)
    assert isinstance(data, FileDataset)
    assert data.root == root and data.name == source
    assert np.bincount(data.train_y).tolist() == COUNTS
    assert data.train_y.dtype == np.int64 and data.test_y.dtype == np.int64
    assert data.num_classes == len(COUNTS)
    eval_split = "val" if source == "inat2018" else "test"
    assert data.train_files == [n for n, _ in splits["train"]]
    assert data.test_files == [n for n, _ in splits[eval_split]]
    assert np.bincount(data.test_y).tolist() == [TEST_PER_CLASS] * len(COUNTS)
    assert all((root / n).is_file() for n in data.train_files + data.test_files)
    expected = {"imagenet_lt": WNIDS, "places_lt": SCENES,
                "inat2018": [str(c) for c in range(len(COUNTS))]}[source]
    assert data.classes == expected


@pytest.mark.parametrize("source", ["imagenet_lt", "places_lt"])
def test_eval_split_val(releases, source):
    root, splits = releases[source]
    data = load_source(source, root=root, eval_split="val")
    assert data.test_files == [n for n, _ in splits["val"]]
    assert np.bincount(data.test_y).tolist() == [VAL_PER_CLASS] * len(COUNTS)
    assert np.bincount(data.train_y).tolist() == COUNTS
    with pytest.raises(ParameterError) as err:
        load_source(source, root=root, eval_split="train")
    assert err.value.name == "dataset.options.eval_split"


def test_inat_evaluates_on_val_only(releases):
    root, _ = releases["inat2018"]
    assert load_source("inat2018", root=root, eval_split="val").test_y.size == 24
    with pytest.raises(ParameterError) as err:
        load_source("inat2018", root=root, eval_split="test")
    assert err.value.name == "dataset.options.eval_split"


@pytest.mark.parametrize("source", list(LAYOUTS) + ["filelist", "csv"])
def test_unknown_option_names_its_key(releases, source):
    root, _ = releases["imagenet_lt"]
    with pytest.raises(ParameterError) as err:
        load_source(source, root=root, no_such=1)
    assert err.value.name == "dataset.options.no_such"


def test_release_lists_elsewhere(releases, tmp_path):
    root, _ = releases["places_lt"]
    lists = tmp_path / "lists"
    lists.mkdir()
    for file in RELEASES["places_lt"]["files"].values():
        shutil.copy(root / file, lists / file)
    data = load_source("places_lt", root=root, lists=str(lists))
    assert np.bincount(data.train_y).tolist() == COUNTS


def test_release_missing_list_file(tmp_path):
    with pytest.raises(DatasetError, match="ImageNet_LT_train.txt"):
        load_source("imagenet_lt", root=tmp_path)
    with pytest.raises(ParameterError) as err:
        load_source("imagenet_lt", root=tmp_path / "absent")
    assert err.value.name == "data_root"


def test_release_label_above_the_release_classes(tmp_path):
    _write(tmp_path, [("train/a/1.jpg", 0)], _jpegs(1))
    (tmp_path / "Places_LT_train.txt").write_text("train/a/1.jpg 0\ntrain/a/1.jpg 365\n")
    (tmp_path / "Places_LT_test.txt").write_text("train/a/1.jpg 0\n")
    with pytest.raises(DatasetError, match=r"line 2.*not below the number of classes \(365\)"):
        load_source("places_lt", root=tmp_path)


def test_release_registrations():
    for source, config, sizes in (("imagenet_lt", "imagenet_lt", (1000, 1280)),
                                  ("places_lt", "places_lt", (365, 4980)),
                                  ("inat2018", "inat2018", (8142, 1000))):
        meta = DATASETS.meta(source)
        assert meta == {"inputs": "image", "needs_root": True, "config": config,
                        "sizes": sizes, "profile": "original"}
        assert RELEASES[source]["largest"] == sizes[1]
    for source in ("filelist", "csv"):
        assert DATASETS.meta(source)["sizes"] is None and DATASETS.meta(source)["needs_root"]


def test_shipped_configs_resolve(tmp_path):
    from tailmix.pipeline.config import load_config_file, probe_counts, resolve_config

    for name, arch in (("imagenet_lt", "resnext50_32x4d"), ("places_lt", "torchvision:resnet152"),
                       ("inat2018", "resnet50")):
        cfg = load_config_file(name)
        assert cfg["dataset"]["name"] == name and cfg["model"]["arch"] == arch
        cfg["dataset"]["root"] = str(tmp_path)
        resolved = resolve_config(cfg)
        assert resolved["eval"]["many_threshold"] == 100
        assert resolved["eval"]["few_threshold"] == 20
        assert len(probe_counts(resolved["dataset"])) == DATASETS.meta(name)["sizes"][0]


# --------------------------------------------------------------------------- filelist


def test_filelist_round_trip(images):
    _list(images / "train.txt", [("img/a/0.jpg", 0), ("img/a/1.jpg", 0), ("img/b/0.jpg", 1),
                                 ("img/c/0.jpg", 2)])
    (images / "lists").mkdir()
    (images / "lists" / "test.txt").write_text(
        "\nimg/a/2.jpg 0\n  img/with space/x 1.jpg\t2 \n\nimg/b/1.jpg 1\n")
    data = load_source("filelist", root=images, train="train.txt",
                       test=str(images / "lists" / "test.txt"))
    assert isinstance(data, FileDataset) and data.root == images
    assert data.classes == ["0", "1", "2"]
    assert np.bincount(data.train_y).tolist() == [2, 1, 1]
    assert data.test_files == ["img/a/2.jpg", "img/with space/x 1.jpg", "img/b/1.jpg"]
    assert data.test_y.tolist() == [0, 2, 1]
    (images / "names.txt").write_text("ant\nbee\n\ncat\ndog\n")
    with pytest.raises(DatasetError, match=r"3 \('dog'\)"):  # a class without training images
        load_source("filelist", root=images, train="train.txt", test="train.txt",
                    classes="names.txt")
    (images / "names.txt").write_text("ant\nbee\ncat\n")
    named = load_source("filelist", root=images, train="train.txt", test="train.txt",
                        classes="names.txt")
    assert named.classes == ["ant", "bee", "cat"]


def test_filelist_options(images):
    _list(images / "train.txt", [("img/a/0.jpg", 0)])
    with pytest.raises(ParameterError) as err:
        load_source("filelist", root=images, train="train.txt")
    assert err.value.name == "dataset.options.test"
    with pytest.raises(ParameterError) as err:
        load_source("filelist", root=images, train="train.txt", test="nope.txt")
    assert err.value.name == "dataset.options.test" and "nope.txt" in str(err.value)
    with pytest.raises(ParameterError) as err:
        load_source("filelist", root=images, train="train.txt", test="train.txt", download=True)
    assert err.value.name == "dataset.download"
    (images / "empty.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match="empty.txt names no images"):
        load_source("filelist", root=images, train="train.txt", test="empty.txt")


# --------------------------------------------------------------------------- csv


def test_csv_integer_labels_with_and_without_header(images):
    (images / "train.csv").write_text("path,label\nimg/a/0.jpg,0\nimg/a/1.jpg,0\nimg/c/0.jpg,2\n"
                                      "img/b/0.jpg,1\n")
    (images / "test.csv").write_text("img/a/2.jpg, 0\n\n\"img/with space/x 1.jpg\",2\n")
    data = load_source("csv", root=images, train="train.csv", test="test.csv")
    assert data.classes == ["0", "1", "2"]
    assert data.train_y.tolist() == [0, 0, 2, 1]
    assert data.test_files == ["img/a/2.jpg", "img/with space/x 1.jpg"]
    assert data.test_y.tolist() == [0, 2]
    (images / "test.csv").write_text("img/a/2.jpg,3\n")
    with pytest.raises(DatasetError, match="line 1.*not below the number of classes"):
        load_source("csv", root=images, train="train.csv", test="test.csv")


def test_csv_class_names(images):
    (images / "train.csv").write_text("img/c/0.jpg,cat\nimg/a/0.jpg,ant\nimg/a/1.jpg,ant\n"
                                      "img/b/0.jpg,bee\n")
    (images / "test.csv").write_text("PATH,LABEL\nimg/a/2.jpg,bee\nimg/b/1.jpg,cat\n")
    data = load_source("csv", root=images, train="train.csv", test="test.csv")
    assert data.classes == ["ant", "bee", "cat"]
    assert data.train_y.tolist() == [2, 0, 0, 1] and data.test_y.tolist() == [1, 2]
    (images / "order.txt").write_text("cat\nbee\nant\n")
    ordered = load_source("csv", root=images, train="train.csv", test="test.csv",
                          classes="order.txt")
    assert ordered.classes == ["cat", "bee", "ant"] and ordered.train_y.tolist() == [0, 2, 2, 1]
    (images / "test.csv").write_text("path,label\nimg/a/2.jpg,bee\nimg/b/1.jpg,dog\n")
    with pytest.raises(DatasetError, match=r"test.csv, line 3: the class 'dog'"):
        load_source("csv", root=images, train="train.csv", test="test.csv")


def test_read_csv_file_directly(images):
    (images / "t.csv").write_text("img/a/0.jpg,x\n")
    names, labels, classes = read_csv_file(images / "t.csv", root=images, classes=["y", "x"])
    assert names == ["img/a/0.jpg"] and labels.tolist() == [1] and classes == ["y", "x"]
    (images / "t.csv").write_text("img/a/0.jpg,0,extra\n")
    with pytest.raises(DatasetError, match=r"line 1: 3 cells.*'img/a/0.jpg,0,extra'"):
        read_csv_file(images / "t.csv", root=images)
    (images / "t.csv").write_text("path,label\nimg/a/0.jpg,0\n/etc/passwd,0\n")
    with pytest.raises(DatasetError, match="line 3: an absolute path"):
        read_csv_file(images / "t.csv", root=images)
    (images / "t.csv").write_text("img/a/0.jpg,0\nimg/a/9.jpg,0\n")
    with pytest.raises(DatasetError, match=r"1 of the 2 files.*'img/a/9.jpg'.*line 2"):
        read_csv_file(images / "t.csv", root=images)


# --------------------------------------------------------------------------- list errors


@pytest.mark.parametrize("line, message", [
    ("img/a/0.jpg", "no label after the path"),
    ("img/a/0.jpg zero", "the label 'zero' is not an integer"),
    ("img/a/0.jpg 1.5", "the label '1.5' is not an integer"),
    ("img/a/0.jpg -1", "the label -1 is negative"),
    ("img/a/0.jpg 3", r"the label 3 is not below the number of classes \(3\)"),
    ("/abs/img.jpg 0", "an absolute path"),
    ("C:/img.jpg 0", "an absolute path"),
    ("img/../../secret.jpg 0", r"a path with '\.\.'"),
])
def test_read_list_file_bad_lines(images, line, message):
    (images / "l.txt").write_text(f"img/a/0.jpg 0\n\n{line}\nimg/a/1.jpg 0\n")
    with pytest.raises(DatasetError) as err:
        read_list_file(images / "l.txt", root=images, num_classes=3)
    text = str(err.value)
    assert f"{images / 'l.txt'}, line 3" in text and repr(line) in text
    assert re.search(message, text)


def test_read_list_file_missing_images(images):
    (images / "l.txt").write_text("img/a/0.jpg 0\nimg/a/7.jpg 0\nimg/zz/1.jpg 1\n")
    with pytest.raises(DatasetError) as err:
        read_list_file(images / "l.txt", root=images)
    text = str(err.value)
    assert "2 of the 3 files" in text and "'img/a/7.jpg'" in text and "line 2" in text
    names, labels = read_list_file(images / "l.txt", root=images, check_files=False)
    assert names == ["img/a/0.jpg", "img/a/7.jpg", "img/zz/1.jpg"]
    assert labels.tolist() == [0, 0, 1]


def test_read_list_file_missing_list(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_list_file(tmp_path / "absent.txt", root=tmp_path)


def test_read_class_names(tmp_path):
    (tmp_path / "c.txt").write_text("a\n\nb\na\n")
    with pytest.raises(DatasetError, match=r"line 4: the class 'a' is already named on line 1"):
        read_class_names(tmp_path / "c.txt")
    (tmp_path / "c.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match="names no classes"):
        read_class_names(tmp_path / "c.txt")


@pytest.mark.slow
@pytest.mark.parametrize("source", sorted(LAYOUTS))
def test_release_config_streams_a_run(releases, source, tmp_path):
    """The shipped config of each release trains, streaming, on its miniature (a small
    network and one short epoch stand in for the protocol's)."""
    from tailmix.cli import main

    root, splits = releases[source]
    out = tmp_path / "run"
    args = ["train", "-c", source, "--data-root", str(root), "--out", str(out), "--epochs", "1",
            "--no-progress", "--set", "model.arch=small_cnn", "--set", "model.pretrained=false",
            "--set", "model.backbone_lr=null", "--set", "dataset.image_size=16",
            "--set", "dataset.workers=0", "--set", "train.batch_size=16",
            "--set", "train.warmup_epochs=0", "--set", "train.device=cpu"]
    if source == "places_lt":
        args += ["--set", "train.milestones=[]", "--set", "train.lr_factors=[]"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_counts"] == COUNTS
    assert 0.0 <= metrics["final"]["top1"] <= 100.0
