"""Seeded fuzzing of the config: a few hundred malformed variants of a valid digits config
(wrong types, out-of-range and non-finite values, unknown keys at every level, lists where
scalars go, nested garbage, corrupted YAML text). Each must resolve or end in a
:class:`ParameterError` naming a key (a ``tailmix: error:`` line from ``tailmix check``),
never another exception. Nothing is loaded or trained."""

from __future__ import annotations

import copy
import datetime
import random
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tailmix._validation import ParameterError
from tailmix.cli import main
from tailmix.pipeline.config import load_config_file, resolve

SEED = 20240611
N_CONFIGS = 300
N_TEXTS = 60

# Component overrides a variant may start from, so that garbage reaches every builder.
COMPONENTS: dict[str, list[dict[str, Any]]] = {
    "sampler": [{"name": "instance"}, {"name": "sqrt", "num_samples": 500},
                {"name": "class_balanced"}],
    "mixer": [{"preset": "mamix", "q": -0.5}, {"preset": "mixup", "alpha": 1.0},
              {"preset": "remix", "K": 3, "tau": 0.5}, {"preset": "smote"}],
    "loss": [{"name": "focal", "gamma": 2.0}, {"name": "ldam", "max_margin": 0.5, "s": 30.0},
             {"name": "la", "tau": 1.0}, {"name": "bs"}],
    "weights": [{"name": "drw", "start_epoch": 0.8, "beta": 0.9999},
                {"name": "cb", "beta": 0.999}],
    "generative": [{"name": "m2m", "warmup_epochs": 0.5, "steps": 3},
                   {"name": "deepsmote", "ae_epochs": 2, "latent_dim": 16}],
}
STRATEGIES = ["ERM", "CB", "DRW", "Focal", "LDAM-DRW", "LA", "BS", "SMOTE", "soft-SMOTE",
              "Mixup", "Mixup-DRW", "Remix-DRW", "MAMix-DRW", "MAMix-DRW-AA",
              "MAMix-DRW-AA-SimSiam", "M2m", "DeepSMOTE"]


def base_config(rng: random.Random) -> dict[str, Any]:
    """The shipped digits config (a short run), a random strategy and some overrides."""
    cfg = copy.deepcopy(load_config_file("digits"))
    cfg["train"].update(epochs=rng.choice([10, 20, 60]), device="cpu")
    cfg["log"] = {"progress": False}
    cfg["strategy"] = rng.choice(STRATEGIES)
    for key, choices in COMPONENTS.items():
        if key == "generative" and cfg["strategy"] not in ("M2m", "DeepSMOTE"):
            continue
        if rng.random() < 0.4:
            cfg[key] = copy.deepcopy(rng.choice(choices))
    if rng.random() < 0.2:
        cfg["dataset"]["validation"] = rng.choice([{"per_class": 5}, {"share": 0.1}])
    if rng.random() < 0.2:
        cfg["dataset"]["options"] = {}
    return cfg


def random_text(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + " .-_:/[]{}#'\"\\\t\u00e9\u4e2d\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def garbage(rng: random.Random, depth: int = 0) -> Any:
    """A value of a random wrong kind."""
    simple = [None, True, False, 0, -1, 1, 2, -7, 10**30, -(10**30), 0.0, -0.5, 0.5, 1.5, 1e308,
              float("nan"), float("inf"), float("-inf"), "", "1e-3", "auto", "none", "null",
              random_text(rng), b"\x00\xff", datetime.date(2024, 1, 1), rng.uniform(-1e6, 1e6),
              rng.randint(-10**6, 10**6)]
    if depth >= 2 or rng.random() < 0.6:
        return rng.choice(simple)
    kind = rng.random()
    if kind < 0.4:
        return [garbage(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind < 0.8:
        return {random_key(rng): garbage(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return {"name": garbage(rng, depth + 1), "preset": garbage(rng, depth + 1)}


def random_key(rng: random.Random) -> Any:
    return rng.choice(["bogus", "Name", "lr ", "", "epochs", "q", "nested.key", random_text(rng),
                       7, None, True])


def mappings(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, dict]]:
    """Every mapping in a config, with its path."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from mappings(value, (*path, key))


def leaves(node: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every key path in a config (to a value of any kind)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*path, i)
            yield from leaves(value, (*path, i))


def _parent(cfg: dict, path: tuple) -> Any:
    node = cfg
    for key in path[:-1]:
        node = node[key]
    return node


def mutate(cfg: dict, rng: random.Random) -> None:
    """One random change: garbage in place of a value, an unknown key, a key removed, a
    section replaced, or a number pushed out of range."""
    kind = rng.random()
    paths = list(leaves(cfg))
    if kind < 0.35 and paths:  # garbage in place of a value
        path = rng.choice(paths)
        _parent(cfg, path)[path[-1]] = garbage(rng)
    elif kind < 0.6:  # an unknown key at any level, component sections and options included
        targets = list(mappings(cfg))
        for key in ("sampler", "mixer", "loss", "weights", "generative"):
            if not isinstance(cfg.get(key), dict):
                cfg[key] = copy.deepcopy(rng.choice(COMPONENTS[key]))
        targets += [((key,), cfg[key]) for key in COMPONENTS]
        if isinstance(cfg.get("dataset"), dict):
            if not isinstance(cfg["dataset"].get("options"), dict):
                cfg["dataset"]["options"] = {}
            targets.append((("dataset", "options"), cfg["dataset"]["options"]))
        _, node = rng.choice(targets)
        node[random_key(rng)] = garbage(rng)
    elif kind < 0.7 and paths:  # a key removed
        path = rng.choice(paths)
        parent = _parent(cfg, path)
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    elif kind < 0.8:  # a whole section replaced by a list or a scalar
        key = rng.choice([*cfg])
        cfg[key] = rng.choice([[cfg[key]], [1, 2], "x", 3, None, float("nan")])
    else:  # a number pushed out of range or made non-finite
        numbers = [p for p in paths if isinstance(_parent(cfg, p)[p[-1]], (int, float))
                   and not isinstance(_parent(cfg, p)[p[-1]], bool)
                   and abs(_parent(cfg, p)[p[-1]]) < 1e300]
        if numbers:
            path = rng.choice(numbers)
            value = _parent(cfg, path)[path[-1]]
            _parent(cfg, path)[path[-1]] = rng.choice(
                [-value, value * 1000, -1, 0, value + 0.5, float("nan"), float("inf"), 10**400,
                 str(value), [value]])


def variants() -> Iterator[tuple[int, dict]]:
    rng = random.Random(SEED)
    for i in range(N_CONFIGS):
        cfg = base_config(rng)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            mutate(cfg, rng)
        yield i, cfg


def _check_error(error: ParameterError, where: str) -> None:
    """The error names a key: a non-empty string the message quotes."""
    assert isinstance(error.name, str) and error.name.strip(), where
    assert repr(error.name) in str(error), where


def test_malformed_configs_resolve_or_name_a_key(tmp_path):
    outcomes = {"valid": 0, "refused": 0}
    for i, cfg in variants():
        try:
            resolve(copy.deepcopy(cfg))
        except ParameterError as error:
            _check_error(error, f"variant {i}: {cfg!r}")
            outcomes["refused"] += 1
        except Exception as error:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{type(error).__name__}: {error}\nvariant {i}: {cfg!r}")
        else:
            outcomes["valid"] += 1
    # The generator reaches both outcomes (a change can leave a config valid).
    assert outcomes["refused"] > N_CONFIGS // 2 and outcomes["valid"] > 0, outcomes


def corrupt(text: str, rng: random.Random) -> bytes:
    """The YAML text with a few random edits: characters inserted, dropped or swapped for
    YAML's own punctuation, a control character or a stray byte."""
    data = bytearray(text.encode())
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data) + 1)
        edit = rng.random()
        if edit < 0.3:
            data[at:at] = rng.choice([b":", b"[", b"{", b"-", b"'", b'"', b"&a", b"*a", b"!!",
                                      b"\t", b"\n  ", b"? ", b"|", b"%", b"@", b"`"])
        elif edit < 0.5:
            del data[at:at + rng.randint(1, 5)]
        elif edit < 0.7:
            data[at:at] = bytes([rng.choice([0, 1, 7, 27, 0x80, 0xC3, 0xFF, 0xFE])])
        else:
            data[at:at] = rng.choice([b" .nan", b" .inf", b" 1e-3", b" [1, [2, {a: ]]",
                                      b" !!python/object:os.system", b" *undefined"])
    return bytes(data)


def test_corrupted_yaml_files_end_in_one_error_line(tmp_path, capsys):
    rng = random.Random(SEED + 1)
    path = tmp_path / "config.yaml"
    for i, cfg in variants():
        if i >= N_TEXTS:
            break
        text = yaml.safe_dump(cfg, sort_keys=False) if rng.random() < 0.3 else \
            Path(_digits_file()).read_text()
        path.write_bytes(corrupt(text, rng) if rng.random() < 0.8 else text.encode())
        where = f"variant {i}: {path.read_bytes()!r}"
        try:
            code = main(["check", str(path)])
        except Exception as error:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{type(error).__name__}: {error}\n{where}")
        captured = capsys.readouterr()
        assert code in (0, 2), where
        err = captured.err.strip()
        if code == 2:
            assert len(err.splitlines()) == 1 and err.startswith("tailmix: error:"), where
            assert "parameter must be" in err, where
        else:
            assert "valid" in captured.out, where


def _digits_file() -> Path:
    from tailmix.pipeline.shipped import config_path

    return config_path("digits")
