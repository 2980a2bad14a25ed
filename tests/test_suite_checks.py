"""A suite's mistakes are found before its first run trains: every field of the file when it
is loaded (one ``tailmix: error:`` line naming the field), and every run's data, located
without being read, by ``tailmix check`` and ``tailmix bench`` alike."""

import zipfile

import numpy as np
import pytest
import yaml
from PIL import Image

from tailmix._validation import ParameterError
from tailmix.cli import main
from tailmix.data.download import DatasetError
from tailmix.data.locate import locate_source
from tailmix.tools.bench import NAME_BYTES, load_suite

DIGITS = {"name": "digits", "profile": "exp", "ratio": 20, "n_max": 120}


def _spec(**top):
    """A one-run digits suite, with ``top`` replacing its fields (``block`` its block's)."""
    block = {"strategies": ["ERM"], **top.pop("block", {})}
    spec = {
        "name": "tiny",
        "overrides": {"dataset": dict(DIGITS), "model": {"arch": "small_cnn"},
                      "train": {"epochs": 1, "batch_size": 64, "precision": "fp32"},
                      "eval": {"many_threshold": 60}, "log": {"progress": False}},
        "grid": [block],
    }
    spec.update(top)
    return spec


def _write(tmp_path, spec, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tailmix: error:"), err
    assert "Traceback" not in err
    return err


def _no_training(monkeypatch):
    def train(*args, **kwargs):
        raise AssertionError("a cell trained")

    monkeypatch.setattr("tailmix.pipeline.build.train", train)


# --------------------------------------------------------------------------- suite fields


LONG = "x" * 300
FIELD_CASES = {
    # seeds
    "seeds-not-a-number": (dict(block={"seeds": ["abc"]}), "suite.grid[0].seeds[0]"),
    "seeds-null": (dict(block={"seeds": [None]}), "suite.grid[0].seeds[0]"),
    "seeds-not-a-list": (dict(block={"seeds": 0}), "suite.grid[0].seeds"),
    "seeds-empty": (dict(block={"seeds": []}), "suite.grid[0].seeds"),
    "seeds-fraction": (dict(block={"seeds": [1.5]}), "suite.grid[0].seeds[0]"),
    "seeds-negative": (dict(block={"seeds": [-1]}), "suite.grid[0].seeds[0]"),
    "seeds-bool": (dict(block={"seeds": [True]}), "suite.grid[0].seeds[0]"),
    "seeds-string": (dict(block={"seeds": ["1"]}), "suite.grid[0].seeds[0]"),
    "seeds-huge": (dict(block={"seeds": [10 ** 30]}), "suite.grid[0].seeds[0]"),
    "seeds-twice": (dict(block={"seeds": [0, 1, 0]}), "suite.grid[0].seeds[2]"),
    # ratios
    "ratios-not-a-list": (dict(block={"ratios": 20}), "suite.grid[0].ratios"),
    "ratios-path": (dict(block={"ratios": ["../../x"]}), "suite.grid[0].ratios[0]"),
    "ratios-null": (dict(block={"ratios": [None]}), "suite.grid[0].ratios[0]"),
    "ratios-below-one": (dict(block={"ratios": [0.5]}), "suite.grid[0].ratios[0]"),
    "ratios-infinite": (dict(block={"ratios": [float("inf")]}), "suite.grid[0].ratios[0]"),
    "ratios-twice": (dict(block={"ratios": [20, 20.0]}), "suite.grid[0].ratios[1]"),
    "ratios-folder-too-long": (dict(block={"ratios": [1e300]}), "suite.grid[0]"),
    "ratio-null-in-base": (dict(overrides={"dataset": {**DIGITS, "ratio": None}}),
                           "suite.grid[0].ratios"),
    # strategies and datasets
    "strategies-empty": (dict(block={"strategies": []}), "suite.grid[0].strategies"),
    "strategies-a-string": (dict(block={"strategies": "ERM"}), "suite.grid[0].strategies"),
    "strategies-twice": (dict(block={"strategies": ["ERM", "DRW", "ERM"]}),
                         "suite.grid[0].strategies[2]"),
    "strategies-a-number": (dict(block={"strategies": [1]}), "suite.grid[0].strategies[0]"),
    "strategies-a-path": (dict(block={"strategies": ["../ERM"]}),
                          "suite.grid[0].strategies[0]"),
    "datasets-empty": (dict(block={"datasets": []}), "suite.grid[0].datasets"),
    "datasets-null": (dict(block={"datasets": [None]}), "suite.grid[0].datasets[0]"),
    "datasets-twice": (dict(block={"datasets": ["digits", "digits"]}),
                       "suite.grid[0].datasets[1]"),
    # names that become folders
    "name-too-long": (dict(name=LONG), "suite.name"),
    "name-a-list": (dict(name=[1]), "suite.name"),
    "name-hidden": (dict(name=".results"), "suite.name"),
    "name-colon": (dict(name="a:b"), "suite.name"),
    "name-control-character": (dict(name="a\tb"), "suite.name"),
    "tag-too-long": (dict(block={"tag": LONG}), "suite.grid[0].tag"),
    "tag-a-path": (dict(block={"tag": "../../x"}), "suite.grid[0].tag"),
    "tag-a-list": (dict(block={"tag": [1]}), "suite.grid[0].tag"),
    "tag-bool": (dict(block={"tag": True}), "suite.grid[0].tag"),
    "tag-empty": (dict(block={"tag": ""}), "suite.grid[0].tag"),
    "tag-trailing-space": (dict(block={"tag": "lr "}), "suite.grid[0].tag"),
    "cell-folder-too-long": (dict(block={"tag": "t" * (NAME_BYTES - 2)}), "suite.grid[0]"),
    # overrides, base config, data root, description, grid
    "overrides-a-list": (dict(overrides=[1, 2]), "suite.overrides"),
    "overrides-set-the-strategy": (dict(overrides={"strategy": "DRW"}),
                                   "suite.overrides.strategy"),
    "overrides-set-the-seed": (dict(overrides={"train": {"seed": 3}}),
                               "suite.overrides.train.seed"),
    "block-overrides-a-list": (dict(block={"overrides": [1]}), "suite.grid[0].overrides"),
    "block-overrides-set-the-ratio": (dict(block={"overrides": {"dataset": {"ratio": 50}}}),
                                      "suite.grid[0].overrides.dataset.ratio"),
    "block-overrides-set-the-dataset": (
        dict(block={"overrides": {"dataset": {"name": "cifar10"}}}),
        "suite.grid[0].overrides.dataset.name"),
    "base-config-a-list": (dict(base_config=[1]), "suite.base_config"),
    "base-config-missing": (dict(base_config="no_such_config_here"), "suite.base_config"),
    "data-root-a-list": (dict(data_root=[1]), "suite.data_root"),
    "data-root-empty": (dict(data_root=""), "suite.data_root"),
    "description-a-list": (dict(description=[1]), "suite.description"),
    "grid-empty": (dict(grid=[]), "suite.grid"),
    "grid-a-mapping": (dict(grid={"strategies": ["ERM"]}), "suite.grid"),
    "grid-block-null": (dict(grid=[None]), "suite.grid[0]"),
    "grid-unknown-key": (dict(block={"seed": [0]}), "suite.grid[0].seed"),
    "tags-differ-in-case-only": (
        dict(grid=[{"tag": "Fast", "overrides": {"train": {"lr": 0.1}}},
                   {"tag": "fast", "overrides": {"train": {"lr": 0.2}}}]),
        "suite.grid[1].tag"),
}


@pytest.mark.parametrize("changes, name", FIELD_CASES.values(), ids=FIELD_CASES.keys())
def test_a_wrong_suite_field_is_one_error_line_naming_it(tmp_path, capsys, monkeypatch,
                                                         changes, name):
    path = _write(tmp_path, _spec(**changes))
    with pytest.raises(ParameterError) as caught:
        load_suite(path)
    assert caught.value.name == name
    _no_training(monkeypatch)
    results = tmp_path / "results"
    for command in (["check", str(path)], ["bench", str(path), "--out", str(results)]):
        assert main(command) == 2
        assert f"'{name}'" in _error_line(capsys)
    assert not results.exists()


def test_a_long_value_is_shortened_in_the_message(tmp_path, capsys):
    assert main(["check", str(_write(tmp_path, _spec(name=LONG)))]) == 2
    err = _error_line(capsys)
    assert "(300 bytes)" in err and LONG not in err and f"at most {NAME_BYTES} bytes" in err


def test_plain_names_numbers_and_a_run_listed_twice_load(tmp_path):
    """What the checks let through: numbers as names, dots and signs inside names, letters
    beyond ASCII; a run two blocks list (same settings) is one run."""
    spec = _spec(name="résumé v2", grid=[
        {"strategies": ["ERM", "DRW"], "ratios": [20, 12.5], "seeds": [0, 1.0]},
        {"strategies": ["ERM"], "ratios": [20]},
        {"strategies": ["ERM"], "ratios": [20], "tag": 0.5, "overrides": {"train": {"lr": 0.1}}},
        {"strategies": ["ERM"], "ratios": [20], "tag": "lr=0.2,wd@1e-4",
         "overrides": {"train": {"lr": 0.2}}},
    ])
    suite = load_suite(_write(tmp_path, spec))
    assert suite.name == "résumé v2"
    assert [c.folder for c in suite.cells] == [
        "digits-r20/ERM-s0", "digits-r20/ERM-s1", "digits-r20/DRW-s0", "digits-r20/DRW-s1",
        "digits-r12.5/ERM-s0", "digits-r12.5/ERM-s1", "digits-r12.5/DRW-s0",
        "digits-r12.5/DRW-s1", "digits-r20/ERM-0.5-s0", "digits-r20/ERM-lr=0.2,wd@1e-4-s0"]
    assert all(isinstance(c.seed, int) for c in suite.cells)


# --------------------------------------------------------------------------- the data


def _image(path, colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def _image_folder(root, splits=("train", "test"), classes=("a", "b")):
    for split in splits:
        for c in classes:
            _image(root / split / c / f"{split}_{c}.png")
    return root


def _two_block_suite(tmp_path, second_block, **top):
    """Digits first (it would train at once), then a block whose data may be missing."""
    return _write(tmp_path, _spec(grid=[{"strategies": ["ERM"]}, second_block], **top))


def test_a_cell_without_its_data_fails_check_and_bench_before_the_first_run(
        tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    path = _two_block_suite(tmp_path, {"strategies": ["ERM"], "datasets": ["imagefolder"]},
                            data_root=str(empty))
    _no_training(monkeypatch)
    results = tmp_path / "results"
    for command in (["check", str(path)], ["bench", str(path), "--out", str(results)]):
        assert main(command) == 2
        err = _error_line(capsys)
        assert "suite cell imagefolder-r20/ERM-s0:" in err
        assert "needs a 'train' folder" in err and "(no images)" in err and str(empty) in err
    assert not results.exists()  # the digits cell, first in the grid, did not train
    # Given its data, the same suite checks clean.
    _image_folder(empty)
    assert main(["check", str(path)]) == 0
    assert "2 runs, all valid, every run's data found" in capsys.readouterr().out


def test_the_official_cifar_release_is_looked_for_in_each_cells_root(tmp_path, capsys):
    """A block's overrides may point its runs at their own root; a root that holds no
    files fails, naming the cell and the file expected."""
    empty = tmp_path / "cifar"
    empty.mkdir()
    path = _two_block_suite(tmp_path, {"datasets": ["cifar10"], "tag": "own",
                                       "overrides": {"dataset": {"root": str(empty)}}})
    assert main(["check", str(path)]) == 2
    err = _error_line(capsys)
    assert "suite cell cifar10-r20/ERM-own-s0:" in err and "CIFAR-10 not found" in err
    assert str(empty / "cifar-10-batches-py" / "data_batch_1") in err
    assert "dataset.download: true" in err
    # download: true lets the run fetch the release: found (the network is not tried).
    path = _two_block_suite(tmp_path, {"datasets": ["cifar10"], "overrides": {
        "dataset": {"root": str(empty), "download": True}}})
    assert main(["check", str(path)]) == 0


def test_table_only_needs_no_data(tmp_path, capsys):
    path = _two_block_suite(tmp_path, {"datasets": ["imagefolder"]},
                            data_root=str(tmp_path))
    assert main(["bench", str(path), "--table-only", "--out", str(tmp_path / "r")]) == 0
    assert "Not yet run (2)" in capsys.readouterr().out


def _cifar_release(root, folder="cifar-10-batches-py", names=None):
    names = names or [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    (root / folder).mkdir(parents=True)
    for n in names:
        (root / folder / n).write_bytes(b"")  # located, never read
    return root


def _zip_of(folder, path, *, inside=True):
    """``folder`` zipped: its files inside one top folder (as zipping a folder gives), or
    at the top level."""
    base = folder.parent if inside else folder
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(folder.rglob("*")):
            zf.write(file, file.relative_to(base).as_posix())
    return path


def test_locate_finds_each_cifar_layout_without_reading_it(tmp_path):
    found = [
        _cifar_release(tmp_path / "a"),  # the folder holding the extracted release
        _cifar_release(tmp_path / "b") / "cifar-10-batches-py",  # the release folder
        _image_folder(tmp_path / "c"),  # an image-folder copy
        _zip_of(_image_folder(tmp_path / "d" / "cifar-lt"), tmp_path / "d.zip"),
    ]
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "cifar-10-python.tar.gz").write_bytes(b"")
    found += [tmp_path / "e", tmp_path / "e" / "cifar-10-python.tar.gz"]
    for root in found:
        locate_source("cifar10", root=root)
    locate_source("cifar100", root=_cifar_release(tmp_path / "f", "cifar-100-python",
                                                  ["train", "test", "meta"]))
    missing = [
        ("cifar10", _cifar_release(tmp_path / "g", names=["data_batch_1"]), "data_batch_2"),
        ("cifar100", tmp_path / "a", "cifar-100-python"),  # CIFAR-10's files are not its
    ]
    for name, root, expected in missing:
        with pytest.raises(DatasetError, match=expected):
            locate_source(name, root=root)
    with pytest.raises(ParameterError, match="dataset.root"):
        locate_source("cifar10", root=tmp_path / "h.tar.gz")
    locate_source("cifar10", root=tmp_path / "h.tar.gz", download=True)  # fetched there
    (tmp_path / "i.zip").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a zip"):
        locate_source("cifar10", root=tmp_path / "i.zip")
    (tmp_path / "j.bin").write_bytes(b"")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        locate_source("cifar10", root=tmp_path / "j.bin", download=True)


@pytest.mark.parametrize("layout, problem", [
    ({"train/a/1.png", "train/b/2.png", "test/a/3.png", "test/b/4.png"}, None),
    ({"top/train/a/1.png", "top/test/a/3.png"}, None),  # one folder around the splits
    ({"train/a/1.png", "train/b/2.png"}, "no 'test' folder"),
    ({"train/a/1.png", "train/b/notes.txt", "test/a/3.png", "test/b/4.png"}, "holds no images"),
    ({"train/a/1.png", "test/b/4.png"}, "other classes"),
    ({"train/1.png", "test/2.png"}, "holds one image"),  # two classes of one image each
    ({"train/1.png", "2.png"}, "neither image-folder layout"),
])
@pytest.mark.parametrize("as_zip", [False, True])
def test_locate_and_the_reader_agree_on_an_image_folder(tmp_path, layout, problem, as_zip):
    root = tmp_path / "data"
    for name in layout:
        if name.endswith(".png"):
            _image(root / name)
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("x")
    if as_zip:
        root = _zip_of(root, tmp_path / "data.zip", inside=False)
    from tailmix.data import load_source

    if problem is None:
        locate_source("imagefolder", root=root)
        raw = load_source("imagefolder", root=root, in_memory=True)
        assert len(raw.classes) >= 1
    else:
        with pytest.raises(DatasetError, match=problem):
            locate_source("imagefolder", root=root)
        with pytest.raises(DatasetError, match=problem):
            load_source("imagefolder", root=root, in_memory=True)


def test_locate_follows_the_image_folder_options(tmp_path):
    root = _image_folder(tmp_path / "data", splits=("tr", "held"))
    locate_source("imagefolder", root=root, train_split="tr", test_split="held",
                  in_memory=False)
    with pytest.raises(DatasetError, match="no 'test' folder"):
        locate_source("imagefolder", root=root, train_split="tr")
    root = _image_folder(tmp_path / "data2", splits=("tr", "val"))
    locate_source("imagefolder", root=root, train_split="tr")  # val/ stands in for test/


def test_locate_finds_svhn_cinic_and_tiny_imagenet(tmp_path):
    svhn = tmp_path / "svhn"
    svhn.mkdir()
    (svhn / "train_32x32.mat").write_bytes(b"")
    with pytest.raises(DatasetError, match="test_32x32.mat"):
        locate_source("svhn", root=svhn)
    locate_source("svhn", root=svhn, download=True)
    (svhn / "test_32x32.mat").write_bytes(b"")
    locate_source("svhn", root=svhn)
    with pytest.raises(ParameterError, match="dataset.root"):
        locate_source("svhn", root=svhn / "test_32x32.mat")

    cinic = _image_folder(tmp_path / "cinic", splits=("train", "test"))
    with pytest.raises(DatasetError, match="valid/"):
        locate_source("cinic10", root=cinic)
    _image_folder(cinic, splits=("valid",))
    locate_source("cinic10", root=cinic, eval_split="valid")

    tiny = tmp_path / "tiny" / "tiny-imagenet-200"
    _image(tiny / "train" / "n01" / "images" / "n01_0.JPEG")
    (tiny / "val").mkdir()
    with pytest.raises(DatasetError, match="val_annotations.txt"):
        locate_source("tiny_imagenet", root=tmp_path / "tiny")
    (tiny / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\n")
    locate_source("tiny_imagenet", root=tmp_path / "tiny")


def test_locate_finds_list_files(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "train.txt").write_text("img/a.png 0\n")  # the images are not looked at
    with pytest.raises(ParameterError, match="dataset.options.train"):
        locate_source("filelist", root=tmp_path)
    with pytest.raises(DatasetError, match="test.txt"):
        locate_source("filelist", root=tmp_path, train="train.txt", test="test.txt")
    (tmp_path / "test.txt").write_text("img/b.png 0\n")
    locate_source("filelist", root=tmp_path, train="train.txt", test=str(tmp_path / "test.txt"))
    with pytest.raises(DatasetError, match="names.txt"):
        locate_source("csv", root=tmp_path, train="train.txt", test="test.txt",
                      classes="names.txt")
    with pytest.raises(ParameterError, match="dataset.download"):
        locate_source("csv", root=tmp_path, download=True, train="train.txt", test="test.txt")

    with pytest.raises(DatasetError, match="ImageNet_LT_train.txt"):
        locate_source("imagenet_lt", root=tmp_path)
    for name in ("ImageNet_LT_train.txt", "ImageNet_LT_val.txt"):
        (tmp_path / "lists" / name).write_text("")
    with pytest.raises(DatasetError, match="ImageNet_LT_test.txt"):
        locate_source("imagenet_lt", root=tmp_path, lists="lists")
    locate_source("imagenet_lt", root=tmp_path, lists="lists", eval_split="val")


def test_locate_data_built_in_from_python_or_from_a_plugin(tmp_path, monkeypatch):
    from tailmix.registry import DATASETS

    locate_source("digits")
    locate_source("digits", root=tmp_path / "ignored")
    with pytest.raises(ParameterError, match="from_arrays"):
        locate_source("arrays")
    with pytest.raises(ParameterError, match="dataset.name"):
        locate_source("no_such_source")
    asked = []

    def find(*, root, download, **options):
        asked.append((root, download, options))
        raise DatasetError(f"no shards under {root}")

    monkeypatch.setitem(DATASETS._items, "sharded", lambda **kw: None)
    monkeypatch.setitem(DATASETS._meta, "sharded", {"needs_root": True, "locate": find})
    with pytest.raises(DatasetError, match="no shards under"):
        locate_source("sharded", root=tmp_path, shards=4, in_memory=True)
    assert asked == [(tmp_path, False, {"shards": 4})]
    # A source without a locate check is found when its root exists.
    monkeypatch.setitem(DATASETS._meta, "sharded", {"needs_root": True})
    locate_source("sharded", root=tmp_path)
    with pytest.raises(ParameterError, match="dataset.root"):
        locate_source("sharded", root=tmp_path / "absent")
    with pytest.raises(ParameterError, match="dataset.root"):
        locate_source("sharded")


def test_locate_reads_no_image(tmp_path, monkeypatch):
    """Locating lists names only: an image that cannot be decoded is not noticed."""
    root = _image_folder(tmp_path / "data")
    (root / "train" / "a" / "broken.png").write_bytes(b"not an image")
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("an image was opened"))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("a cache was read"))
    locate_source("imagefolder", root=root)
