from pathlib import Path

import numpy as np
import pytest

from tailmix._validation import ParameterError
from tailmix.data import class_counts, from_arrays, prepare_dataset, subsample_indices


def test_cifar10_exp_ratio_100():
    assert class_counts("exp", num_classes=10, n_max=5000, ratio=100) == [
        5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_cifar10_exp_ratio_10_and_cifar100_tail():
    assert class_counts("exp", num_classes=10, n_max=5000, ratio=10) == [
        5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    c100 = class_counts("exp", num_classes=100, n_max=500, ratio=100)
    assert c100[0] == 500 and c100[-1] == 5 and sum(c100) == 10847


def test_cifar10_step_ratio_100():
    assert class_counts("step", num_classes=10, n_max=5000, ratio=100) == [5000] * 5 + [50] * 5


def test_explicit_counts_and_errors():
    assert class_counts("counts", num_classes=3, n_max=1, counts=[5, 3, 1]) == [5, 3, 1]
    with pytest.raises(ParameterError, match="'counts'"):
        class_counts("counts", num_classes=3, n_max=1, counts=[5, 3])
    with pytest.raises(ParameterError, match="'ratio'.*Got 0.5"):
        class_counts("exp", num_classes=10, n_max=5000, ratio=0.5)
    with pytest.raises(ParameterError, match="'profile'"):
        class_counts("zipf", num_classes=10, n_max=5000, ratio=10)


@pytest.mark.parametrize("seed", range(20))
def test_exp_profile_is_monotone_and_hits_ratio(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 120))
    n_max = int(rng.integers(50, 6000))
    ratio = float(rng.uniform(1, 50))
    counts = class_counts("exp", num_classes=c, n_max=n_max, ratio=ratio)
    assert counts[0] == n_max
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))
    assert counts[-1] == int(np.floor(n_max / ratio + 1e-9))


def test_subsampling_is_deterministic_and_seeded():
    labels = np.repeat(np.arange(4), 100)
    a = subsample_indices(labels, [50, 20, 10, 5], seed=0)
    b = subsample_indices(labels, [50, 20, 10, 5], seed=0)
    c = subsample_indices(labels, [50, 20, 10, 5], seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.bincount(labels[a]).tolist() == [50, 20, 10, 5]
    # A class's choice depends only on the data seed: the first k of one permutation.
    small = subsample_indices(labels, [10, 20, 10, 5], seed=0)
    assert set(small[labels[small] == 0]) <= set(a[labels[a] == 0])


def test_prepare_dataset_counts_travel_and_test_stays_balanced():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (400, 3, 8, 8), dtype=np.uint8)
    y = np.repeat(np.arange(4), 100)
    raw = from_arrays(x, y, x[:40], np.repeat(np.arange(4), 10))
    data = prepare_dataset(raw, profile="exp", ratio=10)
    assert data.class_counts == [100, 46, 21, 10]
    assert np.bincount(data.train_labels.numpy()).tolist() == data.class_counts
    assert np.bincount(data.test_labels.numpy()).tolist() == [10] * 4
    assert data.train_inputs.dtype.is_floating_point is False


def test_the_default_head_count_is_the_most_the_pool_can_give():
    """Without n_max the head class gets as many images as the profile can keep for every
    class: the source's largest class when the head holds it, fewer when it does not."""
    x = np.zeros((300, 1, 4, 4), np.uint8)
    y = np.repeat(np.arange(4), [90, 100, 60, 50])
    raw = from_arrays(x, y, x[:8], np.repeat(np.arange(4), 2))
    assert prepare_dataset(raw, profile="exp", ratio=10).class_counts == [90, 41, 19, 9]
    assert prepare_dataset(raw, profile="exp", ratio=10,
                           class_order=[1, 0, 2, 3]).class_counts == [100, 46, 21, 10]
    assert prepare_dataset(raw, profile="step", ratio=2).class_counts == [90, 90, 45, 45]
    with pytest.raises(ParameterError, match="at most 90 images for class '0'"):
        prepare_dataset(raw, profile="exp", ratio=10, n_max=91)


def test_digits_without_n_max_loads():
    from tailmix.pipeline.build import load_data
    from tailmix.pipeline.config import resolve

    spec = resolve({"dataset": {"name": "digits", "ratio": 10}})
    assert load_data(spec).class_counts == [128, 99, 76, 59, 46, 35, 27, 21, 16, 12]


def test_prepare_dataset_errors():
    x = np.zeros((10, 1, 4, 4), np.uint8)
    y = np.array([0] * 9 + [1])
    raw = from_arrays(x, y, x, y)
    with pytest.raises(ParameterError, match="dataset.profile"):
        prepare_dataset(raw, profile="counts", counts=[5, 2])
    with pytest.raises(ParameterError, match="train_y.*labels in 0..1"):
        from_arrays(x, y, x, y, classes=["a"])
    no_class = from_arrays(x, np.zeros(10, np.int64), x, y, classes=["a", "b"])
    with pytest.raises(ParameterError, match="no images for class 'b'"):
        prepare_dataset(no_class, profile="original")


def test_tabular_arrays_become_float_vectors():
    rng = np.random.default_rng(1)
    raw = from_arrays(rng.normal(size=(60, 5)), np.repeat(np.arange(3), 20),
                      rng.normal(size=(9, 5)), np.repeat(np.arange(3), 3))
    data = prepare_dataset(raw, profile="original")
    assert data.input_shape == (5,) and not data.is_image
    out = data.augment(data.train_inputs)
    assert out.shape == (60, 5)
    assert abs(float(out.mean())) < 1e-5 and abs(float(out.std(0).mean()) - 1) < 0.05


def test_named_svhn_reference_profile():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 1200)
    x = rng.integers(0, 256, (len(y), 3, 4, 4), dtype=np.uint8)
    raw = from_arrays(x, y, x[:10], np.arange(10), classes=[str(d) for d in range(10)])
    data = prepare_dataset(raw, profile="svhn_reference", ratio=100)
    assert data.class_counts == [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]
    assert data.classes == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"]
    # Digit 0 is the last, smallest class; labels follow the new order.
    assert (data.train_labels == 9).sum() == 10
    assert data.test_labels.tolist() == [9, 0, 1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("config, counts", [
    ("cifar10_lt.yaml", [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]),
    ("cinic10_lt.yaml", [9000, 5395, 3234, 1938, 1162, 696, 417, 250, 150, 90]),
])
def test_shipped_configs_give_the_documented_counts(config, counts):
    from pathlib import Path

    import yaml

    d = yaml.safe_load((Path(__file__).parents[1] / "configs" / config).read_text())["dataset"]
    assert class_counts(d["profile"], num_classes=10, n_max=d["n_max"], ratio=d["ratio"]) == counts


def test_tiny_imagenet_profile_counts():
    c = class_counts("exp", num_classes=200, n_max=500, ratio=100)
    assert c[0] == 500 and c[-1] == 5 and len(c) == 200


# --------------------------------------------------------------------------- a user's own data


def _folder(root, counts=(300, 100, 30, 10), test=3):
    """SPLIT/CLASS/IMAGE of 8x8 PNGs: ``counts`` training images a class, ``test`` each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, ns in (("train", counts), ("test", [test] * len(counts))):
        for c, n in enumerate(ns):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_a_users_folder_trains_on_every_image_it_holds(tmp_path, capsys):
    import json

    from tailmix.cli import main

    root = _folder(tmp_path / "mydata")
    out = tmp_path / "run"
    assert main(["train", "--dataset", "imagefolder", "--data-root", str(root), "--epochs",
                 "1", "--set", "model.arch=small_cnn", "--set", "train.device=cpu",
                 "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_counts"] == [300, 100, 30, 10]
    assert metrics["imbalance_ratio"] == 30
    assert metrics["train_subset"]["images"] == 440
    log = capsys.readouterr().out
    assert "data: mydata, 4 classes, 440 training images (300 100 30 10 a class), imbalance " \
           "ratio 30, profile original" in log
    assert "dataset.profile: 'original' (the default of 'imagefolder')" in log


@pytest.mark.parametrize("name", ["imagefolder", "filelist", "csv", "arrays", "imagenet_lt",
                                  "places_lt", "inat2018"])
def test_a_users_data_and_the_long_tailed_releases_default_to_the_original_profile(name):
    from tailmix.pipeline.config import resolve

    root = str(Path(__file__).resolve().parents[1])
    spec = resolve({"dataset": {"name": name, "root": root}})
    assert spec.dataset["profile"] == "original" and spec.dataset["ratio"] is None
    # A cut asked for without a profile is exp, and the run's log says so.
    spec = resolve({"dataset": {"name": name, "root": root, "ratio": 10}})
    assert spec.dataset["profile"] == "exp" and spec.dataset["ratio"] == 10
    assert any(n.startswith("dataset.profile: 'exp', as dataset.ratio is given")
               for n in spec.notes)
    spec = resolve({"dataset": {"name": name, "root": root, "profile": "step", "ratio": 5}})
    assert spec.dataset["profile"] == "step" and spec.notes == ()


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "cinic10", "tiny_imagenet",
                                  "digits"])
def test_the_benchmark_sources_keep_their_cut(name):
    from tailmix.pipeline.config import resolve

    root = str(Path(__file__).resolve().parents[1])
    spec = resolve({"dataset": {"name": name, "root": root}})
    assert (spec.dataset["profile"], spec.dataset["ratio"]) == ("exp", 100)


def test_check_names_the_original_profile(tmp_path, capsys):
    from tailmix.cli import main

    root = _folder(tmp_path / "mydata", counts=(3, 2), test=1)
    config = tmp_path / "mine.yaml"
    config.write_text(f"dataset: {{name: imagefolder, root: {root}}}\nmodel: {{arch: small_cnn}}\n")
    assert main(["check", str(config)]) == 0
    assert "dataset.profile: 'original'" in capsys.readouterr().out


def test_a_profile_written_for_a_users_folder_still_cuts_it(tmp_path):
    from tailmix.pipeline.build import load_data
    from tailmix.pipeline.config import resolve

    root = _folder(tmp_path / "mydata")
    spec = resolve({"dataset": {"name": "imagefolder", "root": str(root), "profile": "exp",
                                "ratio": 10, "n_max": 100}, "model": {"arch": "small_cnn"}})
    data = load_data(spec)
    assert data.class_counts == [100, 46, 21, 10] and data.imbalance_ratio == 10
