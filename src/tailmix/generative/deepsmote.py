"""DeepSMOTE (Dablain, Krawczyk and Chawla, IEEE TNNLS 2022): SMOTE in an autoencoder's
latent space.

1. A convolutional encoder/decoder is trained on the long-tailed training images (pixels in
   [0, 1], mean squared error) with two terms per step: the reconstruction of a batch, and
   the paper's permutation term: a batch of images of one class (drawn uniformly, so small
   classes get as much of this term as large ones) is encoded, latents and images are
   shuffled with the same permutation, and the decoded shuffled latents are compared with
   the shuffled images. As in the authors' code, the latents of this term are detached, so
   it trains the decoder only.
2. Every class ``c`` with ``n_c < n_max`` gets ``n_max - n_c`` latent SMOTE points
   ``z_i + lam * (z_j - z_i)``: a base ``i`` of class ``c`` drawn uniformly, ``j`` one of
   its ``k`` nearest same-class neighbours in latent space, ``lam ~ U(0, 1)``.
3. The decoded points are stored as ``uint8`` images and appended to the training set, so
   the usual augmentation applies to them; the classifier trains on real + synthetic.

The autoencoder and the synthetic images are cached in ``$TAILMIX_CACHE/deepsmote`` (or
``~/.cache/tailmix/deepsmote``) under a hash of what determines them: the dataset's name,
input shape, class counts and a fingerprint of its training tensors (which covers the
profile, the data seed and the class order) and every autoencoder parameter; a second run
loads them instead of training.

The class counts that losses, class weights and metrics read stay the original long-tailed
ones: they describe the real data (many/medium/few-shot groups are defined on them); only
the sampler sees the balanced labels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailmix import seeding
from tailmix._validation import ParameterError, check_number
from tailmix.generative.base import Generative

__all__ = [
    "ConvAutoencoder",
    "DeepSMOTE",
    "LatentSmote",
    "SyntheticSet",
    "latent_smote",
    "reconstruction_error",
    "train_autoencoder",
]

#: Bump when the autoencoder or the generation changes, so old caches are not reused.
CACHE_VERSION = 1
MAX_DOWNSAMPLES = 4


class ConvAutoencoder(nn.Module):
    """A convolutional encoder/decoder for images of any size of at least 4 x 4 pixels.

    The encoder halves the resolution with 4x4 stride-2 convolutions (``width``, ``2 width``,
    ... channels; batch norm after the first; leaky ReLU) while the image is at least 4
    pixels on its short side, at most four times, then maps the feature map to a
    ``latent_dim`` vector. The decoder mirrors it with transposed convolutions that restore
    the encoder's exact sizes (odd sizes included), the last one straight to the image's
    channels, and ends in a sigmoid: outputs are pixels in [0, 1].

    Parameters
    ----------
    input_shape : (C, H, W)
        Image shape.
    latent_dim : int
        Size of the latent vector (paper: 300).
    width : int
        Channels of the first convolution (paper: 64).
    """

    def __init__(self, *, input_shape: Sequence[int], latent_dim: int = 300, width: int = 64):
        super().__init__()
        if len(input_shape) != 3 or min(input_shape[1:]) < 4:
            raise ParameterError("input_shape", "an image shape (C, H, W) with H, W >= 4",
                                 tuple(input_shape))
        self.latent_dim = check_number("latent_dim", latent_dim, low=1, integer=True)
        self.width = check_number("width", width, low=1, integer=True)
        c, h, w = (int(v) for v in input_shape)
        self.input_shape = (c, h, w)
        self.sizes = [(h, w)]  # spatial size before each downsampling, and the last one
        channels = [c]
        enc: list[nn.Module] = []
        while len(channels) <= MAX_DOWNSAMPLES and min(h, w) >= 4:
            out = width * 2 ** (len(channels) - 1)
            layer = [nn.Conv2d(channels[-1], out, 4, 2, 1, bias=len(channels) == 1)]
            if len(channels) > 1:
                layer.append(nn.BatchNorm2d(out))
            layer.append(nn.LeakyReLU(0.2))
            enc.append(nn.Sequential(*layer))
            channels.append(out)
            h, w = h // 2, w // 2
            self.sizes.append((h, w))
        self.channels = channels
        self.encoder = nn.Sequential(*enc)
        flat = channels[-1] * h * w
        self.to_latent = nn.Linear(flat, latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, flat), nn.ReLU())
        levels = list(reversed(range(len(channels) - 1)))  # decoder level i -> channels[i]
        self.up = nn.ModuleList(nn.ConvTranspose2d(channels[i + 1], channels[i], 4, 2, 1)
                                for i in levels)
        # Batch norm and ReLU between levels; the last one gives pixels through a sigmoid.
        self.up_norm = nn.ModuleList(nn.BatchNorm2d(channels[i]) for i in levels[:-1])

    def encode(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` pixels in [0, 1] -> ``(B, latent_dim)``."""
        return self.to_latent(self.encoder(x).flatten(1))

    def decode(self, z: Tensor) -> Tensor:
        """``(B, latent_dim)`` -> ``(B, C, H, W)`` pixels in [0, 1]."""
        h, w = self.sizes[-1]
        x = self.from_latent(z).view(z.shape[0], self.channels[-1], h, w)
        sizes = list(reversed(self.sizes[:-1]))
        for up, norm, size in zip(self.up[:-1], self.up_norm, sizes[:-1], strict=True):
            x = F.relu(norm(up(x, output_size=size)))
        return torch.sigmoid(self.up[-1](x, output_size=sizes[-1]))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def _pixels(images: Tensor) -> Tensor:
    return images.float().div_(255.0)


def reconstruction_error(model: ConvAutoencoder, images: Tensor, *,
                         batch_size: int = 512) -> float:
    """Mean squared reconstruction error (pixels in [0, 1]) of ``uint8`` images, eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device)
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            x = _pixels(images[s:s + batch_size].to(device))
            total += F.mse_loss(model(x), x, reduction="sum")
    model.train(was_training)
    return float(total) / max(images[0].numel() * len(images), 1)


def train_autoencoder(
    model: ConvAutoencoder,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    batch_size: int = 100,
    lr: float = 2e-4,
    class_batch: int = 100,
    generator: torch.Generator,
    log: Callable[[str], None] | None = None,
) -> list[float]:
    """Train ``model`` with DeepSMOTE's reconstruction + permutation loss (Adam).

    Parameters
    ----------
    model : ConvAutoencoder
        Trained in place, on the device its parameters live on.
    images : Tensor
        ``(N, C, H, W)`` ``uint8`` training images.
    labels : Tensor
        ``(N,)`` class labels.
    epochs, batch_size, lr : int, int, float
        Passes over the data, images per step, Adam learning rate.
    class_batch : int
        Images of one class per step for the permutation term (fewer if the class is
        smaller).
    generator : torch.Generator
        CPU generator for the data order and the permutation term's draws.
    log : callable, optional
        Receives a line every tenth epoch and at the end.

    Returns
    -------
    list of float
        Mean reconstruction MSE of the training batches in each epoch.
    """
    epochs = check_number("ae_epochs", epochs, low=1, integer=True)
    batch_size = check_number("batch_size", batch_size, low=2, integer=True)
    lr = check_number("lr", lr, low=0, low_open=True)
    class_batch = check_number("class_batch", class_batch, low=1, integer=True)
    device = next(model.parameters()).device
    labels_cpu = labels.cpu()
    order = torch.argsort(labels_cpu, stable=True)
    sizes = torch.bincount(labels_cpu).tolist()
    starts = [sum(sizes[:c]) for c in range(len(sizes))]
    present = [c for c, n in enumerate(sizes) if n > 0]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    n = len(images)
    history: list[float] = []
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=generator)
        total = torch.zeros((), device=device)
        for s in range(0, n, batch_size):
            batch = perm[s:s + batch_size]
            if len(batch) < 2:  # a batch of one breaks batch norm
                continue
            x = _pixels(images[batch.to(images.device)].to(device))
            recon_loss = F.mse_loss(model(x), x)
            c = present[int(torch.randint(len(present), (1,), generator=generator))]
            pick = torch.randperm(sizes[c], generator=generator)[:class_batch]
            members = order[starts[c] + pick]
            xc = _pixels(images[members.to(images.device)].to(device))
            with torch.no_grad():
                zc = model.encode(xc)
            shuffle = torch.randperm(len(members), generator=generator).to(device)
            perm_loss = F.mse_loss(model.decode(zc[shuffle]), xc[shuffle])
            optimizer.zero_grad(set_to_none=True)
            (recon_loss + perm_loss).backward()
            optimizer.step()
            total += recon_loss.detach() * len(batch)
        history.append(float(total) / n)
        if log is not None and ((epoch + 1) % 10 == 0 or epoch + 1 == epochs):
            log(f"DeepSMOTE autoencoder: epoch {epoch + 1}/{epochs}, "
                f"reconstruction MSE {history[-1]:.5f}")
    return history


@dataclass
class LatentSmote:
    """Latent SMOTE points and where they came from.

    ``points[m] = latents[base[m]] + lam[m] * (latents[partner[m]] - latents[base[m]])``.
    """

    points: Tensor
    labels: Tensor
    base: Tensor
    partner: Tensor
    lam: Tensor


def latent_smote(latents: Tensor, labels: Tensor, *, add_per_class: Sequence[int], k: int = 5,
                 generator: torch.Generator) -> LatentSmote:
    """SMOTE in latent space: ``add_per_class[c]`` new points for class ``c``.

    Parameters
    ----------
    latents : Tensor
        ``(N, D)`` latent vectors.
    labels : Tensor
        ``(N,)`` class labels.
    add_per_class : sequence of int
        New points per class (0 for none); a class that gets points must have members.
    k : int
        Same-class nearest neighbours a partner is drawn from.
    generator : torch.Generator
        CPU generator for the bases, the neighbour choice and ``lam``.

    Returns
    -------
    LatentSmote
        Points grouped by class in class order, on ``latents``' device.
    """
    from tailmix.mixing.neighbours import knn_indices

    k = check_number("k", k, low=1, integer=True)
    labels_cpu = labels.cpu()
    sizes = torch.bincount(labels_cpu, minlength=len(add_per_class)).tolist()
    if len(sizes) != len(add_per_class):
        raise ParameterError("add_per_class", f"{len(sizes)} counts, one per class",
                             list(add_per_class))
    order = torch.argsort(labels_cpu, stable=True)
    bases, new_labels = [], []
    start = 0
    for c, (size, add) in enumerate(zip(sizes, add_per_class, strict=True)):
        add = check_number(f"add_per_class[{c}]", add, low=0, integer=True)
        if add and not size:
            raise ParameterError(f"add_per_class[{c}]", "0 for a class with no examples", add)
        if add:
            members = order[start:start + size]
            bases.append(members[torch.randint(size, (add,), generator=generator)])
            new_labels.append(torch.full((add,), c, dtype=torch.long))
        start += size
    device = latents.device
    if not bases:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return LatentSmote(latents[:0], empty, empty, empty, latents.new_zeros(0))
    base = torch.cat(bases)
    neighbours = knn_indices(latents, labels.to(device), k=k, within_class=True).cpu()
    column = torch.randint(k, (len(base),), generator=generator)
    partner = neighbours[base, column]
    lam = torch.rand(len(base), generator=generator).to(device, latents.dtype)
    base, partner = base.to(device), partner.to(device)
    points = latents[base] + lam[:, None] * (latents[partner] - latents[base])
    return LatentSmote(points, torch.cat(new_labels).to(device), base, partner, lam)


@dataclass
class SyntheticSet:
    """Synthetic ``uint8`` images and labels (CPU), the autoencoder's training curve, and
    whether they came from the cache."""

    inputs: Tensor
    labels: Tensor
    ae_history: list[float]
    from_cache: bool
    cache_path: Path | None


def _fingerprint(data: Any) -> str:
    digest = hashlib.sha256()
    digest.update(data.train_inputs.cpu().contiguous().numpy().tobytes())
    digest.update(data.train_labels.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class DeepSMOTE(Generative):
    """Top every class up to ``n_max`` with decoded latent-SMOTE images (module docstring).

    Parameters
    ----------
    ae_epochs : int
        Autoencoder training epochs.
    latent_dim : int
        Latent size (paper: 300).
    width : int
        Channels of the autoencoder's first convolution (paper: 64).
    k : int
        Same-class latent neighbours for SMOTE (paper: 5).
    batch_size : int
        Autoencoder batch size.
    lr : float
        Autoencoder Adam learning rate (paper's code: 2e-4).
    class_batch : int
        Images of one class per step in the permutation term.
    seed : int
        Seed of the autoencoder's initialisation, data order and SMOTE draws.
    cache : bool
        Read and write the cache.
    cache_dir : str or Path, optional
        Default: ``$TAILMIX_CACHE`` or ``~/.cache/tailmix``, plus ``deepsmote``.
    """

    needs_memory = True  # it encodes the whole training set at once

    def __init__(self, *, ae_epochs: int = 50, latent_dim: int = 300, width: int = 64,
                 k: int = 5, batch_size: int = 100, lr: float = 2e-4, class_batch: int = 100,
                 seed: int = 0, cache: bool = True, cache_dir: str | Path | None = None):
        self.ae_epochs = check_number("ae_epochs", ae_epochs, low=1, integer=True)
        self.latent_dim = check_number("latent_dim", latent_dim, low=1, integer=True)
        self.width = check_number("width", width, low=1, integer=True)
        self.k = check_number("k", k, low=1, integer=True)
        self.batch_size = check_number("batch_size", batch_size, low=2, integer=True)
        self.lr = check_number("lr", lr, low=0, low_open=True)
        self.class_batch = check_number("class_batch", class_batch, low=1, integer=True)
        self.seed = check_number("seed", seed, low=0, integer=True)
        if not isinstance(cache, bool):
            raise ParameterError("cache", "true or false", cache)
        self.cache = cache
        if cache_dir is not None and not isinstance(cache_dir, (str, Path)):
            raise ParameterError("cache_dir", "a folder path", cache_dir)
        self.cache_dir = None if cache_dir is None else Path(cache_dir).expanduser()
        self.num_real: int | None = None
        self.synthetic: SyntheticSet | None = None

    # -- a data transform applied before training ---------------------------------------

    def transform(self, data: Any, *, device: torch.device | str = "cpu",
                  log: Callable[[str], None] | None = None) -> tuple[Any, Tensor]:
        """The training set enlarged by the synthetic images, and which examples are real.

        Returns
        -------
        (LongTailData, BoolTensor)
            ``data`` with the synthetic examples appended after the real ones (class counts
            unchanged: they describe the real data), and an ``(N_total,)`` mask that is True
            on the real examples.
        """
        self.check_data(data)
        self.synthetic = self.synthesize(data, device=device, log=log)
        n_real = len(data.train_labels)
        self.num_real = n_real
        enlarged = append_synthetic(data, self.synthetic.inputs, self.synthetic.labels)
        real = torch.arange(len(enlarged.train_labels)) < n_real
        return enlarged, real

    # -- the algorithm -------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """The parameters that determine the autoencoder and the synthetic set."""
        return {"ae_epochs": self.ae_epochs, "latent_dim": self.latent_dim,
                "width": self.width, "k": self.k, "batch_size": self.batch_size,
                "lr": self.lr, "class_batch": self.class_batch, "seed": self.seed}

    def cache_key(self, data: Any) -> str:
        """A hash of the dataset (name, shape, counts, tensors) and the parameters."""
        fields = {
            "version": CACHE_VERSION,
            "dataset": data.name,
            "input_shape": list(data.input_shape),
            "class_counts": [int(n) for n in data.class_counts],
            "data": _fingerprint(data),
            **self.params(),
        }
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]

    def cache_path(self, data: Any) -> Path:
        from tailmix.data.imagefolder import default_cache_dir

        root = self.cache_dir if self.cache_dir is not None else default_cache_dir()
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(data.name))[:40]
        return root / "deepsmote" / f"{name}-{self.cache_key(data)}.pt"

    def synthesize(self, data: Any, *, device: torch.device | str = "cpu",
                   log: Callable[[str], None] | None = None) -> SyntheticSet:
        """The synthetic images that top every class of ``data`` up to ``n_max``.

        Loads them from the cache when present; otherwise trains the autoencoder, generates
        and (if ``cache``) writes the cache atomically.
        """
        if not data.is_image:
            raise ParameterError("data", "an image dataset (N, C, H, W)",
                                 f"feature vectors of shape {tuple(data.input_shape)}")
        path = self.cache_path(data) if self.cache else None
        if path is not None and path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if log is not None:
                log(f"DeepSMOTE: {len(stored['labels'])} synthetic images from {path}")
            return SyntheticSet(stored["inputs"], stored["labels"], list(stored["ae_history"]),
                                True, path)
        device = torch.device(device)
        generator = seeding.generator(self.seed, "synthesis")
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            # the initialisation only; the global state is restored after it
            torch.manual_seed(seeding.derive_seed(self.seed, "synthesis"))
            model = ConvAutoencoder(input_shape=data.input_shape, latent_dim=self.latent_dim,
                                    width=self.width).to(device)
        images, labels = data.train_inputs, data.train_labels
        if log is not None:
            log(f"DeepSMOTE: training the autoencoder ({self.ae_epochs} epochs)")
        history = train_autoencoder(model, images, labels, epochs=self.ae_epochs,
                                    batch_size=self.batch_size, lr=self.lr,
                                    class_batch=self.class_batch, generator=generator, log=log)
        inputs, new_labels = self.generate(model, images, labels, data.class_counts,
                                           generator=generator)
        result = SyntheticSet(inputs, new_labels, history, False, path)
        if path is not None:
            from tailmix.io import save_torch

            save_torch(path, {
                "version": CACHE_VERSION,
                "params": self.params(),
                "autoencoder": {k: v.cpu() for k, v in model.state_dict().items()},
                "inputs": inputs,
                "labels": new_labels,
                "ae_history": history,
            })
        return result

    def generate(self, model: ConvAutoencoder, images: Tensor, labels: Tensor,
                 class_counts: Sequence[int], *, generator: torch.Generator,
                 batch_size: int = 512) -> tuple[Tensor, Tensor]:
        """Encode, SMOTE in latent space up to ``n_max`` per class, decode to ``uint8``."""
        device = next(model.parameters()).device
        model.eval()
        with torch.no_grad():
            latents = torch.cat([model.encode(_pixels(images[s:s + batch_size].to(device)))
                                 for s in range(0, len(images), batch_size)])
            n_max = max(class_counts)
            smote = latent_smote(latents, labels.to(device),
                                 add_per_class=[n_max - int(n) for n in class_counts], k=self.k,
                                 generator=generator)
            decoded = [model.decode(smote.points[s:s + batch_size])
                       for s in range(0, len(smote.points), batch_size)]
        shape = (0, *images.shape[1:])
        out = torch.cat(decoded) if decoded else torch.zeros(shape)
        out = out.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).cpu()
        return out, smote.labels.cpu()

    @staticmethod
    def check_data(data: Any) -> None:
        """DeepSMOTE needs images of at least 4 x 4 pixels."""
        if not data.is_image:
            raise ParameterError(
                "generative.name", "a generative strategy for feature vectors ('deepsmote' "
                "needs an image dataset)", f"'deepsmote' on {data.name!r} with inputs of shape "
                f"{tuple(data.input_shape)}")
        if min(data.input_shape[1:]) < 4:
            raise ParameterError("dataset", "images of at least 4 x 4 pixels for 'deepsmote'",
                                 tuple(data.input_shape))


def append_synthetic(data: Any, inputs: Tensor, labels: Tensor) -> Any:
    """A copy of ``data`` whose training set is followed by the synthetic examples.

    The class counts stay those of the real data (what losses, weights and metrics read).
    """
    device = data.train_inputs.device
    return dataclasses.replace(
        data,
        train_inputs=torch.cat([data.train_inputs, inputs.to(device, data.train_inputs.dtype)]),
        train_labels=torch.cat([data.train_labels, labels.to(data.train_labels.device)]),
    )
