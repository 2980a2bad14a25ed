"""Predictions from a trained run without its training data, and exports to ONNX and
TorchScript that reproduce the checkpoint's logits."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tailmix
from tailmix._validation import ParameterError
from tailmix.cli import main
from tailmix.data import from_arrays, load_source
from tailmix.data.augment import BatchAugment
from tailmix.data.files import decode_image
from tailmix.models import build_model
from tailmix.pipeline.steps import predict as run_network
from tailmix.tools.export import TOLERANCE, export
from tailmix.tools.predict import Predictor

COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (210, 210, 40), (160, 40, 200)]


def _colour_folder(root: Path, rng, *, train: list[int], test: list[int],
                   shape: tuple[int, int], suffix: str) -> Path:
    """An image folder ``SPLIT/cC/I.suffix``: class c's images its colour plus noise."""
    for split, per in (("train", train), ("test", test)):
        for c, n in enumerate(per):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                px = np.clip(np.array(COLOURS[c]) + rng.normal(0, 20, (*shape, 3)), 0, 255)
                Image.fromarray(px.astype(np.uint8)).save(root / split / f"c{c}" / f"{i}.{suffix}")
    return root


def _train(cfg: dict, out: Path, **kw) -> Path:
    base = {"strategy": "ERM", "eval": {"every": 1, "margins": False},
            "log": {"progress": False}}
    merged = {**base, **cfg}
    merged["train"] = {"batch_size": 64, "lr": 0.05, "warmup_epochs": 0, "device": "cpu",
                       "seed": 0, **cfg.get("train", {})}
    tailmix.train(merged, out, log=lambda _: None, **kw)
    return out


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """1x8x8 digits, small CNN, 3 epochs."""
    return _train({"dataset": {"name": "digits", "profile": "exp", "ratio": 20, "n_max": 120},
                   "model": {"arch": "small_cnn"},
                   "train": {"epochs": 3, "precision": "fp32"}},
                  tmp_path_factory.mktemp("digits") / "run")


@pytest.fixture(scope="module")
def digits_test() -> np.ndarray:
    return load_source("digits").test_x[:60]


@pytest.fixture(scope="module")
def ldam_run(tmp_path_factory) -> Path:
    """Digits with LDAM-DRW (a cosine head, s = 30), small CNN, 3 epochs."""
    return _train({"strategy": "LDAM-DRW",
                   "dataset": {"name": "digits", "profile": "exp", "ratio": 20, "n_max": 120},
                   "model": {"arch": "small_cnn"},
                   "train": {"epochs": 3, "precision": "fp32"}},
                  tmp_path_factory.mktemp("ldam") / "run")


def _coloured(n_per_class: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """3x32x32 uint8 images whose class is their colour."""
    y = np.repeat(np.arange(len(n_per_class)), n_per_class)
    base = np.array(COLOURS, dtype=np.float64)[y][:, :, None, None]
    x = np.clip(base + rng.normal(0, 40, (len(y), 3, 32, 32)), 0, 255).astype(np.uint8)
    return x, y


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory) -> Path:
    """CIFAR-like 3x32x32 images (5 colour classes, long-tailed), resnet32, 1 epoch."""
    rng = np.random.default_rng(0)
    tx, ty = _coloured([60, 40, 25, 15, 10], rng)
    vx, vy = _coloured([8] * 5, rng)
    raw = from_arrays(tx, ty, vx, vy, classes=["red", "green", "blue", "yellow", "violet"])
    return _train({"dataset": {"name": "arrays", "profile": "original"},
                   "model": {"arch": "resnet32"}, "train": {"epochs": 1}},
                  tmp_path_factory.mktemp("cifar") / "run", data=raw)


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory) -> Path:
    """12 features, 3 classes, an MLP, 2 epochs."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 3, (3, 12))
    ty = np.repeat(np.arange(3), [60, 30, 12])
    vy = np.repeat(np.arange(3), 10)
    tx = (centres[ty] + rng.normal(0, 1, (len(ty), 12)) + 5).astype(np.float32)
    vx = (centres[vy] + rng.normal(0, 1, (len(vy), 12)) + 5).astype(np.float32)
    raw = from_arrays(tx, ty, vx, vy, classes=["a", "b", "c"])
    return _train({"dataset": {"name": "arrays", "profile": "original"},
                   "model": {"arch": "mlp"}, "train": {"epochs": 2, "precision": "fp32"}},
                  tmp_path_factory.mktemp("vectors") / "run", data=raw)


def reference_logits(run: Path, x: torch.Tensor) -> torch.Tensor:
    """The checkpoint's network on raw inputs, as the run's evaluation computes them (fp32)."""
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    inputs = ckpt["inputs"]
    net = build_model(ckpt["config"]["model"]["arch"], num_classes=len(ckpt["classes"]),
                      input_shape=tuple(inputs["shape"]),
                      head=ckpt["config"]["composition"]["head"])
    net.load_state_dict(ckpt["model"])
    augment = BatchAugment(mean=torch.tensor(inputs["mean"]), std=torch.tensor(inputs["std"]))
    return run_network(net, x, augment, batch_size=16, device=torch.device("cpu"))


def _write_pngs(folder: Path, images: np.ndarray, labels: np.ndarray) -> list[Path]:
    paths = []
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        p = folder / f"class{y}" / f"img{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(p)
        paths.append(p)
    return paths


def _read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text(encoding="utf-8").splitlines()))


# --------------------------------------------------------------------------- Predictor


def test_probabilities_are_the_softmax_of_the_checkpoint_network(digits_run, digits_test):
    p = Predictor.from_run(digits_run, device="cpu")
    assert p.classes == [str(c) for c in range(10)]
    assert len(p.class_counts) == 10 and p.class_counts[0] == 120
    assert p.input_shape == (1, 8, 8) and p.device == torch.device("cpu")
    x = torch.from_numpy(digits_test)
    expected = torch.softmax(reference_logits(digits_run, x), dim=1)
    got = p.predict_proba(digits_test)  # an ndarray works as a tensor does
    assert got.shape == (60, 10)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(p.predict_proba(x), expected, atol=1e-6, rtol=0)
    assert torch.equal(p.predict(x), expected.argmax(dim=1))
    # (N, H, W) is accepted for a one-channel network
    torch.testing.assert_close(p.predict_proba(digits_test[:, 0]), expected, atol=1e-6, rtol=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated
def test_a_cosine_head_is_read_at_its_loss_scale_everywhere(ldam_run, digits_test, tmp_path):
    """LDAM trains softmax(s * cos): the run's evaluation, the predictor, a restored run and
    an export all read the head's cosines at s = 30, not as bare cosines."""
    from tailmix.pipeline.build import restore

    ckpt = torch.load(ldam_run / "checkpoints" / "last.pt", map_location="cpu",
                      weights_only=True)
    comp = ckpt["config"]["composition"]
    assert comp["head"] == "cosine" and comp["loss"]["s"] == 30.0
    x = torch.from_numpy(digits_test)
    cosines = reference_logits(ldam_run, x)  # a freshly built head: scale 1, bare cosines
    assert 0.2 < cosines.abs().max() <= 1 + 1e-6
    p = Predictor.from_run(ldam_run, device="cpu")
    torch.testing.assert_close(p.logits(x), 30 * cosines, atol=1e-4, rtol=0)
    torch.testing.assert_close(p.predict_proba(x), torch.softmax(30 * cosines, dim=1),
                               atol=1e-6, rtol=0)
    assert torch.equal(p.predict(x), cosines.argmax(dim=1))
    # The evaluation's NLL is that of the scaled logits on the run's test set.
    r = restore(ldam_run / "checkpoints" / "last.pt", device="cpu")
    test_logits = r.logits(r.data.test_inputs)
    nll = torch.nn.functional.cross_entropy(test_logits, r.data.test_labels).item()
    final = json.loads((ldam_run / "metrics.json").read_text())["final"]
    assert final["nll"] == pytest.approx(nll, abs=2e-6) and final["test_loss"] > 0
    assert test_logits.abs().max() > 1.5  # scaled: no longer confined to [-1, 1]
    out = export(ldam_run, format="torchscript", out=tmp_path / "m.pt", log=lambda _: None)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out))(x), p.logits(x), atol=1e-4, rtol=0)
    # Older versions let cRT re-train a cosine head with plain cross-entropy (scale 1): such
    # a checkpoint is read as it was trained last.
    crt = {**ckpt, "config": {**ckpt["config"], "crt": {**ckpt["config"]["crt"], "epochs": 2}}}
    torch.save(crt, tmp_path / "crt.pt")
    torch.testing.assert_close(Predictor.from_run(tmp_path / "crt.pt", device="cpu").logits(x),
                               cosines, atol=1e-5, rtol=0)


def test_eval_reproduces_the_runs_final_evaluation(tmp_path):
    """`tailmix eval` computes the logits as the run's evaluation did (its precision and
    memory format), so its figures are the recorded ones, exactly."""
    from tailmix.pipeline.build import evaluate_checkpoint, restore

    run = _train({"dataset": {"name": "digits", "profile": "exp", "ratio": 20, "n_max": 120},
                  "model": {"arch": "resnet32"},
                  "train": {"epochs": 1, "precision": "bf16", "channels_last": "auto"}},
                 tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    assert restore(last, device="cpu").channels_last  # auto: images through a ResNet
    got = evaluate_checkpoint(last, device="cpu")
    final = json.loads((run / "metrics.json").read_text())["final"]
    for key in ("top1", "balanced_accuracy", "per_class_accuracy", "ece", "nll", "macro_f1"):
        assert got[key] == final[key], key


@pytest.mark.slow
def test_cifar_like_probabilities_match_the_network(cifar_run):
    p = Predictor.from_run(cifar_run, device="cpu", checkpoint="best", batch_size=7)
    assert p.classes == ["red", "green", "blue", "yellow", "violet"]
    assert p.input_shape == (3, 32, 32) and p.class_counts == [60, 40, 25, 15, 10]
    x, _ = _coloured([4] * 5, np.random.default_rng(5))
    expected = torch.softmax(reference_logits(cifar_run, torch.from_numpy(x)), dim=1)
    torch.testing.assert_close(p.predict_proba(x), expected, atol=1e-5, rtol=0)


def test_adjust_and_prior_are_the_hand_computed_corrections(digits_run, digits_test):
    p = Predictor.from_run(digits_run, device="cpu")
    logits = p.logits(digits_test).double()
    counts = torch.tensor(p.class_counts, dtype=torch.float64)
    log_train = (counts / counts.sum()).log()
    tau = 0.7
    want = torch.softmax(logits - tau * log_train, dim=1)
    torch.testing.assert_close(p.predict_proba(digits_test, adjust=tau).double(), want,
                               atol=1e-6, rtol=0)
    prior = [3, 1, 1, 1, 1, 1, 1, 1, 1, 0]  # counts work too: normalised
    target = torch.tensor(prior, dtype=torch.float64) / sum(prior)
    want = torch.softmax(logits + target.log() - log_train, dim=1)
    got = p.predict_proba(digits_test, prior=prior).double()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert bool((got[:, 9] == 0).all())  # a class of prior 0 is never predicted
    # A uniform test prior is tau = 1 (the logits differ by the constant log 0.1).
    torch.testing.assert_close(p.predict_proba(digits_test, prior=[0.1] * 10),
                               p.predict_proba(digits_test, adjust=1.0), atol=1e-6, rtol=0)
    assert torch.equal(p.predict_proba(digits_test, adjust=0), p.predict_proba(digits_test))
    with pytest.raises(ParameterError, match="'prior'.*None when adjust"):
        p.predict(digits_test, adjust=1.0, prior=[0.1] * 10)
    with pytest.raises(ParameterError, match="'prior'.*10 non-negative"):
        p.predict(digits_test, prior=[0.5, 0.5])
    with pytest.raises(ParameterError, match="'adjust'"):
        p.predict(digits_test, adjust=-1)


def test_png_folder_reproduces_the_array_predictions(digits_run, digits_test, tmp_path):
    p = Predictor.from_run(digits_run, device="cpu")
    labels = load_source("digits").test_y[:60]
    paths = _write_pngs(tmp_path / "pngs", digits_test, labels)
    (tmp_path / "pngs" / ".hidden.png").write_bytes(b"not read")
    (tmp_path / "pngs" / "notes.txt").write_text("not an image")
    x, ids = p.read_inputs(tmp_path / "pngs")
    assert ids == sorted(str(q) for q in paths)
    order = [paths.index(Path(i)) for i in ids]
    assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(digits_test[order]))
    from_files = p.predict_table(tmp_path / "pngs")
    from_arrays_ = p.predict(digits_test)
    assert [r["input"] for r in from_files] == ids
    assert [r["prediction"] for r in from_files] == [p.classes[int(from_arrays_[i])]
                                                     for i in order]
    # single files, and an RGB image for a one-channel network (decoded to grey)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.repeat(digits_test[0, 0][:, :, None], 3, axis=2)).save(rgb)
    x2, ids2 = p.read_inputs([paths[0], rgb])
    assert ids2 == [str(paths[0]), str(rgb)] and torch.equal(x2[0], x2[1])


def _by_hand(image: np.ndarray, size: int, short: int) -> np.ndarray:
    """``(C, h, w)`` -> ``(C, size, size)``: the shorter side to ``short`` (bilinear), then
    the central square, computed here from the geometry alone."""
    c, h, w = image.shape
    side = size * min(h, w) / short  # the crop, in the image's own pixels
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return np.stack([np.asarray(Image.fromarray(band).resize(
        (size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None))
        for band in image])


def test_images_of_another_size_get_the_evaluation_transform(digits_run, digits_test,
                                                            tmp_path):
    """An in-memory run trained on 8x8 images reads any size: shorter side to 8 / 0.875,
    then the central 8x8, with one log line; 8x8 images are read as they are."""
    lines: list[str] = []
    p = Predictor.from_run(digits_run, device="cpu", log=lines.append)
    assert p.resize == 9
    odd = np.random.default_rng(4).integers(0, 256, (1, 12, 20), dtype=np.uint8)
    want = torch.from_numpy(_by_hand(odd, 8, 9))
    assert torch.equal(p.check_inputs(odd[None]), want[None])
    assert lines == ["resized 1 of 1 images of another size to 8x8 (shorter side to 9, "
                     "then the central 8x8)"]
    lines.clear()
    torch.testing.assert_close(p.predict_proba(digits_test),
                               torch.softmax(reference_logits(digits_run,
                                                             torch.from_numpy(digits_test)),
                                             dim=1), atol=1e-6, rtol=0)
    assert lines == []  # nothing resized, nothing said
    # Files: the odd one resized, the 8x8 one untouched; the table agrees with the arrays.
    Image.fromarray(odd[0]).save(tmp_path / "a_odd.png")
    Image.fromarray(digits_test[0, 0]).save(tmp_path / "b_same.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "c_tall.png")
    x, ids = p.read_inputs(tmp_path)
    assert [Path(i).name for i in ids] == ["a_odd.png", "b_same.png", "c_tall.png"]
    assert torch.equal(x[0], want) and torch.equal(x[1], torch.from_numpy(digits_test[0]))
    assert torch.equal(x[2], torch.zeros((1, 8, 8), dtype=torch.uint8))
    assert lines == ["resized 2 of 3 images of another size to 8x8 (shorter side to 9, "
                     "then the central 8x8)"]
    rows = p.predict_table(tmp_path)
    proba = p.predict_proba(x)
    assert [r["prediction"] for r in rows] == [p.classes[int(k)] for k in proba.argmax(1)]
    assert rows[0]["probability"] == pytest.approx(float(proba[0].max()), abs=1e-6)


@pytest.mark.slow
def test_in_memory_and_streamed_runs_of_one_folder_resize_alike(tmp_path):
    """A run holding a folder of 16x16 images in memory and one streaming it read a 24x36
    image the same way: the streamed evaluation's decode (shorter side to 18, central 16)."""
    rng = np.random.default_rng(6)
    root = _colour_folder(tmp_path / "images", rng, train=[20, 8], test=[3, 3],
                          shape=(16, 16), suffix="png")
    odd = tmp_path / "odd.png"
    Image.fromarray(rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)).save(odd)
    same = root / "test" / "c1" / "0.png"
    read = {}
    for in_memory in (True, False):
        run = _train({"dataset": {"name": "imagefolder", "root": str(root),
                                  "profile": "original", "in_memory": in_memory,
                                  "workers": 0},
                      "model": {"arch": "small_cnn"}, "train": {"epochs": 1, "batch_size": 8}},
                     tmp_path / f"run-{in_memory}")
        lines: list[str] = []
        p = Predictor.from_run(run, device="cpu", log=lines.append)
        assert p.input_shape == (3, 16, 16) and p.resize == 18
        read[in_memory], _ = p.read_inputs([odd, same])
        assert lines == ["resized 1 of 2 images of another size to 16x16 (shorter side to "
                         "18, then the central 16x16)"]
    assert torch.equal(read[True][0], read[False][0])
    assert torch.equal(read[True][0], torch.tensor(decode_image(odd.read_bytes(), 16)))
    # A 16x16 image: as it is in memory, the run's own evaluation transform when streamed.
    pixels = np.array(Image.open(same)).transpose(2, 0, 1)
    assert torch.equal(read[True][1], torch.from_numpy(pixels))
    assert torch.equal(read[False][1], torch.tensor(decode_image(same.read_bytes(), 16)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated
def test_a_run_at_another_image_size_reads_images_of_the_source_size(tmp_path):
    """Trained at dataset.image_size 64 from 32x32 arrays: a 32x32 image is resized as the
    run resized its own (shorter side to 64), within one grey level of the run's resize
    (Pillow's bilinear here, torch's there); the export says how."""
    from tailmix.data.section import _resized

    rng = np.random.default_rng(7)
    tx, ty = _coloured([20, 12, 8, 6, 4], rng)
    vx, vy = _coloured([2] * 5, rng)
    raw = from_arrays(tx, ty, vx, vy, classes=["red", "green", "blue", "yellow", "violet"])
    run = _train({"dataset": {"name": "arrays", "profile": "original", "image_size": 64},
                  "model": {"arch": "small_cnn"}, "train": {"epochs": 1, "precision": "fp32"}},
                 tmp_path / "run", data=raw)
    lines: list[str] = []
    p = Predictor.from_run(run, device="cpu", log=lines.append)
    assert p.input_shape == (3, 64, 64) and p.resize == 64
    got = p.check_inputs(vx)
    assert torch.equal(got, torch.from_numpy(np.stack([_by_hand(a, 64, 64) for a in vx])))
    own = torch.from_numpy(_resized(raw, 64).test_x)
    assert int((got.int() - own.int()).abs().max()) <= 1
    assert lines == ["resized 10 of 10 images of another size to 64x64 (shorter side to 64, "
                     "then the central 64x64)"]
    export(run, format="torchscript", out=tmp_path / "m.pt", log=lambda _: None)
    side = json.loads((tmp_path / "m.pt.classes.json").read_text())
    assert side["input"]["resize"] == 64
    assert "another size resized so the shorter side is 64" in side["input"]["description"]


def test_npy_and_csv_inputs(digits_run, vector_run, digits_test, tmp_path):
    p = Predictor.from_run(digits_run, device="cpu")
    np.save(tmp_path / "digits.npy", digits_test)
    x, ids = p.read_inputs(tmp_path / "digits.npy")
    assert ids == list(range(60)) and torch.equal(x, torch.from_numpy(digits_test))
    np.save(tmp_path / "floats.npy", digits_test[:, 0].astype(np.float64))  # whole numbers
    assert torch.equal(p.read_inputs(str(tmp_path / "floats.npy"))[0], x)

    v = Predictor.from_run(vector_run, device="cpu")
    assert v.input_shape == (12,) and v.classes == ["a", "b", "c"]
    feats = np.random.default_rng(3).normal(5, 3, (9, 12)).astype(np.float32)
    header = ",".join(f"f{i}" for i in range(12))
    body = "\n".join(",".join(repr(float(f)) for f in row) for row in feats)
    (tmp_path / "with_header.csv").write_text(header + "\n" + body + "\n")
    (tmp_path / "no_header.csv").write_text(body + "\n\n")
    np.save(tmp_path / "vectors.npy", feats)
    want = v.predict_proba(feats)
    for name in ("with_header.csv", "no_header.csv", "vectors.npy"):
        got, ids = v.read_inputs(tmp_path / name)
        assert ids == list(range(9))
        torch.testing.assert_close(v.predict_proba(got), want, atol=1e-6, rtol=0)
    rows = v.predict_table(tmp_path / "with_header.csv", out=tmp_path / "pred.csv")
    assert [r["input"] for r in rows] == list(range(9))
    table = _read_csv(tmp_path / "pred.csv")
    assert table[0] == ["input", "prediction", "probability", "p_a", "p_b", "p_c"]
    assert len(table) == 10 and table[1][1] == v.classes[int(want[0].argmax())]


def test_wrong_inputs_say_what_the_model_expects(digits_run, vector_run, digits_test,
                                                 tmp_path):
    p = Predictor.from_run(digits_run, device="cpu")
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(big)
    with pytest.raises(ParameterError, match=r"images of 1x8x8 \(channels x height x width\), "
                       r"as the model was trained on \(other heights and widths are resized\)"
                       r".*shape \(2, 3, 8, 8\)"):
        p.predict(np.zeros((2, 3, 8, 8), np.uint8))  # channels are not converted
    with pytest.raises(ParameterError, match=r"images of 1x8x8.*shape \(2, 1, 0, 8\)"):
        p.predict(np.zeros((2, 1, 0, 8), np.uint8))
    with pytest.raises(ParameterError, match="uint8 pixel values 0..255.*not 0..1"):
        p.predict(digits_test / 255.0)
    (tmp_path / "rows.csv").write_text("1,2,3\n")
    with pytest.raises(ParameterError, match="the model reads images of 1x8x8"):
        p.read_inputs(tmp_path / "rows.csv")
    with pytest.raises(ParameterError, match="existing files or folders"):
        p.read_inputs(tmp_path / "missing.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParameterError, match="a folder holding image files"):
        p.read_inputs(tmp_path / "empty")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ParameterError, match="image files Pillow can read.*broken.png"):
        p.read_inputs(tmp_path / "broken.png")

    v = Predictor.from_run(vector_run, device="cpu")
    (tmp_path / "wide.csv").write_text("1,2,3,4,5,6,7,8,9,10,11,12,13\n")
    with pytest.raises(ParameterError, match="feature vectors of 12 values.*row 1: 13 values"):
        v.read_inputs(tmp_path / "wide.csv")
    with pytest.raises(ParameterError, match=r"feature vectors of 12 values.*\(4, 11\)"):
        v.predict(np.zeros((4, 11)))
    with pytest.raises(ParameterError, match="a .npy array or a .csv table: the model reads "
                       "feature vectors of 12 values"):
        v.read_inputs(big)
    with pytest.raises(ParameterError, match="finite"):
        v.predict(np.full((1, 12), np.nan))
    # Nothing to predict is a mistake, not an empty table.
    (tmp_path / "text.csv").write_text("just some text\n")
    with pytest.raises(ParameterError, match="at least one row of numbers.*its one row, "
                       "'just some text', reads as a header"):
        v.read_inputs(tmp_path / "text.csv")
    (tmp_path / "blank.csv").write_text("\n")
    with pytest.raises(ParameterError, match="at least one row of numbers.*it is empty"):
        v.read_inputs(tmp_path / "blank.csv")
    np.save(tmp_path / "none.npy", np.zeros((0, 12), np.float32))
    with pytest.raises(ParameterError, match=r"at least one input.*shape \(0, 12\)"):
        v.read_inputs(tmp_path / "none.npy")


def test_old_checkpoint_restores_with_its_data_and_own_networks_need_model(digits_run,
                                                                          digits_test,
                                                                          tmp_path):
    ckpt = torch.load(digits_run / "checkpoints" / "last.pt", weights_only=True)
    new = Predictor.from_run(digits_run, device="cpu").predict_proba(digits_test)
    old = dict(ckpt)
    del old["inputs"]
    torch.save(old, tmp_path / "old.pt")
    restored = Predictor.from_run(tmp_path / "old.pt", device="cpu")
    assert restored.input_shape == (1, 8, 8)
    torch.testing.assert_close(restored.predict_proba(digits_test), new, atol=1e-6, rtol=0)

    custom = {**ckpt, "config": {**ckpt["config"], "model_class": "MyNet"}}
    torch.save(custom, tmp_path / "custom.pt")
    with pytest.raises(ParameterError, match="'model'.*the MyNet module"):
        Predictor.from_run(tmp_path / "custom.pt")
    net = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    mine = Predictor.from_run(tmp_path / "custom.pt", device="cpu", model=net)
    torch.testing.assert_close(mine.predict_proba(digits_test), new, atol=1e-6, rtol=0)
    with pytest.raises(ParameterError, match="'model'.*built-in 'small_cnn'"):
        Predictor.from_run(digits_run, model=net)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ParameterError, match="a tailmix checkpoint"):
        Predictor.from_run(tmp_path / "junk.pt")


@pytest.mark.slow
def test_streamed_run_decodes_images_with_its_evaluation_transform(tmp_path):
    rng = np.random.default_rng(2)
    root = _colour_folder(tmp_path / "images", rng, train=[30, 12], test=[4, 4],
                          shape=(20, 26), suffix="jpg")
    run = _train({"dataset": {"name": "imagefolder", "root": str(root), "profile": "original",
                              "in_memory": False, "image_size": 16, "workers": 0},
                  "model": {"arch": "small_cnn"}, "train": {"epochs": 1, "batch_size": 16}},
                 tmp_path / "run")
    p = Predictor.from_run(run, device="cpu")
    assert p.inputs["image_size"] == 16 and p.input_shape == (3, 16, 16)
    other = tmp_path / "other.png"  # any size: resized and centre-cropped like the test set
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(other)
    x, _ = p.read_inputs([root / "test" / "c0" / "0.jpg", other])
    want = [decode_image(f.read_bytes(), 16) for f in (root / "test" / "c0" / "0.jpg", other)]
    assert torch.equal(x, torch.from_numpy(np.stack(want)))
    torch.testing.assert_close(p.predict_proba(x),
                               torch.softmax(reference_logits(run, x), dim=1),
                               atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- command line


def test_cli_predict_writes_the_table(digits_run, digits_test, tmp_path, capsys):
    labels = load_source("digits").test_y[:60]
    _write_pngs(tmp_path / "pngs", digits_test, labels)
    out = tmp_path / "sub" / "predictions.csv"
    assert main(["predict", str(digits_run), str(tmp_path / "pngs"), "--out", str(out),
                 "--device", "cpu", "--batch-size", "16"]) == 0
    assert f"wrote 60 predictions to {out}" in capsys.readouterr().out
    table = _read_csv(out)
    assert table[0] == ["input", "prediction", "probability",
                        *(f"p_{c}" for c in range(10))]
    assert len(table) == 61
    p = Predictor.from_run(digits_run, device="cpu")
    want = p.predict_table(tmp_path / "pngs")
    for row, r in zip(table[1:], want, strict=True):
        assert row[0] == r["input"] and row[1] == r["prediction"]
        assert float(row[2]) == pytest.approx(r["probability"], rel=1e-5)
        assert [float(v) for v in row[3:]] == pytest.approx(
            [r[f"p_{c}"] for c in range(10)], rel=1e-5, abs=1e-9)
        assert float(row[2]) == max(float(v) for v in row[3:])
    np.save(tmp_path / "x.npy", digits_test)
    assert main(["predict", str(digits_run / "checkpoints" / "last.pt"),
                 str(tmp_path / "x.npy"), "-o", str(out), "--adjust", "1",
                 "--checkpoint", "best"]) == 0
    assert "post-hoc adjusted (tau 1)" in capsys.readouterr().out
    adjusted = p.predict(digits_test, adjust=1.0)
    assert [r[1] for r in _read_csv(out)[1:]] == [p.classes[int(k)] for k in adjusted]
    assert [r[0] for r in _read_csv(out)[1:]] == [str(i) for i in range(60)]


@pytest.mark.parametrize("argv, message", [
    (["predict", "{missing}", "x.png", "-o", "p.csv"], "'RUN' parameter must be a run folder"),
    (["predict", "{run}", "{npy}", "-o", "p.csv", "--prior", "0.5,0.5"],
     "'--prior' parameter must be 10 non-negative"),
    (["predict", "{run}", "{npy}", "-o", "p.csv", "--prior", "a,b"],
     "'--prior' parameter must be comma-separated"),
    (["predict", "{run}", "{npy}", "-o", "p.csv", "--checkpoint", "first"],
     "'--checkpoint' parameter must be one of 'last', 'best'"),
    (["predict", "{run}", "{npy}", "-o", "p.csv", "--device", "tpu"], "'--device'"),
    (["predict", "{run}", "{npy}", "-o", "p.csv", "--batch-size", "0"], "'--batch-size'"),
    (["predict", "{run}", "{npy}", "-o", "{here}"], "'--out' parameter must be a file path"),
    (["export", "{missing}", "--out", "m.onnx"], "'RUN' parameter must be a run folder"),
    (["export", "{ckpt}", "--format", "torchscript", "--out", "{ckpt}"],
     "'--out' parameter must be a file path for the exported model"),
    (["export", "{run}", "--format", "tflite", "--out", "m.onnx"],
     "'--format' parameter must be one of 'onnx', 'torchscript'"),
])
def test_cli_errors_are_one_line(argv, message, digits_run, digits_test, tmp_path, capsys,
                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", digits_test)
    subs = {"{missing}": str(tmp_path / "no-such-run"), "{run}": str(digits_run),
            "{npy}": str(tmp_path / "x.npy"), "{here}": str(tmp_path),
            "{ckpt}": str(digits_run / "checkpoints" / "last.pt")}
    assert main([subs.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tailmix: error: ") and message in err[0]
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "m.onnx").exists()


def test_cli_export_without_onnx_packages_says_how_to_install(digits_run, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    assert main(["export", str(digits_run), "--format", "onnx",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "tailmix: error: The '--format' parameter" in err
    assert "pip install 'tailmix[export]'" in err and "onnxruntime" in err


# --------------------------------------------------------------------------- export


def _onnx_check(run: Path, model: Path, x: np.ndarray) -> float:
    """The largest difference between onnxruntime's logits and the checkpoint's on ``x``,
    relative to the logit scale, after checking the metadata and the side file."""
    import onnx
    import onnxruntime as ort

    p = Predictor.from_run(run, device="cpu")
    proto = onnx.load(str(model))
    props = {e.key: e.value for e in proto.metadata_props}
    assert json.loads(props["classes"]) == p.classes
    assert json.loads(props["class_counts"]) == p.class_counts
    assert json.loads(props["inputs"])["shape"] == list(p.input_shape)
    assert "raw pixel values 0..255" in props["input_description"]
    side = json.loads(Path(f"{model}.classes.json").read_text())
    assert side["classes"] == p.classes and side["format"] == "onnx"
    assert side["check"]["max_abs_diff"] <= side["check"]["tolerance"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "pixels" and inp.shape[1:] == list(p.input_shape)
    assert isinstance(inp.shape[0], str)  # a dynamic batch
    got = torch.from_numpy(session.run(["logits"], {"pixels": x.astype(np.float32)})[0])
    want = reference_logits(run, torch.from_numpy(x))
    return float((got - want).abs().max()) / max(1.0, float(want.abs().max()))


@pytest.mark.slow
def test_cli_export_onnx_matches_the_checkpoint_on_another_batch_size(
        digits_run, cifar_run, digits_test, tmp_path, capsys):
    for run, x in ((digits_run, digits_test[:5]),
                   (cifar_run, _coloured([1] * 5, np.random.default_rng(9))[0])):
        model = tmp_path / f"{run.parent.name}.onnx"
        assert main(["export", str(run), "--format", "onnx", "--out", str(model)]) == 0
        out = capsys.readouterr().out
        assert f"exported onnx to {model}" in out and f"<= {TOLERANCE:g} x logit scale" in out
        assert _onnx_check(run, model, x) <= TOLERANCE  # batch 5: the probe was 4
        assert _onnx_check(run, model, x[:1]) <= TOLERANCE


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated
def test_torchscript_round_trips(vector_run, tmp_path):
    out = export(vector_run, format="torchscript", out=tmp_path / "m.pt", log=lambda _: None)
    extra = {"tailmix.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["tailmix.json"])
    side = json.loads((tmp_path / "m.pt.classes.json").read_text())
    assert meta["classes"] == side["classes"] == ["a", "b", "c"]
    assert meta["input"]["name"] == "features" and side["format"] == "torchscript"
    p = Predictor.from_run(vector_run, device="cpu")
    for n in (1, 5):
        x = torch.from_numpy(np.random.default_rng(n).normal(5, 3, (n, 12)).astype(np.float32))
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), p.logits(x), atol=1e-5, rtol=0)


class _OwnNet(torch.nn.Module):
    """A user's network: not registered, no features() or head of its own."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32),
                                        torch.nn.ReLU())
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated
def test_a_run_of_an_own_module_exports_with_the_module(digits_test, tmp_path, capsys):
    torch.manual_seed(0)
    run = _train({"dataset": {"name": "digits", "profile": "exp", "ratio": 20, "n_max": 120},
                  "train": {"epochs": 1, "precision": "fp32"}},
                 tmp_path / "run", model=_OwnNet())
    out = export(run, format="torchscript", out=tmp_path / "own.pt", model=_OwnNet(),
                 log=lambda _: None)
    loaded = torch.jit.load(str(out))
    x = torch.from_numpy(digits_test).float()
    want = Predictor.from_run(run, device="cpu", model=_OwnNet()).logits(digits_test)
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert float(want.abs().max()) > 0.1  # trained logits, not a zero network
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), want, atol=1e-5, rtol=0)
    assert ckpt["config"]["model_class"].endswith("_OwnNet")
    # Without the module neither the library nor the command line can rebuild it.
    with pytest.raises(ParameterError, match="'model'.*_OwnNet module"):
        export(run, format="torchscript", out=tmp_path / "no.pt", log=lambda _: None)
    assert main(["export", str(run), "--format", "torchscript",
                 "--out", str(tmp_path / "no.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'model'" in err[0] and "command line cannot rebuild it" in err[0]
    assert not (tmp_path / "no.pt").exists()


def test_export_refuses_a_model_that_does_not_match(digits_run, tmp_path, monkeypatch):
    import tailmix.tools.export as ex

    monkeypatch.setattr(ex, "TOLERANCE", -1.0)
    with pytest.raises(ParameterError, match="reproduces the checkpoint's logits"):
        export(digits_run, format="torchscript", out=tmp_path / "m.pt", log=lambda _: None)
    assert not (tmp_path / "m.pt").exists()
    assert not (tmp_path / "m.pt.classes.json").exists()


def test_predict_table_from_arrays_with_ids(digits_run, digits_test):
    p = Predictor.from_run(digits_run, device="cpu")
    rows = p.predict_table(digits_test[:3], ids=["a", "b", "c"], prior=[1] * 10)
    assert [r["input"] for r in rows] == ["a", "b", "c"]
    assert list(rows[0]) == p.table_header()
    assert sum(rows[0][f"p_{c}"] for c in p.classes) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ParameterError, match="'ids'"):
        p.predict_table(digits_test[:3], ids=["a"])


def test_a_broken_checkpoint_is_named_without_torch_advice(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(ParameterError) as err:
        Predictor.from_run(bad)
    assert str(bad) in str(err.value) and "weights_only=False" not in str(err.value)
