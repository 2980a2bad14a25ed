import base64
import json
import math
import re
from pathlib import Path

import matplotlib
import pytest
import torch
import yaml

from tailmix._validation import ParameterError
from tailmix.margins import margin_report
from tailmix.metrics import compute_metrics
from tailmix.report import _output_paths, build_report, load_run

DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def _fake_logits(labels, counts, skill, gen):
    log_prior = torch.log(torch.tensor(counts, dtype=torch.float32) / sum(counts))
    noise = torch.randn(labels.shape[0], len(counts), generator=gen)
    return noise + skill * torch.nn.functional.one_hot(labels, len(counts)) + 0.5 * log_prior


def write_run(
    folder,
    *,
    strategy,
    num_classes=6,
    epochs=8,
    seed=0,
    margins=True,
    history=True,
    posthoc=False,
):
    """A run folder in the training loop's formats, filled from fake logits."""
    gen = torch.Generator().manual_seed(seed)
    counts = [math.floor(400 * 100 ** (-c / (num_classes - 1))) for c in range(num_classes)]
    train_y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    test_y = torch.arange(num_classes).repeat_interleave(10)
    train_z = _fake_logits(train_y, counts, 4.0, gen)
    test_z = _fake_logits(test_y, counts, 2.5 + seed, gen)
    final = compute_metrics(test_z, test_y, counts)
    folder.mkdir(parents=True)
    config = {  # the layout of the training loop's resolved config
        "dataset": {"name": "synthetic", "profile": "exp", "ratio": 100},
        "model": {"arch": "resnet32", "head": None},
        "train": {"epochs": epochs, "batch_size": 64, "lr": 0.05, "seed": seed, "device": "auto"},
        "eval": {"batch_size": 512, "many_threshold": 100, "few_threshold": 20},
        "strategy": strategy,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {
        "final": final,
        "best": {"epoch": epochs - 1, "top1": final["top1"] + 1.0},
        "class_counts": counts,
        "classes": [f"c{c}" for c in range(num_classes)],
        "strategy": strategy,
        "dataset": "synthetic",
        "epochs": epochs,
        "seed": seed,
        "train_time_s": 12.5 * epochs,
        "device": "cpu",
    }
    if posthoc:
        final["posthoc_la"] = {"top1": final["top1"] + 2.0, "balanced_accuracy": 50.0, "tau": 1.0}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if history:
        rows = []
        for epoch in range(1, epochs + 1):
            row = {
                "epoch": epoch,
                "lr": 0.05 * (0.01 if epoch > epochs - 2 else 1.0),
                "train_loss": 2.0 / epoch,
                "train_acc": 10.0 * epoch,
                "epoch_time_s": 12.5,
                "images_per_s": 800.0,
            }
            if epoch % 2 == 0:
                row.update(
                    top1=final["top1"] * epoch / epochs,
                    balanced_accuracy=final["balanced_accuracy"] * epoch / epochs,
                    many_shot=final["many_shot"],
                    medium_shot=final["medium_shot"],
                    few_shot=final["few_shot"],
                    test_loss=1.0,
                )
            rows.append(json.dumps(row))
        (folder / "history.jsonl").write_text("\n".join(rows) + "\n")
    if margins:
        report = margin_report(train_z, train_y, test_z, test_y, counts)
        (folder / "margins.json").write_text(json.dumps(report))
    return folder


def _text_outside_images(page):
    return DATA_URI.sub("data:image/png;base64,", page)


def _assert_self_contained(page):
    text = _text_outside_images(page)
    assert not re.search(r"https?:|ftp:|//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE)
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", text)
    assert "@import" not in text and "url(" not in text
    assert "<script" not in text and "<link" not in text


def test_comparison_report_of_two_runs(tmp_path):
    a = write_run(tmp_path / "run_a", strategy="ERM", seed=0)
    b = write_run(tmp_path / "run_b", strategy="MAMix-DRW", seed=1, posthoc=True)
    html_path, md_path = build_report([a, b], tmp_path / "cmp")
    assert html_path == tmp_path / "cmp" / "report.html"
    assert md_path == tmp_path / "cmp" / "report.md" and md_path.is_file()
    page = html_path.read_text()

    images = DATA_URI.findall(page)
    # 2 comparison figures + 5 per run (curves, per class, confusion, reliability, margins)
    assert len(images) == 12
    assert page.count('<img alt="') == len(images)
    for data in images:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert b"matplotlib.org" not in png
    _assert_self_contained(page)

    table = page[page.index('id="comparison"') : page.index('id="comparison-curves"')]
    for label, seed in (("ERM", 0), ("MAMix-DRW", 1)):
        assert f"<td>{label}</td>" in table or f"<td><b>{label}</b></td>" in table
        metrics = json.loads((tmp_path / ("run_a", "run_b")[seed] / "metrics.json").read_text())
        assert f"{metrics['final']['top1']:.2f}" in table
        slope = json.loads((tmp_path / ("run_a", "run_b")[seed] / "margins.json").read_text())
        assert f"{slope['train']['slope']:+.3f}" in table
    assert "post-hoc LA" in table
    assert "best epoch (chosen on test set)" in page
    assert "<td>resnet32</td>" in page and "<td>0.05</td>" in page and "<td>cpu</td>" in page
    assert "post-hoc logit adjustment (tau 1)" in page

    md = md_path.read_text()
    assert "| ERM |" in md and "MAMix-DRW" in md
    linked = re.findall(r"!\[[^\]]*\]\((report_files/[^)]+\.png)\)", md)
    assert len(linked) == 12
    for rel in linked:
        assert (md_path.parent / rel).read_bytes().startswith(b"\x89PNG")


def test_single_run_defaults_to_run_folder_and_notes_missing_files(tmp_path):
    run = write_run(tmp_path / "plain", strategy="DRW", margins=False, history=False)
    html_path, md_path = build_report([run])
    assert html_path == run / "report.html" and md_path == run / "report.md"
    page = html_path.read_text()
    assert "history.jsonl is missing" in page
    assert "margins.json is missing" in page
    assert len(DATA_URI.findall(page)) == 3  # per class, confusion, reliability
    _assert_self_contained(page)
    assert "history.jsonl is missing" in md_path.read_text()


def test_run_without_metrics_still_reports(tmp_path):
    run = write_run(tmp_path / "partial", strategy="ERM")
    (run / "metrics.json").unlink()
    html_path, _ = build_report([run], tmp_path / "out.html")
    assert html_path == tmp_path / "out.html"
    assert (tmp_path / "out.md").is_file() and (tmp_path / "out_files").is_dir()
    page = html_path.read_text()
    assert "No final metrics" in page
    assert len(DATA_URI.findall(page)) == 2  # learning curves and margins
    assert load_run(run).label == "ERM"  # from config.yaml


def test_many_classes_and_duplicate_labels(tmp_path):
    a = write_run(tmp_path / "x" / "seed0", strategy="ERM", num_classes=30, seed=0)
    b = write_run(tmp_path / "y" / "seed1", strategy="ERM", num_classes=30, seed=1, margins=False)
    (b / "history.jsonl").write_text((b / "history.jsonl").read_text() + '{"epoch": 9, "lr"')
    html_path, _ = build_report([a, b], tmp_path / "out")
    page = html_path.read_text()
    assert "ERM (seed0)" in page and "ERM (seed1)" in page
    assert "ERM (seed1): margins.json not found" in page
    assert len(load_run(b).history) == 8  # the cut-off last line is skipped


def test_pyplot_state_untouched(tmp_path):
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    rc_size = matplotlib.rcParams["font.size"]
    build_report([write_run(tmp_path / "r", strategy="ERM")])
    assert matplotlib.get_backend() == backend
    assert matplotlib.rcParams["font.size"] == rc_size
    assert plt.get_fignums() == []


def test_bad_arguments(tmp_path):
    a = write_run(tmp_path / "a", strategy="ERM")
    b = write_run(tmp_path / "b", strategy="DRW")
    with pytest.raises(ParameterError) as err:
        build_report([a, b], tmp_path / "o.md")
    assert err.value.name == "out"
    with pytest.raises(ParameterError) as err:
        build_report([a, tmp_path / "missing"])
    assert err.value.name == "run_dirs"
    with pytest.raises(ParameterError) as err:
        build_report([])
    assert err.value.name == "run_dirs"
    with pytest.raises(ParameterError) as err:
        build_report(str(a))
    assert err.value.name == "run_dirs"


def test_comparison_only_report_is_smaller(tmp_path):
    runs = [write_run(tmp_path / "a", strategy="ERM", seed=0),
            write_run(tmp_path / "b", strategy="Mixup-DRW", seed=1)]
    full, _ = build_report(runs, tmp_path / "full")
    short, _ = build_report(runs, tmp_path / "short", per_run=False)
    assert short.stat().st_size < full.stat().st_size / 2
    assert "Run: " not in short.read_text() and "Run: " in full.read_text()
    assert "Comparison" in short.read_text()


def test_several_runs_default_to_a_folder_in_their_common_parent(tmp_path, monkeypatch):
    a = write_run(tmp_path / "runs" / "a", strategy="ERM", seed=0, margins=False)
    b = write_run(tmp_path / "runs" / "b", strategy="DRW", seed=1, margins=False)
    html_path, md_path = build_report([a, b], per_run=False)
    folder = tmp_path / "runs" / "report-a-vs-b"
    assert (html_path, md_path) == (folder / "report.html", folder / "report.md")
    assert html_path.is_file() and md_path.is_file() and (folder / "report_files").is_dir()
    assert "Comparison" in html_path.read_text()
    # relative run folders give a relative report folder
    monkeypatch.chdir(tmp_path)
    html_path, _ = build_report([Path("runs/a"), Path("runs/b")], per_run=False)
    assert html_path == Path("runs/report-a-vs-b/report.html") and html_path.is_file()


def test_default_folder_of_runs_in_different_folders(tmp_path, monkeypatch):
    x = tmp_path / "grid" / "x" / "cifar10_lt ERM (seed 0)"
    y = tmp_path / "grid" / "y" / "cifar10_lt ERM (seed 1)"
    html_path, md_path, images = _output_paths([x, y], None)
    folder = tmp_path / "grid" / "report-cifar10_lt-ERM-seed-0-vs-cifar10_lt-ERM-seed-1"
    assert html_path == folder / "report.html" and images == folder / "report_files"
    # nothing shared below the root: the current directory
    monkeypatch.chdir(tmp_path)
    html_path, _, _ = _output_paths([Path("/run_a"), Path("/run_b")], None)
    assert html_path == tmp_path / "report-run_a-vs-run_b" / "report.html"


def test_default_folder_name_is_capped(tmp_path):
    runs = [tmp_path / f"a_rather_long_run_folder_name_number_{i}" for i in range(12)]
    html_path, _, _ = _output_paths(runs, None)
    name = html_path.parent.name
    assert html_path.parent.parent == tmp_path
    assert len(name) <= 80 and name.startswith("report-a_rather_long") and "-and-11-more-" in name
    assert _output_paths(runs[:11], None)[0].parent.name != name
    assert _output_paths(runs[:1], None)[0] == runs[0] / "report.html"
