"""Each set passes through a network once at the end of a run: the final metrics reuse the
last epoch's evaluation, margins reuse the final test logits, and the figures are those a
fresh pass over each set gives. ``eval.batch_size: auto`` suits the device."""

import json

import pytest
import torch
from conftest import DEVICE, digits_config
from torch import nn

import tailmix.pipeline.callbacks as cb
from tailmix._validation import ParameterError
from tailmix.margins import margin_report
from tailmix.metrics import compute_metrics
from tailmix.pipeline.build import build_run, restore
from tailmix.pipeline.config import resolve
from tailmix.pipeline.steps import EVAL_BATCH_SIZES, eval_batch_size, predict

TEST_IMAGES = 500  # digits: 50 test images a class
WHOLE = 4096  # an evaluation batch larger than any digits set: one forward call a set


def counted_run(cfg, out, **kw):
    """The run of ``cfg`` and the sizes of its network's evaluation forward calls, each
    tagged with the epoch the trainer had finished (``end`` once training is over)."""
    cfg["eval"]["batch_size"] = WHOLE
    run = build_run(cfg, out, log=lambda _: None)
    calls, epochs = [], run.trainer.state

    class Marker(cb.Callback):  # first: tags every forward of on_fit_end as "end"
        def on_fit_end(self, state):
            state.ended = True

    run.trainer.callbacks.insert(0, Marker())
    epochs.ended = False

    def hook(module, args, output):
        if not module.training:
            calls.append(("end" if epochs.ended else epochs.epoch, len(args[0])))

    run.trainer.model.register_forward_hook(hook)
    return run, calls, run.fit(**kw)


def sizes(run):
    d = run.data
    return len(d.train_labels), len(d.test_labels), (
        None if d.val_labels is None else len(d.val_labels))


@pytest.mark.slow
def test_the_end_of_a_run_passes_the_training_set_once_and_reuses_the_test_logits(tmp_path):
    run, calls, m = counted_run(digits_config(epochs=4), tmp_path / "run")
    n_train, n_test, _ = sizes(run)
    assert n_test == TEST_IMAGES and n_train != n_test
    # epochs 2 and 4 evaluated; at the end only the training set (margins) goes through
    assert calls == [(2, n_test), (4, n_test), ("end", n_train)]
    # the reused logits give what a fresh pass over each set gives: the old path's figures
    r = restore(tmp_path / "run" / "checkpoints" / "last.pt", device=DEVICE)
    test = predict(r.model, r.data.test_inputs, r.data.augment, batch_size=WHOLE,
                   device=r.device)
    fresh = compute_metrics(test, r.data.test_labels, r.data.class_counts, many_threshold=60)
    assert {k: m["final"][k] for k in fresh} == fresh
    assert m["final"]["test_loss"] == float(torch.nn.functional.cross_entropy(
        test, r.data.test_labels.to(test.device)))
    train = predict(r.model, r.data.train_inputs, r.data.augment, batch_size=WHOLE,
                    device=r.device)
    margins = json.loads((tmp_path / "run" / "margins.json").read_text())
    assert margins == margin_report(train, r.data.train_labels, test, r.data.test_labels,
                                    r.data.class_counts)
    history = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text()
               .splitlines()]
    assert history[-1]["top1"] == m["final"]["top1"]
    assert history[-1]["test_loss"] == m["final"]["test_loss"]


@pytest.mark.slow
def test_a_last_epoch_left_unevaluated_or_changed_afterwards_is_evaluated_at_the_end(
        tmp_path):
    """Only the weights an evaluation saw are reused: a callback that changes the network
    after the last epoch's evaluation gets a new test pass."""
    cfg = digits_config(epochs=3)
    cfg["eval"]["margins"] = False
    run, calls, m = counted_run(cfg, tmp_path / "run")
    n_test = sizes(run)[1]
    assert calls == [(2, n_test), (3, n_test)]  # the last epoch is always evaluated

    class Nudge(cb.Callback):
        def on_epoch_end(self, state, row):
            if row["epoch"] == state.epochs:
                with torch.no_grad():
                    state.model.head.bias.add_(1.0)

    cfg = digits_config(epochs=3)
    cfg["eval"]["margins"] = False
    cfg["eval"]["batch_size"] = WHOLE
    run = build_run(cfg, tmp_path / "nudged", log=lambda _: None)
    run.trainer.callbacks.append(Nudge())
    seen = []
    run.trainer.model.register_forward_hook(
        lambda mod, args, out: seen.append(len(args[0])) if not mod.training else None)
    m = run.fit()
    assert seen == [n_test, n_test, n_test]  # epochs 2 and 3, then the nudged network
    test = predict(run.trainer.model, run.data.test_inputs, run.data.augment,
                   batch_size=WHOLE, device=run.device)
    assert m["final"]["test_loss"] == float(torch.nn.functional.cross_entropy(
        test, run.data.test_labels))


@pytest.mark.slow
def test_a_validation_run_reads_each_set_once_per_network(tmp_path):
    cfg = digits_config(epochs=6)
    cfg["dataset"]["validation"] = {"per_class": 5}
    cfg["dataset"]["n_max"] = 110
    cfg["eval"]["every"] = 2
    run, calls, m = counted_run(cfg, tmp_path / "run")
    n_train, n_test, n_val = sizes(run)
    assert len({n_train, n_test, n_val}) == 3
    during = [c for c in calls if c[0] != "end"]
    assert during == [(2, n_val), (4, n_val), (6, n_val)]
    end = [n for when, n in calls if when == "end"]
    # the final network: its validation logits are the last epoch's, its test set once; a
    # selected network of another epoch: its test set once (its validation figures are
    # those of its epoch); margins: the training set once
    other = m["selected"]["epoch"] != m["final"]["epoch"]
    assert end == [n_test] + [n_test] * other + [n_train]
    history = {h["epoch"]: h for h in map(json.loads, (tmp_path / "run" / "history.jsonl")
                                          .read_text().splitlines())}
    sel = m["validation"]["selected"]
    assert sel["balanced_accuracy"] == history[m["selected"]["epoch"]]["val_balanced_accuracy"]
    assert sel["val_loss"] == history[m["selected"]["epoch"]]["val_loss"]
    # the selected network's test figures are a fresh pass of best.pt's weights
    r = restore(tmp_path / "run" / "checkpoints" / "best.pt", device=DEVICE)
    test = predict(r.model, r.data.test_inputs, r.data.augment, batch_size=WHOLE,
                   device=r.device)
    fresh = compute_metrics(test, r.data.test_labels, r.data.class_counts, many_threshold=60)
    assert {k: m["selected"][k] for k in fresh} == fresh


@pytest.mark.slow
def test_a_selected_network_of_an_earlier_epoch_is_read_once(tmp_path, monkeypatch):
    """Selection at an earlier epoch (forced): its validation figures are those of its
    epoch, its test set passes once, and the final network is put back afterwards."""
    cfg = digits_config(epochs=4)
    cfg["dataset"]["validation"] = {"per_class": 5}
    cfg["dataset"]["n_max"] = 110
    cfg["eval"]["every"] = 1
    cfg["eval"]["batch_size"] = WHOLE
    run = build_run(cfg, tmp_path / "run", log=lambda _: None)
    ev = next(c for c in run.trainer.callbacks if isinstance(c, cb.Evaluator))
    scores = iter([90.0, 10.0, 20.0, 30.0, 30.0])  # epochs 1-4, then the final network
    validate = ev._validate

    def forced(model):
        got, tau = validate(model)
        return {**got, "balanced_accuracy": next(scores)}, tau

    monkeypatch.setattr(ev, "_validate", forced)
    weights = {}

    class Keep(cb.Callback):
        def on_epoch_end(self, state, row):
            weights[row["epoch"]] = {k: v.clone() for k, v in state.model.state_dict().items()}

    run.trainer.callbacks.append(Keep())
    seen = []
    run.trainer.model.register_forward_hook(
        lambda mod, args, out: seen.append(len(args[0])) if not mod.training else None)
    m = run.fit()
    assert m["selected"]["epoch"] == 1 and m["final"]["epoch"] == 4
    assert m["validation"]["selected"]["balanced_accuracy"] == 90.0
    n_train, n_test, n_val = sizes(run)
    assert seen == [n_val] * 4 + [n_test, n_test, n_train]
    assert all(torch.equal(v, weights[4][k])
               for k, v in run.trainer.model.state_dict().items())
    model = run.trainer.model
    model.load_state_dict(weights[1])
    test = predict(model, run.data.test_inputs, run.data.augment, batch_size=WHOLE,
                   device=run.device)
    fresh = compute_metrics(test, run.data.test_labels, run.data.class_counts,
                            many_threshold=60)
    assert {k: m["selected"][k] for k in fresh} == fresh


def test_evaluator_logits_are_reused_only_for_the_weights_they_came_from():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    calls = []
    net.register_forward_hook(lambda mod, args, out: calls.append(len(args[0])))
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    ev = cb.Evaluator(inputs=x, labels=y, augment=lambda v, train=False: v,
                      class_counts=[5, 3, 2], every=1, batch_size=64,
                      device=torch.device("cpu"))
    first = ev.logits(net)
    assert torch.equal(ev.logits(net), first) and calls == [10]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(x).sum().backward()  # a training forward: batch-norm statistics move
    assert len(calls) == 2
    ev.logits(net)
    assert len(calls) == 3
    opt.step()  # the weights move
    moved = ev.logits(net)
    assert len(calls) == 4 and not torch.equal(moved, first)
    ev.on_epoch_start(None, 1)  # a new epoch forgets what it kept
    ev.logits(net)
    assert len(calls) == 5


def test_eval_batch_size_auto_by_device_and_a_written_number_kept():
    assert eval_batch_size("auto", torch.device("cpu")) == EVAL_BATCH_SIZES["cpu"]
    assert eval_batch_size("auto", torch.device("cuda")) == EVAL_BATCH_SIZES["cuda"]
    assert eval_batch_size(300, torch.device("cuda")) == 300
    assert resolve(digits_config()).eval["batch_size"] == "auto"
    cfg = digits_config()
    cfg["eval"]["batch_size"] = "big"
    with pytest.raises(ParameterError, match="'eval.batch_size'.*auto.*big"):
        resolve(cfg)
    cfg["eval"]["batch_size"] = 0
    with pytest.raises(ParameterError, match="'eval.batch_size'"):
        resolve(cfg)


def test_a_run_evaluates_at_the_devices_batch_size_or_the_one_written():
    def evaluation_batch(**eval_cfg):
        cfg = digits_config()
        cfg["eval"].update(eval_cfg)
        run = build_run(cfg, None, log=lambda _: None)
        ev = next(c for c in run.trainer.callbacks if isinstance(c, cb.Evaluator))
        return ev.run["batch_size"], run.trainer.step.eval_batch_size

    auto = EVAL_BATCH_SIZES["cpu" if torch.device(DEVICE).type == "cpu" else "cuda"]
    assert evaluation_batch() == (auto, auto)
    assert evaluation_batch(batch_size=300) == (300, 300)
