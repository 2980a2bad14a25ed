"""A user's own folder of images, as it usually is: ``CLASS/IMAGE`` folders without split
folders, images of differing sizes, no config, ``--data-root`` alone."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tailmix._validation import ParameterError
from tailmix.cli import main
from tailmix.data.download import DatasetError
from tailmix.data.files import FileDataset
from tailmix.data.imagefolder import DEFAULT_TEST_SHARE, held_out_split, read_imagefolder


def _folder(root: Path, counts: dict[str, int], sizes=((6, 7),), seed=0) -> dict[str, np.ndarray]:
    """``root/CLASS/NNN.png`` of random pixels, the sizes (height, width) taken in turn;
    returns the pixels by member name."""
    rng = np.random.default_rng(seed)
    images, k = {}, 0
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = sizes[k % len(sizes)]
            k += 1
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i:03d}.png")
            images[f"{cls}/{i:03d}.png"] = pixels
    return images


# --------------------------------------------------------------------------- the split


def test_held_out_split_by_hand():
    members = {"a": [f"a/{i}" for i in range(10)], "b": ["b/0", "b/1"], "c": ["c/0"]}
    train, test = held_out_split(members, 0.25, seed=3)
    # 2.5 of a rounds half up to 3; b's 0.5 rounds to 1; c keeps its only image.
    assert [len(test[c]) for c in "abc"] == [3, 1, 0]
    assert [len(train[c]) for c in "abc"] == [7, 1, 1]
    assert train["c"] == ["c/0"]
    assert held_out_split(members, 0.25, seed=3) == (train, test)  # seeded


@pytest.mark.parametrize(("share", "counts"), [
    # n = 1, 2, 3, 4, 5, 7, 8, 10, 13, 100 images in a class
    (0.2, [0, 1, 1, 1, 1, 1, 2, 2, 3, 20]),
    (0.5, [0, 1, 2, 2, 3, 4, 4, 5, 7, 50]),
    (0.9, [0, 1, 2, 3, 4, 6, 7, 9, 12, 90]),
])
def test_held_out_counts_by_class_size(share, counts):
    sizes = [1, 2, 3, 4, 5, 7, 8, 10, 13, 100]
    members = {f"c{n}": [f"c{n}/{i}" for i in range(n)] for n in sizes}
    assert [len(v) for v in held_out_split(members, share)[1].values()] == counts


def test_held_out_split_properties_over_random_folders():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n_classes = int(rng.integers(1, 8))
        members = {f"k{c}": [f"k{c}/{i:04d}" for i in range(int(rng.integers(1, 60)))]
                   for c in range(n_classes)}
        share, seed = float(rng.uniform(0.01, 0.99)), int(rng.integers(0, 1000))
        train, test = held_out_split(members, share, seed)
        for cls, names in members.items():
            n = len(names)
            assert (len(test[cls]) == 0) if n == 1 else (1 <= len(test[cls]) <= n - 1)
            assert abs(len(test[cls]) - share * n) <= 0.5 or len(test[cls]) in (1, n - 1)
            assert sorted(train[cls] + test[cls]) == names  # a partition
            assert train[cls] == sorted(train[cls]) and test[cls] == sorted(test[cls])
        # A class's split does not depend on the other classes.
        first = next(iter(members))
        alone_train, alone_test = held_out_split({first: members[first]}, share, seed)
        assert alone_test[first] == test[first] and alone_train[first] == train[first]


def test_held_out_split_follows_the_seed():
    members = {"a": [f"a/{i:02d}" for i in range(50)]}
    drawn = {tuple(held_out_split(members, 0.2, seed)[1]["a"]) for seed in range(20)}
    assert len(drawn) == 20


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("form", ["folder", "zip", "wrapped zip"])
def test_a_class_image_folder_holds_out_its_test_set(tmp_path, form):
    images = _folder(tmp_path / "pics", {"owl": 3, "cat": 12, "dog": 5})
    source = tmp_path / "pics"
    if form != "folder":
        source = tmp_path / "pics.zip"
        with zipfile.ZipFile(source, "w") as zf:
            for path in sorted((tmp_path / "pics").rglob("*.png")):
                name = path.relative_to(tmp_path / "pics").as_posix()
                zf.write(path, ("pics/" if form == "wrapped zip" else "") + name)
    data = read_imagefolder(source, cache_dir=tmp_path / "cache")
    assert data.classes == ["cat", "dog", "owl"]
    members = {c: sorted(k for k in images if k.startswith(c + "/")) for c in data.classes}
    train, test = held_out_split(members, DEFAULT_TEST_SHARE, 0)
    for x, y, split in ((data.train_x, data.train_y, train), (data.test_x, data.test_y, test)):
        order = [m for c in data.classes for m in split[c]]
        np.testing.assert_array_equal(y, [data.classes.index(m.split("/")[0]) for m in order])
        np.testing.assert_array_equal(x, np.stack([images[m].transpose(2, 0, 1)
                                                   for m in order]))
    assert np.bincount(data.test_y).tolist() == [2, 1, 1]  # 2.4, 1.0 and 0.6 rounded
    assert len(data.notes) == 1 and "4 of its 20 images" in data.notes[0]
    assert "held out as the test set" in data.notes[0]


def test_the_share_and_the_seed_are_options(tmp_path):
    _folder(tmp_path / "pics", {"a": 10, "b": 10})
    cache = {"cache_dir": tmp_path / "cache"}
    half = read_imagefolder(tmp_path / "pics", test_share=0.5, **cache)
    assert np.bincount(half.test_y).tolist() == [5, 5]
    first = read_imagefolder(tmp_path / "pics", split_seed=1, **cache)
    again = read_imagefolder(tmp_path / "pics", split_seed=1, **cache)
    other = read_imagefolder(tmp_path / "pics", split_seed=2, **cache)
    np.testing.assert_array_equal(first.test_x, again.test_x)
    assert not np.array_equal(first.test_x, other.test_x)  # another cache entry, another cut
    for key, bad in (("test_share", 1.0), ("test_share", 0), ("split_seed", -1),
                     ("split_seed", 0.5)):
        with pytest.raises(ParameterError, match=f"'{key}'"):
            read_imagefolder(tmp_path / "pics", **{key: bad}, **cache)


def test_a_folder_with_split_folders_refuses_the_held_out_options(tmp_path):
    _folder(tmp_path / "src" / "train", {"a": 2, "b": 2})
    _folder(tmp_path / "src" / "test", {"a": 1, "b": 1})
    data = read_imagefolder(tmp_path / "src", cache_dir=tmp_path / "c")
    assert len(data.test_y) == 2 and data.notes == []
    with pytest.raises(ParameterError, match=r"'test_share'.*absent.*'train' folder"):
        read_imagefolder(tmp_path / "src", test_share=0.3, cache_dir=tmp_path / "c")


@pytest.mark.parametrize("held", ["val", "valid", "validation"])
def test_a_train_and_val_folder_is_tested_on_val(tmp_path, capsys, held):
    _folder(tmp_path / "src" / "train", {"a": 3, "b": 2})
    images = _folder(tmp_path / "src" / held, {"a": 1, "b": 2}, seed=1)
    data = read_imagefolder(tmp_path / "src", cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(data.test_y, [0, 1, 1])
    np.testing.assert_array_equal(data.test_x[0], images["a/000.png"].transpose(2, 0, 1))
    assert data.notes == [f"dataset: src has no test/ folder; its {held}/ folder is the test "
                          "set (dataset.options.test_split names another)"]
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: {{name: imagefolder, root: {tmp_path / 'src'}}}\n")
    assert main(["check", str(config)]) == 0
    _folder(tmp_path / "src" / "test", {"a": 1, "b": 1}, seed=2)  # a test folder comes first
    assert len(read_imagefolder(tmp_path / "src", cache_dir=tmp_path / "c").test_y) == 2
    with pytest.raises(DatasetError, match="no 'other' folder"):
        read_imagefolder(tmp_path / "src", test_split="other", cache_dir=tmp_path / "c")


@pytest.mark.parametrize("in_memory", ["auto", True])
def test_images_of_differing_sizes_are_listed_as_files(tmp_path, in_memory):
    _folder(tmp_path / "pics", {"a": 4, "b": 4}, sizes=((6, 7), (9, 5)))
    data = read_imagefolder(tmp_path / "pics", in_memory=in_memory, cache_dir=tmp_path / "c")
    assert isinstance(data, FileDataset) and len(data.train_files) == 6
    assert any("differ in size" in note and "7x6" in note and "5x9" in note
               for note in data.notes)


def test_images_larger_than_max_side_are_listed_not_decoded(tmp_path, monkeypatch):
    from tailmix.data import imagefolder

    _folder(tmp_path / "pics", {"a": 3, "b": 3}, sizes=((30, 40),))
    kept = read_imagefolder(tmp_path / "pics", max_side=30, cache_dir=tmp_path / "c")
    assert kept.train_x.shape[2:] == (30, 40)  # at most max_side: decoded as it is

    def refuse(*args, **kwargs):
        raise AssertionError("decoded whole although larger than max_side")

    monkeypatch.setattr(imagefolder, "build_dataset", refuse)
    for in_memory in (True, "auto"):
        data = read_imagefolder(tmp_path / "pics", max_side=29, in_memory=in_memory,
                                cache_dir=tmp_path / "c")
        assert isinstance(data, FileDataset)


def test_layouts_that_are_easy_to_get_wrong(tmp_path):
    cache = {"cache_dir": tmp_path / "c"}
    _folder(tmp_path / "one" / "cat", {"": 3})  # a single class folder
    with pytest.raises(DatasetError, match=r"\(one class folder, cat/\)"):
        read_imagefolder(tmp_path / "one", **cache)
    _folder(tmp_path / "single", {"a": 1, "b": 1, "c": 1})
    with pytest.raises(DatasetError, match="Every class folder of .*single holds one image"):
        read_imagefolder(tmp_path / "single", **cache)
    # A class named like a split folder is a class when it holds images, not folders.
    _folder(tmp_path / "vehicles", {"train": 3, "bus": 3, "car": 3})
    data = read_imagefolder(tmp_path / "vehicles", **cache)
    assert data.classes == ["bus", "car", "train"] and len(data.test_y) == 3
    # train/ and val/ in a zip, inside a wrapper folder.
    _folder(tmp_path / "tv" / "train", {"a": 2, "b": 2})
    _folder(tmp_path / "tv" / "val", {"a": 1, "b": 1})
    with zipfile.ZipFile(tmp_path / "tv.zip", "w") as zf:
        for path in sorted((tmp_path / "tv").rglob("*.png")):
            zf.write(path, "wrap/" + path.relative_to(tmp_path / "tv").as_posix())
    data = read_imagefolder(tmp_path / "tv.zip", **cache)
    assert len(data.train_y) == 4 and len(data.test_y) == 2
    assert "its val/ folder is the test set" in data.notes[0]


# --------------------------------------------------------------------------- the command line


def _train(tmp_path, monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAILMIX_CACHE", str(tmp_path / "cache"))
    code = main(["train", *args, "--no-progress", "--set", "train.device=cpu"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_newcomers_folder_trains_with_data_root_alone(tmp_path, monkeypatch, capsys):
    """No config, no --dataset: a CLASS/IMAGE folder of differing sizes trains, its test
    set held out, into a run folder named after it."""
    _folder(tmp_path / "pics", {"cat": 15, "dog": 6, "owl": 3}, sizes=((12, 14), (16, 12)))
    code, out, err = _train(tmp_path, monkeypatch, capsys, "--data-root", "pics",
                            "--epochs", "2")
    assert code == 0, err
    assert "dataset.name: 'imagefolder', as --data-root is given" in out
    assert "5 of its 24 images, 0.2 of each class" in out
    assert "differ in size" in out
    run = tmp_path / "runs" / "imagefolder-pics" / "ERM-s0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["class_counts"] == [12, 5, 2]
    assert sum(metrics["final"]["confusion_matrix"][i][j] for i in range(3)
               for j in range(3)) == 5


def test_set_dataset_name_counts_as_naming_the_dataset(tmp_path, monkeypatch, capsys):
    from tailmix.cli import build_config, make_parser

    monkeypatch.setenv("RANK", "0")
    args = make_parser().parse_args(["train", "--data-root", "x", "--set",
                                     "dataset.name=cifar10"])
    cfg = build_config(args)
    assert cfg["dataset"]["name"] == "cifar10" and cfg["model"]["arch"] == "resnet32"
    assert cfg["dataset"]["ratio"] == 100  # cifar10's shipped config, not an empty one
    assert "imagefolder" not in capsys.readouterr().out
    monkeypatch.setenv("RANK", "1")  # under torchrun, rank 0 alone says it
    build_config(make_parser().parse_args(["train", "--data-root", "x"]))
    assert capsys.readouterr().out == ""


def test_data_root_for_a_dataset_that_reads_none_is_an_error(tmp_path, monkeypatch, capsys):
    _folder(tmp_path / "pics", {"a": 3, "b": 3})
    for args in (["--dataset", "digits"], ["-c", "digits"]):
        code, out, err = _train(tmp_path, monkeypatch, capsys, *args, "--data-root", "pics")
        assert code == 2 and err.startswith("tailmix: error: ") and err.count("\n") == 1
        assert "'--data-root'" in err and "'digits' reads no files" in err
        assert "--dataset imagefolder" in err
    assert main(["check", "digits", "--data-root", "pics"]) == 2
    assert "'--data-root'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_each_network_has_a_side_limit():
    from tailmix.data.section import DEFAULT_SIDE_LIMIT, _side_limit

    assert [_side_limit(a) for a in ("resnet32", "resnet18", "small_cnn")] == [64, 64, 64]
    assert [_side_limit(a) for a in ("resnet50", "resnext50_32x4d")] == [224, 224]
    assert _side_limit("a network of one's own") == DEFAULT_SIDE_LIMIT == 224


@pytest.mark.parametrize("in_memory", ["auto", "false"])
def test_large_images_train_at_the_networks_side_limit(tmp_path, monkeypatch, capsys,
                                                       in_memory):
    import torch

    _folder(tmp_path / "photos", {"a": 3, "b": 3}, sizes=((160, 200),))
    code, out, err = _train(tmp_path, monkeypatch, capsys, "--data-root", "photos",
                            "--epochs", "1", "--arch", "small_cnn", "--batch-size", "4",
                            "--set", f"dataset.in_memory={in_memory}")
    assert code == 0, err
    assert "dataset.image_size: 64, as the images are larger (160 pixels" in out
    run = tmp_path / "runs" / "imagefolder-photos" / "ERM-s0"
    assert json.loads((run / "metrics.json").read_text())["final"]["top1"] is not None
    inputs = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["inputs"]
    # Recorded, so that predict brings a photo to the network's input as the run did.
    assert inputs["shape"] == [3, 64, 64] and inputs["image_size"] == 64
    assert main(["predict", str(run), str(tmp_path / "photos" / "a"), "--out",
                 str(tmp_path / "p.csv")]) == 0
    assert "then the central 64x64)" in capsys.readouterr().out


def test_check_finds_a_class_image_folder(tmp_path, capsys):
    _folder(tmp_path / "pics", {"a": 3, "b": 3})
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: {{name: imagefolder, root: {tmp_path / 'pics'}}}\n")
    assert main(["check", str(config)]) == 0
    assert "its data found" in capsys.readouterr().out
    _folder(tmp_path / "split" / "train", {"a": 2, "b": 2})
    _folder(tmp_path / "split" / "test", {"a": 1, "b": 1})
    config.write_text(f"dataset: {{name: imagefolder, root: {tmp_path / 'split'}, "
                      "options: {test_share: 0.3}}\n")
    assert main(["check", str(config)]) == 2
    err = capsys.readouterr().err
    assert "'dataset.options.test_share'" in err and "its own split folder" in err


def test_the_readmes_own_images_commands_run_as_written(tmp_path, monkeypatch, capsys):
    import shlex

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = text.index("\n### Your own images\n")
    section = text[start:text.index("\n### ", start + 1)]
    (block,) = [b for b in section.split("```")[1::2] if b.startswith("bash\n")]
    commands = [shlex.split(line) for line in block.splitlines()[1:] if line.strip()]
    assert len(commands) == 2 and all(c[:2] == [".venv/bin/tailmix", "train"] for c in commands)
    _folder(tmp_path / "my_images", {"cat": 15, "dog": 6, "owl": 3},
            sizes=((12, 14), (16, 12)))
    for command in commands:
        code, out, err = _train(tmp_path, monkeypatch, capsys, *command[2:])
        assert code == 0, err
        assert "results written to runs/imagefolder-my_images/" in out
    metrics = json.loads((tmp_path / "runs" / "imagefolder-my_images" / "MAMix-DRW-s0"
                          / "metrics.json").read_text())
    assert metrics["epochs"] == 40 and metrics["strategy"] == "MAMix-DRW"
    assert metrics["classes"] == ["cat", "dog", "owl"] and metrics["final"]["num_examples"] == 5


def test_explicit_in_memory_trains_a_folder_of_differing_sizes(tmp_path, monkeypatch, capsys):
    _folder(tmp_path / "pics", {"a": 5, "b": 5}, sizes=((12, 14), (16, 12)))
    code, out, err = _train(tmp_path, monkeypatch, capsys, "--data-root", "pics", "--epochs",
                            "1", "--arch", "small_cnn", "--set", "dataset.in_memory=true")
    assert code == 0, err
    assert "differ in size" in out


def test_arrays_keep_their_size_whatever_the_network(tmp_path):
    """The side limit is for images read from files, never for a user's own arrays."""
    from tailmix.data import from_arrays
    from tailmix.pipeline.build import load_data

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(12, 3, 80, 80), dtype=np.uint8)
    config = {"dataset": {"name": "arrays"}, "model": {"arch": "resnet32"},
              "train": {"epochs": 1, "device": "cpu"}}
    data = load_data(config, from_arrays(x, np.arange(12) % 2, x[:4], np.arange(4) % 2),
                     log=lambda line: None)
    assert tuple(data.train_inputs.shape[2:]) == (80, 80) and data.decoded is None
