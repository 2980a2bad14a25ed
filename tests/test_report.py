import base64
import json
import math
import re
from pathlib import Path

import matplotlib
import pytest
import torch
import yaml
from conftest import digits_config

from tailmix._validation import ParameterError
from tailmix.margins import fit_margin_slope, margin_report
from tailmix.metrics import compute_metrics
from tailmix.tools.report import (
    _fig_confusion,
    _fig_per_class,
    _output_paths,
    build_report,
    load_run,
)

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
    counts=None,
    classes=None,
):
    """A run folder in the training loop's formats, filled from fake logits."""
    gen = torch.Generator().manual_seed(seed)
    if counts is None:
        counts = [math.floor(400 * 100 ** (-c / (num_classes - 1))) for c in range(num_classes)]
    num_classes = len(counts)
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
        "classes": classes or [f"c{c}" for c in range(num_classes)],
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
    html_path, md_path = build_report([run], tmp_path / "out.html")
    assert (html_path, md_path) == (tmp_path / "out.html", None)
    # the page alone: no summary, no figure folder, no marker
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.html", "partial"]
    page = html_path.read_text()
    assert "No final metrics" in page
    assert len(DATA_URI.findall(page)) == 2  # learning curves and margins
    assert load_run(run).label == "ERM"  # from config.yaml


def test_an_html_path_gets_the_page_alone_with_every_figure(tmp_path):
    a = write_run(tmp_path / "a", strategy="ERM", seed=0)
    b = write_run(tmp_path / "b", strategy="DRW", seed=1)
    html_path, md_path = build_report([a, b], tmp_path / "cmp.html", per_run=False)
    assert (html_path, md_path) == (tmp_path / "cmp.html", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "cmp.html"]
    page = html_path.read_text()
    _assert_self_contained(page)
    assert len(DATA_URI.findall(page)) == 2  # the comparison's figures, embedded
    assert _output_paths([a, b], tmp_path / "cmp.htm") == (tmp_path / "cmp.htm", None, None)


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


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _md_rows(md, header_start):
    """The body rows of the first Markdown table whose header begins with ``header_start``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


# Counts whose order differs from the classes' alphabetical (and index) order, with a tie.
ZOO = ["ant", "bee", "cat", "dog", "eel"]
ZOO_COUNTS = [5, 40, 12, 40, 150]
ZOO_BY_COUNT = ["eel", "bee", "dog", "cat", "ant"]  # the 40s tie: bee (1) before dog (3)
# rows true, columns predicted; cat is never predicted
ZOO_MATRIX = [[2, 0, 0, 0, 3],
              [0, 4, 0, 1, 0],
              [0, 1, 0, 0, 4],
              [0, 0, 0, 5, 0],
              [0, 0, 0, 1, 4]]


def test_classes_by_training_count_with_precision_and_recall(tmp_path):
    run = write_run(tmp_path / "zoo", strategy="ERM", counts=ZOO_COUNTS, classes=ZOO)
    _edit_json(run / "metrics.json",
               lambda m: m["final"].update(confusion_matrix=ZOO_MATRIX))
    _, md_path = build_report([run])
    md = md_path.read_text()
    # precision: diagonal over column sums (2, 5, 0, 7, 11); recall: over row sums (all 5)
    assert _md_rows(md, "| class |") == [
        "| eel | 150 | 5 | 36.36 | 80.00 |",
        "| bee | 40 | 5 | 80.00 | 80.00 |",
        "| dog | 40 | 5 | 71.43 | 100.00 |",
        "| cat | 12 | 5 | — | 0.00 |",
        "| ant | 5 | 5 | 100.00 | 40.00 |",
    ]
    # the real ratio of the training counts, not the config's dataset.ratio (100)
    assert "| ratio | 30; the config asked for 100 |" in md

    metrics = json.loads((run / "metrics.json").read_text())
    fig = _fig_per_class(metrics, (100, 20))
    bars, counts = fig.axes[0], fig.axes[1]
    assert [t.get_text() for t in counts.get_xticklabels()] == ZOO_BY_COUNT
    order = [ZOO.index(name) for name in ZOO_BY_COUNT]
    accuracy = metrics["final"]["per_class_accuracy"]
    assert [p.get_height() for p in bars.patches] == pytest.approx([accuracy[c] for c in order])
    assert [p.get_height() for p in counts.patches] == [150, 40, 40, 12, 5]

    fig = _fig_confusion(metrics)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ZOO_BY_COUNT
    assert [t.get_text() for t in ax.get_yticklabels()] == ZOO_BY_COUNT
    shown = ax.images[0].get_array()
    # first row: eel's 5 test images, 4 predicted eel and 1 dog, columns in the same order
    assert shown[0].tolist() == [0.8, 0.0, 0.2, 0.0, 0.0]
    assert shown[:, 0].tolist() == [0.8, 0.0, 0.0, 0.8, 0.6]  # predicted eel, by true class


def test_shot_groups_of_one_or_no_class_say_so(tmp_path):
    # many-shot (> 100 images): eel alone; medium: bee, dog; few: cat, ant
    run = write_run(tmp_path / "zoo", strategy="ERM", counts=ZOO_COUNTS, classes=ZOO)
    final = json.loads((run / "metrics.json").read_text())["final"]
    _, md_path = build_report([run])
    rows = _md_rows(md_path.read_text(), "| metric (%) |")
    assert rows[2] == f"| many-shot | {final['many_shot']:.2f} (rests on 1 class) | — |"
    assert rows[3] == f"| medium-shot | {final['medium_shot']:.2f} | — |"
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["eval"]["many_threshold"] = 200  # now no class is many-shot
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    _edit_json(run / "metrics.json", lambda m: m["final"].update(many_shot=None))  # as recorded
    _, md_path = build_report([run])
    rows = _md_rows(md_path.read_text(), "| metric (%) |")
    assert rows[2] == "| many-shot | — (no class in group) | — (no class in group) |"


def _fit_on_two_classes(run):
    """Rewrite the run's train margins so that only its two largest classes have a positive
    mean margin; return the slope fitted on them."""
    def edit(margins):
        means = [4.0, 2.0] + [-1.0] * (len(margins["class_counts"]) - 2)
        margins["train"].update(mean=means, **fit_margin_slope(means, margins["class_counts"]))
    _edit_json(run / "margins.json", edit)
    return json.loads((run / "margins.json").read_text())["train"]["slope"]


def test_slope_fitted_on_two_classes_carries_a_warning(tmp_path):
    a = write_run(tmp_path / "a", strategy="ERM", seed=0)
    b = write_run(tmp_path / "b", strategy="DRW", seed=1)
    slope = _fit_on_two_classes(a)
    test_slope = json.loads((a / "margins.json").read_text())["test"]["slope"]
    _, md_path = build_report([a, b], tmp_path / "out")
    md = md_path.read_text()
    row = next(r for r in _md_rows(md, "| run |") if r.startswith("| ERM |"))
    assert f"| {slope:+.3f} (fitted on 2 classes) | {test_slope:+.3f} |" in row
    other = next(r for r in _md_rows(md, "| run |") if r.startswith("| DRW |"))
    assert "fitted on" not in other
    assert (f"Warning: a slope fitted on fewer than 4 classes says little about how margins "
            f"grow with class size (train slope {slope:+.3f}, fitted on 2 classes).") in md
    # a margins.json written before n_used was recorded: the classes are counted
    _edit_json(a / "margins.json", lambda m: m["train"].pop("n_used"))
    _, md_path = build_report([a, b], tmp_path / "out", per_run=False)
    assert f"| {slope:+.3f} (fitted on 2 classes) |" in md_path.read_text()


def test_ties_are_not_bolded(tmp_path):
    values = {  # top-1, balanced, many, medium, few, macro F1, ECE
        "a": (50.0, 40.0, 10.0, 0.001, 0.0, 30.0, 5.0),
        "b": (50.0, 45.0, 10.0, 0.0, 0.0, 20.0, 5.0),
        "c": (49.0, 41.0, 9.0, 0.0, 0.0, 10.0, 7.0),
    }
    keys = ("top1", "balanced_accuracy", "many_shot", "medium_shot", "few_shot", "macro_f1",
            "ece")
    runs = []
    for name, numbers in values.items():
        run = write_run(tmp_path / name, strategy=f"S{name}", margins=False)
        _edit_json(run / "metrics.json", lambda m, numbers=numbers: (
            m["final"].update(zip(keys, numbers, strict=True)),
            m.update(best={"epoch": 7, "top1": 51.0})))
        runs.append(run)
    _, md_path = build_report(runs, tmp_path / "out", per_run=False)
    assert _md_rows(md_path.read_text(), "| run |") == [
        # top-1: a and b share the best; medium: 0.001 and 0.00 both read 0.00; few, ECE: ties
        "| Sa | 50.00 | 40.00 | 10.00 | 0.00 | 0.00 | **30.00** | 5.00 | — | — | 51.00 (ep. 7) |",
        "| Sb | 50.00 | **45.00** | 10.00 | 0.00 | 0.00 | 20.00 | 5.00 | — | — | 51.00 (ep. 7) |",
        "| Sc | 49.00 | 41.00 | 9.00 | 0.00 | 0.00 | 10.00 | 7.00 | — | — | 51.00 (ep. 7) |",
    ]


def test_comparison_lists_the_config_keys_that_differ(tmp_path):
    runs = [write_run(tmp_path / name, strategy="ERM", margins=False) for name in "abc"]
    config = yaml.safe_load((runs[1] / "config.yaml").read_text())
    config["train"]["lr"] = 0.1
    config["loss"] = {"name": "focal", "gamma": 2}
    (runs[1] / "config.yaml").write_text(yaml.safe_dump(config))
    _, md_path = build_report(runs, tmp_path / "abc", per_run=False)
    md = md_path.read_text()
    assert "| key | ERM (a) | ERM (b) | ERM (c) |" in md
    assert _md_rows(md, "| key |") == [
        "| train.lr | 0.05 | 0.1 | 0.05 |",
        "| loss.gamma | (not set) | 2 | (not set) |",
        "| loss.name | (not set) | focal | (not set) |",
    ]
    html_path, md_path = build_report([runs[0], runs[2]], tmp_path / "ac", per_run=False)
    assert "identical configs" in md_path.read_text() and "| key |" not in md_path.read_text()
    assert "identical configs" in html_path.read_text()


def test_report_of_a_digits_run_whose_classes_are_not_in_count_order(tmp_path):
    from tailmix import train

    counts = [20, 70, 5, 40, 40, 10, 30, 8, 15, 25]
    cfg = digits_config(epochs=1, warmup_epochs=0)
    cfg["dataset"].update(profile="counts", counts=counts)  # dataset.ratio stays 20
    train(cfg, tmp_path / "run", log=lambda _: None)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["class_counts"] == counts
    _, md_path = build_report([tmp_path / "run"])
    md = md_path.read_text()
    rows = [r.strip("| ").split(" | ") for r in _md_rows(md, "| class |")]
    order = [1, 3, 4, 6, 9, 0, 8, 5, 7, 2]  # largest first, the two 40s by index
    assert [r[0] for r in rows] == [metrics["classes"][c] for c in order]
    assert [int(r[1]) for r in rows] == [counts[c] for c in order]
    final = metrics["final"]
    for row, c in zip(rows, order, strict=True):
        assert row[2] == str(sum(final["confusion_matrix"][c]))
        for text, value in ((row[3], final["per_class_precision"][c]),
                            (row[4], final["per_class_accuracy"][c])):
            assert text == ("—" if value is None else f"{value:.2f}")
    assert "| ratio | 14; the config asked for 20 |" in md
    assert f"| many-shot | {final['many_shot']:.2f} (rests on 1 class) |" in md  # 70 > 60


def test_suite_table_says_what_a_margin_slope_rests_on(tmp_path):
    from tailmix.tools.bench import load_suite, write_tables

    spec = {"name": "tiny", "overrides": {"dataset": {"name": "digits", "ratio": 20}},
            "grid": [{"strategies": ["ERM", "DRW"], "ratios": [20], "seeds": [0]}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(spec))
    suite = load_suite(tmp_path / "suite.yaml")
    out = tmp_path / "results"
    runs = out / "runs"
    slope = _fit_on_two_classes(write_run(runs / "digits-r20" / "ERM-s0", strategy="ERM"))
    drw = write_run(runs / "digits-r20" / "DRW-s0", strategy="DRW")
    drw_slope = json.loads((drw / "margins.json").read_text())["train"]["slope"]
    write_tables(suite, out)
    rows = (out / "table.md").read_text().splitlines()
    erm = next(r for r in rows if r.startswith("| digits | 20 | ERM |"))
    assert f"| {slope:.3f} (fitted on 2 classes) |" in erm
    drw_row = next(r for r in rows if r.startswith("| digits | 20 | DRW |"))
    assert f"| {drw_slope:.3f} |" in drw_row and "fitted on" not in drw_row


def test_suite_table_with_a_validation_selected_column_keeps_its_layout(tmp_path):
    """Runs that selected an epoch on validation add a column: every line of the table has
    as many cells as its header, and the note on the column ends the paragraph above it,
    with a blank line before the table."""
    from tailmix.tools.bench import load_suite, write_tables

    spec = {"name": "tiny", "overrides": {"dataset": {"name": "digits", "ratio": 20}},
            "grid": [{"strategies": ["ERM", "DRW"], "ratios": [20], "seeds": [0]}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "results"
    for strategy in ("ERM", "DRW"):
        run = write_run(out / "runs" / "digits-r20" / f"{strategy}-s0", strategy=strategy)
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["selected"] = {"epoch": 5, "top1": 61.25}
        (run / "metrics.json").write_text(json.dumps(metrics))
    write_tables(load_suite(tmp_path / "suite.yaml"), out)
    lines = (out / "table.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| dataset |"))
    table = [line for line in lines[start:] if line.startswith("|")]
    assert len(table) == 4 and len({line.count("|") for line in table}) == 1
    assert "validation-selected epoch" in table[0] and "| 61.25 |" in table[2]
    assert lines[start - 1] == "" and "validation-selected column" in lines[start - 2]
