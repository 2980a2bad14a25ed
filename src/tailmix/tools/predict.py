"""Predictions from a trained run without its training data.

A checkpoint written by :class:`tailmix.pipeline.callbacks.Checkpointer` holds the network's
weights, its config, the class names and training counts, and ``inputs``: the shape of one input and
the normalisation applied to raw inputs (:func:`tailmix.pipeline.build.input_record`). That is all
:class:`Predictor` needs: it rebuilds the network, loads the weights and reads raw inputs --
``uint8`` images ``(N, C, H, W)`` or float feature vectors ``(N, D)``, as arrays or as image
files, ``.npy`` arrays and CSV tables -- the way the run's evaluation read its test set. An
image of another height and width than the network's is resized and centre-cropped to it
with the streamed evaluation's transform (:func:`tailmix.data.files.centre_box`), and a log
line counts such images; an image of the network's size is read as it is.

Probabilities may be corrected for the class imbalance of the training set: ``adjust=tau``
is the post-hoc logit adjustment tailmix reports (:func:`tailmix.losses.posthoc_adjust`,
``logits - tau * log(training prior)``), and ``prior=`` moves the predictions to a known test
prior (``logits + log(test prior) - log(training prior)``).

Over 600 lines on purpose: the readers of every input kind (arrays, image files and
folders, ``.npy`` arrays, CSV tables) live beside :class:`Predictor` because they must read
an input exactly as the run's evaluation read its test set, and they change with it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tailmix._validation import ParameterError, check_choice, check_number
from tailmix.models.heads import logit_scale

__all__ = ["CHECKPOINTS", "InferenceNetwork", "Predictor", "checkpoint_path", "write_output",
           "write_table"]

#: The checkpoints of a run folder that ``checkpoint=`` names.
CHECKPOINTS = ("last", "best")
# Image files decoded at once by predict_table (bounds the memory of a large folder).
_CHUNK = 1024
_ARRAY_SUFFIXES = (".npy", ".csv")


# --------------------------------------------------------------------------- the network


class InferenceNetwork(nn.Module):
    """A trained network that reads raw inputs: normalisation first, then the network.

    Images are pixel values 0..255 (``uint8`` or float) ``(N, C, H, W)``, divided by 255 and
    standardised per channel; feature vectors ``(N, D)`` are standardised per feature. The
    operations are those of the run's evaluation
    (:class:`tailmix.data.augment.BatchAugment` with ``train=False``), so the logits are the
    same.

    Parameters
    ----------
    model : nn.Module
        The network, mapping normalised inputs to logits ``(N, classes)``.
    mean, std : sequence of float
        Per-channel (images) or per-feature (vectors) normalisation.
    image : bool
        Whether the inputs are images (pixel values scaled by 1/255 before standardising).

    A cosine head's outputs are multiplied by its scale
    (:func:`tailmix.models.heads.logit_scale`), as in evaluation.
    """

    def __init__(self, model: nn.Module, *, mean: Sequence[float], std: Sequence[float],
                 image: bool):
        super().__init__()
        self.model = model
        self.image = bool(image)
        shape = (1, -1, 1, 1) if self.image else (1, -1)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(shape))

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        if self.image:
            x = x / 255.0
        out = self.model((x - self.mean) / self.std)
        scale = logit_scale(self.model)
        return out if scale is None else out.float() * scale.float()


# --------------------------------------------------------------------------- checkpoints


def checkpoint_path(path: str | os.PathLike, checkpoint: str = "last") -> Path:
    """The checkpoint file a run folder (``checkpoints/<checkpoint>.pt``) or a ``.pt`` path
    names; ``checkpoint`` is not used for a file.

    Raises
    ------
    ParameterError
        Naming ``run`` for a path that does not exist, ``checkpoint`` for a run folder
        without that checkpoint or a name other than ``last`` and ``best``.
    """
    check_choice("checkpoint", checkpoint, CHECKPOINTS)
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise ParameterError("run", "a run folder (with checkpoints/last.pt) or a checkpoint "
                             ".pt file", str(p))
    file = p / "checkpoints" / f"{checkpoint}.pt"
    if not file.is_file():
        why = ("the run kept no best checkpoint (log.checkpoint_best: false); use 'last'"
               if checkpoint == "best" and (p / "checkpoints" / "last.pt").is_file()
               else f"a run folder holding checkpoints/{checkpoint}.pt (a trained run)")
        raise ParameterError("checkpoint", why, str(file))
    return file


def _load(file: Path, weights: str = "model") -> dict[str, Any]:
    from tailmix.pipeline.build import load_checkpoint
    from tailmix.pipeline.checkpoints import with_weights

    ckpt = load_checkpoint(file, name="run")  # says what the file is, never how to unpickle
    keys = ("model", "config", "classes", "class_counts")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in keys):
        raise ParameterError("run", "a tailmix checkpoint holding " + ", ".join(keys),
                             str(file))
    return with_weights(ckpt, weights)


def _device(name: str) -> torch.device:
    from tailmix.pipeline.build import resolve_device

    try:
        return resolve_device(name)
    except ParameterError as e:
        raise ParameterError("device", e.expected, e.got) from e
    except RuntimeError as e:  # torch.device("nonsense")
        raise ParameterError("device", "auto, cpu, cuda or cuda:N", name) from e


def _network(ckpt: dict[str, Any], inputs: dict[str, Any], model: nn.Module | None,
             where: Any = "") -> nn.Module:
    """The checkpoint's network with its weights (fp32, eval mode, on the CPU)."""
    from tailmix.pipeline.checkpoints import checkpoint_network

    net = checkpoint_network(ckpt, num_classes=len(ckpt["classes"]),
                             input_shape=tuple(int(d) for d in inputs["shape"]),
                             counts=list(ckpt["class_counts"]), model=model,
                             hint=" (Predictor.from_run(path, model=...); the command line "
                             "cannot rebuild it)", where=where)
    return net.cpu().float().eval()


# --------------------------------------------------------------------------- predictor


class Predictor:
    """Class probabilities from a trained network for raw inputs.

    Build one with :meth:`from_run`. The network runs in eval mode in float32 (whatever
    precision the run trained in), on ``device``, ``batch_size`` inputs at a time.

    Parameters
    ----------
    network : InferenceNetwork
        The network with its normalisation.
    classes : list of str
        Class names, in the order of the logits.
    class_counts : list of int
        Training examples per class (the training prior).
    inputs : dict
        What the network reads (:func:`tailmix.pipeline.build.input_record`): ``shape``, ``image``,
        ``mean``, ``std``, ``image_size``, ``resize``.
    device : torch.device
    batch_size : int, default 256
    epoch : int, optional
        The epoch the checkpoint was written after.
    resize : int, optional
        For an image of another size than the network's square input: the length its
        shorter side is resized to before the central crop. Default: the input record's
        ``resize``, else ``image_size / 0.875`` (the streamed evaluation's). For a network
        whose input is not square, an image is scaled to cover ``(H, W) / 0.875``, then
        centre-cropped.
    log : callable, default print
        Receives a line counting the images of another size that were resized.

    Attributes
    ----------
    classes, class_counts, inputs, device, batch_size, epoch, log
        As given.
    input_shape : tuple of int
        One input: ``(C, H, W)`` or ``(D,)``.
    resize : int or None
        The shorter side an image of another size is resized to; None for feature vectors
        and for a network whose input is not square.
    weights : str
        Which of the checkpoint's weights the network holds: ``"model"``, ``"ema"`` or
        ``"swa"`` (:meth:`from_run`'s ``weights``).
    network : InferenceNetwork
    """

    def __init__(self, network: InferenceNetwork, *, classes: Sequence[str],
                 class_counts: Sequence[int], inputs: dict[str, Any], device: torch.device,
                 batch_size: int = 256, epoch: int | None = None, resize: int | None = None,
                 log: Callable[[str], None] = print):
        self.batch_size = check_number("batch_size", batch_size, low=1, integer=True)
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.classes = [str(c) for c in classes]
        self.class_counts = [int(n) for n in class_counts]
        self.inputs = dict(inputs)
        self.input_shape = tuple(int(d) for d in inputs["shape"])
        self.epoch = epoch
        self.weights = "model"  # the checkpoint's weights it holds (from_run sets it)
        self.log = log
        self.resize = None
        if self.is_image and self.input_shape[1] == self.input_shape[2]:
            from tailmix.data.files import eval_resize

            size = self.input_shape[1]
            given = resize if resize is not None else self.inputs.get("resize")
            self.resize = int(check_number("resize", given, low=size, integer=True)) \
                if given is not None else eval_resize(size)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_run(cls, path: str | os.PathLike, *, device: str = "auto",
                 checkpoint: str = "last", model: nn.Module | None = None,
                 batch_size: int | None = None, weights: str = "model",
                 log: Callable[[str], None] = print) -> Predictor:
        """The predictor of a run folder's checkpoint, or of a checkpoint file.

        Parameters
        ----------
        path : str or path
            A run folder (its ``checkpoints/last.pt``, or ``best.pt`` with
            ``checkpoint="best"``) or a ``.pt`` checkpoint file.
        device : str, default "auto"
            ``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``.
        checkpoint : {"last", "best"}, default "last"
            Which checkpoint of a run folder; not used for a file.
        model : nn.Module, optional
            For a run of your own network: a module of the same kind (its weights are
            replaced, in place, by the checkpoint's).
        batch_size : int, optional
            Inputs per forward pass (default: the run's ``eval.batch_size``).
        weights : {"model", "ema", "swa"}, default "model"
            The checkpoint's network weights, or those of an average the run kept beside
            them (:mod:`tailmix.averaging`).
        log : callable, default print
            Receives a line counting the images of another size that were resized.

        Returns
        -------
        Predictor

        Raises
        ------
        ParameterError
            For a missing run or checkpoint, a file that is not a tailmix checkpoint, an
            unknown device, or a run of a user's network without ``model``.

        Notes
        -----
        The training data is not read. A checkpoint written before checkpoints recorded
        their inputs (no ``inputs`` entry) is restored with :func:`tailmix.pipeline.build.restore`
        instead, which loads the training data once to learn the normalisation; without
        that data it is refused.

        An image of another size than the network's is resized as the run's evaluation
        resized its test images: for images decoded from files, the recorded transform; for
        in-memory images the run resized (``dataset.image_size``, a backbone's input size),
        the shorter side to the size; otherwise the streamed evaluation's (shorter side to
        ``size / 0.875``), so that a run streaming a folder and one holding it in memory
        read an odd-sized image alike.
        """
        file = checkpoint_path(path, checkpoint)
        ckpt = _load(file, weights)
        dev = _device(device)
        if batch_size is None:
            from tailmix.pipeline.steps import eval_batch_size

            batch_size = eval_batch_size((ckpt["config"].get("eval") or {}).get("batch_size")
                                         or 256, dev)
        inputs = ckpt.get("inputs")
        if inputs is None:
            net, inputs = _restore_old(file, device, model)
        else:
            net = _network(ckpt, inputs, model, where=file)
        network = InferenceNetwork(net, mean=inputs["mean"], std=inputs["std"],
                                   image=bool(inputs["image"]))
        pred = cls(network, classes=ckpt["classes"], class_counts=ckpt["class_counts"],
                   inputs=inputs, device=dev, batch_size=batch_size,
                   epoch=int(ckpt["epoch"]) if "epoch" in ckpt else None,
                   resize=_resized_in_memory(ckpt["config"], inputs), log=log)
        pred.weights = weights
        return pred

    # -- what the network reads --------------------------------------------------------------

    @property
    def is_image(self) -> bool:
        return bool(self.inputs["image"])

    def describe_inputs(self) -> str:
        """What the network reads, in words (used in error messages)."""
        if self.is_image:
            c, h, w = self.input_shape
            what = f"images of {c}x{h}x{w} (channels x height x width), as the model was " \
                   "trained on"
            return what + " (other heights and widths are resized)"
        return f"feature vectors of {self.input_shape[0]} values, as the model was trained on"

    def check_inputs(self, x: Any, name: str = "x") -> Tensor:
        """Raw inputs as the network reads them, on the CPU.

        Images: ``(N, C, H, W)`` (``(N, H, W)`` for a 1-channel network) of pixel values
        0..255 -- ``uint8``, or integers or whole-number floats in that range -- returned as
        ``uint8``; images of another height and width are resized (shorter side to
        :attr:`resize`) and centre-cropped to the network's, with a log line counting them.
        Feature vectors: ``(N, D)`` real numbers, returned as ``float32``.

        Raises
        ------
        ParameterError
            Naming ``name``, for another shape, type, or out-of-range or non-finite values;
            the message says what the network expects.
        """
        t = _as_tensor(x, name, self.describe_inputs())
        if self.is_image:
            if t.dim() == 3 and self.input_shape[0] == 1:
                t = t.unsqueeze(1)
            c, h, w = self.input_shape
            if t.dim() != 4 or t.shape[1] != c or 0 in t.shape[2:]:
                raise ParameterError(name, self.describe_inputs(),
                                     f"an array of shape {tuple(t.shape)}")
            t = _pixels(t, name)
            if tuple(t.shape[2:]) != (h, w):
                fitted = [self._fit(a) for a in t.numpy()]
                t = torch.from_numpy(np.stack(fitted)) if fitted else \
                    torch.zeros((0, c, h, w), dtype=torch.uint8)
                self._log_resized(len(t), len(t))
            return t
        if t.dim() != 2 or tuple(t.shape[1:]) != self.input_shape:
            raise ParameterError(name, self.describe_inputs() + " (an (N, D) array)",
                                 f"an array of shape {tuple(t.shape)}")
        t = t.float()
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise ParameterError(name, "finite feature values", "NaN or infinite values")
        return t

    # -- predictions -------------------------------------------------------------------------

    @torch.no_grad()
    def logits(self, x: Any, *, adjust: float | None = None,
               prior: Sequence[float] | None = None) -> Tensor:
        """Logits ``(N, classes)`` (float32, CPU) of raw inputs, adjusted as asked.

        Parameters
        ----------
        x : Tensor or ndarray
            Raw inputs (see :meth:`check_inputs`).
        adjust, prior
            See :meth:`predict_proba`.
        """
        raw = self.check_inputs(x)
        correction = self._correction(adjust, prior)
        outs = [self.network(raw[s:s + self.batch_size].to(self.device)).float().cpu()
                for s in range(0, len(raw), self.batch_size)]
        out = torch.cat(outs) if outs else torch.zeros((0, len(self.classes)))
        return out if correction is None else out + correction

    def predict_proba(self, x: Any, *, adjust: float | None = None,
                      prior: Sequence[float] | None = None) -> Tensor:
        """Class probabilities ``(N, classes)`` (float32, CPU): the softmax of the logits.

        Parameters
        ----------
        x : Tensor or ndarray
            Raw inputs: ``uint8`` images ``(N, C, H, W)`` or feature vectors ``(N, D)``.
        adjust : float, optional
            Post-hoc logit adjustment of strength ``tau >= 0``: ``logits - tau *
            log(training prior)``, the training prior being ``class_counts / sum``; the
            correction tailmix's evaluation reports as ``posthoc_la`` (1: a balanced test
            set).
        prior : sequence of float, optional
            A known test prior, one non-negative value per class (normalised to sum to 1, so
            counts do too): ``logits + log(prior) - log(training prior)``, the Bayes-optimal
            correction when only the class frequencies change between training and test. A
            class of prior 0 gets probability 0. Not together with ``adjust``.
        """
        return torch.softmax(self.logits(x, adjust=adjust, prior=prior), dim=1)

    def predict(self, x: Any, *, adjust: float | None = None,
                prior: Sequence[float] | None = None) -> Tensor:
        """Predicted class indices ``(N,)`` (int64, CPU); see :meth:`predict_proba`."""
        return self.logits(x, adjust=adjust, prior=prior).argmax(dim=1)

    def _correction(self, adjust: float | None, prior: Sequence[float] | None
                    ) -> Tensor | None:
        """What is added to the logits: ``-tau log(train prior)`` or ``log(prior) - log(train
        prior)`` (computed as :func:`tailmix.losses.posthoc_adjust` does); None: nothing."""
        from tailmix.losses import posthoc_adjust

        if adjust is not None and prior is not None:
            raise ParameterError("prior", "None when adjust is given (a test prior already "
                                 "replaces the training prior)", prior)
        zero = torch.zeros(1, len(self.classes))
        if adjust is not None:
            tau = check_number("adjust", adjust, low=0.0)
            return posthoc_adjust(zero, self.class_counts, tau=float(tau))[0]
        if prior is not None:
            target = _check_prior(prior, len(self.classes))
            return posthoc_adjust(zero, self.class_counts, tau=1.0)[0] + target.log()
        return None

    # -- files -------------------------------------------------------------------------------

    def read_inputs(self, paths: str | os.PathLike | Sequence[str | os.PathLike]
                    ) -> tuple[Tensor, list[Any]]:
        """Raw inputs read from files, and an id for each.

        Parameters
        ----------
        paths : path or sequence of paths
            Image files and folders of them (searched recursively for the endings in
            :data:`tailmix.data.imagefolder.IMAGE_EXTENSIONS`, hidden files skipped, in
            sorted order), or one ``.npy`` array, or one ``.csv`` table of feature vectors
            (numbers only, an optional header row, one row per input).

        Returns
        -------
        inputs : Tensor
            ``uint8`` images ``(N, C, H, W)`` or ``float32`` vectors ``(N, D)``.
        ids : list
            The file path of each image (as a string), or the row index of each array row.

        Notes
        -----
        Image files are decoded with Pillow to RGB (grey for a 1-channel network). For a
        run whose images were decoded from files, every image gets the run's evaluation
        transform (shorter side resized, central square:
        :func:`tailmix.data.files.decode_image`); otherwise an image of the network's height
        and width is read as it is and one of another size gets that transform with the
        shorter side resized to :attr:`resize`. A log line counts the images of another
        size.
        """
        kind, found = self._sources(paths)
        if kind == "array":
            return found, list(range(len(found)))
        x, resized = self._decode(found)
        self._log_resized(resized, len(found))
        return x, [str(f) for f in found]

    def predict_table(self, inputs: Any, *, ids: Sequence[Any] | None = None,
                      adjust: float | None = None, prior: Sequence[float] | None = None,
                      out: str | os.PathLike | None = None) -> list[dict[str, Any]]:
        """One row per input: its id, the predicted class, its probability, and every class's
        probability.

        Parameters
        ----------
        inputs : path, sequence of paths, Tensor or ndarray
            Files as :meth:`read_inputs` reads them (image files are decoded a chunk at a
            time), or raw inputs.
        ids : sequence, optional
            Ids of raw inputs (default: the row index).
        adjust, prior
            See :meth:`predict_proba`.
        out : path, optional
            Also write the rows to this CSV file (atomically), with the header
            ``input,prediction,probability,p_<class>,...``.

        Returns
        -------
        list of dict
            Keys ``input``, ``prediction`` (class name), ``probability`` and ``p_<class>``
            for each class, in that order.
        """
        self._correction(adjust, prior)  # checked before any decoding
        if isinstance(inputs, (str, os.PathLike)) or (
                isinstance(inputs, Sequence) and inputs
                and all(isinstance(p, (str, os.PathLike)) for p in inputs)):
            kind, found = self._sources(inputs)
            if kind == "array":
                batches = [(found, list(range(len(found))))]
            else:
                batches = self._decoded_chunks(found)
        else:
            x = self.check_inputs(inputs, "inputs")
            row_ids = list(range(len(x))) if ids is None else list(ids)
            if len(row_ids) != len(x):
                raise ParameterError("ids", f"one id per input ({len(x)})", len(row_ids))
            batches = [(x, row_ids)]
        rows = []
        for x, row_ids in batches:
            proba = self.predict_proba(x, adjust=adjust, prior=prior)
            rows.extend(self._rows(proba, row_ids))
        if out is not None:
            write_table(out, rows, self.table_header())
        return rows

    def _decoded_chunks(self, files: Sequence[Path]) -> Any:
        """``(images, ids)`` a chunk of files at a time; one log line at the end."""
        resized = 0
        for s in range(0, len(files), _CHUNK):
            x, n = self._decode(files[s:s + _CHUNK])
            resized += n
            yield x, [str(f) for f in files[s:s + _CHUNK]]
        self._log_resized(resized, len(files))

    def _log_resized(self, resized: int, total: int) -> None:
        if resized:
            from tailmix.data.files import EVAL_CROP_SHARE

            c, h, w = self.input_shape
            how = (f"shorter side to {self.resize}" if self.resize is not None
                   else f"scaled to cover {h / EVAL_CROP_SHARE:.4g}x{w / EVAL_CROP_SHARE:.4g}")
            self.log(f"resized {resized} of {total} images of another size to {h}x{w} "
                     f"({how}, then the central {h}x{w})")

    def table_header(self) -> list[str]:
        """The columns of :meth:`predict_table`'s rows."""
        return ["input", "prediction", "probability", *(f"p_{c}" for c in self.classes)]

    def _rows(self, proba: Tensor, ids: Sequence[Any]) -> list[dict[str, Any]]:
        header = self.table_header()
        best = proba.argmax(dim=1).tolist()
        out = []
        for i, p, k in zip(ids, proba.tolist(), best, strict=True):
            out.append(dict(zip(header, [i, self.classes[k], p[k], *p], strict=True)))
        return out

    def _sources(self, paths: Any) -> tuple[str, Any]:
        """``("images", [files])`` or ``("array", raw inputs)`` for paths."""
        from tailmix.data.imagefolder import _ignored, is_image_name

        items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if not items:
            raise ParameterError("inputs", "image files, folders of images, a .npy array or "
                                 "a .csv table", "nothing")
        files: list[Path] = []
        arrays: list[Path] = []
        for item in items:
            p = Path(item)
            if p.is_dir():
                found = sorted(f for f in p.rglob("*") if f.is_file()
                               and is_image_name(f.name)
                               and not _ignored(f.relative_to(p).parts))
                if not found:
                    raise ParameterError("inputs", "a folder holding image files (endings "
                                         f"{_endings()})", str(p))
                files.extend(found)
            elif not p.is_file():
                raise ParameterError("inputs", "existing files or folders", str(p))
            elif p.suffix.lower() in _ARRAY_SUFFIXES:
                arrays.append(p)
            elif is_image_name(p.name):
                files.append(p)
            else:
                raise ParameterError("inputs", f"image files ({_endings()}), folders of them, "
                                     "a .npy array or a .csv table", str(p))
        if arrays and (files or len(arrays) > 1):
            raise ParameterError("inputs", "image files and folders, or one .npy or .csv file "
                                 "alone", ", ".join(str(a) for a in arrays + files[:1]))
        if arrays:
            return "array", self._read_array(arrays[0])
        if not self.is_image:
            raise ParameterError("inputs", "a .npy array or a .csv table: the model reads "
                                 + self.describe_inputs(), str(files[0]))
        return "images", files

    def _read_array(self, path: Path) -> Tensor:
        if path.suffix.lower() == ".npy":
            try:
                a = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ParameterError("inputs", "a .npy file numpy reads (no pickled objects)",
                                     f"{path}: {e}") from e
        else:
            if self.is_image:
                raise ParameterError("inputs", "image files, folders of them or a .npy array: "
                                     "the model reads " + self.describe_inputs(), str(path))
            a = _read_csv(path, self.input_shape[0])
        if getattr(a, "ndim", 0) >= 1 and len(a) == 0:
            raise ParameterError("inputs", "an array of at least one input",
                                 f"{path}: shape {tuple(a.shape)}")
        return self.check_inputs(a, f"inputs ({path})")

    def _decode(self, files: Sequence[Path]) -> tuple[Tensor, int]:
        """Image files -> ``uint8 (N, C, H, W)``, decoded by a few threads, and the number
        of them that had another size."""
        if not files:
            return torch.zeros((0, *self.input_shape), dtype=torch.uint8), 0
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            decoded = list(pool.map(self._decode_one, files))
        return (torch.from_numpy(np.stack([a for a, _ in decoded])),
                sum(other for _, other in decoded))

    def _decode_one(self, file: Path) -> tuple[np.ndarray, bool]:
        """One image file as the network reads it, and whether it had another size."""
        from PIL import Image, UnidentifiedImageError

        from tailmix.data.files import decode_image

        c, h, w = self.input_shape
        try:
            data = file.read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                other = im.size != (w, h)
                if self.inputs.get("image_size"):  # decoded from files: every image alike
                    return decode_image(data, int(self.inputs["image_size"]),
                                        resize=self.inputs.get("resize")), other
                mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(c)
                if mode is None:
                    raise ParameterError("inputs", f"a .npy array of uint8 images (N, {c}, "
                                         f"{h}, {w}): image files decode to 1, 3 or 4 "
                                         "channels", str(file))
                if other and c == 3 and h == w:  # exactly as a streamed run decodes it
                    return decode_image(data, h, resize=self.resize), other
                a = np.asarray(im.convert(mode), dtype=np.uint8)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
                ValueError, EOFError) as e:
            if isinstance(e, ParameterError):
                raise
            raise ParameterError("inputs", "image files Pillow can read",
                                 f"{file}: {e}") from e
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return (self._fit(a) if other else a), other

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """A ``uint8 (C, h, w)`` image brought to the network's size: the streamed
        evaluation's transform (shorter side to :attr:`resize`, bilinear, then the central
        square; :func:`tailmix.data.files.centre_box`), one channel at a time. A network
        whose input is not square gets the central box of the image scaled to cover its
        input with the same margin."""
        from PIL import Image

        from tailmix.data.files import EVAL_CROP_SHARE, centre_box

        _, h, w = self.input_shape
        ih, iw = image.shape[1:]
        if h == w:
            box = centre_box(iw, ih, h, resize=self.resize)
        else:
            scale = max(h / ih, w / iw) / EVAL_CROP_SHARE
            bw, bh = w / scale, h / scale
            box = ((iw - bw) / 2, (ih - bh) / 2, (iw + bw) / 2, (ih + bh) / 2)
        return np.stack([np.asarray(Image.fromarray(band).resize(
            (w, h), Image.Resampling.BILINEAR, box=box, reducing_gap=None))
            for band in image])


# --------------------------------------------------------------------------- helpers


def _endings() -> str:
    from tailmix.data.imagefolder import IMAGE_EXTENSIONS

    return ", ".join(sorted(IMAGE_EXTENSIONS))


def _as_tensor(x: Any, name: str, expected: str) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach().cpu()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise ParameterError(name, expected, type(x).__name__) from e
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number)
                                 or a.dtype == np.bool_):
        raise ParameterError(name, expected, f"an array of dtype {a.dtype}")
    return torch.from_numpy(np.ascontiguousarray(a))


def _pixels(t: Tensor, name: str) -> Tensor:
    """Whole-number pixel values 0..255 as ``uint8``."""
    if t.dtype == torch.uint8:
        return t
    expected = "uint8 pixel values 0..255 (or whole numbers 0..255 of another type; not 0..1)"
    if t.dtype == torch.bool or t.is_complex():
        raise ParameterError(name, expected, f"dtype {t.dtype}")
    if t.numel():
        ok = bool(((t >= 0) & (t <= 255)).all())
        if ok and t.is_floating_point():
            ok = bool((t == t.round()).all())
        if not ok:
            lo, hi = float(t.min()), float(t.max())
            raise ParameterError(name, expected, f"{t.dtype} values in [{lo:g}, {hi:g}]"
                                 + (" with fractions" if lo >= 0 and hi <= 255 else ""))
    return t.to(torch.uint8)


def _check_prior(prior: Sequence[float], num_classes: int) -> Tensor:
    expected = f"{num_classes} non-negative class probabilities, not all 0"
    try:
        p = torch.as_tensor(np.asarray(prior, dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise ParameterError("prior", expected, prior) from e
    if p.dim() != 1 or p.numel() != num_classes or not bool(torch.isfinite(p).all()) \
            or bool((p < 0).any()) or float(p.sum()) <= 0:
        raise ParameterError("prior", expected, list(np.asarray(prior).tolist()))
    return (p / p.sum()).float()


def _read_csv(path: Path, width: int) -> np.ndarray:
    """Rows of numbers; a first row that is not all numbers is a header."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ParameterError("inputs", "a readable UTF-8 .csv file", f"{path}: {e}") from e
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    values = []
    for line, row in enumerate(rows, start=1):
        try:
            values.append([float(c) for c in row])
        except ValueError as e:
            if line == 1:
                continue  # the header
            raise ParameterError("inputs", "a .csv table of numbers (feature vectors)",
                                 f"{path}, row {line}: {e}") from e
        if len(values[-1]) != width:
            raise ParameterError("inputs", f"feature vectors of {width} values, as the model "
                                 "was trained on", f"{path}, row {line}: {len(row)} values")
    if not values:  # nothing to predict is a mistake, not an empty table
        shown = f"its one row, {', '.join(rows[0])[:60]!r}, reads as a header" if rows \
            else "it is empty"
        raise ParameterError("inputs", "a .csv table with at least one row of numbers "
                             f"(feature vectors of {width} values)", f"{path}: {shown}")
    return np.asarray(values, dtype=np.float32).reshape(len(values), width)


def write_table(path: str | os.PathLike, rows: Sequence[dict[str, Any]],
                header: Sequence[str]) -> Path:
    """Prediction rows as CSV (probabilities to 6 significant digits), written atomically;
    text that a spreadsheet would run as a formula is escaped (:func:`tailmix.io.csv_cell`)."""
    from tailmix.io import csv_cell

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell(h) for h in header])
    for r in rows:
        w.writerow([f"{v:.6g}" if isinstance(v, float) else csv_cell(v) for v in r.values()])
    return write_output(path, buf.getvalue().encode("utf-8"))


def write_output(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`tailmix.io.atomic_write_bytes`).

    Raises
    ------
    ParameterError
        Naming ``out``, for a folder or a path that cannot be written.
    """
    from tailmix.io import atomic_write_bytes

    p = Path(path)
    if p.is_dir():
        raise ParameterError("out", "a file path (not a folder)", str(p))
    try:
        return atomic_write_bytes(p, data)
    except OSError as e:
        raise ParameterError("out", "a path where a file can be written",
                             f"{p}: {e.strerror or e}") from e


def _resized_in_memory(config: dict[str, Any], inputs: dict[str, Any]) -> int | None:
    """The shorter side of the run's own resize of in-memory images (``dataset.image_size``,
    or a torchvision or timm backbone's input size: the shorter side to the size, then the
    central square), or None: the run resized nothing, or decoded its images from files and
    recorded its transform in ``inputs``."""
    from tailmix.models import is_external

    if not inputs.get("image") or inputs.get("image_size"):
        return None
    arch = (config.get("model") or {}).get("arch")
    resized = (config.get("dataset") or {}).get("image_size") or (
        isinstance(arch, str) and is_external(arch))
    return int(inputs["shape"][-1]) if resized else None


def _restore_old(file: Path, device: str, model: nn.Module | None
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint without an input record: restored with its training data."""
    from tailmix.data.download import DatasetError
    from tailmix.pipeline.build import input_record, restore

    try:
        r = restore(file, device=device, model=model)
    except (DatasetError, FileNotFoundError) as e:
        raise ParameterError("run", "a checkpoint that records its inputs (tailmix writes "
                             "them since this version), or the training data of an older one "
                             "(read once to learn the normalisation)", f"{file}: {e}") from e
    net = r.model.cpu().float().eval()
    return net, input_record(r.data)
