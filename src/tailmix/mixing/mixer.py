"""The batch mixer: SMOTE, soft SMOTE, Mixup, Remix and MAMix as settings of one module.

A mixed example is built from an anchor ``i`` and a partner ``j`` with the partner's share
``lam``::

    x_mix = (1 - lam) * x_i + lam * x_j
    y_mix = w * onehot(y_i) + (1 - w) * onehot(y_j),   w = label_rule(lam, n_{y_i}, n_{y_j})

:class:`BatchMixer` exposes the four knobs (anchors, partner, lam, label rule) and speaks the
training loop's protocol through a :class:`MixContext`; :meth:`BatchMixer.mix` serves the
random-partner case on its own.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailmix._validation import ParameterError, check_choice, check_number
from tailmix.mixing.label_rules import LABEL_RULES, _label_weight, resolve_rule_params
from tailmix.mixing.neighbours import knn_indices

__all__ = ["PRESETS", "BatchMixer", "MixContext", "sample_beta"]

ANCHORS = ("instance", "class_balanced", "oversample")
PARTNERS = ("random", "knn_class", "knn_any")
LAM_DISTRIBUTIONS = ("uniform", "beta")
LAM_PER = ("batch", "example")
INPUT_MODES = ("interpolate", "cutmix")
SPACES = ("input", "feature")

#: The paper's named mixers (DESIGN section 2), as constructor keywords.
PRESETS: dict[str, dict[str, Any]] = {
    "smote": dict(
        anchors="oversample",
        partner="knn_class",
        k=5,
        lam="uniform",
        lam_per="example",
        rule="hard",
    ),
    "soft_smote": dict(
        anchors="oversample",
        partner="knn_any",
        k=5,
        lam="uniform",
        lam_per="example",
        rule="soft",
    ),
    "mixup": dict(anchors="instance", partner="random", lam="beta", alpha=1.0, rule="soft"),
    "remix": dict(anchors="instance", partner="random", lam="beta", alpha=1.0, rule="remix"),
    "mamix": dict(anchors="instance", partner="random", lam="beta", alpha=1.0, rule="mamix"),
}

# Images converted to float at once while downscaling for the input-space kNN.
_POOL_CHUNK = 4096
# Gamma proposals drawn per sample; all of them are rejected with probability < 0.05 ** 12.
_GAMMA_PROPOSALS = 12


@dataclass
class MixContext:
    """What the training loop hands a mixer.

    Attributes
    ----------
    inputs : Tensor
        The whole training set on the device: ``uint8`` ``(N, C, H, W)`` or float ``(N, D)``.
    labels : Tensor
        ``(N,)`` int64 labels on the device.
    class_counts : Tensor
        ``(C,)`` float training counts per class, on the device.
    fetch : callable
        Dataset indices -> augmented float batch ``(B, ...)``, like the loop's own batches.
    features : callable or None
        Returns ``(N, F)`` network features of the un-augmented training set (eval mode);
        None when the loop cannot provide them.
    epoch : int
        The current epoch, 0-based.
    generator : torch.Generator
        A seeded generator on the device; the mixer draws all its randomness from it.
    """

    inputs: Tensor
    labels: Tensor
    class_counts: Tensor
    fetch: Callable[[Tensor], Tensor]
    features: Callable[[], Tensor] | None
    epoch: int
    generator: torch.Generator


def sample_beta(
    alpha: float,
    shape: tuple[int, ...],
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw ``Beta(alpha, alpha)`` samples from ``generator`` (no global random state).

    Each Beta sample is ``G1 / (G1 + G2)`` with ``G1, G2 ~ Gamma(alpha)``, drawn by the
    Marsaglia-Tsang method (a fixed number of proposals per sample, the first accepted one
    kept, so there is no data-dependent loop), boosted by ``U ** (1 / alpha)`` for
    ``alpha < 1`` and combined in log space so tiny ``alpha`` cannot give ``0 / 0``.

    Parameters
    ----------
    alpha : float
        The shape, ``> 0``; ``alpha = 1`` is ``Uniform(0, 1)``.
    shape : tuple of int
        Shape of the result.
    generator : torch.Generator
        Source of randomness; its device is used when ``device`` is not given.
    device, dtype
        Where and in which float type to return the samples.

    Returns
    -------
    Tensor
        Samples in ``[0, 1]``.
    """
    alpha = check_number("alpha", alpha, low=0.0, low_open=True)
    device = torch.device(device) if device is not None else generator.device
    if alpha == 1.0:
        return torch.rand(shape, generator=generator, device=device, dtype=dtype)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    log_g1 = _log_gamma_sample(alpha, shape, generator, device, work)
    log_g2 = _log_gamma_sample(alpha, shape, generator, device, work)
    return torch.sigmoid(log_g1 - log_g2).to(dtype)


def _log_gamma_sample(
    alpha: float,
    shape: tuple[int, ...],
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """``log`` of ``Gamma(alpha, 1)`` samples (Marsaglia and Tsang, 2000)."""
    boosted = alpha < 1.0
    a = alpha + 1.0 if boosted else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    kw = dict(generator=generator, device=device, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    z = torch.randn((_GAMMA_PROPOSALS, *shape), **kw)
    u = torch.rand((_GAMMA_PROPOSALS, *shape), **kw)
    v = (1.0 + c * z) ** 3
    log_v = torch.log(v.clamp_min(tiny))
    accepted = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * log_v)
    first = accepted.to(torch.uint8).argmax(dim=0, keepdim=True)
    log_g = math.log(d) + log_v.gather(0, first).squeeze(0)
    log_g = torch.where(accepted.any(dim=0), log_g, math.log(d))  # never in practice
    if boosted:
        log_g = log_g + torch.log(torch.rand(shape, **kw).clamp_min(tiny)) / alpha
    return log_g


class BatchMixer(nn.Module):
    """One module for the whole SMOTE-to-Mixup family.

    Parameters
    ----------
    anchors : {"instance", "class_balanced", "oversample"}, default "instance"
        Which examples are mixed each epoch: every example once; a class-balanced resample of
        the same length; or every example once unmixed plus, for each class, synthetic
        examples up to the largest class's count (SMOTE's "oversample to balance").
    partner : {"random", "knn_class", "knn_any"}, default "random"
        A permutation of the batch, or a uniformly chosen one of the anchor's ``k`` nearest
        neighbours within its class or over all classes (fetched through the context).
    lam : {"uniform", "beta"}, default "beta"
        Distribution of the partner's share: ``Uniform(0, 1)`` or ``Beta(alpha, alpha)``.
    alpha : float, default 1.0
        Beta shape, ``> 0``.
    lam_per : {"batch", "example"}, default "batch"
        One ``lam`` for the batch or one per example.
    rule : {"hard", "soft", "remix", "mamix"}, default "soft"
        The label rule (see :mod:`tailmix.mixing.label_rules`).
    rule_params : mapping, optional
        The rule's parameters (``K``, ``tau`` for remix; ``q`` for mamix); defaults otherwise.
    input_mode : {"interpolate", "cutmix"}, default "interpolate"
        Blend whole inputs, or paste a box of the partner into the anchor (images only; ``lam``
        becomes the pasted box's area share after clipping to the image).
    k : int, default 5
        Neighbours per example for the kNN partners.
    space : {"input", "feature"}, default "input"
        Where neighbours are searched: the raw training inputs or the network's features.
    downscale : int, optional
        Average-pool images to ``downscale x downscale`` before the input-space search.
    refresh_every : int, default 1
        Epochs between neighbour searches in feature space (input-space neighbours are found
        once).

    Examples
    --------
    >>> import torch
    >>> mixer = BatchMixer.preset("mamix")
    >>> x, y = torch.rand(8, 3, 4, 4), torch.arange(8) % 2
    >>> g = torch.Generator().manual_seed(0)
    >>> x_mix, target = mixer.mix(x, y, torch.tensor([100.0, 10.0]), g)
    >>> x_mix.shape, target.shape
    (torch.Size([8, 3, 4, 4]), torch.Size([8, 2]))
    >>> bool(torch.allclose(target.sum(dim=1), torch.ones(8)))
    True
    """

    neighbours: Tensor

    def __init__(
        self,
        *,
        anchors: str = "instance",
        partner: str = "random",
        lam: str = "beta",
        alpha: float = 1.0,
        lam_per: str = "batch",
        rule: str = "soft",
        rule_params: Mapping[str, float] | None = None,
        input_mode: str = "interpolate",
        k: int = 5,
        space: str = "input",
        downscale: int | None = None,
        refresh_every: int = 1,
    ):
        super().__init__()
        self.anchors = check_choice("anchors", anchors, ANCHORS)
        self.partner = check_choice("partner", partner, PARTNERS)
        self.lam = check_choice("lam", lam, LAM_DISTRIBUTIONS)
        self.alpha = check_number("alpha", alpha, low=0.0, low_open=True)
        self.lam_per = check_choice("lam_per", lam_per, LAM_PER)
        self.rule = check_choice("rule", rule, LABEL_RULES)
        if rule_params is not None and not isinstance(rule_params, Mapping):
            raise ParameterError(
                "rule_params", "a mapping of parameter names to numbers", rule_params
            )
        self.rule_params = resolve_rule_params(rule, rule_params)
        self.input_mode = check_choice("input_mode", input_mode, INPUT_MODES)
        self.k = check_number("k", k, low=1, integer=True)
        self.space = check_choice("space", space, SPACES)
        if downscale is not None:
            downscale = check_number("downscale", downscale, low=1, integer=True)
        self.downscale = downscale
        self.refresh_every = check_number("refresh_every", refresh_every, low=1, integer=True)
        # Neighbour table (N, k) of dataset indices; rebuilt from the data, so not saved.
        self.register_buffer(
            "neighbours", torch.empty(0, self.k, dtype=torch.long), persistent=False
        )
        self._searched_at: int | None = None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BatchMixer:
        """Build a named mixer (see :data:`PRESETS`), with any knob overridden.

        >>> BatchMixer.preset("smote", k=3).k
        3
        """
        check_choice("name", name, PRESETS)
        knobs = list(inspect.signature(cls).parameters)
        unknown = sorted(set(overrides) - set(knobs))
        if unknown:
            raise ParameterError(
                "overrides", "BatchMixer knobs (" + ", ".join(knobs) + ")", unknown
            )
        return cls(**{**PRESETS[name], **overrides})

    @property
    def uses_neighbours(self) -> bool:
        """Whether partners come from a neighbour table (and so need a context)."""
        return self.partner != "random"

    def extra_repr(self) -> str:
        parts = [f"anchors={self.anchors!r}", f"partner={self.partner!r}"]
        if self.uses_neighbours:
            parts += [f"k={self.k}", f"space={self.space!r}"]
        lam = f"beta({self.alpha:g})" if self.lam == "beta" else "uniform"
        parts += [f"lam={lam}", f"lam_per={self.lam_per!r}", f"rule={self.rule!r}"]
        parts += [f"{name}={value:g}" for name, value in self.rule_params.items()]
        if self.input_mode != "interpolate":
            parts.append(f"input_mode={self.input_mode!r}")
        return ", ".join(parts)

    # ----------------------------------------------------------------- epoch-level hooks

    def start_epoch(self, ctx: MixContext) -> None:
        """Search neighbours when due: input space once, feature space every
        ``refresh_every`` epochs (and whenever the table does not match the data)."""
        if not self.uses_neighbours:
            return
        stale = self.neighbours.shape[0] != ctx.labels.shape[0]
        due = (
            self.space == "feature"
            and ctx.epoch % self.refresh_every == 0
            and ctx.epoch != self._searched_at
        )
        if stale or due:
            self._search(ctx)

    def _search(self, ctx: MixContext) -> None:
        if self.space == "feature":
            if ctx.features is None:
                raise ParameterError(
                    "space", "'input' when the training loop provides no features", "feature"
                )
            with torch.no_grad():
                points = ctx.features()
        else:
            points = self._input_points(ctx.inputs)
        self.neighbours = self._table(points, ctx.labels).to(ctx.labels.device)
        self._searched_at = ctx.epoch

    def input_neighbours(self, inputs: Tensor, labels: Tensor) -> Tensor:
        """The ``(N, k)`` neighbour table an input-space search of this mixer finds in a
        training set (dataset indices), without a training loop."""
        return self._table(self._input_points(inputs), labels)

    def _table(self, points: Tensor, labels: Tensor) -> Tensor:
        return knn_indices(points, labels, k=self.k, within_class=self.partner == "knn_class")

    def _input_points(self, inputs: Tensor) -> Tensor:
        if inputs.ndim != 4 or self.downscale is None:
            return inputs
        side = self.downscale
        return torch.cat(
            [
                F.adaptive_avg_pool2d(inputs[s : s + _POOL_CHUNK].float(), side)
                for s in range(0, inputs.shape[0], _POOL_CHUNK)
            ]
        )

    def epoch_indices(self, idx: Tensor, ctx: MixContext) -> tuple[Tensor, Tensor | None]:
        """The epoch's anchors and, for ``"oversample"``, which slots are synthetic.

        Parameters
        ----------
        idx : LongTensor
            The sampler's anchor order for the epoch (dataset indices).
        ctx : MixContext
            The training loop's context.

        Returns
        -------
        (LongTensor, BoolTensor or None)
            ``"instance"``: ``idx`` unchanged and None (mix every example).
            ``"class_balanced"``: ``len(idx)`` draws from the examples in ``idx``, each class
            equally likely, and None. ``"oversample"``: ``idx`` plus ``n_max - n_c`` extra
            anchors drawn from each class ``c`` (counts taken over ``idx``), shuffled
            together, and a mask that is True on the extra (synthetic) slots.
        """
        if self.anchors == "instance":
            return idx, None
        g = ctx.generator
        device = idx.device
        num_classes = ctx.class_counts.shape[0]
        labels = ctx.labels[idx]
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=num_classes)
        starts = torch.cumsum(counts, 0) - counts
        if self.anchors == "class_balanced":
            classes = torch.multinomial(
                (counts > 0).float(), idx.shape[0], replacement=True, generator=g
            )
            return idx[order[_draw_members(classes, starts, counts, g)]], None
        extra_per_class = torch.where(counts > 0, counts.max() - counts, 0)
        classes = torch.repeat_interleave(torch.arange(num_classes, device=device), extra_per_class)
        extra = idx[order[_draw_members(classes, starts, counts, g)]]
        all_idx = torch.cat([idx, extra])
        synthetic = torch.cat(
            [torch.zeros_like(idx, dtype=torch.bool), torch.ones_like(extra, dtype=torch.bool)]
        )
        shuffle = torch.randperm(all_idx.shape[0], generator=g, device=device)
        return all_idx[shuffle], synthetic[shuffle]

    # ----------------------------------------------------------------- batch-level mixing

    def forward(
        self,
        x: Tensor,
        y: Tensor,
        idx_batch: Tensor,
        mask_batch: Tensor | None,
        ctx: MixContext,
    ) -> tuple[Tensor, Tensor]:
        """Mix a batch.

        Parameters
        ----------
        x : Tensor
            Augmented float batch ``(B, ...)``.
        y : LongTensor
            ``(B,)`` labels.
        idx_batch : LongTensor
            ``(B,)`` dataset indices of the batch.
        mask_batch : BoolTensor or None
            Which slots to mix (None: all of them). The others keep ``x`` and a one-hot
            target.
        ctx : MixContext
            The training loop's context.

        Returns
        -------
        (Tensor, Tensor)
            The mixed inputs, shaped like ``x``, and soft targets ``(B, C)`` summing to 1.
        """
        _check_batch(x, y, idx_batch, mask_batch)
        g = ctx.generator
        mixed = mask_batch
        if not self.uses_neighbours:
            perm = torch.randperm(x.shape[0], generator=g, device=x.device)
            x_partner, y_partner = x[perm], y[perm]
        else:
            if self.neighbours.shape[0] != ctx.labels.shape[0]:
                self._search(ctx)
            rows = self.neighbours[idx_batch]
            pick = torch.randint(0, self.k, (x.shape[0], 1), generator=g, device=rows.device)
            partner = rows.gather(1, pick).squeeze(1)
            x_partner = ctx.fetch(partner).to(x.dtype)
            y_partner = ctx.labels[partner]
            alone = partner == idx_batch  # no neighbour at all: copy only
            mixed = ~alone if mixed is None else mixed & ~alone
        return self._combine(x, y, x_partner, y_partner, mixed, ctx.class_counts, g)

    def mix(
        self, x: Tensor, y: Tensor, class_counts: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Mix every example of a batch with a random partner from the same batch.

        Parameters
        ----------
        x : Tensor
            Float batch ``(B, ...)``.
        y : LongTensor
            ``(B,)`` labels.
        class_counts : Tensor
            ``(C,)`` training counts per class.
        generator : torch.Generator
            Source of randomness, on ``x``'s device.

        Returns
        -------
        (Tensor, Tensor)
            Mixed inputs and soft targets ``(B, C)``.

        Raises
        ------
        ParameterError
            When the mixer's partners are neighbours (use the context protocol instead).
        """
        if self.uses_neighbours:
            raise ParameterError("partner", "'random' to mix without a context", self.partner)
        _check_batch(x, y, None, None)
        perm = torch.randperm(x.shape[0], generator=generator, device=x.device)
        return self._combine(x, y, x[perm], y[perm], None, class_counts, generator)

    def _draw_lam(self, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
        shape = (batch,) if self.lam_per == "example" else (1,)
        if self.lam == "uniform":
            lam = torch.rand(shape, generator=generator, device=device)
        else:
            lam = sample_beta(self.alpha, shape, generator=generator, device=device)
        return lam.expand(batch)

    def _combine(
        self,
        x: Tensor,
        y: Tensor,
        x_partner: Tensor,
        y_partner: Tensor,
        mixed: Tensor | None,
        class_counts: Tensor,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor]:
        batch = x.shape[0]
        lam = self._draw_lam(batch, generator, x.device)
        if mixed is not None:
            lam = torch.where(mixed, lam, 0.0)
        if self.input_mode == "cutmix":
            if x.ndim != 4:
                raise ParameterError(
                    "input_mode", "'interpolate' for inputs that are not images", "cutmix"
                )
            x_mix, lam = _paste_boxes(x, x_partner, lam, self.lam_per == "batch", generator)
        else:
            weight = lam.to(x.dtype).view(batch, *([1] * (x.ndim - 1)))
            x_mix = torch.lerp(x, x_partner, weight)
        counts = class_counts.to(x.device)
        w = _label_weight(self.rule, lam, counts[y], counts[y_partner], self.rule_params)
        if mixed is not None:
            w = torch.where(mixed, w, 1.0)
        w = w.to(torch.float32)
        # scatter rather than one_hot: one_hot checks label values, which waits for the device
        target = torch.zeros(batch, counts.shape[0], dtype=torch.float32, device=x.device)
        target.scatter_add_(1, y.unsqueeze(1), w.unsqueeze(1))
        target.scatter_add_(1, y_partner.unsqueeze(1), (1.0 - w).unsqueeze(1))
        return x_mix, target


def _draw_members(
    classes: Tensor, starts: Tensor, counts: Tensor, generator: torch.Generator
) -> Tensor:
    """Positions, in the class-sorted order, of one uniform member of each given class."""
    u = torch.rand(classes.shape, generator=generator, device=classes.device)
    offset = (u * counts[classes]).long().clamp_max(counts[classes] - 1)
    return starts[classes] + offset


def _paste_boxes(
    x: Tensor, x_partner: Tensor, lam: Tensor, shared: bool, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """CutMix: paste a box of area about ``lam`` from the partner; return the true shares.

    The box of side ``sqrt(lam)`` times the image's is centred on a uniform pixel (one for the
    batch when ``shared``) and clipped to the image; the returned ``lam`` is the clipped box's
    area share.
    """
    batch, _, height, width = x.shape
    device = x.device
    centres = 1 if shared else batch
    cy = torch.randint(0, height, (centres,), generator=generator, device=device)
    cx = torch.randint(0, width, (centres,), generator=generator, device=device)
    side = lam.float().sqrt()
    box_h = torch.round(side * height).long()
    box_w = torch.round(side * width).long()
    top = cy - box_h // 2
    left = cx - box_w // 2
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    in_rows = (rows >= top.unsqueeze(1)) & (rows < (top + box_h).unsqueeze(1))  # (B, H)
    in_cols = (cols >= left.unsqueeze(1)) & (cols < (left + box_w).unsqueeze(1))  # (B, W)
    box = in_rows.unsqueeze(2) & in_cols.unsqueeze(1)  # (B, H, W)
    x_mix = torch.where(box.unsqueeze(1), x_partner, x)
    area = in_rows.sum(1) * in_cols.sum(1)
    return x_mix, area.to(lam.dtype) / (height * width)


def _check_batch(x: Tensor, y: Tensor, idx: Tensor | None, mask: Tensor | None) -> None:
    """Shape checks only: nothing here waits for the device."""
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise ParameterError("x", "a float tensor of shape (B, ...)", getattr(x, "shape", x))
    batch = x.shape[0]
    if not isinstance(y, Tensor) or y.shape != (batch,):
        raise ParameterError("y", f"a label tensor of shape ({batch},)", getattr(y, "shape", y))
    if idx is not None and (not isinstance(idx, Tensor) or idx.shape != (batch,)):
        raise ParameterError(
            "idx_batch", f"an index tensor of shape ({batch},)", getattr(idx, "shape", idx)
        )
    if mask is not None and (
        not isinstance(mask, Tensor) or mask.shape != (batch,) or mask.dtype != torch.bool
    ):
        raise ParameterError(
            "mask_batch", f"None or a bool tensor of shape ({batch},)", getattr(mask, "shape", mask)
        )
