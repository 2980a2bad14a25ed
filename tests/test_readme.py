"""The README's code runs as written: the own-loop examples, the extension example, and the
Python API snippet. Every block runs on its own, in a fresh namespace, as a reader who
copies only that block would run it."""

import json
import re
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def _run(block: str, name: str) -> dict:
    """Run one block in a namespace of its own; return what it defined."""
    namespace: dict = {"__name__": "__main__"}
    exec(compile(block, f"README: {name}", "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_own_loop_examples_run_and_learn(capsys):
    blocks = _blocks(_section("Use tailmix in your own training loop"), "python")
    assert len(blocks) == 2
    mamix = _run(blocks[0], "MAMix + DRW")
    # 10 balanced classes: chance is 10 %; the tail classes have 10 to 24 training images.
    assert mamix["metrics"]["balanced_accuracy"] > 70
    assert mamix["metrics"]["few_shot"] is not None
    assert not mamix["model"].training  # evaluated in eval mode
    smote = _run(blocks[1], "SMOTE")
    assert "mixer" not in smote and "drw" not in smote  # nothing carried over
    assert smote["metrics"]["balanced_accuracy"] > 60
    assert not smote["model"].training
    # Oversampling to balance: every class at the largest class's count.
    assert len(smote["sampler"]) == 10 * int(smote["counts"].max())
    out = capsys.readouterr().out
    assert "MAMix-DRW: balanced accuracy" in out and "SMOTE:" in out


@pytest.mark.slow
def test_extension_example_trains_from_yaml(tmp_path, monkeypatch):
    from tailmix.cli import main

    section = _section("Extending tailmix")
    (module,) = _blocks(section, "python")
    (config,) = _blocks(section, "yaml")
    from tailmix.pipeline import sections

    (tmp_path / "my_extensions.py").write_text(module)
    (tmp_path / "my_run.yaml").write_text(config)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sections.sections()  # the registry restored after: the example's section leaves with it
    monkeypatch.setattr(sections, "_SECTIONS", dict(sections._SECTIONS))
    try:
        assert main(["train", "-c", "my_run.yaml", "--out", "run", "--no-progress"]) == 0
        record = (tmp_path / "run" / "config.yaml").read_text()
        assert "smoothed_ce" in record and "tiny_net" in record and "head_norms" in record
        metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
        assert metrics["epochs"] == 3 and metrics["strategy"] == "MAMix-DRW"
        rows = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").open()]
        assert len(rows) == 3 and all(r["head_norm_ratio"] >= 1.0 for r in rows)
        from tailmix.registry import LOSSES, MODELS

        assert type(LOSSES.get("smoothed_ce")).__name__ != "NoneType"
        assert "tiny_net" in MODELS
    finally:
        sys.modules.pop("my_extensions", None)


@pytest.mark.slow
def test_python_api_snippet_runs(tmp_path, monkeypatch):
    (block,) = _blocks(_section("Using it"), "python")
    monkeypatch.chdir(tmp_path)
    namespace = _run(block, "From Python")
    assert namespace["result"]["final"]["balanced_accuracy"] > 50
    assert namespace["mine"]["final"]["balanced_accuracy"] > 50  # ten classes: chance is 10
    assert (tmp_path / "runs" / "mine" / "metrics.json").is_file()


@pytest.mark.slow
def test_own_model_snippet_runs(tmp_path, monkeypatch):
    blocks = _blocks(_section("Your own model"), "python")
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace = _run(blocks[0], "Your own model")
    assert namespace["result"]["final"]["balanced_accuracy"] > 60
    assert (tmp_path / "runs" / "my-net" / "metrics.json").is_file()
    # The YAML shown there resolves (the backbone is not built: that needs timm).
    import yaml

    from tailmix.pipeline.config import resolve_config

    (config,) = _blocks(_section("Your own model"), "yaml")
    cfg = resolve_config(yaml.safe_load(config))
    assert cfg["model"]["pretrained"] and cfg["crt"]["epochs"] == 10


@pytest.mark.slow
def test_predict_and_export_snippet_runs(tmp_path, monkeypatch):
    """The README's prediction example on a digits run, a folder of its test images as PNGs
    and the run exported to ONNX (what the commands above it make)."""
    import numpy as np
    from PIL import Image

    from tailmix.cli import main
    from tailmix.data import load_source

    monkeypatch.chdir(tmp_path)
    assert main(["train", "-c", "digits", "--epochs", "3", "--out", "runs/mix",
                 "--set", "train.milestones=[]", "--set", "train.lr_factors=[]",
                 "--no-progress"]) == 0
    raw = load_source("digits")
    (tmp_path / "photos").mkdir()
    for i in range(12):
        Image.fromarray(raw.test_x[i, 0]).save(tmp_path / "photos" / f"{i:02d}.png")
    assert main(["export", "runs/mix", "--format", "onnx", "--out", "mix.onnx"]) == 0
    block = _blocks(_section("After training: predict and export"), "python")[0]
    namespace = _run(block, "predict and export")
    assert len(namespace["rows"]) == 12 and namespace["classes"] == namespace["pred"].classes
    torch_logits = namespace["pred"].logits(namespace["x"]).numpy()
    assert np.abs(namespace["logits"] - torch_logits).max() < 1e-3
    assert (tmp_path / "predictions.csv").is_file()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated
def test_own_module_export_snippet_runs(tmp_path, monkeypatch):
    """The README's export of a run of one's own module, after the "Your own model" example
    that trains it: the TorchScript file gives the run's logits."""
    import numpy as np
    import torch

    from tailmix.data import load_source

    monkeypatch.chdir(tmp_path)
    (trained,) = _blocks(_section("Your own model"), "python")
    exported = _blocks(_section("After training: predict and export"), "python")[1]
    namespace: dict = {}
    exec(compile(trained, "README: Your own model", "exec"), namespace)
    exec(compile(exported, "README: exporting your own module", "exec"), namespace)
    x = load_source("digits").test_x[:20]
    loaded = torch.jit.load(str(tmp_path / "my-net.pt"))
    with torch.no_grad():
        got = loaded(torch.from_numpy(x).float())
    want = namespace["own"].logits(x)
    assert got.shape == (20, 10) and float(want.abs().max()) > 0.1
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert np.array_equal(got.argmax(1).numpy(), namespace["own"].predict(x).numpy())


def test_recipe_settings_resolve_as_shown():
    import yaml

    from tailmix.pipeline.config import resolve_config
    from tailmix.pipeline.strategies import compose

    (config,) = _blocks(_section("Beyond the paper: the ingredients of stronger recipes"),
                        "yaml")
    cfg = resolve_config(yaml.safe_load(config))
    assert cfg["sam"] == {"rho": 0.1, "start": 0.8, "tail_below": 500}
    assert cfg["augment"]["policy"] == "autoaugment" and cfg["train"]["schedule"] == "cosine"
    assert compose(cfg)["mixer"]["partner"] == "balanced"
    assert cfg["ema"] == {"decay": 0.999} and cfg["swa"] == {"start": 0.75, "lr": None}
