"""M2m: major-to-minor translation (Kim, Jeong and Shin, CVPR 2020).

After a warm-up trained as plain ERM, some examples of a training batch are replaced by
majority-class examples translated toward the slot's (minority) class by a few steps of
gradient descent on the input. What is implemented, step by step, per training batch:

1. **Which slots get a synthetic example.** A slot holding an example of class ``k`` becomes
   a generation slot with probability ``1 - n_k / n_max``, with target class ``k``. As in
   the reference implementation, batches after the warm-up come from a class-balanced
   sampler (``resample``), so every class is visited equally often and a share
   ``(n_max - n_k) / n_max`` of class ``k``'s visits try to use a translated example: class
   ``k`` is topped up by ``n_max - n_k`` synthetic examples in expectation, the rest of its
   visits repeat real images (random over-sampling).
2. **Which seed.** For target class ``k``, a seed ``x0`` of class ``k0`` is drawn from the
   same batch with probability proportional to ``1 - beta ** max(n_k0 - n_k, 0)``: only
   classes larger than ``k`` can be seeds, and larger ones are preferred. A slot whose batch
   holds no larger class keeps its example.
3. **Translation.** Starting from ``x0`` plus a small random perturbation (L2 norm
   ``init_noise``, in pixel units), ``steps`` normalised-gradient steps of L2 length
   ``step_size`` (pixel units, images kept in [0, 1]) minimise the paper's objective

       L(x) = CE(g(x), k) + lam * f_k0(x),

   where ``g`` is a frozen classifier and ``f`` the network being trained (``f_k0`` its logit
   for the seed's class; both in evaluation mode). The paper's ``g`` is a separately
   pre-trained ERM network; here ``g`` is a snapshot of the network at the end of the
   warm-up, which *is* an ERM network trained for the warm-up epochs (saved beside the
   run's checkpoints so a resumed run uses the same one).
4. **Rejection.** The translated example ``x*`` is accepted when ``g``'s softmax confidence
   for ``k`` is at least ``gamma`` **and** a Bernoulli draw with probability
   ``1 - beta ** max(n_k0 - n_k, 0)`` succeeds (the paper rejects with probability
   ``beta ** (n_k0 - n_k)^+``). An accepted ``x*`` replaces the slot's example with target
   one-hot ``k``; a rejected one leaves the original (minority) example in place.

Losses, class weights and metrics keep reading the original long-tailed class counts.
Everything is batched: one host synchronisation per batch (the number of generation slots),
no per-example Python.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailmix import seeding
from tailmix._validation import ParameterError, check_number
from tailmix.generative.base import Generative
from tailmix.pipeline.steps import Batch, MixStep, autocast
from tailmix.weights import ClassCounts, check_class_counts

__all__ = [
    "M2m",
    "M2mStep",
    "accept_translations",
    "seed_acceptance",
    "translate",
]

#: File (under the run's ``checkpoints`` folder) holding the warm-up snapshot ``g``.
SNAPSHOT_NAME = "m2m_g.pt"


def seed_acceptance(source_counts: Tensor, target_counts: Tensor, beta: float) -> Tensor:
    """``1 - beta ** max(n_k0 - n_k, 0)``: how likely a seed of class ``k0`` is used for ``k``.

    Parameters
    ----------
    source_counts, target_counts : Tensor
        ``n_k0`` and ``n_k``, broadcastable float tensors.
    beta : float
        In [0, 1). ``beta = 0`` accepts every seed from a strictly larger class.

    Returns
    -------
    Tensor
        Probabilities in [0, 1); zero whenever the source class is not larger.

    Examples
    --------
    >>> import torch
    >>> p = seed_acceptance(torch.tensor([100.0, 11.0, 10.0, 5.0]), torch.tensor(10.0), 0.9)
    >>> [round(v, 4) for v in p.tolist()]
    [0.9999, 0.1, 0.0, 0.0]
    """
    beta = check_number("beta", beta, low=0, high=1, high_open=True)
    gap = (source_counts - target_counts).clamp_min(0)
    return 1.0 - torch.pow(torch.as_tensor(beta, dtype=gap.dtype, device=gap.device), gap)


def accept_translations(confidence: Tensor, acceptance: Tensor, *, gamma: float,
                        generator: torch.Generator | None = None) -> Tensor:
    """M2m's rejection rule: keep ``x*`` when ``g`` is confident AND a Bernoulli draw passes.

    Parameters
    ----------
    confidence : Tensor
        ``(G,)`` softmax probability of the target class under ``g`` for each ``x*``.
    acceptance : Tensor
        ``(G,)`` acceptance probabilities from :func:`seed_acceptance`.
    gamma : float
        Confidence threshold in [0, 1].
    generator : torch.Generator, optional
        Source of the Bernoulli draws (on ``confidence``'s device).

    Returns
    -------
    BoolTensor
        ``(G,)``, True where the translated example is accepted.
    """
    gamma = check_number("gamma", gamma, low=0, high=1)
    if confidence.shape != acceptance.shape or confidence.ndim != 1:
        raise ParameterError("acceptance", f"a 1-D tensor of shape {tuple(confidence.shape)}",
                             tuple(acceptance.shape))
    draw = torch.rand(confidence.shape, generator=generator, device=confidence.device)
    return (confidence >= gamma) & (draw < acceptance)


def translate(
    pixels: Tensor,
    *,
    source: Tensor,
    target: Tensor,
    g: nn.Module,
    f: nn.Module,
    normalise: Callable[[Tensor], Tensor],
    steps: int = 10,
    step_size: float = 0.1,
    lam: float = 0.5,
    init_noise: float = 0.0,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
    amp: torch.dtype | None = None,
) -> Tensor:
    """Translate seeds toward ``target`` classes by minimising ``CE(g(x), k) + lam f_k0(x)``.

    Each step moves every example by ``step_size`` along its own normalised negative
    gradient (L2), then clips to ``bounds``. The modules are used as they are given (the
    caller puts them in evaluation mode); no parameter gradient is accumulated.

    Parameters
    ----------
    pixels : Tensor
        ``(G, ...)`` seeds in pixel units (images in [0, 1]).
    source, target : Tensor
        ``(G,)`` seed classes ``k0`` and target classes ``k``.
    g, f : nn.Module
        The frozen classifier and the classifier being trained (may be the same module).
    normalise : callable
        Maps pixel units to network inputs.
    steps : int
        Gradient steps, at least 1.
    step_size : float
        L2 length of each step in pixel units, positive.
    lam : float
        Weight of the ``f_k0`` term, at least 0.
    init_noise : float
        L2 norm of the uniform random perturbation added first (0: none).
    bounds : (float, float) or None
        Valid pixel range, or None for no clipping (feature vectors).
    generator : torch.Generator, optional
        Source of the initial perturbation.
    amp : torch.dtype, optional
        Autocast dtype for the forward passes.

    Returns
    -------
    Tensor
        ``(G, ...)`` translated examples in pixel units, detached, float32.
    """
    steps = check_number("steps", steps, low=1, integer=True)
    step_size = check_number("step_size", step_size, low=0, low_open=True)
    lam = check_number("lam", lam, low=0)
    init_noise = check_number("init_noise", init_noise, low=0)
    x = pixels.detach().float()
    view = (-1,) + (1,) * (x.dim() - 1)
    if init_noise > 0:
        noise = torch.rand(x.shape, generator=generator, device=x.device) - 0.5
        norm = noise.flatten(1).norm(dim=1).clamp_min(1e-12)
        noise = noise * (init_noise / norm).clamp(max=1.0).view(view)
        x = x + noise
        if bounds is not None:
            x = x.clamp(*bounds)
    source = source.view(-1, 1)
    for _ in range(steps):
        x.requires_grad_(True)
        with autocast(x.device, amp):
            inputs = normalise(x)
            logits_g = g(inputs)
            logits_f = logits_g if f is g else (f(inputs) if lam > 0 else None)
        loss = F.cross_entropy(logits_g.float(), target, reduction="sum")
        if lam > 0:
            loss = loss + lam * logits_f.float().gather(1, source).sum()
        (grad,) = torch.autograd.grad(loss, x)
        norm = grad.flatten(1).norm(dim=1).view(view)
        x = x.detach() - step_size * grad / (norm + 1e-10)
        if bounds is not None:
            x = x.clamp(*bounds)
    return x.detach()


class M2m(Generative, nn.Module):
    """Major-to-minor translation after an ERM warm-up (see the module docstring).

    Parameters
    ----------
    class_counts : sequence of int or Tensor
        The original (long-tailed) training examples per class.
    warmup_epochs : int
        Epochs trained as plain ERM, at least 1; ``g`` is the network at their end.
    steps : int
        Gradient steps per translation (paper: T = 10).
    step_size : float
        L2 step length in pixel units (paper: eta = 0.1).
    lam : float
        Weight of the seed-class logit term (paper: 0.5).
    gamma : float
        Confidence ``g`` must give the target class to accept (paper: 0.9).
    beta : float
        Seed preference and acceptance base, in [0, 1) (paper: 0.999).
    init_noise : float
        L2 norm of the random start, pixel units (reference implementation: 0.5).
    resample : bool
        Draw batches class-balanced after the warm-up (as the reference does); read by
        the builder, which gives the run a :class:`tailmix.samplers.Phased` sampler.
    """

    def __init__(
        self,
        *,
        class_counts: ClassCounts,
        warmup_epochs: int,
        steps: int = 10,
        step_size: float = 0.1,
        lam: float = 0.5,
        gamma: float = 0.9,
        beta: float = 0.999,
        init_noise: float = 0.5,
        resample: bool = True,
    ):
        super().__init__()
        counts = check_class_counts(class_counts).float()
        self.warmup_epochs = check_number("warmup_epochs", warmup_epochs, low=1, integer=True)
        self.steps = check_number("steps", steps, low=1, integer=True)
        self.step_size = check_number("step_size", step_size, low=0, low_open=True)
        self.lam = check_number("lam", lam, low=0)
        self.gamma = check_number("gamma", gamma, low=0, high=1)
        self.beta = check_number("beta", beta, low=0, high=1, high_open=True)
        self.init_noise = check_number("init_noise", init_noise, low=0)
        if not isinstance(resample, bool):
            raise ParameterError("resample", "true or false", resample)
        self.resample = resample
        self.register_buffer("class_counts", counts)
        self.g: nn.Module | None = None

    # -- the algorithm -------------------------------------------------------------------

    def translate_batch(self, x: Tensor, target: Tensor, y: Tensor, *, f: nn.Module,
              to_pixels: Callable[[Tensor], Tensor], normalise: Callable[[Tensor], Tensor],
              bounds: tuple[float, float] | None, amp: torch.dtype | None = None,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One batch of M2m: choose slots and seeds, translate, accept, substitute.

        ``x`` are network inputs, ``to_pixels``/``normalise`` convert to and from the space
        the translation steps in. Uses ``self.g`` (which must be set) and ``f``.
        """
        if self.g is None:
            raise ParameterError("g", "a frozen classifier (set at the end of the warm-up)",
                                 None)
        gen = generator
        counts = self.class_counts
        n_y = counts[y]
        keep = n_y / counts.max()
        wants = torch.rand(n_y.shape, generator=gen, device=n_y.device) >= keep
        # acceptance[i, j]: slot i (target class y_i) with seed j of the batch.
        acceptance = seed_acceptance(n_y.view(1, -1), n_y.view(-1, 1), self.beta)
        slots = (wants & (acceptance.sum(1) > 0)).nonzero().squeeze(1)
        if slots.numel() == 0:
            return x, target
        acceptance = acceptance[slots]
        seeds = torch.multinomial(acceptance, 1, generator=gen).squeeze(1)
        p_accept = acceptance.gather(1, seeds.view(-1, 1)).squeeze(1)
        k, k0 = y[slots], y[seeds]
        was_training = f.training
        f.eval()
        try:
            translated = translate(
                to_pixels(x[seeds]), source=k0, target=k, g=self.g, f=f, normalise=normalise,
                steps=self.steps, step_size=self.step_size, lam=self.lam,
                init_noise=self.init_noise, bounds=bounds, generator=gen, amp=amp)
            with torch.no_grad(), autocast(x.device, amp):
                logits = self.g(normalise(translated))
        finally:
            f.train(was_training)
        confidence = logits.float().softmax(1).gather(1, k.view(-1, 1)).squeeze(1)
        ok = accept_translations(confidence, p_accept, gamma=self.gamma, generator=gen)
        view = (-1,) + (1,) * (x.dim() - 1)
        new_x = torch.where(ok.view(view), normalise(translated).to(x.dtype), x[slots])
        onehot = F.one_hot(k, target.shape[1]).to(target.dtype)
        new_t = torch.where(ok.view(-1, 1), onehot, target[slots])
        return x.index_copy(0, slots, new_x), target.index_copy(0, slots, new_t)

    @staticmethod
    def frozen_copy(model: nn.Module) -> nn.Module:
        """A copy of ``model`` in evaluation mode with gradients off (the network ``g``)."""
        g = copy.deepcopy(model).eval()
        g.requires_grad_(False)
        return g

    # --- what it adds to a run (tailmix.generative.base.Generative)

    @classmethod
    def resolve_params(cls, params: dict[str, Any], epochs: int, notes: list[str]) -> None:
        """``warmup_epochs`` as an epoch of the run (:func:`resolve_warmup`)."""
        params["warmup_epochs"] = resolve_warmup(params.get("warmup_epochs"), epochs)
        if params["warmup_epochs"] >= epochs:
            notes.append(f"generative.warmup_epochs: the {epochs}-epoch run is all M2m's "
                         "warm-up (plain training; translation needs 2 epochs or more)")

    def plan(self, sampler: Any, run: Any) -> Any:
        """Class-balanced anchors after the warm-up (with ``resample``)."""
        if not self.resample:
            return sampler
        from tailmix.samplers import Phased, build_sampler

        data = run.data
        after = build_sampler("class_balanced", labels=data.train_labels.cpu(),
                              class_counts=data.class_counts, rank=run.rank,
                              world_size=run.world_size, seed=run.spec.seed)
        return Phased(before=sampler, after=after, switch_epoch=self.warmup_epochs)

    def step(self, step_args: dict[str, Any], run: Any) -> Any:
        """The translating step, its snapshot of the warm-up network in the run folder."""
        path = None if run.out is None else run.out / "checkpoints" / SNAPSHOT_NAME
        return M2mStep(m2m=self, network=run.network, seed=run.spec.seed, rank=run.rank,
                       snapshot_path=path, save=run.rank == 0, log=run.log, **step_args)


class M2mStep(MixStep):
    """The default step with M2m's translation between mixing and the forward pass.

    Its context is narrow: the network being trained (``f``, and the source of the
    warm-up snapshot ``g``), the normalisation that maps pixels to network inputs, and
    its own per-epoch generator (the ``generation`` stream). The snapshot is written to
    ``snapshot_path`` (when given) so that a resumed run translates with the same ``g``.

    Parameters
    ----------
    m2m : M2m
        The algorithm and its settings.
    network : nn.Module
        The bare network being trained.
    seed, rank : int
        The run's seed and this process's rank (for the generation stream).
    snapshot_path : Path, optional
        Where ``g`` is saved after the warm-up and read back on resume (every process
        reads it; only the one with ``save`` writes it).
    save : bool
        Write the snapshot (the process that writes the run folder).
    log : callable
        Receives notes (a resumed run without a saved ``g``).
    **step
        :class:`tailmix.pipeline.steps.MixStep` arguments.
    """

    def __init__(self, *, m2m: M2m, network: nn.Module, seed: int, rank: int = 0,
                 snapshot_path: Path | None = None, save: bool = True,
                 log: Callable[[str], None] = print, **step: Any):
        super().__init__(**step)
        self.m2m, self.network = m2m.to(self.device), network
        self.seed, self.rank = seed, rank
        self.snapshot_path, self.save, self.log = snapshot_path, save, log
        self.generator: torch.Generator | None = None
        mean, std = self.augment.mean, self.augment.std
        self.image = self.inputs.dim() == 4
        shape = (1, -1, 1, 1) if self.image else (1, -1)
        self.mean, self.std = mean.view(shape), std.view(shape)

    def start_epoch(self, epoch: int, model: nn.Module) -> None:
        super().start_epoch(epoch, model)
        warm = self.m2m.warmup_epochs
        if epoch < warm:
            return
        if self.m2m.g is None:
            self.m2m.g = self._warmup_network(epoch)
        self.generator = seeding.generator(self.seed, "generation", epoch=epoch,
                                           rank=self.rank, device=self.device)

    def _warmup_network(self, epoch: int) -> nn.Module:
        """``g``: the network now (the first epoch after the warm-up, saved), or the saved
        snapshot when a run resumes later than that."""
        path = self.snapshot_path
        g = M2m.frozen_copy(self.network)
        if epoch == self.m2m.warmup_epochs:
            if path is not None and self.save:
                from tailmix.io import save_torch

                save_torch(path, {"epoch": epoch, "model": g.state_dict()})
        elif path is not None and path.is_file():
            state = torch.load(path, map_location=self.device, weights_only=True)
            g.load_state_dict(state["model"])
        else:
            self.log(f"M2m: no saved warm-up network ({SNAPSHOT_NAME}); using the resumed "
                     "network as g")
        return g

    def transform(self, x: Tensor, target: Tensor, y: Tensor, batch: Batch
                  ) -> tuple[Tensor, Tensor]:
        if batch.epoch < self.m2m.warmup_epochs:
            return x, target
        mean, std = self.mean, self.std
        return self.m2m.translate_batch(
            x, target, y, f=self.network, to_pixels=lambda t: t * std + mean,
            normalise=lambda p: (p - mean) / std, bounds=(0.0, 1.0) if self.image else None,
            amp=self.amp, generator=self.generator)


#: M2m's warm-up when a config names none: plain training for this share of the run.
WARMUP_SHARE = 0.8


def resolve_warmup(given: Any, epochs: int) -> int:
    """M2m's warm-up as an epoch: an epoch number that leaves a warm-up and at least one
    epoch after it, or a share of the run in (0, 1), kept inside the run (at least 1, at
    most ``epochs - 1``; a 1-epoch run is all warm-up). None: :data:`WARMUP_SHARE`.

    >>> resolve_warmup(0.8, 200), resolve_warmup(0.8, 6), resolve_warmup(0.8, 1)
    (160, 5, 1)
    """
    from tailmix.schedules import is_share, resolve_epoch

    if given is None:
        given = WARMUP_SHARE
    warm = resolve_epoch("generative.warmup_epochs", given, epochs)
    if is_share(given):
        return min(max(warm, 1), max(epochs - 1, 1))
    if not 1 <= warm < epochs:
        inside = (f"an epoch in [1, {epochs - 1}] that leaves a warm-up and at least one "
                  f"epoch after it in the {epochs}-epoch run" if epochs > 1 else
                  "a share of the run (a 1-epoch run has no epoch after a warm-up)")
        raise ParameterError(
            "generative.warmup_epochs", f"{inside}: set --set generative.warmup_epochs=N, or "
            "a share of the run such as 0.8", given)
    return warm
