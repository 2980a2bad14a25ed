import csv
import json
from pathlib import Path

import pytest
import yaml

from tailmix._validation import ParameterError
from tailmix.tools.bench import load_suite, run_suite


def _suite(tmp_path, grid, **extra):
    spec = {
        "name": "tiny",
        "overrides": {
            "dataset": {"name": "digits", "profile": "exp", "ratio": 20, "n_max": 120},
            "model": {"arch": "small_cnn"},
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "warmup_epochs": 1,
                      "precision": "fp32"},
            "eval": {"every": 1, "many_threshold": 60},
            "log": {"progress": False},
        },
        "grid": grid, **extra,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_suite_runs_resumes_and_tabulates(tmp_path, monkeypatch):
    path = _suite(tmp_path, [{"strategies": ["ERM", "DRW"], "ratios": [20], "seeds": [0, 1]}])
    suite = load_suite(path)
    assert [c.folder for c in suite.cells] == ["digits-r20/ERM-s0", "digits-r20/ERM-s1",
                                                "digits-r20/DRW-s0", "digits-r20/DRW-s1"]
    out = run_suite(suite, tmp_path / "results", log=lambda s: None)
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["strategy"] for r in rows] == ["ERM", "DRW"]  # catalogue order
    assert all(r["seeds"] == "2" for r in rows)
    table = (out / "table.md").read_text()
    assert "± " in table and "| digits | 20 | ERM | 2 | 2 |" in table
    # Where the runs trained, beside their time: this process's threads and precision.
    here = json.loads((out / "runs/digits-r20/ERM-s0/metrics.json").read_text())["environment"]
    where = here["accelerator"] or f"{here['cpu_capability']} CPU, {here['cpu_threads']} threads"
    assert all(r["machine"] == f"{where}, fp32" for r in rows)
    assert all(line.endswith(f"| {where}, fp32 |") for line in table.splitlines()
               if line.startswith("| digits |"))
    assert (out / "reports" / "digits-r20" / "report.html").is_file()

    # A second call trains nothing: finished runs are skipped.
    import tailmix.pipeline.build

    def boom(*a, **k):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(tailmix.pipeline.build, "train", boom)
    logs = []
    run_suite(suite, tmp_path / "results", log=logs.append)
    assert len(logs) == 4 and all("skipped" in line for line in logs)
    # ...and the patch does reach the suite: a missing run would have trained through it.
    (out / "runs" / "digits-r20" / "DRW-s1" / "metrics.json").unlink()
    with pytest.raises(AssertionError, match="retrained"):
        run_suite(suite, tmp_path / "results", log=lambda s: None)


def test_machine_of_a_run_as_recorded():
    from tailmix.tools.bench import _machine

    cpu = {"environment": {"cpu_capability": "AVX2", "cpu_threads": 2, "accelerator": None},
           "speed": {"precision": "fp32"}}
    assert _machine(cpu) == "AVX2 CPU, 2 threads, fp32"
    gpu = {"environment": {"cpu_capability": "AVX512", "accelerator": "NVIDIA H100"},
           "speed": {"precision": "bf16"}}
    assert _machine(gpu) == "NVIDIA H100, bf16"
    assert _machine({"environment": cpu["environment"]}) == "AVX2 CPU, 2 threads"
    assert _machine({"final": {}}) is None  # written before runs recorded it


def test_missing_runs_are_listed(tmp_path):
    path = _suite(tmp_path, [{"strategies": ["ERM", "DRW"], "seeds": [0]}])
    out = run_suite(load_suite(path), tmp_path / "r", log=lambda s: None, train_missing=False)
    assert "Not yet run (2)" in (out / "table.md").read_text()


def test_suite_errors_before_any_training(tmp_path):
    path = _suite(tmp_path, [{"strategies": ["ERM", "Magic"]}])
    with pytest.raises(ParameterError, match="Magic"):
        load_suite(path)
    path = _suite(tmp_path, [{"strategy": ["ERM"]}])
    with pytest.raises(ParameterError, match=r"grid\[0\].strategy"):
        load_suite(path)
    path = _suite(tmp_path, [{"strategies": ["ERM"]}], colour="red")
    with pytest.raises(ParameterError, match="suite.colour"):
        load_suite(path)


def test_shipped_suites_load(tmp_path):
    from pathlib import Path

    repo = Path(__file__).parents[1]
    for suite_file in sorted((repo / "benchmarks" / "suites").glob("*.yaml")):
        spec = yaml.safe_load(suite_file.read_text())
        spec["base_config"] = str(repo / spec["base_config"])
        p = tmp_path / suite_file.name
        p.write_text(yaml.safe_dump(spec))
        suite = load_suite(p, data_root=str(tmp_path))
        # every block's grid, whole: strategies x ratios x seeds (x datasets)
        expected = sum(len(b.get("strategies", ["ERM"])) * len(b["ratios"]) * len(b["seeds"])
                       * len(b.get("datasets") or [None]) for b in spec["grid"])
        assert len(suite.cells) == expected > 0, suite_file.name


def test_check_refuses_a_typo_in_the_last_cell_before_any_run(tmp_path, capsys):
    """`tailmix check` (and bench) validate every cell, components included, without
    loading data: a typo in the last block's loss section fails at once, naming the cell."""
    import time

    from tailmix.cli import main

    path = _suite(tmp_path, [
        {"strategies": ["ERM", "DRW"], "ratios": [20]},
        {"strategies": ["LA"], "tag": "typo", "overrides": {"loss": {"name": "la", "tua": 2}}},
    ])
    start = time.perf_counter()
    assert main(["check", str(path)]) == 2
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert err.startswith("tailmix: error:")
    assert "LA-typo-s0" in err and "loss" in err and "tua" in err
    assert not (tmp_path / "results").exists() and not any(tmp_path.glob("**/history.jsonl"))
    assert main(["bench", str(path), "--out", str(tmp_path / "results")]) == 2
    assert not (tmp_path / "results").exists()
    # Fixed, the suite checks clean.
    fixed = _suite(tmp_path, [{"strategies": ["LA"], "tag": "t2",
                               "overrides": {"loss": {"name": "la", "tau": 2}}}])
    assert main(["check", str(fixed)]) == 0
    assert "all valid" in capsys.readouterr().out


def test_the_committed_suites_runs_are_not_stale(tmp_path, monkeypatch):
    """``tailmix bench`` on a shipped suite goes on from its committed runs: every finished
    run's config.yaml agrees with what the suite now asks of it (a new default that changes
    no number must not turn them stale). The data is not read: an empty stand-in sits where
    the suite's data root points, so the check runs on any clone."""
    from tailmix.tools.bench import config_difference, load_suite

    root = Path(__file__).resolve().parents[1]
    work = tmp_path / "clone"
    work.mkdir()
    monkeypatch.chdir(work)
    checked = 0
    for path in sorted((root / "benchmarks" / "suites").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        if not (root / "results" / spec["name"]).is_dir():
            continue  # a suite with no committed runs (the GPU ones) names no data root
        stand_in = work / spec["data_root"]
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.touch()
        spec["base_config"] = str(root / spec["base_config"])
        copy = work / path.name
        copy.write_text(yaml.safe_dump(spec))
        suite = load_suite(copy)
        for cell in suite.cells:
            run = root / "results" / suite.name / "runs" / cell.folder
            if (run / "config.yaml").is_file():
                assert config_difference(run, suite.config(cell)) is None, (path.name, cell)
                checked += 1
    assert checked >= 14
