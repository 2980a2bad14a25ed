"""Averaged weights (EMA, SWA): their formulas, a run that reports them beside the live
network, an exact resume, and the tools that read them (predict, export, eval)."""

import json

import pytest
import torch
from conftest import digits_config, train_interrupted
from torch import nn

from tailmix._validation import ParameterError
from tailmix.averaging import EMA, SWA
from tailmix.cli import main
from tailmix.pipeline.build import train


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_ema_follows_its_recurrence_over_random_weights():
    g = torch.Generator().manual_seed(0)
    net, decay = _net(), 0.95
    ema = EMA(decay)
    expected = None
    for t in range(1, 40):
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
            net[1].running_mean.copy_(torch.randn(4, generator=g))
            net[1].num_batches_tracked.fill_(t)
        ema.update(net)
        state = net.state_dict()
        if expected is None:
            expected = {k: v.clone().double() for k, v in state.items()}
        else:
            d = min(decay, (1 + t) / (10 + t))
            for k, v in state.items():
                expected[k] = d * expected[k] + (1 - d) * v.double() \
                    if v.is_floating_point() else v.double()
    for k, v in ema.weights.items():
        torch.testing.assert_close(v.double(), expected[k], rtol=1e-5, atol=1e-6)
    assert int(ema.weights["1.num_batches_tracked"]) == 39  # integers copied, not averaged
    assert ema.count == 39


def test_swa_is_the_mean_of_what_it_saw():
    g = torch.Generator().manual_seed(1)
    net, swa, seen = _net(), SWA(), []
    for _ in range(17):
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 3)
        seen.append({k: v.clone() for k, v in net.state_dict().items()})
        swa.update(net)
    for k, v in swa.weights.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, torch.stack([s[k] for s in seen]).mean(0),
                                       rtol=1e-5, atol=1e-6)


def test_applied_puts_the_live_weights_back_exactly():
    net = _net()
    ema = EMA(0.5)
    ema.update(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    live = {k: v.clone() for k, v in net.state_dict().items()}
    with ema.applied(net) as model:
        assert torch.equal(model[0].weight, ema.weights["0.weight"])
    assert all(torch.equal(live[k], v) for k, v in net.state_dict().items())


def _config(**train):
    cfg = digits_config(epochs=4, **train)
    cfg["ema"] = {"decay": 0.9}
    cfg["swa"] = {"start": 0.5, "lr": 0.02}
    return cfg


def test_a_run_reports_its_averages_beside_the_live_network(tmp_path):
    result = train(_config(), tmp_path / "run")
    rows = [json.loads(r) for r in (tmp_path / "run/history.jsonl").read_text().splitlines()]
    evaluated = [r for r in rows if "top1" in r]
    assert all("ema_top1" in r for r in evaluated)
    assert "swa_top1" not in rows[1] and "swa_top1" in rows[3]  # from epoch 3 of 4 on
    assert [r["lr"] for r in rows[2:]] == [0.02, 0.02]  # swa.lr from its start
    for kind in ("ema", "swa"):
        final = result[kind]["final"]
        assert 0 <= final["balanced_accuracy"] <= 100 and "posthoc_la" in final
    assert result["final"]["balanced_accuracy"] == rows[-1]["balanced_accuracy"]
    ckpt = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert ckpt["averages"]["swa"]["count"] == 2
    assert ckpt["averages"]["ema"]["count"] > 4  # one an update


def test_averages_change_nothing_of_the_training(tmp_path):
    """EMA and SWA without an lr of its own only watch: a MAMix-DRW run (mixing draws, class
    weights) with both, evaluated at every epoch, trains and scores exactly as the run
    without them (the averaging suite's live network is the plain run of its seed)."""
    plain = digits_config(epochs=4)
    plain["strategy"] = "MAMix-DRW"
    plain["eval"]["every"] = 1
    averaged = {**plain, "ema": {"decay": 0.9}, "swa": {"start": 0.5}}
    a = train(plain, tmp_path / "plain")
    b = train(averaged, tmp_path / "averaged")
    keys = ("epoch", "lr", "train_loss", "train_acc", "top1", "balanced_accuracy")

    def rows(run):
        lines = (tmp_path / run / "history.jsonl").read_text().splitlines()
        return [{k: json.loads(r).get(k) for k in keys} for r in lines]

    assert rows("plain") == rows("averaged")
    assert a["final"]["per_class_accuracy"] == b["final"]["per_class_accuracy"]
    assert "ema" in b and "swa" in b and "ema" not in a


def test_averages_resume_exactly(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(_config(), straight)
    resumed = tmp_path / "resumed"
    train_interrupted(_config(), resumed, at_epoch=3, monkeypatch=monkeypatch)
    train(_config(), resumed, resume=True)
    a = torch.load(straight / "checkpoints/last.pt", weights_only=True)["averages"]
    b = torch.load(resumed / "checkpoints/last.pt", weights_only=True)["averages"]
    for kind in ("ema", "swa"):
        assert a[kind]["count"] == b[kind]["count"]
        assert all(torch.equal(v, b[kind]["weights"][k]) for k, v in a[kind]["weights"].items())


def test_ema_counts_updates_under_accumulation(tmp_path):
    cfg = digits_config(epochs=2, batch_size=32, accumulate=2)
    cfg["ema"] = {"decay": 0.99}
    cfg["log"]["checkpoint_best"] = False
    train(cfg, tmp_path / "run")
    ckpt = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    n = sum(ckpt["class_counts"])
    steps = n // 32 + (1 if n % 32 >= 2 else 0)  # micro-batches of an epoch
    assert ckpt["averages"]["ema"]["count"] == 2 * -(-steps // 2)  # one an update


def test_with_a_validation_set_the_rows_hold_validation_figures(tmp_path):
    cfg = _config()
    cfg["dataset"]["validation"] = {"per_class": 5}
    result = train(cfg, tmp_path / "run")
    rows = [json.loads(r) for r in (tmp_path / "run/history.jsonl").read_text().splitlines()]
    assert "ema_val_balanced_accuracy" in rows[-1] and "ema_top1" not in rows[-1]
    assert "validation" in result["ema"] and "final" in result["ema"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated
def test_tools_read_the_averaged_weights(tmp_path, capsys):
    from tailmix.tools.predict import Predictor

    run = tmp_path / "run"
    cfg = digits_config(epochs=2)
    cfg["ema"] = {"decay": 0.9}
    train(cfg, run)
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)
    live = Predictor.from_run(run, device="cpu")
    ema = Predictor.from_run(run, device="cpu", weights="ema")
    own = ema.network.model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in ckpt["averages"]["ema"]["weights"].items())
    x = torch.randint(0, 256, (6, *live.input_shape), dtype=torch.uint8)
    with torch.no_grad():
        assert not torch.allclose(live.network(x), ema.network(x))
    from tailmix.tools.export import export

    script = export(run, out=tmp_path / "ema.pt", format="torchscript", weights="ema",
                    log=lambda _: None)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(script))(x), ema.network(x))
    with pytest.raises(ParameterError, match="weights"):
        Predictor.from_run(run, device="cpu", weights="swa")
    capsys.readouterr()
    assert main(["eval", str(run), "--weights", "swa"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tailmix: error:") and "--weights" in err and "ema" in err
    assert main(["eval", str(run), "--weights", "ema", "--device", "cpu"]) == 0


def test_bad_settings_are_refused_before_any_work(tmp_path):
    for patch, key in (({"ema": {"decay": 1.0}}, "ema.decay"),
                       ({"swa": {"lr": 0.1}}, "swa"),
                       ({"swa": {"start": 9}}, "swa.start"),
                       ({"ema": {"decay": 0.9}, "crt": {"epochs": 1}}, "ema.decay")):
        cfg = {**digits_config(epochs=4), **patch}
        with pytest.raises(ParameterError, match=key.replace(".", r"\.")):
            train(cfg, tmp_path / "none")
