import json
import platform
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import digits_config, shared_zip_or_skip, train_interrupted

import tailmix
from tailmix._validation import ParameterError
from tailmix.cli import main
from tailmix.pipeline.build import build_run, train
from tailmix.pipeline.config import resolve_config


def test_digits_run_learns_and_writes_results(tmp_path):
    cfg = digits_config(epochs=12)
    result = train(cfg, tmp_path / "run")
    final = result["final"]
    assert final["balanced_accuracy"] > 75  # chance is 10
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("top1", "balanced_accuracy", "per_class_accuracy", "many_shot", "medium_shot",
                "few_shot", "macro_f1"):
        assert key in metrics["final"]
    assert len(metrics["final"]["per_class_accuracy"]) == 10
    assert metrics["best"]["epoch"] in (2, 4, 6, 8, 10, 12)
    assert metrics["environment"] == {
        "tailmix": tailmix.__version__, "torch": torch.__version__,
        "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "accelerator": None}
    hist = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == list(range(1, 13))
    assert "top1" in hist[1] and "top1" not in hist[0]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 12 and saved["class_counts"][0] == 120
    assert (run / "checkpoints" / "last.pt").is_file()
    assert (run / "checkpoints" / "best.pt").is_file()
    assert (run / "margins.json").is_file()
    assert not list(run.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_same_seed_same_numbers(tmp_path):
    a = train(digits_config(epochs=2), tmp_path / "a")
    b = train(digits_config(epochs=2), tmp_path / "b")
    assert a["final"]["per_class_accuracy"] == b["final"]["per_class_accuracy"]
    wa = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("strategy", ["ERM", "DRW", "soft-SMOTE"])
def test_resume_gives_the_same_weights(tmp_path, monkeypatch, strategy):
    cfg = digits_config(epochs=4)
    cfg["strategy"] = strategy
    at = 2
    if strategy == "DRW":
        cfg["weights"] = {"start_epoch": 2}  # switches exactly at the resume point
    if strategy == "soft-SMOTE":
        # Feature-space partners searched at epochs 0 and 2: a run resumed at epoch 3 must
        # keep the table of epoch 2 (saved in the checkpoint), not search again.
        cfg["mixer"] = {"space": "feature", "refresh_every": 2}
        at = 3
    train(cfg, tmp_path / "straight")

    train_interrupted(cfg, tmp_path / "resumed", at_epoch=at, monkeypatch=monkeypatch)
    ckpt = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert ckpt["epoch"] == at
    assert ("step" in ckpt) == (strategy == "soft-SMOTE")
    train(cfg, tmp_path / "resumed", resume=True)
    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert b["epoch"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    hist = (tmp_path / "resumed/history.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in hist] == [1, 2, 3, 4]


@pytest.mark.parametrize("patch, match", [
    ({"train": {"epochs": 0}}, r"'train.epochs'.*\[1, inf\).*Got 0"),
    ({"train": {"epochs": "ten"}}, r"'train.epochs' parameter must be an int.*'ten'"),
    ({"train": {"epoch": 3}}, r"'train.epoch'.*known keys"),
    ({"dataset": {"ratio": 0.5}}, r"'dataset.ratio'.*Got 0.5"),
    ({"dataset": {"name": "mnist"}}, r"'dataset.name'.*'mnist'"),
    ({"strategy": "Magic"}, r"'strategy'.*'Magic'"),
    ({"dataset": {"name": "cifar10", "root": "/nonexistent/cifar"}}, r"'dataset.root'.*exist"),
    ({"dataset": {"name": "cifar10"}}, r"'dataset.root'.*--data-root"),
    ({"colour": "red"}, r"'colour'.*top-level"),
    ({"train": {"device": "tpu"}}, r"'train.device'"),
    ({"train": {"compile": "fast"}}, r"'train.compile'.*'reduce-overhead'.*'fast'"),
])
def test_config_errors_name_the_key(patch, match):
    with pytest.raises(ParameterError, match=match):
        resolve_config(patch)


def test_component_errors_before_training(tmp_path):
    cfg = digits_config()
    cfg["strategy"] = "DRW"
    cfg["weights"] = {"start_epoch": 9}
    with pytest.raises(ParameterError, match="start_epoch"):
        build_run(cfg, tmp_path / "x")
    cfg = digits_config()
    cfg["loss"] = {"name": "ldam"}
    with pytest.raises(ParameterError, match="model.head.*cosine"):
        build_run(cfg, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_train_eval_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", "--dataset", "digits", "--arch", "small_cnn", "--epochs", "2",
                 "--ratio", "10", "--set", "dataset.n_max=100", "--precision", "fp32",
                 "--set", "train.warmup_epochs=1", "--set", "train.milestones=[]",
                 "--set", "train.lr_factors=[]", "--out", str(out), "--no-progress"]) == 0
    assert (out / "metrics.json").is_file()
    capsys.readouterr()
    assert main(["eval", str(out / "checkpoints" / "last.pt")]) == 0
    shown = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "metrics.json").read_text())["final"]
    assert shown["top1"] == pytest.approx(saved["top1"]) and shown["epoch"] == 2
    assert main(["train", "--dataset", "digits", "--epochs", "-1", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "train.epochs" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_strategies_command_lists_the_catalogue(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    for name in ("ERM", "DRW", "LDAM-DRW", "MAMix-DRW", "soft-SMOTE"):
        assert name in out


@pytest.mark.slow
def test_shared_cifar10_zip_loads_as_cifar10_lt(tmp_path):
    root = shared_zip_or_skip()
    from tailmix.pipeline.build import load_data

    cfg = resolve_config({"dataset": {"name": "cifar10", "root": str(root), "ratio": 100}})
    data = load_data(cfg)
    assert data.class_counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert torch.bincount(data.train_labels).tolist() == data.class_counts
    assert data.train_inputs.shape[1:] == (3, 32, 32) and data.train_inputs.dtype == torch.uint8
    assert len(data.test_labels) == 10_000
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10


def test_every_shipped_config_resolves(tmp_path):
    from pathlib import Path

    from tailmix.pipeline.config import load_config_file

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert len(configs) >= 6
    for path in configs:
        cfg = load_config_file(path)
        if cfg["dataset"]["name"] != "digits":
            cfg["dataset"]["root"] = str(tmp_path)
        resolved = resolve_config(cfg)
        assert resolved["train"]["epochs"] >= 1, path.name


def test_margins_command_reproduces_the_end_of_run_analysis(tmp_path):
    run = tmp_path / "m"
    train(digits_config(epochs=2), run)
    at_end = json.loads((run / "margins.json").read_text())
    (run / "margins.json").unlink()
    assert main(["margins", str(run)]) == 0
    again = json.loads((run / "margins.json").read_text())
    assert again["epoch"] == 2 and again["checkpoint"] == "last"
    for split in ("train", "test"):
        assert again[split]["mean"] == pytest.approx(at_end[split]["mean"], abs=1e-4)
        assert again[split]["slope"] == pytest.approx(at_end[split]["slope"], abs=1e-4)
    assert main(["margins", str(tmp_path / "nothing")]) == 2


def test_neighbours_command_shows_how_soft_labels_undo_the_balance(tmp_path, capsys):
    config = str(Path(__file__).parents[1] / "configs" / "digits.yaml")
    found = {}
    for strategy in ("SMOTE", "soft-SMOTE"):
        path = tmp_path / f"{strategy}.json"
        assert main(["neighbours", "-c", config, "--strategy", strategy,
                     "--json", str(path)]) == 0
        found[strategy] = json.loads(path.read_text())
    assert "label mass" in capsys.readouterr().out
    smote, soft = found["SMOTE"], found["soft-SMOTE"]
    n_max = smote["n_max"]
    assert [r["label_mass"] for r in smote["classes"]] == [n_max] * 10
    assert all(r["own_share"] == 1.0 for r in smote["classes"])
    # soft labels move mass between classes but keep the total
    masses = [r["label_mass"] for r in soft["classes"]]
    assert sum(masses) == pytest.approx(10 * n_max)
    assert min(masses) < n_max < max(masses)
    assert main(["neighbours", "-c", config, "--strategy", "ERM"]) == 2
    assert "'strategy'" in capsys.readouterr().err


@pytest.mark.slow
def test_soft_smote_partners_of_the_cifar10_tail_are_other_classes(tmp_path):
    from tailmix.tools.analysis import neighbour_balance

    root = shared_zip_or_skip()
    result = neighbour_balance({"dataset": {"name": "cifar10", "root": str(root), "ratio": 100},
                                "strategy": "soft-SMOTE"})
    tail = result["classes"][-1]
    assert tail["count"] == 50 and tail["own_share"] < 0.05
    assert tail["label_mass"] < 0.6 * result["n_max"]


def _blobs():
    """Four Gaussian blobs in 10 dimensions as in-memory arrays, and an MLP config."""
    import numpy as np

    from tailmix.data import from_arrays

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(4, 10))

    def sample(n_per_class):
        y = np.repeat(np.arange(4), n_per_class)
        return (centres[y] + rng.normal(size=(len(y), 10))).astype(np.float32), y

    x, y = sample(300)
    tx, ty = sample(50)
    raw = from_arrays(x, y, tx, ty, name="blobs")
    cfg = {"dataset": {"name": "arrays", "profile": "exp", "ratio": 20},
           "model": {"arch": "mlp"}, "strategy": "MAMix-DRW",
           "train": {"epochs": 10, "batch_size": 64, "lr": 0.05, "warmup_epochs": 1,
                     "device": "cpu"},
           "eval": {"every": 5}, "log": {"progress": False}}
    return raw, cfg


def test_training_on_in_memory_feature_vectors(tmp_path):
    """Tabular arrays from Python: an MLP learns a long-tailed 4-class problem."""
    raw, cfg = _blobs()
    result = train(cfg, tmp_path / "blobs", data=raw)
    assert result["class_counts"] == [300, 110, 40, 15]
    assert result["final"]["balanced_accuracy"] > 90
    with pytest.raises(ParameterError, match="'arrays' source"):
        train(cfg, tmp_path / "none")


def test_fp16_scales_the_loss_learns_and_resumes(tmp_path, monkeypatch):
    # An MLP on feature vectors: fp16 convolutions are slow on CPUs.
    raw, cfg = _blobs()
    cfg["train"]["precision"] = "fp16"
    result = train(cfg, tmp_path / "straight", data=raw)
    assert result["final"]["balanced_accuracy"] > 90
    train_interrupted(cfg, tmp_path / "resumed", at_epoch=5, monkeypatch=monkeypatch, data=raw)
    ckpt = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert ckpt["scaler"]["scale"] > 0  # the loss scale travels with the checkpoint
    train(cfg, tmp_path / "resumed", data=raw, resume=True)
    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert a["scaler"] == b["scaler"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # Without fp16 there is nothing to scale: the checkpoint's scaler state is empty.
    cfg["train"]["precision"] = "fp32"
    train(cfg, tmp_path / "fp32", data=raw)
    assert torch.load(tmp_path / "fp32/checkpoints/last.pt", weights_only=True)["scaler"] == {}


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler (none on PATH)")
def test_compiled_run_learns(tmp_path):
    result = train(digits_config(epochs=12, compile=True), tmp_path / "run")
    assert result["final"]["balanced_accuracy"] > 75  # chance is 10
