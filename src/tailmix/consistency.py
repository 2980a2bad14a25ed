"""A two-view consistency term (SimSiam-style, Chen and He, 2021) beside the classifier.

Two augmentations of the batch's anchor images go through the network's ``features``; a
small projector ``g`` and predictor ``h`` map them, and the term pulls each view's
prediction toward the other view's projection, held fixed::

    z1, z2 = g(f(v1)), g(f(v2));   p1, p2 = h(z1), h(z2)
    term = weight * (D(p1, stop(z2)) + D(p2, stop(z1))) / 2,   D(p, z) = -cos(p, z)

The term is added to the step's loss (:class:`tailmix.pipeline.steps.MixStep`, ``consistency=``);
the projector and predictor are trained with the network (their own parameter group)
and saved in the step's state, not in the network, so a trained network predicts and
exports without them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from tailmix._validation import ParameterError, check_choice, check_number
from tailmix.pipeline.sections import Assembly, Section, Sections, section

__all__ = ["VIEWS", "ConsistencySection", "TwoViewTerm", "negative_cosine"]

#: What the term compares: two augmentations of the batch, or two mixings of it.
VIEWS = ("augmented", "mixed")


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """``-mean_i cos(p_i, z_i)``; ``z`` is not differentiated (stop-gradient)."""
    return -(F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(1).mean()


class TwoViewTerm(nn.Module):
    """The symmetric SimSiam term on features of two views.

    Parameters
    ----------
    feature_dim : int
        Width of the network's features.
    dim : int, default 128
        Width of the projection; the predictor's bottleneck is ``dim // 4``.
    weight : float, default 1.0
        Factor of the term in the step's loss.

    Examples
    --------
    >>> import torch
    >>> term = TwoViewTerm(8, dim=16)
    >>> value = term(torch.randn(4, 8), torch.randn(4, 8))
    >>> value.shape, bool(-1.0 <= value <= 1.0)
    (torch.Size([]), True)
    """

    def __init__(self, feature_dim: int, *, dim: int = 128, weight: float = 1.0):
        super().__init__()
        feature_dim = check_number("feature_dim", feature_dim, low=1, integer=True)
        dim = check_number("consistency.dim", dim, low=4, integer=True)
        self.weight = check_number("consistency.weight", weight, low=0, low_open=True)
        self.projector = nn.Sequential(
            nn.Linear(feature_dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim))
        hidden = dim // 4
        self.predictor = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, dim))

    def forward(self, f1: Tensor, f2: Tensor) -> Tensor:
        z1, z2 = self.projector(f1), self.projector(f2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return self.weight * 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))


@section("consistency")
@dataclass
class ConsistencySection(Section):
    """The ``consistency`` config section: a :class:`TwoViewTerm` of factor ``weight``
    (null: none) and projection width ``dim``, trained with the network, between two
    augmentations of the batch (``views: augmented``) or two mixings of it with the same
    partners and share, blended and pasted, both classified (``views: mixed``, GLMC's
    global and local views; needs a mixer)."""

    weight: float | None = None
    dim: int = 128
    views: str = "augmented"

    ACTS_ONLY = {key: ("consistency.weight", lambda s: s.weight is not None)
                 for key in ("dim", "views")}

    def check(self, run: Sections) -> None:
        if self.weight is not None:
            check_number("consistency.weight", self.weight, low=0, low_open=True)
        check_number("consistency.dim", self.dim, low=4, integer=True)
        check_choice("consistency.views", self.views, VIEWS)

    def contribute(self, run: Assembly) -> None:
        """The term, sized to the network's features, in the step and the optimiser."""
        if self.weight is None:
            return
        if not run.data.is_image:
            raise ParameterError("consistency.weight", "null for inputs that are not images "
                                 "(they are not augmented: the two views would be the same)",
                                 self.weight)
        if run.world_size > 1:
            raise ParameterError("consistency.weight", "null with several processes (the "
                                 "views' feature pass runs outside DDP)", self.weight)
        from tailmix.pipeline.callbacks import classifier_weight

        width = classifier_weight(run.network).shape[1]
        term = TwoViewTerm(width, dim=self.dim, weight=self.weight).to(run.device)
        mixer = run.step_args.get("mixer")
        if self.views == "mixed" and mixer is None:
            raise ParameterError("consistency.views", "'augmented' without a mixer (mixed "
                                 "views are two mixings of the batch)", self.views)
        if self.views == "mixed" and mixer.input_mode != "interpolate":
            raise ParameterError("mixer.input_mode", "'interpolate' with consistency.views: "
                                 "mixed (its two views are one blended and one pasted)",
                                 mixer.input_mode)
        run.add_param_group(list(term.parameters()))
        run.step_args["consistency"] = term
        run.step_args["consistency_views"] = self.views
