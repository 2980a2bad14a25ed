"""Config hardening: malformed YAML, ``--set`` values, dataset options, sampler keys, the
schedule, the dataset section and non-finite numbers all end in one error naming the key."""

from __future__ import annotations

import argparse
import inspect

import numpy as np
import pytest

from tailmix._validation import ParameterError
from tailmix.cli import build_config, main
from tailmix.data import from_arrays, prepare_dataset
from tailmix.pipeline.config import load_config_file, read_yaml, resolve, source_options
from tailmix.registry import DATASETS


def digits(**sections) -> dict:
    """A small valid digits config; ``sections`` update its sections."""
    cfg = {"dataset": {"name": "digits", "profile": "exp", "ratio": 20, "n_max": 120},
           "model": {"arch": "small_cnn"}, "strategy": "ERM",
           "train": {"epochs": 10, "batch_size": 64, "lr": 0.05, "warmup_epochs": 1,
                     "precision": "fp32", "device": "cpu"},
           "eval": {"every": 2, "many_threshold": 60}, "log": {"progress": False}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def one_error_line(capsys) -> str:
    """The command's stderr, checked to be a single ``tailmix: error:`` line."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tailmix: error:"), err
    assert "Traceback" not in err
    return err


def error_name(config: dict) -> str:
    with pytest.raises(ParameterError) as info:
        resolve(config)
    return info.value.name


# --------------------------------------------------------------------------- YAML


BROKEN = "dataset:\n  name: digits\n   ratio: [\n"


@pytest.mark.parametrize("command", [["check"], ["train", "-c"], ["compare", "--strategies",
                                                                   "ERM", "--out", "x", "-c"]])
def test_malformed_config_file_is_one_error_line_with_line_and_column(tmp_path, capsys,
                                                                      command):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    assert main([*command, str(path)]) == 2
    err = one_error_line(capsys)
    assert "broken.yaml" in err and "line 3, column 9" in err
    assert "mapping values are not allowed here" in err


@pytest.mark.parametrize("content", [bytes(range(256)), b"\x81\xff\xfe binary", b"a: \x00\x01"])
def test_binary_config_file_is_one_error_line(tmp_path, capsys, content):
    path = tmp_path / "binary.yaml"
    path.write_bytes(content)
    for command in (["check", str(path)], ["train", "-c", str(path)]):
        assert main(command) == 2
        err = one_error_line(capsys)
        assert "binary.yaml" in err and "line " in err


def test_malformed_suite_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text("name: s\ngrid:\n  - strategies: [ERM\n")
    for command in (["bench", str(path), "--table-only", "--out", str(tmp_path / "r")],
                    ["check", str(path)]):
        assert main(command) == 2
        err = one_error_line(capsys)
        assert "suite.yaml" in err and "line 4, column 1" in err
    path.write_bytes(b"name: s\n\xc3\x28")
    assert main(["bench", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "suite.yaml" in one_error_line(capsys)


def test_base_config_of_a_suite_is_read_with_the_same_errors(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text(BROKEN)
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: s\nbase_config: {tmp_path / 'base.yaml'}\ngrid:\n"
                     "  - strategies: [ERM]\n")
    assert main(["check", str(suite)]) == 2
    err = one_error_line(capsys)
    assert "base.yaml" in err and "line 3, column 9" in err


def test_read_yaml_and_load_config_file_raise_parameter_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(ParameterError, match="c.yaml") as info:
        load_config_file(path)
    assert info.value.name == "config"
    with pytest.raises(ParameterError, match="line 2, column 2") as info:
        read_yaml(path, name="suite")
    assert info.value.name == "suite"
    path.write_text("- a\n- b\n")
    with pytest.raises(ParameterError, match="a YAML mapping"):
        load_config_file(path)
    path.write_text("a: 1\n---\nb: 2\n")
    with pytest.raises(ParameterError, match="single document"):
        load_config_file(path)
    with pytest.raises(ParameterError, match="config"):
        load_config_file(tmp_path)  # a folder


def set_args(*items: str) -> argparse.Namespace:
    return argparse.Namespace(config="digits", set=list(items), no_progress=False)


@pytest.mark.parametrize("item, column", [("train.lr=[", 2), ("train.lr={a: 1", 6),
                                          ("train.lr=a: b: c", 5), ("train.lr='abc", 5),
                                          ("train.lr=\x07", 1)])
def test_malformed_set_value_names_the_argument(capsys, item, column):
    with pytest.raises(ParameterError) as info:
        build_config(set_args(item))
    assert info.value.name == "--set"
    assert item in str(info.value) or repr(item)[1:-1] in str(info.value)
    assert f"column {column}" in str(info.value)
    assert main(["train", "--set", item, "--out", "never"]) == 2
    assert "--set" in one_error_line(capsys)


@pytest.mark.parametrize("item", ["=3", "train.lr", ".lr=3", "train..lr=3", "train.=1",
                                  " =1"])
def test_malformed_set_key_names_the_argument(item):
    with pytest.raises(ParameterError) as info:
        build_config(set_args(item))
    assert info.value.name == "--set"


@pytest.mark.parametrize("value, expected", [("1e-3", 0.001), ("5E+2", 500.0), ("1e3", 1000.0),
                                             ("-2.5e-1", -0.25), ("+1E0", 1.0), ("0.05", 0.05),
                                             ("3", 3), (".5", 0.5)])
def test_set_reads_exponent_numbers_as_floats(value, expected):
    cfg = build_config(set_args(f"train.lr={value}"))
    assert cfg["train"]["lr"] == expected and type(cfg["train"]["lr"]) is type(expected)
    if expected > 0:
        resolve(cfg)


def test_set_keeps_strings_and_reads_numbers_inside_lists():
    cfg = build_config(set_args("train.lr_factors=[1e-1, 1e-2]", "name='1e-3'",
                                "dataset.root=1e-3x", "train.device=cpu", "model.head=e5",
                                "name2=inf"))
    assert cfg["train"]["lr_factors"] == [0.1, 0.01]
    assert cfg["name"] == "1e-3" and cfg["dataset"]["root"] == "1e-3x"
    assert cfg["model"]["head"] == "e5" and cfg["name2"] == "inf"


def test_exponent_without_a_dot_in_a_config_file_gets_a_hint(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {lr: 1e-3}\n")
    with pytest.raises(ParameterError, match=r"1\.0e-3") as info:
        resolve(load_config_file(path))
    assert info.value.name == "train.lr"


# --------------------------------------------------------------------------- dataset options


def test_unknown_option_of_a_source_taking_none():
    with pytest.raises(ParameterError, match="takes no options") as info:
        resolve(digits(dataset={"options": {"split": "x"}}))
    assert info.value.name == "dataset.options.split"


def test_unknown_imagefolder_option_is_refused_before_any_reading(tmp_path):
    cfg = digits(dataset={"name": "imagefolder", "root": str(tmp_path), "n_max": None,
                          "options": {"train_splt": "tr"}})
    with pytest.raises(ParameterError, match="'train_split', 'test_split', 'cache_dir'") as info:
        resolve(cfg)
    assert info.value.name == "dataset.options.train_splt"
    cfg["dataset"]["options"] = {"train_split": "tr", "test_split": "te"}
    resolve(cfg)  # the folder is empty: nothing was read


@pytest.mark.parametrize("name, options, key", [
    ("imagefolder", {"train_split": "a/b"}, "dataset.options.train_split"),
    ("imagefolder", {"train_split": "x", "test_split": "x"}, "dataset.options.test_split"),
    ("imagefolder", {"cache_dir": 3}, "dataset.options.cache_dir"),
    ("imagefolder", {"name": "mine"}, "dataset.options.name"),
    ("imagefolder", {"in_memory": False}, "dataset.options.in_memory"),
    ("cinic10", {"eval_split": "val"}, "dataset.options.eval_split"),
    ("cinic10", {"train_split": "train"}, "dataset.options.train_split"),
    ("tiny_imagenet", {"eval_split": "test"}, "dataset.options.eval_split"),
    ("svhn", {"cache_dir": "/tmp"}, "dataset.options.cache_dir"),
    ("cifar10", {"eval_split": "test"}, "dataset.options.eval_split"),
    ("digits", {"root": "/tmp"}, "dataset.options.root"),
    ("digits", {"download": True}, "dataset.options.download"),
])
def test_source_options_are_checked_at_resolve(tmp_path, name, options, key):
    cfg = digits(dataset={"name": name, "root": str(tmp_path), "n_max": None,
                          "options": options})
    assert error_name(cfg) == key


def test_accepted_options_come_from_the_readers():
    from tailmix.data.imagefolder import read_cinic10, read_imagefolder

    folder = [p for p, v in inspect.signature(read_imagefolder).parameters.items()
              if v.kind is inspect.Parameter.KEYWORD_ONLY
              and p not in ("in_memory", "name", "bad_images", "max_pixels", "max_side")]
    assert source_options("imagefolder") == tuple(folder)
    assert source_options("cinic10") == ("eval_split", "cache_dir")
    assert "cache_dir" in source_options("tiny_imagenet")
    assert source_options("svhn") == () and source_options("digits") == ()
    assert set(source_options("cifar10")) == {"train_split", "test_split", "cache_dir"}
    with pytest.raises(ParameterError, match="'dataset.options.test_share'"):
        resolve(digits(dataset={"name": "cifar10", "root": ".", "n_max": None,
                                "options": {"test_share": 0.3}}))
    assert read_cinic10 is not None
    resolve(digits(dataset={"name": "cifar10", "root": ".", "n_max": None,
                            "options": {"train_split": "training"}}))


@pytest.fixture
def plugin_source():
    names = []

    def add(name, loader, **meta):
        DATASETS.register(name, loader, **meta)
        names.append(name)

    yield add
    for name in names:
        DATASETS._items.pop(name, None)
        DATASETS._meta.pop(name, None)


def test_plugin_source_options_from_its_signature_or_metadata(plugin_source):
    def fixed(*, root=None, download=False, size: int = 3):
        raise AssertionError("never read at resolve")

    def open_ended(*, root=None, download=False, **options):
        raise AssertionError("never read at resolve")

    plugin_source("fixed_src", fixed, needs_root=False, sizes=None)
    plugin_source("meta_src", open_ended, needs_root=False, sizes=None, options=("a", "b"))
    plugin_source("free_src", open_ended, needs_root=False, sizes=None)
    base = {"n_max": None, "profile": "original"}
    resolve(digits(dataset={**base, "name": "fixed_src", "options": {"size": 5}}))
    with pytest.raises(ParameterError, match="'size'") as info:
        resolve(digits(dataset={**base, "name": "fixed_src", "options": {"sise": 5}}))
    assert info.value.name == "dataset.options.sise"
    resolve(digits(dataset={**base, "name": "meta_src", "options": {"a": 1}}))
    with pytest.raises(ParameterError, match="'a', 'b'") as info:
        resolve(digits(dataset={**base, "name": "meta_src", "options": {"c": 1}}))
    assert info.value.name == "dataset.options.c"
    # A source taking **options checks them itself, when it reads.
    resolve(digits(dataset={**base, "name": "free_src", "options": {"anything": 1}}))


def test_list_sources_still_check_their_own_options(tmp_path):
    from tailmix.data.sources import load_source

    with pytest.raises(ParameterError) as info:
        load_source("filelist", root=tmp_path, train="a", test="b", bogus=1)
    assert info.value.name == "dataset.options.bogus"


def test_unknown_imagefolder_reader_keyword_is_a_parameter_error(tmp_path):
    from tailmix.data.imagefolder import read_cinic10, read_imagefolder
    from tailmix.data.sources import load_source

    with pytest.raises(ParameterError) as info:
        read_imagefolder(tmp_path, train_splt="x")
    assert info.value.name == "train_splt" and "'train_split'" in str(info.value)
    with pytest.raises(ParameterError) as info:
        read_cinic10(tmp_path, eval_splt="x")
    assert info.value.name == "eval_splt"
    with pytest.raises(ParameterError) as info:
        load_source("imagefolder", root=tmp_path, bogus=1)
    assert info.value.name == "bogus"


def test_unknown_sampler_keyword_is_a_parameter_error():
    import torch

    from tailmix.samplers import build_sampler

    with pytest.raises(ParameterError, match="num_samples") as info:
        build_sampler("instance", labels=torch.tensor([0, 1, 1]), power=2)
    assert info.value.name == "power"
    with pytest.raises(ParameterError) as info:
        build_sampler("sqrt", labels=torch.tensor([0, 1, 1]), **{"num samples": 2})
    assert info.value.name == "num samples"
    assert error_name(digits(sampler={"name": "sqrt", "replacement": True})) == \
        "sampler.replacement"


# --------------------------------------------------------------------------- the schedule


@pytest.mark.parametrize("train, key", [
    ({"milestones": [0.9, 0.8], "lr_factors": [0.1, 0.01]}, "train.milestones[1]"),
    ({"milestones": [8, 6], "lr_factors": [0.1, 0.01]}, "train.milestones[1]"),
    ({"milestones": [8, 0.5], "lr_factors": [0.1, 0.01]}, "train.milestones[1]"),
    ({"milestones": [0], "lr_factors": [0.1]}, "train.milestones[0]"),
    ({"milestones": [10], "lr_factors": [0.1]}, "train.milestones[0]"),
    ({"milestones": [12], "lr_factors": [0.1]}, "train.milestones[0]"),
    ({"milestones": [-1], "lr_factors": [0.1]}, "train.milestones[0]"),
    ({"milestones": [5.0, 5], "lr_factors": [0.1, 0.01]}, "train.milestones[1]"),
    ({"warmup_epochs": 10}, "train.warmup_epochs"),
    ({"warmup_epochs": 12.5}, "train.warmup_epochs"),
    ({"schedule": "cosine", "milestones": None, "lr_factors": None, "warmup_epochs": 10},
     "train.warmup_epochs"),
])
def test_schedule_mistakes_name_the_key(train, key):
    assert error_name(digits(train=train)) == key


def test_milestones_on_one_epoch_after_resolution_name_both_entries():
    # Shares that land on one epoch merge (the earlier keeps its factor); numbers refuse.
    spec = resolve(digits(train={"milestones": [0.8, 0.84], "lr_factors": [0.1, 0.01]}))
    assert spec.milestones == (8,) and spec.train["lr_factors"] == [0.1]
    assert any("train.milestones[0]" in n and "train.milestones[1]" in n and "epoch 8" in n
               for n in spec.notes)
    with pytest.raises(ParameterError) as info:
        resolve(digits(train={"milestones": [8, 8], "lr_factors": [0.1, 0.01]}))
    message = str(info.value)
    assert "train.milestones[0]" in message and "train.milestones[1]" in message


def test_valid_schedules_still_resolve():
    spec = resolve(digits(train={"milestones": [0.5, 8, 0.9], "lr_factors": [0.5, 0.1, 0.01],
                                 "warmup_epochs": 9.5}))
    assert spec.milestones == (5, 8, 9)
    assert resolve(digits(train={"epochs": 1, "warmup_epochs": 0, "milestones": [],
                                 "lr_factors": []})).milestones == ()


@pytest.mark.parametrize("epochs, milestones, factors, warmup", [
    (1, (), [], 0), (2, (1,), [0.01], 0), (3, (2,), [0.01], 0), (4, (3,), [0.01], 0),
    (5, (4,), [0.01], 0), (10, (8, 9), [0.01, 0.0001], 0), (60, (48, 54), [0.01, 0.0001], 2),
    (200, (160, 180), [0.01, 0.0001], 5),
])
def test_default_schedule_fits_any_run(epochs, milestones, factors, warmup):
    cfg = digits(train={"epochs": epochs})
    del cfg["train"]["warmup_epochs"]
    spec = resolve(cfg)
    assert spec.milestones == milestones and spec.train["lr_factors"] == factors
    assert spec.train["warmup_epochs"] == warmup
    assert resolve(spec.config).milestones == milestones  # the record resolves again


# --------------------------------------------------------------------------- the dataset section


@pytest.mark.parametrize("dataset, key", [
    ({"profile": "exp", "counts": [120, 60, 30, 20, 10, 9, 8, 7, 6, 5]}, "dataset.counts"),
    ({"profile": "original", "n_max": None, "counts": [5] * 10}, "dataset.counts"),
    ({"profile": "counts", "n_max": None, "counts": [5]}, "dataset.counts"),
    ({"class_order": [1.0, 0, 2, 3, 4, 5, 6, 7, 8, 9]}, "dataset.class_order"),
    ({"class_order": [1.5, 0, 2, 3, 4, 5, 6, 7, 8, 9]}, "dataset.class_order"),
    ({"class_order": [True, 0, 2, 3, 4, 5, 6, 7, 8, 9]}, "dataset.class_order"),
    ({"crop_padding": 8}, "dataset.crop_padding"),
    ({"crop_padding": 16, "image_size": 16}, "dataset.crop_padding"),
    ({"profile": "ldam_drw", "n_max": 50}, "dataset.n_max"),
    ({"profile": "ldam_drw", "n_max": None, "class_order": list(range(10))},
     "dataset.class_order"),
])
def test_dataset_mistakes_name_the_key(dataset, key):
    assert error_name(digits(dataset=dataset)) == key


def test_class_order_entries_are_checked_for_sources_of_unknown_size(tmp_path):
    cfg = digits(dataset={"name": "imagefolder", "root": str(tmp_path), "n_max": None,
                          "class_order": [0.0, 1]})
    assert error_name(cfg) == "dataset.class_order"


def test_crop_padding_within_a_known_image_resolves():
    resolve(digits(dataset={"crop_padding": 7}))
    resolve(digits(dataset={"crop_padding": 12, "image_size": 16}))


def arrays(classes: int = 3, side: int = 8, test: int = 2):
    rng = np.random.default_rng(0)
    n = 10 * classes
    x = rng.integers(0, 255, size=(n, 1, side, side), dtype=np.uint8)
    y = np.arange(n) % classes
    tx = rng.integers(0, 255, size=(test * classes, 1, side, side), dtype=np.uint8)
    ty = np.arange(test * classes) % classes
    return from_arrays(x, y, tx, ty, name="toy")


def test_prepare_dataset_refuses_padding_larger_than_the_images():
    prepare_dataset(arrays(), profile="original", crop_padding=7)
    with pytest.raises(ParameterError) as info:
        prepare_dataset(arrays(), profile="original", crop_padding=8)
    assert info.value.name == "dataset.crop_padding"


def test_prepare_dataset_refuses_one_class_and_an_empty_test_set():
    with pytest.raises(ParameterError, match="toy") as info:
        prepare_dataset(arrays(classes=1), profile="original")
    assert info.value.name == "dataset"
    with pytest.raises(ParameterError, match="toy") as info:
        prepare_dataset(arrays(test=0), profile="original")
    assert info.value.name == "dataset"


# --------------------------------------------------------------------------- non-finite numbers


@pytest.mark.parametrize("section, key, value", [
    ("train", "lr", float("nan")), ("train", "lr", float("inf")),
    ("train", "momentum", float("nan")), ("train", "weight_decay", float("inf")),
    ("train", "warmup_epochs", float("nan")), ("train", "warmup_epochs", float("-inf")),
    ("dataset", "ratio", float("inf")), ("dataset", "ratio", float("nan")),
    ("eval", "posthoc_tau", float("nan")), ("model", "backbone_lr", float("inf")),
    ("model", "freeze_backbone_epochs", float("nan")), ("crt", "lr", float("nan")),
    ("crt", "weight_decay", float("inf")),
])
def test_non_finite_numbers_name_the_key(section, key, value):
    assert error_name(digits(**{section: {key: value}})) == f"{section}.{key}"


@pytest.mark.parametrize("config, key", [
    (digits(train={"milestones": [0.5, float("nan")], "lr_factors": [0.1, 0.1]}),
     "train.milestones[1]"),
    (digits(train={"lr_factors": [float("inf"), 0.1]}), "train.lr_factors[0]"),
    (digits(dataset={"validation": {"share": float("nan")}}), "dataset.validation.share"),
    (digits(mixer={"preset": "mamix", "q": float("nan")}), "mixer.q"),
    (digits(loss={"name": "focal", "gamma": float("inf")}), "loss.gamma"),
    (digits(weights={"name": "cb", "beta": float("nan")}), "weights.beta"),
    (digits(sampler={"name": "sqrt", "num_samples": float("inf")}), "sampler.num_samples"),
    (digits(strategy="M2m", generative={"lam": float("nan")}), "generative.lam"),
    (digits(dataset={"options": {"x": float("nan")}}), "dataset.options.x"),
])
def test_non_finite_numbers_anywhere_name_the_key(config, key):
    assert error_name(config) == key


def test_non_finite_yaml_values_through_the_command_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: {name: digits, n_max: 120, ratio: 20}\nmodel: {arch: small_cnn}\n"
                    "train: {epochs: 10, lr: .nan}\n")
    assert main(["check", str(path)]) == 2
    assert "'train.lr'" in one_error_line(capsys)
    assert main(["check", "digits"]) == 0
    capsys.readouterr()
    assert main(["train", "--set", "eval.posthoc_tau=.inf", "--out", str(tmp_path / "r")]) == 2
    assert "'eval.posthoc_tau'" in one_error_line(capsys)
