"""A trained network as a file other programs run: ONNX or TorchScript.

The exported graph reads inputs the way :class:`tailmix.tools.predict.Predictor` does: raw pixel
values 0..255 as ``float32 (N, C, H, W)`` for images, raw ``float32 (N, D)`` feature vectors
otherwise; the normalisation (``/ 255``, then ``(x - mean) / std``) is inside the graph. It
returns logits ``(N, classes)``; the batch size is free, the image size is the network's: an
image of another size is brought to it first as :class:`~tailmix.tools.predict.Predictor` does
(shorter side resized to ``input.resize``, then the central square; the metadata says so).
The class names travel with it: in the ONNX model's metadata, in the TorchScript archive's
``tailmix.json``, and in a side file ``<out>.classes.json`` for both.

Every export is checked before it is written: the exported model must reproduce the
checkpoint's logits on a probe batch, and on a batch of another size, within
:data:`TOLERANCE` times the logit scale.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailmix._validation import ParameterError, check_choice
from tailmix._version import __version__
from tailmix.io import check_output
from tailmix.tools.predict import Predictor, checkpoint_path, write_output

__all__ = ["FORMATS", "TOLERANCE", "export"]

#: The export formats.
FORMATS = ("onnx", "torchscript")
#: The largest logit difference accepted between the exported model and the checkpoint,
#: relative to the logit scale ``max(1, max |logit|)`` of the probe batches.
TOLERANCE = 1e-4
# The probe batch the graph is traced with, and the other batch size it is checked on.
_PROBE, _OTHER = 4, 7
_INSTALL = "pip install 'tailmix[export]'"


def export(path: str | os.PathLike, *, out: str | os.PathLike, format: str = "onnx",
           checkpoint: str = "last", model: torch.nn.Module | None = None,
           log: Callable[[str], None] = print, force: bool = False,
           weights: str = "model") -> Path:
    """Export a run's network with its normalisation to ONNX or TorchScript.

    Parameters
    ----------
    path : str or path
        A run folder or a checkpoint ``.pt`` file (as :meth:`Predictor.from_run` reads).
    out : str or path
        The file to write. A side file ``<out>.classes.json`` gets the class names, the
        training counts, the input record and the check's figures.
    format : {"onnx", "torchscript"}, default "onnx"
        ``onnx`` needs the ``onnx``, ``onnxruntime`` and ``onnxscript`` packages
        (``pip install 'tailmix[export]'``); the graph is traced by ``torch.onnx.export``
        (the dynamo exporter, or the TorchScript-based one where that fails) with a dynamic
        batch dimension, input ``pixels`` or ``features`` and output ``logits``; the class
        names are in its ``metadata_props`` (``classes``, ``class_counts``: JSON lists;
        ``inputs``: the JSON input record; ``input_description``: words). ``torchscript``
        traces the network with ``torch.jit.trace``; the archive holds ``tailmix.json``
        (load it with ``torch.jit.load(f, _extra_files={"tailmix.json": ""})``).
    checkpoint : {"last", "best"}, default "last"
        Which checkpoint of a run folder.
    weights : {"model", "ema", "swa"}, default "model"
        The checkpoint's network weights, or an average the run kept beside them.
    model : nn.Module, optional
        For a run of your own network: a module of the same kind.
    log : callable, default print
        Receives one line saying what was written and how closely it matches.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ParameterError
        For an unknown format, a missing package, a network the format cannot express, or
        an exported model whose logits differ from the checkpoint's by more than
        ``TOLERANCE * max(1, max |logit|)`` on the probe batches (random pixel values, or
        features drawn around the training mean; the fp32 network in eval mode on the
        CPU). Nothing is written then.
    """
    format = check_choice("format", format, FORMATS)
    if format == "onnx":
        _require_onnx()
    out = Path(out)
    source = checkpoint_path(path, checkpoint)
    side = Path(f"{out}.classes.json")
    if out.is_dir() or out.resolve() == source.resolve():
        raise ParameterError("out", "a file path for the exported model (not a folder, not "
                             "the checkpoint)", str(out))
    # An earlier export leaves its class names beside it; any other file stays unless forced.
    check_output(out, inputs=[source], ours=lambda f: Path(f"{f}.classes.json").is_file(),
                 force=force, name="out")
    pred = Predictor.from_run(source, device="cpu", model=model, weights=weights)
    network = pred.network.cpu().float().eval()
    probe = _probe_batch(pred, _PROBE, seed=0)
    other = _probe_batch(pred, _OTHER, seed=1)
    with torch.no_grad():
        expected = [network(probe), network(other)]
    meta = _metadata(pred)
    if format == "onnx":
        data, run = _onnx(network, probe, meta, input_name=_input_name(pred))
    else:
        data, run = _torchscript(network, probe, meta)
    diff = max(float((run(x) - e).abs().max()) for x, e in
               zip((probe, other), expected, strict=True))
    scale = max(1.0, *(float(e.abs().max()) for e in expected))
    check = {"max_abs_diff": diff, "logit_scale": scale, "tolerance": TOLERANCE * scale,
             "batches": [_PROBE, _OTHER]}
    if not diff <= TOLERANCE * scale:
        raise ParameterError("format", f"a format whose exported model reproduces the "
                             f"checkpoint's logits within {TOLERANCE:g} x logit scale "
                             f"({TOLERANCE * scale:.3g}); try the other format",
                             f"{format}: max abs difference {diff:.3g}")
    write_output(out, data)
    text = json.dumps({**meta, "format": format, "file": out.name, "check": check}, indent=2)
    write_output(side, (text + "\n").encode("utf-8"))
    log(f"exported {format} to {out} (classes in {side.name}); logits match the checkpoint: "
        f"max abs difference {diff:.2e} <= {TOLERANCE:g} x logit scale {scale:.3g} on "
        f"batches of {_PROBE} and {_OTHER}")
    return out


# --------------------------------------------------------------------------- shared


def _require_onnx() -> None:
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError as e:
            raise ParameterError("--format", f"'torchscript', or 'onnx' after `{_INSTALL}` "
                                 f"(the {name} package is not installed)", "onnx") from e


def _input_name(pred: Predictor) -> str:
    return "pixels" if pred.is_image else "features"


def _probe_batch(pred: Predictor, n: int, *, seed: int) -> torch.Tensor:
    """Random pixel values 0..255, or features drawn around the training mean and spread."""
    g = torch.Generator().manual_seed(seed)
    if pred.is_image:
        return torch.randint(0, 256, (n, *pred.input_shape), generator=g).float()
    mean = torch.tensor(pred.inputs["mean"], dtype=torch.float32)
    std = torch.tensor(pred.inputs["std"], dtype=torch.float32)
    return mean + std * torch.randn((n, *pred.input_shape), generator=g)


def _metadata(pred: Predictor) -> dict[str, Any]:
    shape = ["batch", *pred.input_shape]
    if pred.is_image:
        c, h, w = pred.input_shape
        words = (f"'pixels': float32 (batch, {c}, {h}, {w}), raw pixel values 0..255 "
                 "(normalised inside: /255, then (x - mean) / std per channel)")
        if pred.inputs.get("image_size"):
            words += (f"; images resized so the shorter side is {pred.resize} (bilinear), "
                      f"then the central {h}x{w} square")
        elif pred.resize is not None:
            words += (f"; an image of another size resized so the shorter side is "
                      f"{pred.resize} (bilinear), then the central {h}x{w} square")
    else:
        words = (f"'features': float32 (batch, {pred.input_shape[0]}), raw feature values "
                 "(standardised inside: (x - mean) / std per feature)")
    return {"classes": pred.classes, "class_counts": pred.class_counts,
            "inputs": pred.inputs,
            "input": {"name": _input_name(pred), "shape": shape, "dtype": "float32",
                      "description": words, "resize": pred.resize},
            "output": {"name": "logits", "shape": ["batch", len(pred.classes)]},
            "weights": pred.weights, "tailmix_version": __version__}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' deprecation warnings and log lines are not the user's concern."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "torch.fx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _failed(format: str, error: BaseException) -> ParameterError:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    other = "torchscript" if format == "onnx" else "onnx"
    return ParameterError("format", f"a format this network can be exported to ({format} "
                          f"failed: {type(error).__name__}: {first[:300]}); try {other!r}",
                          format)


# --------------------------------------------------------------------------- ONNX


def _onnx(network: torch.nn.Module, probe: torch.Tensor, meta: dict[str, Any], *,
          input_name: str) -> tuple[bytes, Callable[[torch.Tensor], torch.Tensor]]:
    import onnx
    import onnxruntime as ort

    proto = None
    errors: list[BaseException] = []
    with _quiet():
        try:  # the dynamo exporter, torch's default
            program = torch.onnx.export(
                network, (probe,), None, dynamo=True, input_names=[input_name],
                output_names=["logits"], verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},))
            proto = program.model_proto
        except Exception as e:  # any failure falls back to the older exporter
            errors.append(e)
        if proto is None:
            try:
                buf = io.BytesIO()
                torch.onnx.export(network, (probe,), buf, dynamo=False,
                                  input_names=[input_name], output_names=["logits"],
                                  dynamic_axes={input_name: {0: "batch"},
                                                "logits": {0: "batch"}})
                proto = onnx.load_from_string(buf.getvalue())
            except Exception as e:  # reported as one line below
                errors.append(e)
    if proto is None:
        raise _failed("onnx", errors[0]) from errors[-1]
    onnx.helper.set_model_props(proto, {
        "classes": json.dumps(meta["classes"]),
        "class_counts": json.dumps(meta["class_counts"]),
        "inputs": json.dumps(meta["inputs"]),
        "input_description": meta["input"]["description"],
        "output_description": f"'logits': float32 (batch, {len(meta['classes'])}), in the "
                              "order of 'classes'",
        "tailmix_version": meta["tailmix_version"],
    })
    proto.doc_string = f"tailmix classifier: {meta['input']['description']} -> logits"
    try:
        onnx.checker.check_model(proto)
        data = proto.SerializeToString()
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as e:  # an invalid graph is reported as one line
        raise _failed("onnx", e) from e
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.numpy().astype(np.float32)})[0])

    return data, run


# --------------------------------------------------------------------------- TorchScript


def _torchscript(network: torch.nn.Module, probe: torch.Tensor, meta: dict[str, Any]
                 ) -> tuple[bytes, Callable[[torch.Tensor], torch.Tensor]]:
    extra = {"tailmix.json": json.dumps(meta)}
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(network, (probe,), check_trace=False)
            buf = io.BytesIO()
            torch.jit.save(traced, buf, _extra_files=extra)
            data = buf.getvalue()
            loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as e:  # a network tracing cannot express
        raise _failed("torchscript", e) from e
    loaded.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with _quiet(), torch.no_grad():
            return loaded(x)

    return data, run
