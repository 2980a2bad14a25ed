"""The batch mixer: SMOTE, soft SMOTE, Mixup, Remix and MAMix as settings of one module.

A mixed example is built from an anchor ``i`` and a partner ``j`` with the partner's share
``lam``::

    x_mix = (1 - lam) * x_i + lam * x_j
    y_mix = w * onehot(y_i) + (1 - w) * onehot(y_j),   w = label_rule(lam, n_{y_i}, n_{y_j})

:class:`Mixer` is a callable, ``mixer(x, y) -> (x_mix, soft_target)``, that works in any
training loop. Random partners come from the batch itself; SMOTE-style partners come from a
:class:`NeighbourTable` fitted on (inputs, labels), looked up by the batch's dataset
indices. The anchors knob (which examples are mixed) is a sampler's job:
:class:`tailmix.samplers.Resampled` oversamples to balance and marks the synthetic slots
the mixer then interpolates. (Slightly over 600 lines: the one :class:`Mixer` documents
every knob of the family where it is set; the share draws live in
:mod:`tailmix.mixing.shares`, the neighbour search in :mod:`tailmix.mixing.neighbours`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from tailmix._validation import ParameterError, check_choice, check_keywords, check_number
from tailmix.mixing.label_rules import LABEL_RULES, _label_weight, resolve_rule_params
from tailmix.mixing.neighbours import (  # noqa: F401 (re-exported)
    ANCHOR_RULES,
    ClassPool,
    NeighbourTable,
)
from tailmix.mixing.shares import MIN_ALPHA, check_alpha, paste_boxes, sample_beta

__all__ = ["MIN_ALPHA", "PRESETS", "ClassPool", "Mixer", "NeighbourTable", "sample_beta"]

ANCHORS = ("instance", "class_balanced", "oversample", *ANCHOR_RULES)
#: imbalanced-learn's defaults for the neighbours over all classes of each anchor rule
#: (BorderlineSMOTE's m_neighbors; ADASYN's one n_neighbors serves both searches: ``k``).
_M_NEIGHBORS = {"borderline": 10, "adasyn": None}
PARTNERS = ("random", "knn_class", "knn_any", "balanced", "batch")
LAM_DISTRIBUTIONS = ("uniform", "beta", "unimix")
LAM_PER = ("batch", "example")
INPUT_MODES = ("interpolate", "cutmix", "either")
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
    "borderline_smote": dict(
        anchors="borderline",
        partner="knn_class",
        k=5,
        m_neighbors=10,
        lam="uniform",
        lam_per="example",
        rule="hard",
    ),
    "borderline_smote2": dict(
        anchors="borderline",
        partner="knn_any",
        k=5,
        m_neighbors=10,
        lam="uniform",
        lam_per="example",
        rule="hard",
        other_class_scale=0.5,
    ),
    "adasyn": dict(
        anchors="adasyn",
        partner="knn_class",
        k=5,
        lam="uniform",
        lam_per="example",
        rule="hard",
    ),
}

def resolve_params(params: dict[str, Any], epochs: int) -> None:
    """A config's ``mixer`` mapping with its epochs as epochs of the run: ``from_epoch`` and
    ``until_epoch`` may be shares of the run (``0.02``: the epoch 2% in). A share of
    ``until_epoch`` keeps at least one epoch that mixes."""
    from tailmix.schedules import resolve_epoch

    first = params.get("from_epoch")
    if first is not None:
        first = params["from_epoch"] = resolve_epoch("mixer.from_epoch", first, epochs)
        if isinstance(first, int) and first >= epochs:
            raise ParameterError("mixer.from_epoch", f"an epoch of the {epochs}-epoch run "
                                 "(from it on the mixer mixes; later, it never would)", first)
    until = params.get("until_epoch")
    if isinstance(until, float) and not until.is_integer():
        resolve_epoch("mixer.until_epoch", until, epochs)  # the check of a share
        first = first if isinstance(first, int) else 0
        end = min(int(round(until * epochs)), epochs)
        if end <= first and until * epochs <= first:
            raise ParameterError("mixer.until_epoch", f"a share of the run after "
                                 f"mixer.from_epoch (epoch {first} of {epochs})", until)
        params["until_epoch"] = max(end, first + 1)  # rounding keeps one epoch that mixes


class Mixer(nn.Module):
    """The SMOTE-to-Mixup family as one callable: ``mixer(x, y) -> (x_mix, soft_target)``.

    Parameters
    ----------
    class_counts : sequence or Tensor, optional
        Training examples per class (a buffer that moves with ``.to``). Needed by the
        ``remix`` and ``mamix`` rules, and to size the targets; without it, targets have
        ``max(y) + 1`` columns unless ``num_classes`` is given.
    anchors : {"instance", "class_balanced", "oversample", "borderline", "adasyn"}, \
default "instance"
        Which examples are mixed each epoch. Not applied here: a sampler plans the epoch
        (:class:`tailmix.samplers.Resampled`); with ``"oversample"`` the loop passes the
        plan's ``synthetic`` mask and only those slots are mixed. ``"borderline"`` and
        ``"adasyn"`` oversample the same way but choose the synthetic slots' anchors within
        each class from the classes of their ``m_neighbors`` nearest neighbours over all
        classes (:meth:`anchor_weights`): Borderline-SMOTE (Han, Wang, Mao, ICIC 2005)
        only from examples "in danger", at least half but not all of whose neighbours are
        of other classes; ADASYN (He et al., IJCNN 2008) from every example in proportion
        to its share of other-class neighbours, rounded to whole slots. Both need kNN
        partners (``partner="knn_class"``: imbalanced-learn's Borderline-SMOTE-1 and
        ADASYN; ``"knn_any"`` with ``rule="soft"`` interpolates toward other classes with
        soft labels instead).
    partner : {"random", "knn_class", "knn_any", "balanced", "batch"}, default "random"
        A permutation of the batch, one of the anchor's ``k`` nearest neighbours within
        its class or over all classes (from :attr:`neighbours`, by dataset index), or an
        example of the whole training set drawn by class (:attr:`pool`, a
        :class:`ClassPool`: class-balanced at ``partner_q = 0``; its ``inputs`` must be
        what the network takes, like ``x``, unless the call's ``fetch`` maps indices to
        such inputs).
        ``"batch"``: an example of the same batch drawn with replacement, with probability
        ``~ n_y ** -partner_q`` by its class (UniMix's sampler, Xu et al., NeurIPS 2021, at
        ``partner_q = 0.5`` on CIFAR-10: a batch drawn by instance, so classes come
        ``~ n ** (1 - q)``); needs ``class_counts``.
    partner_q : float, default 0.0
        ``"balanced"`` partners: class ``c`` drawn with probability ``~ n_c ** -q``;
        ``"batch"`` partners: an example of class ``c`` weighted ``n_c ** -q``.
    lam : {"uniform", "beta", "unimix"}, default "beta"
        Distribution of the partner's share: ``Uniform(0, 1)``, ``Beta(alpha, alpha)``, or
        UniMix's share that favours the rarer class of each pair: the anchor's share is
        ``n_partner / (n_anchor + n_partner) + b`` with ``b ~ Beta(alpha, alpha)``, less 1
        when over 1 (one draw an example, whatever ``lam_per``; needs ``class_counts``).
    alpha : float, default 1.0
        Beta shape, at least :data:`MIN_ALPHA` (``1e-3``; below it almost nothing is mixed).
    beta : float, optional
        A second Beta shape: the partner's share is ``Beta(alpha, beta)`` (None: ``alpha``,
        Mixup's symmetric Beta). Balanced-MixUp (Galdran et al., MICCAI 2021) draws
        ``Beta(alpha, 1)`` with small ``alpha`` (0.1 to 0.4 in its experiments) for a
        class-balanced partner (``partner="balanced"``, ``partner_q=0``): mostly the
        instance-sampled anchor, a little of the balanced one.
    lam_per : {"batch", "example"}, default "batch"
        One ``lam`` for the batch or one per example.
    rule : str, default "soft"
        A registered label rule (:data:`tailmix.registry.LABEL_RULES`: ``hard``, ``soft``,
        ``remix``, ``mamix``).
    rule_params : mapping, optional
        The rule's parameters (``K``, ``tau`` for remix; ``q`` for mamix).
    input_mode : {"interpolate", "cutmix", "either"}, default "interpolate"
        Blend whole inputs, or paste a box of the partner into the anchor (images only;
        ``lam`` becomes the pasted box's area share after clipping), or, per example,
        paste with probability ``cutmix_prob`` and blend otherwise (Mixup and CutMix in one
        batch).
    cutmix_prob : float, default 0.5
        The share of pasted examples with ``input_mode="either"``.
    other_class_scale : float, default 1.0
        The partner's share is multiplied by this where the partner's class is not the
        anchor's (Borderline-SMOTE-2: 0.5, a synthetic example at most half-way to a
        neighbour of another class, with ``partner="knn_any"``).
    prob : float, default 1.0
        The chance that a draw of ``lam`` mixes at all (one draw a batch, or one an example
        with ``lam_per="example"``); the others keep their input and a one-hot target. CMO
        (Park et al., CVPR 2022) pastes into half the batches.
    from_epoch, until_epoch : int, optional
        Mix only in epochs ``from_epoch <= epoch < until_epoch`` (0-based; None: to the end),
        as a training loop tells the mixer through :meth:`start_epoch`; outside them every
        example keeps its input and a one-hot target (an oversampling sampler's synthetic
        slots included: they stay copies). A loop that never calls :meth:`start_epoch` always
        mixes. CMO leaves its first and last few epochs unmixed.
    k : int, default 5
        Neighbours per example for the kNN partners.
    m_neighbors : int, optional
        Neighbours over all classes that the ``"borderline"`` and ``"adasyn"`` anchors read
        (None: imbalanced-learn's defaults, 10 for Borderline-SMOTE and ``k`` for ADASYN,
        whose one ``n_neighbors`` serves both searches).
    space : {"input", "feature"}, default "input"
        Where a training loop searches neighbours (:meth:`start_epoch`): raw inputs or
        network features.
    downscale : int, optional
        Average-pool images before an input-space search.
    refresh_every : int, default 1
        Epochs between feature-space searches (:meth:`start_epoch`).
    neighbours : NeighbourTable, optional
        A fitted (or to-be-fitted) table; by default an empty one with ``k`` and the
        partner's ``within_class``.
    generator : torch.Generator, optional
        Default source of randomness (a call's ``generator`` wins; else torch's global).

    Examples
    --------
    >>> import torch
    >>> mixer = Mixer.preset("mamix", class_counts=[100, 10])
    >>> x, y = torch.rand(8, 3, 4, 4), torch.arange(8) % 2
    >>> x_mix, target = mixer(x, y, generator=torch.Generator().manual_seed(0))
    >>> x_mix.shape, target.shape
    (torch.Size([8, 3, 4, 4]), torch.Size([8, 2]))
    >>> bool(torch.allclose(target.sum(dim=1), torch.ones(8)))
    True
    """

    class_counts: Tensor

    def __init__(
        self,
        *,
        class_counts: Any = None,
        num_classes: int | None = None,
        anchors: str = "instance",
        partner: str = "random",
        partner_q: float = 0.0,
        lam: str = "beta",
        alpha: float = 1.0,
        beta: float | None = None,
        lam_per: str = "batch",
        rule: str = "soft",
        rule_params: Mapping[str, float] | None = None,
        input_mode: str = "interpolate",
        cutmix_prob: float = 0.5,
        other_class_scale: float = 1.0,
        prob: float = 1.0,
        from_epoch: int = 0,
        until_epoch: int | None = None,
        k: int = 5,
        m_neighbors: int | None = None,
        space: str = "input",
        downscale: int | None = None,
        refresh_every: int = 1,
        neighbours: NeighbourTable | None = None,
        generator: torch.Generator | None = None,
    ):
        """Check every knob (a bad one is a ``ParameterError`` naming it) and make the
        neighbour table or class pool the partner draws from."""
        super().__init__()
        self.anchors = check_choice("anchors", anchors, ANCHORS)
        self.partner = check_choice("partner", partner, PARTNERS)
        self.lam = check_choice("lam", lam, LAM_DISTRIBUTIONS)
        self.alpha = check_alpha(alpha)
        self.beta = None if beta is None else check_alpha(beta, name="beta")
        self.lam_per = check_choice("lam_per", lam_per, LAM_PER)
        self.rule = check_choice("rule", rule, LABEL_RULES)
        if rule_params is not None and not isinstance(rule_params, Mapping):
            raise ParameterError(
                "rule_params", "a mapping of parameter names to numbers", rule_params
            )
        self.rule_params = resolve_rule_params(rule, rule_params)
        self.input_mode = check_choice("input_mode", input_mode, INPUT_MODES)
        self.cutmix_prob = check_number("cutmix_prob", cutmix_prob, low=0, high=1)
        self.other_class_scale = check_number("other_class_scale", other_class_scale, low=0,
                                              high=1)
        self.prob = check_number("prob", prob, low=0, high=1, low_open=True)
        self.from_epoch = check_number("from_epoch", from_epoch, low=0, integer=True)
        if until_epoch is not None:
            until_epoch = check_number("until_epoch", until_epoch, low=self.from_epoch + 1,
                                       integer=True)
        self.until_epoch = until_epoch
        self.active = True  # inside the epochs that mix (start_epoch updates it)
        self.partner_q = check_number("partner_q", partner_q)
        self.pool = ClassPool(q=self.partner_q) if partner == "balanced" else None
        self.k = check_number("k", k, low=1, integer=True)
        self.space = check_choice("space", space, SPACES)
        self.refresh_every = check_number("refresh_every", refresh_every, low=1, integer=True)
        if downscale is not None:  # checked even when no table is made from it
            downscale = check_number("downscale", downscale, low=1, integer=True)
        if neighbours is not None and not isinstance(neighbours, NeighbourTable):
            raise ParameterError("neighbours", "a NeighbourTable", type(neighbours).__name__)
        if m_neighbors is not None:
            m_neighbors = check_number("m_neighbors", m_neighbors, low=1, integer=True)
        if self.anchors in ANCHOR_RULES:
            if not self.uses_neighbours:
                raise ParameterError("partner", f"'knn_class' or 'knn_any' (anchors "
                                     f"{self.anchors!r} read the neighbour table)", partner)
            m_neighbors = m_neighbors or _M_NEIGHBORS[self.anchors] or self.k
        else:
            m_neighbors = None
        self.m_neighbors = m_neighbors
        if neighbours is None and self.uses_neighbours:
            neighbours = NeighbourTable(k=self.k, within_class=partner == "knn_class",
                                        downscale=downscale, m_neighbors=m_neighbors)
        elif neighbours is not None and neighbours.m_neighbors != m_neighbors:
            raise ParameterError("neighbours", f"a table with m_neighbors={m_neighbors} "
                                 f"(the mixer's anchors {self.anchors!r})",
                                 f"m_neighbors={neighbours.m_neighbors}")
        self.neighbours = neighbours
        counts = None
        if class_counts is not None:
            from tailmix.weights import check_class_counts

            counts = check_class_counts(class_counts).float()
        self.register_buffer("class_counts", counts)
        if counts is None and (partner == "batch" or lam == "unimix"):
            needs = "partner 'batch'" if partner == "batch" else "lam 'unimix'"
            raise ParameterError("class_counts", f"the training class counts ({needs} reads "
                                 "them)", None)
        if num_classes is not None:
            num_classes = check_number("num_classes", num_classes, low=1, integer=True)
        self.num_classes = num_classes if counts is None else counts.numel()
        self.generator = generator
        self._searched_at: int | None = None  # the epoch of the last neighbour search

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Mixer:
        """Build a named mixer (see :data:`PRESETS`), with any knob overridden.

        >>> Mixer.preset("smote", k=3).k
        3
        """
        check_choice("preset", name, PRESETS)
        check_keywords(overrides, cls, what="a Mixer")
        return cls(**{**PRESETS[name], **overrides})

    def unused(self, names: Iterable[str]) -> list[tuple[str, str]]:
        """Which of the knobs ``names`` this mixer does not use, each with the setting it
        needs: ``alpha`` shapes a Beta share only (``lam="beta"`` or ``"unimix"``), ``k``,
        ``space``, ``downscale`` and ``refresh_every`` act on kNN partners only, and so on.
        A config that sets such a knob is refused rather than silently ignored.

        >>> Mixer.preset("smote").unused(["alpha", "k"])
        [('alpha', 'lam: beta or unimix')]
        """
        knn = self.uses_neighbours
        acts = {"alpha": (self.lam in ("beta", "unimix"), "lam: beta or unimix"),
                "beta": (self.lam == "beta", "lam: beta"),
                "lam_per": (self.lam != "unimix", "lam: uniform or beta"),
                "partner_q": (self.partner in ("balanced", "batch"),
                              "partner: balanced or batch"),
                "k": (knn, "partner: knn_class or knn_any"),
                "m_neighbors": (self.anchors in ANCHOR_RULES, "anchors: borderline or adasyn"),
                "space": (knn, "partner: knn_class or knn_any"),
                "downscale": (knn and self.space == "input",
                              "a kNN partner with space: input"),
                "refresh_every": (knn and self.space == "feature",
                                  "a kNN partner with space: feature"),
                "cutmix_prob": (self.input_mode == "either", "input_mode: either"),
                "other_class_scale": (self.partner != "knn_class",
                                      "partners that may be of another class")}
        return [(n, acts[n][1]) for n in names if n in acts and not acts[n][0]]

    def start_epoch(self, epoch: int, *, labels: Tensor, inputs: Tensor,
                    features: Callable[[], Tensor]) -> None:
        """Before an epoch's batches, in a training loop: index the class pool of
        ``"balanced"`` partners once, and search the neighbours of kNN partners when due
        (in input space once; in feature space every ``refresh_every`` epochs, on
        ``features()``: the network's features of ``inputs``, called only then).
        ``labels`` and ``inputs`` are the whole training set's. Also whether ``epoch`` is one
        that mixes (``from_epoch``, ``until_epoch``)."""
        self.active = self.from_epoch <= epoch and (self.until_epoch is None
                                                    or epoch < self.until_epoch)
        if self.pool is not None and self.pool.labels.shape[0] != labels.shape[0]:
            self.pool.fit(labels, inputs=inputs, num_classes=self.num_classes)
        if not self.uses_neighbours:
            return
        table = self.neighbours
        stale = table.indices.shape[0] != labels.shape[0]
        due = (self.space == "feature" and epoch % self.refresh_every == 0
               and epoch != self._searched_at)
        if stale or due:
            table.fit(features() if self.space == "feature" else inputs, labels, inputs=inputs)
            self._searched_at = epoch

    def forget_search(self) -> None:
        """Make the next :meth:`start_epoch` search a feature-space table again, whatever
        its epoch (a new run with this mixer: its network's features are not those of the
        last search), and mix again until it says otherwise."""
        self._searched_at = None
        self.active = True

    def table_state(self) -> dict[str, Any]:
        """What a resumed run needs to draw the same partners: a feature-space neighbour
        table and the epoch it was searched at (an input-space table is searched again)."""
        if not self.uses_neighbours or self.space != "feature" or not self.neighbours.fitted:
            return {}
        state = {"searched_at": self._searched_at, "neighbours": self.neighbours.indices}
        if self.neighbours.context is not None:
            state["context"] = self.neighbours.context
        return state

    def load_table_state(self, state: Mapping[str, Any], *, labels: Tensor,
                         inputs: Tensor) -> None:
        """Bring back :meth:`table_state` (nothing when it holds no table)."""
        if "neighbours" not in state:
            return
        self.neighbours.restore(state["neighbours"], labels, inputs=inputs,
                                context=state.get("context"))
        self._searched_at = state["searched_at"]

    def anchor_weights(self) -> Tensor | None:
        """``(N,)`` weights of the training examples as anchors of synthetic slots, read from
        the fitted neighbour table (``"borderline"``: 1 in danger, 0 otherwise;
        ``"adasyn"``: the share of other-class neighbours), for a sampler that places them
        (:class:`tailmix.samplers.Resampled`); None for the other anchors."""
        if self.anchors not in ANCHOR_RULES:
            return None
        return self.neighbours.anchor_weights(self.anchors)

    @property
    def anchor_quota(self) -> bool:
        """Whether each anchor gets its whole share of slots (ADASYN) rather than draws."""
        return self.anchors == "adasyn"

    @property
    def sampler_mode(self) -> str | None:
        """The :class:`tailmix.samplers.Resampled` mode these anchors need (None: the
        loop's own sampler, unchanged)."""
        if self.anchors == "instance":
            return None
        return "class_balanced" if self.anchors == "class_balanced" else "oversample"

    @property
    def uses_neighbours(self) -> bool:
        """Whether partners come from a neighbour table (and so need dataset indices)."""
        return self.partner in ("knn_class", "knn_any")

    def _apply(self, fn, recurse=True):
        # The neighbour table moves with the mixer (its tensors are integer: only the
        # device changes).
        module = super()._apply(fn, recurse)
        table = self.neighbours
        if table is not None:
            table.indices, table.labels = fn(table.indices), fn(table.labels)
            if table.context is not None:
                table.context = fn(table.context)
        if self.pool is not None and self.pool.fitted:
            self.pool.to(fn(self.pool.labels).device)
        return module

    def extra_repr(self) -> str:
        parts = [f"anchors={self.anchors!r}", f"partner={self.partner!r}"]
        if self.uses_neighbours:
            parts += [f"k={self.k}", f"space={self.space!r}"]
        if self.m_neighbors is not None:
            parts.append(f"m_neighbors={self.m_neighbors}")
        if self.partner in ("balanced", "batch"):
            parts.append(f"partner_q={self.partner_q:g}")
        shapes = f"{self.alpha:g}" if self.beta is None else f"{self.alpha:g}, {self.beta:g}"
        lam = f"{self.lam}({shapes})" if self.lam != "uniform" else "uniform"
        parts.append(f"lam={lam}")
        if self.lam != "unimix":  # one draw an example, always
            parts.append(f"lam_per={self.lam_per!r}")
        parts.append(f"rule={self.rule!r}")
        parts += [f"{name}={value:g}" for name, value in self.rule_params.items()]
        if self.input_mode != "interpolate":
            parts.append(f"input_mode={self.input_mode!r}")
        if self.input_mode == "either":
            parts.append(f"cutmix_prob={self.cutmix_prob:g}")
        if self.other_class_scale != 1:
            parts.append(f"other_class_scale={self.other_class_scale:g}")
        if self.prob < 1:
            parts.append(f"prob={self.prob:g}")
        if self.from_epoch or self.until_epoch is not None:
            parts.append(f"epochs=[{self.from_epoch}, {self.until_epoch or 'end'})")
        return ", ".join(parts)

    def forward(
        self,
        x: Tensor,
        y: Tensor,
        index: Tensor | None = None,
        synthetic: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        fetch: Callable[[Tensor], Tensor] | None = None,
        parts: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Mix a batch.

        Parameters
        ----------
        x : Tensor
            Float batch ``(B, ...)``, as the network takes it.
        y : LongTensor
            ``(B,)`` labels.
        index : LongTensor, optional
            ``(B,)`` dataset indices of the batch; needed for neighbour partners.
        synthetic : BoolTensor, optional
            Which slots to mix (an oversampling sampler's mask); the others keep ``x`` and
            a one-hot target. None: mix every slot.
        generator : torch.Generator, optional
            Source of randomness for this call (default: the mixer's, else torch's global).
        fetch : callable, optional
            Dataset indices -> partner inputs shaped like ``x`` (e.g. augmented the way
            ``x`` was). Default: the neighbour table's ``inputs``.
        parts : bool, default False
            Return the targets split by source: ``(2, B, C)``, the anchors' labels with
            their shares, then the partners' (zero where a slot is not mixed); they sum to
            the soft targets exactly (for a loss that normalises each source apart,
            ``weights.normalise: sources``).

        Returns
        -------
        (Tensor, Tensor)
            The mixed inputs, shaped like ``x``, and soft targets ``(B, C)`` summing to 1
            (or their parts).
        """
        _check_batch(x, y, index, synthetic)
        if not self.active:  # an epoch outside from_epoch..until_epoch: nothing drawn
            return x, self._unmixed(y, x.device, parts)
        g = generator if generator is not None else self.generator
        take, y_partner, mixed = self._partners(x, y, index, synthetic, g, fetch)
        return self._combine(x, y, take(x), y_partner, mixed, g, parts=parts)

    def pair(
        self,
        x1: Tensor,
        x2: Tensor,
        y: Tensor,
        index: Tensor | None = None,
        synthetic: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        fetch: Callable[[Tensor], Tensor] | None = None,
        modes: tuple[str, str] = ("interpolate", "cutmix"),
        parts: bool = False,
    ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Two mixed views of one batch: ``x1`` and ``x2`` (two augmentations of the same
        examples) mixed with the same partners and the same draw of ``lam``, the first
        blended and the second pasted by default (GLMC's global and local views, Du et al.,
        CVPR 2023); a partner fetched by index is fetched, and so augmented, once per view.
        A pasted view's target follows its box's area, as in :meth:`forward`.

        Returns ``((x_mix1, target1), (x_mix2, target2))``; arguments as :meth:`forward`.
        """
        for mode in modes:
            check_choice("modes", mode, INPUT_MODES)
        _check_batch(x1, y, index, synthetic)
        _check_batch(x2, y, index, synthetic)
        if not self.active:
            one_hot = self._unmixed(y, x1.device, parts)
            return (x1, one_hot), (x2, one_hot)
        g = generator if generator is not None else self.generator
        take, y_partner, mixed = self._partners(x1, y, index, synthetic, g, fetch)
        partners = take(x1), take(x2)
        lam, mixed = self._draw_share(y, y_partner, mixed, g, x1.device)
        return tuple(self._combine(x, y, p, y_partner, mixed, g, lam=lam, input_mode=mode,
                                   parts=parts)
                     for x, p, mode in zip((x1, x2), partners, modes, strict=True))

    def _partners(self, x: Tensor, y: Tensor, index: Tensor | None,
                  synthetic: Tensor | None, g: torch.Generator | None,
                  fetch: Callable[[Tensor], Tensor] | None):
        """Draw the batch's partners: ``(take, y_partner, mixed)``, where ``take(view)`` gives
        the partners' inputs for a view of the batch (a batch partner is taken from the view
        itself; a partner by dataset index is fetched, once per call) and ``mixed`` is the
        mask of slots to mix (None: all)."""
        mixed = synthetic
        if self.pool is not None:
            pool = self.pool
            if fetch is None and pool.inputs is None:
                raise ParameterError("pool", "a fitted class pool (call "
                                     "mixer.pool.fit(labels, inputs=inputs))", pool)
            partner = pool.partners(x.shape[0], g)
            if fetch is None:
                inputs = pool.inputs
                fetch = lambda idx: inputs[idx.to(inputs.device)]  # noqa: E731
            y_partner = pool.labels[partner.to(pool.labels.device)].to(y.device)
            return (lambda v: fetch(partner).to(device=v.device, dtype=v.dtype)), y_partner, \
                mixed
        if self.partner == "batch":
            counts = self._counts(y, y, x.device)
            weight = counts[y].double().clamp_min(1) ** -self.partner_q
            drawn = torch.multinomial(weight, x.shape[0], replacement=True, generator=g)
            return (lambda v: v[drawn]), y[drawn], mixed
        if not self.uses_neighbours:
            perm = torch.randperm(x.shape[0], generator=g, device=x.device)
            return (lambda v: v[perm]), y[perm], mixed
        if index is None:
            raise ParameterError("index", f"the batch's dataset indices (partner "
                                 f"{self.partner!r} looks up neighbours)", None)
        table = self.neighbours
        partner = table.partners(index, g)
        if fetch is None:
            if table.inputs is None:
                raise ParameterError("neighbours", "a fitted table (call "
                                     "mixer.neighbours.fit(inputs, labels))", table)
            fetch = table.inputs.__getitem__
        alone = partner == index  # no neighbour at all: copy only
        mixed = ~alone if mixed is None else mixed & ~alone
        return (lambda v: fetch(partner).to(v.dtype)), table.labels[partner], mixed

    def _draw_lam(self, batch: int, generator: torch.Generator | None,
                  device: torch.device) -> Tensor:
        shape = (batch,) if self.lam_per == "example" else (1,)
        if self.lam == "uniform":
            lam = torch.rand(shape, generator=generator, device=device)
        else:
            lam = sample_beta(self.alpha, shape, generator=_generator(generator, device),
                              device=device, beta=self.beta)
        return lam.expand(batch)

    def _unimix_lam(self, y: Tensor, y_partner: Tensor, generator: torch.Generator | None,
                    device: torch.device) -> Tensor:
        """The partner's share under UniMix's factor: the anchor keeps
        ``n_partner / (n_anchor + n_partner) + Beta(alpha, alpha)``, wrapped into [0, 1]."""
        counts = self._counts(y, y_partner, device)
        n_anchor, n_partner = counts[y], counts[y_partner]
        b = sample_beta(self.alpha, (y.shape[0],), generator=_generator(generator, device),
                        device=device)
        keep = n_partner / (n_anchor + n_partner) + b
        keep = torch.where(keep > 1, keep - 1, keep)
        return 1 - keep

    def _unmixed(self, y: Tensor, device: torch.device, parts: bool) -> Tensor:
        """One-hot targets, or with ``parts`` the same as the anchors' part beside a
        partners' part of zeros."""
        target = self._one_hot(y, device)
        return torch.stack([target, torch.zeros_like(target)]) if parts else target

    def _one_hot(self, y: Tensor, device: torch.device) -> Tensor:
        """Unmixed targets, as wide as mixed ones would be."""
        if self.class_counts is not None:
            width = self.class_counts.shape[0]
        else:
            width = self.num_classes or int(y.max()) + 1
        target = torch.zeros(y.shape[0], width, dtype=torch.float32, device=device)
        return target.scatter_(1, y.unsqueeze(1), 1.0)

    def _counts(self, y: Tensor, y_partner: Tensor, device: torch.device) -> Tensor:
        if self.class_counts is not None:
            return self.class_counts.to(device)
        if LABEL_RULES.meta(self.rule).get("needs_counts", True):
            raise ParameterError("class_counts", f"the training class counts (the "
                                 f"{self.rule!r} rule reads them)", None)
        c = self.num_classes or int(torch.maximum(y.max(), y_partner.max())) + 1
        return torch.ones(c, device=device)

    def _draw_share(self, y: Tensor, y_partner: Tensor, mixed: Tensor | None,
                    generator: torch.Generator | None, device: torch.device
                    ) -> tuple[Tensor, Tensor | None]:
        """The partners' shares ``lam`` (0 where a slot is not mixed) and the mask of mixed
        slots (None: all), ``prob`` applied."""
        batch = y.shape[0]
        if self.lam == "unimix":
            lam = self._unimix_lam(y, y_partner, generator, device)
        else:
            lam = self._draw_lam(batch, generator, device)
        if self.other_class_scale != 1:
            lam = torch.where(y_partner.to(device) != y, lam * self.other_class_scale, lam)
        if self.prob < 1:  # drawn only then: the random stream of prob 1 is unchanged
            draws = batch if self.lam_per == "example" else 1
            on = (torch.rand(draws, generator=generator, device=device) < self.prob)
            mixed = on.expand(batch) if mixed is None else mixed & on
        if mixed is not None:
            lam = torch.where(mixed, lam, 0.0)
        return lam, mixed

    def _combine(
        self,
        x: Tensor,
        y: Tensor,
        x_partner: Tensor,
        y_partner: Tensor,
        mixed: Tensor | None,
        generator: torch.Generator | None,
        *,
        lam: Tensor | None = None,
        input_mode: str | None = None,
        parts: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Mix ``x`` with its partners: the shares drawn here unless ``lam`` is given (with
        ``mixed`` then already applied), in ``input_mode`` (default the mixer's); with
        ``parts`` the targets split by source (:meth:`forward`)."""
        batch = x.shape[0]
        if lam is None:
            lam, mixed = self._draw_share(y, y_partner, mixed, generator, x.device)
        mode = input_mode or self.input_mode
        if mode != "interpolate" and x.ndim != 4:
            raise ParameterError("input_mode", "'interpolate' for inputs that are not images",
                                 mode)
        if mode == "cutmix":
            x_mix, lam = paste_boxes(x, x_partner, lam, self.lam_per == "batch", generator)
        elif mode == "either":
            pasted, area = paste_boxes(x, x_partner, lam, self.lam_per == "batch", generator)
            paste = torch.rand(batch, generator=generator, device=x.device) < self.cutmix_prob
            blended = torch.lerp(x, x_partner, lam.to(x.dtype).view(batch, 1, 1, 1))
            x_mix = torch.where(paste.view(batch, 1, 1, 1), pasted, blended)
            lam = torch.where(paste, area.to(lam.dtype), lam)
        else:
            weight = lam.to(x.dtype).view(batch, *([1] * (x.ndim - 1)))
            x_mix = torch.lerp(x, x_partner, weight)
        counts = self._counts(y, y_partner, x.device)
        w = _label_weight(self.rule, lam, counts[y], counts[y_partner], self.rule_params)
        if mixed is not None:
            w = torch.where(mixed, w, 1.0)
        w = w.to(torch.float32)
        # scatter rather than one_hot: one_hot checks label values, which waits for the device
        target = torch.zeros(batch, counts.shape[0], dtype=torch.float32, device=x.device)
        if parts:  # the same sums, kept apart
            split = torch.stack([target, target.clone()])
            split[0].scatter_add_(1, y.unsqueeze(1), w.unsqueeze(1))
            split[1].scatter_add_(1, y_partner.unsqueeze(1), (1.0 - w).unsqueeze(1))
            return x_mix, split
        target.scatter_add_(1, y.unsqueeze(1), w.unsqueeze(1))
        target.scatter_add_(1, y_partner.unsqueeze(1), (1.0 - w).unsqueeze(1))
        return x_mix, target


def _generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """``generator``, or torch's default one of ``device`` (the Beta sampler needs one)."""
    if generator is not None:
        return generator
    return torch.default_generator if device.type == "cpu" else \
        torch.cuda.default_generators[device.index or 0]


def _check_batch(x: Tensor, y: Tensor, idx: Tensor | None, mask: Tensor | None) -> None:
    """Shape checks only: nothing here waits for the device."""
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise ParameterError("x", "a float tensor of shape (B, ...)", getattr(x, "shape", x))
    batch = x.shape[0]
    if not isinstance(y, Tensor) or y.shape != (batch,):
        raise ParameterError("y", f"a label tensor of shape ({batch},)", getattr(y, "shape", y))
    if idx is not None and (not isinstance(idx, Tensor) or idx.shape != (batch,)):
        raise ParameterError(
            "index", f"an index tensor of shape ({batch},)", getattr(idx, "shape", idx)
        )
    if mask is not None and (
        not isinstance(mask, Tensor) or mask.shape != (batch,) or mask.dtype != torch.bool
    ):
        raise ParameterError(
            "synthetic", f"None or a bool tensor of shape ({batch},)", getattr(mask, "shape", mask)
        )
