"""Config sections: an ingredient with its own section is one module.

A plugin module below defines a whole ingredient - a ``clip`` section (gradient-norm
clipping) with its key, default, type, range check, a key that acts only under another, and
its contribution to a run (a gradient rule) - and nothing else in tailmix changes: the
config accepts, checks and records the section, the run builds with it, and it acts.
"""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import pytest
import yaml

from tailmix._validation import ParameterError
from tailmix.pipeline import sections
from tailmix.pipeline.config import default_config, resolve, schema

SRC = Path(__file__).resolve().parents[1] / "src" / "tailmix"

PLUGIN = '''
from dataclasses import dataclass

import torch

from tailmix._validation import check_number
from tailmix.pipeline.sections import Section, section

NORMS = []  # the gradient norms seen before clipping, one per step


class Clipped:
    def __init__(self, max_norm):
        self.max_norm = max_norm

    def backward(self, out, model, optimizer, scaler, epoch):
        scaler.scale(out.loss).backward()
        NORMS.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), self.max_norm)))
        return out.loss.detach()


@section("clip")
@dataclass
class ClipSection(Section):
    max_norm: float | None = None
    report: bool = False

    ACTS_ONLY = {"report": ("clip.max_norm", lambda s: s.max_norm is not None)}

    def check(self, run):
        if self.max_norm is not None:
            check_number("clip.max_norm", self.max_norm, low=0, low_open=True)

    def contribute(self, run):
        if self.max_norm is not None:
            run.gradient = Clipped(self.max_norm)
'''


@pytest.fixture
def clip_plugin(tmp_path, monkeypatch):
    """The ``clip`` plugin module importable, and the sections registry restored after."""
    name = f"clip_plugin_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    sections.sections()  # every built-in section registered before the registry is copied
    monkeypatch.setattr(sections, "_SECTIONS", dict(sections._SECTIONS))
    return name


def digits(**over):
    cfg = {"dataset": {"name": "digits", "n_max": 60, "ratio": 10},
           "model": {"arch": "small_cnn"},
           "train": {"epochs": 2, "batch_size": 64, "device": "cpu", "precision": "fp32"},
           "eval": {"every": 1}, "log": {"progress": False}}
    cfg.update(over)
    return cfg


def test_a_plugin_section_is_checked_recorded_and_acts(clip_plugin, tmp_path):
    import importlib

    from tailmix import train

    with pytest.raises(ParameterError) as info:  # unknown until the module defines it
        resolve(digits(clip={"max_norm": 1.0}))
    assert info.value.name == "clip" and "known top-level keys" in info.value.expected
    bad = [({"max_norm": 0}, "clip.max_norm"), ({"max_norm": "big"}, "clip.max_norm"),
           ({"report": True}, "clip.report"), ({"norm": 1}, "clip.norm")]
    for section_value, key in bad:
        with pytest.raises(ParameterError) as info:
            resolve(digits(plugins=[clip_plugin], clip=section_value))
        assert info.value.name == key, (section_value, info.value)
    spec = resolve(digits(plugins=[clip_plugin], clip={"max_norm": 0.25}))
    assert spec.clip.max_norm == 0.25 and spec.config["clip"] == {"max_norm": 0.25,
                                                                 "report": False}
    # Registered, it is part of the configs that name it only: other runs are unchanged.
    assert "clip" not in resolve(digits()).config and "clip" not in default_config()
    assert schema()["clip"] == {"max_norm": ((int, float, None), None),
                                "report": ((bool,), False)}

    out = tmp_path / "run"
    result = train(digits(plugins=[clip_plugin], clip={"max_norm": 0.25}), out,
                   log=lambda _: None)
    norms = importlib.import_module(clip_plugin).NORMS
    assert len(norms) == 2 * -(-sum(result["class_counts"]) // 64)  # every step of 2 epochs
    assert max(norms) > 0.25  # some were clipped: the rule ran, not the plain one
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["clip"] == {"max_norm": 0.25, "report": False}
    assert recorded["plugins"] == [clip_plugin]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


def test_the_built_in_sections_and_their_keys():
    """The sections, in the order a saved config keeps, each from its own module."""
    assert list(sections.sections()) == ["dataset", "model", "train", "eval", "augment",
                                         "consistency", "sam", "ema", "swa", "crt", "log"]
    for key, cls in sections.sections().items():
        assert cls.__module__ == sections.BUILTIN[key] and cls.KEY == key
    cfg = default_config()
    assert cfg["sam"] == {"rho": None, "start": 0, "tail_below": None}
    assert cfg["ema"] == {"decay": None} and cfg["swa"] == {"start": None, "lr": None}
    assert cfg["train"]["warmup_epochs"] == 0.025 and cfg["dataset"]["max_pixels"] == 50_000_000


def test_the_config_and_builder_name_no_section():
    """config.py and build.py read sections through the protocol: neither names the keys
    of an ingredient's section (SAM, the two-view term, cRT, augmentation)."""
    for module in ("pipeline/config.py", "pipeline/build.py"):
        tree = ast.parse((SRC / module).read_text())
        names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                 and isinstance(n.value, str)}
        assert not names & {"sam", "consistency", "crt", "augment"}, module
        # (``data.augment`` is the data's batch augmentation, not the section)
        assert not {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} & {
            "sam", "consistency", "crt"}, module


def test_key_types_from_annotations():
    from dataclasses import dataclass

    @dataclass
    class Example(sections.Section):
        a: float = 1.0
        b: int | None = None
        c: list | None = None
        d: bool | str = "auto"

    assert sections.key_types(Example) == {"a": ((int, float), 1.0), "b": ((int, None), None),
                                           "c": ((list, None), None),
                                           "d": ((bool, str), "auto")}


def test_sections_read_as_mappings_too():
    spec = resolve(digits())
    assert spec.train["lr"] == spec.train.lr == 0.1
    with pytest.raises(KeyError):
        spec.train["nope"]
    assert spec.sam.rho is None and spec.sam.start_epoch == 0 and spec.sam.end_epoch == 2


def test_crt_weight_decay_acts_from_the_switch(tmp_path):
    """``crt.weight_decay`` is the re-training stage's weight decay (before, the key was
    accepted and had no effect); the main epochs keep ``train.weight_decay``."""
    from tailmix.pipeline.build import build_run
    from tailmix.pipeline.callbacks import Callback

    cfg = digits(crt={"epochs": 1, "weight_decay": 0.01})
    cfg["train"]["weight_decay"] = 5e-4
    run = build_run(cfg, tmp_path / "run", log=lambda _: None)
    seen = []

    class Watch(Callback):
        def on_epoch_end(self, state, row):
            seen.append({g["weight_decay"] for g in run.trainer.optimizer.param_groups})

    run.trainer.callbacks.append(Watch())
    run.fit()
    assert seen == [{5e-4}, {5e-4}, {0.01}]


def test_every_stream_comes_from_the_seeding_module():
    """The streams that moved into ``tailmix.seeding`` draw what they drew before."""
    import numpy as np

    from tailmix import seeding

    assert seeding.derive_seed(7, "head") == seeding.derive_seed(7, "init") + 1 == 8
    assert seeding.derive_seed(7, "synthesis") == 7
    assert np.array_equal(seeding.numpy_generator(4, "validation").integers(0, 1000, 5),
                          np.random.default_rng([4, 0x56414C]).integers(0, 1000, 5))
    assert np.array_equal(seeding.numpy_generator(9, "statistics").permutation(10),
                          np.random.default_rng(0).permutation(10))
    with pytest.raises(ValueError):
        seeding.derive_seed(1, "validation")


def test_every_module_imports_first():
    """Each tailmix module imports as the first one a process imports: no cycle, also
    none through the sections' registry (which imports their modules by name)."""
    import subprocess
    import sys

    names = sorted(".".join(p.relative_to(SRC.parent).with_suffix("").parts)
                   .removesuffix(".__init__") for p in SRC.rglob("*.py"))
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    for m in [m for m in sys.modules if m.startswith('tailmix')]:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module(name)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(names) > 60


def test_two_views_and_imbsam_are_refused_together(tmp_path):
    """ImbSAM splits the loss by class and the two-view term has none: refused before any
    training, naming a key of the pair."""
    from tailmix.pipeline.build import build_run

    cfg = digits(consistency={"weight": 1.0, "dim": 16},
                 sam={"rho": 0.05, "tail_below": 40})
    with pytest.raises(ParameterError) as info:
        build_run(cfg, None, log=lambda _: None)
    assert info.value.name == "sam.tail_below" and "consistency.weight" in info.value.expected


@pytest.mark.parametrize("reinit, shift_bn", [(True, False), (False, True)])
def test_crt_keeps_or_resets_the_head_and_shifts_batchnorm_statistics_when_asked(
        tmp_path, reinit, shift_bn):
    """MiSLAS's stage two as cRT settings: ``reinit: false`` re-trains the main run's head
    as it was; ``shift_bn: true`` re-estimates the frozen backbone's batch-norm statistics
    from the class-balanced batches (its weights stay fixed); ``loss`` is the stage's loss."""
    import torch

    from tailmix.pipeline.build import build_run
    from tailmix.pipeline.callbacks import Callback

    cfg = digits(crt={"epochs": 1, "reinit": reinit, "shift_bn": shift_bn,
                      "loss": {"name": "las", "eps_head": 0.2}})
    run = build_run(cfg, tmp_path / "run", log=lambda _: None)
    net = run.trainer.model
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms, "the test needs a network with batch norm"
    snap = {}

    def state():
        return {"head": [p.detach().clone() for p in net.head.parameters()],
                "mean": [m.running_mean.clone() for m in norms],
                "weight": [m.weight.detach().clone() for m in norms]}

    class Watch(Callback):
        def on_epoch_start(self, state_, epoch):
            if epoch == 2:  # the re-training epoch, after Stages acted
                snap["start"] = state()
                snap["training"] = [m.training for m in norms]
                snap["momentum"] = [p in run.trainer.optimizer.state
                                    for p in net.head.parameters()]

        def on_epoch_end(self, state_, row):
            snap[row["epoch"]] = state()

    run.trainer.callbacks.append(Watch())
    run.fit()
    assert type(run.trainer.step.after.loss).__name__ == "LabelAwareSmoothing"
    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))

    same_head = same(snap[2]["head"], snap["start"]["head"])
    assert same_head == (not reinit)
    moved = not same(snap[2]["mean"], snap[3]["mean"])
    assert moved == shift_bn and snap["training"] == [shift_bn] * len(norms)
    assert same(snap[2]["weight"], snap[3]["weight"])
    assert not any(snap["momentum"])  # the stage's optimiser state starts afresh either way


@pytest.mark.parametrize("crt, key", [({"epochs": 1.5}, "crt.epochs"),
                                      ({"epochs": 2, "loss": {"name": "ldam"}},
                                       "crt.loss.name"),
                                      ({"epochs": 2, "loss": {"name": "las", "eps_tail": 2}},
                                       "crt.loss.eps_tail"),
                                      ({"loss": {"name": "las"}}, "crt.loss"),
                                      ({"shift_bn": True}, "crt.shift_bn")])
def test_bad_crt_settings_are_refused_naming_the_key(crt, key):
    with pytest.raises(ParameterError) as info:
        resolve(digits(crt=crt))
    assert info.value.name == key, info.value


@pytest.mark.parametrize("share, main, retrain", [(0.05, 200, 10), (0.05, 60, 3),
                                                  (0.05, 2, 1), (4, 60, 4)])
def test_crt_epochs_may_be_a_share_of_the_main_run(share, main, retrain):
    cfg = digits(crt={"epochs": share})
    cfg["train"]["epochs"] = main
    assert resolve(cfg).crt.retrain_epochs == retrain
