"""A run's components from their config mappings: the anchor sampler, the mixer, the loss,
the class-weight schedule and the generative oversampler, each built by its own factory
(:mod:`tailmix.samplers`, :mod:`tailmix.mixing`, :mod:`tailmix.losses`,
:mod:`tailmix.weights`, :mod:`tailmix.generative`).

Resolving a config (:func:`tailmix.pipeline.config.resolve`) builds each once on probe class counts,
so that a bad parameter fails with its key before any data loads; :mod:`tailmix.pipeline.build`
builds them for the run. Neither imports the other through here.
"""

from __future__ import annotations

from typing import Any

import torch

from tailmix._validation import ParameterError

# ``spec`` below is a resolved :class:`tailmix.pipeline.config.RunSpec` (not imported: the config
# imports this module).
RunSpec = Any

__all__ = ["check_components", "check_head", "checkpoint_logit_scale", "make_generative",
           "make_loss", "make_mixer", "make_sampler", "make_weights", "resolve_composition"]


def _probe_labels(counts: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def _own_params(part: dict[str, Any], key: str, reserved: tuple[str, ...],
                identity: str = "name") -> dict[str, Any]:
    """A component mapping without its ``name``, refusing the keys the builder sets."""
    if not isinstance(part, dict) or part.get(identity) is None:
        raise ParameterError(f"{key}.{identity}", f"the {key}'s registered {identity}", part)
    for k in part:
        if k in reserved:
            raise ParameterError(f"{key}.{k}", "not set in a config (tailmix fills it from "
                                 "the data and the run)", part[k])
    return {k: v for k, v in part.items() if k != identity}


def resolve_composition(comp: dict[str, Any], run: Any, notes: list[str]) -> None:
    """Turn the composition's shares of the run into epochs, each component by its own
    module's rule (``weights.start_epoch``, the mixer's epochs, a generative oversampler's)."""
    from tailmix.generative import GENERATIVE
    from tailmix.mixing.mixer import resolve_params as resolve_mixer
    from tailmix.weights import resolve_params

    train = run.train
    resolve_params(comp["weights"], epochs=train.epochs, milestones=train.milestone_epochs,
                   lr_factors=train.lr_factors, notes=notes)
    if comp["weights"].get("normalise") == "sources" and train.accumulate > 1:
        raise ParameterError("train.accumulate", "1 with weights.normalise 'sources' (each "
                             "source's normaliser spans the whole batch, so micro-batches "
                             "cannot add up to it)", train.accumulate)
    g = comp["generative"]
    if comp["weights"].get("normalise") == "sources" and isinstance(comp["mixer"], dict) \
            and isinstance(g, dict) and g.get("name") == "m2m":
        raise ParameterError("weights.normalise", "'mass' or 'rows' with generative m2m and "
                             "a mixer (M2m changes the mixed batches, whose targets would "
                             "no longer be split by source): set --set "
                             "weights.normalise=mass", "sources")
    if isinstance(comp["mixer"], dict):
        resolve_mixer(comp["mixer"], train.epochs)
    if isinstance(g, dict) and g.get("name") in GENERATIVE:
        GENERATIVE[g["name"]].resolve_params(g, train.epochs, notes)


def make_sampler(part: dict[str, Any], *, counts: list[int] | None, spec: RunSpec,
                 labels: torch.Tensor | None = None, rank: int = 0, world_size: int = 1):
    """The composition's anchor sampler over ``labels`` (CPU); ``counts`` None: from the
    labels (a dataset enlarged by synthetic examples)."""
    from tailmix.samplers import build_sampler

    params = _own_params(part, "sampler", ("labels", "class_counts", "rank", "world_size",
                                           "seed"))
    for k in params:
        if k != "num_samples":
            raise ParameterError(f"sampler.{k}", "a sampler parameter (num_samples)", k)
    params["name"] = part["name"]
    labels = _probe_labels(counts) if labels is None else labels
    return build_sampler(params.pop("name"), labels=labels, class_counts=counts, rank=rank,
                         world_size=world_size, seed=spec.seed, **params)


def make_mixer(part: dict[str, Any], *, counts: list[int], spec: RunSpec | None = None):
    """A :class:`tailmix.mixing.Mixer` from a config's ``mixer`` mapping: a ``preset`` and
    knobs; the label rule's parameters may be spelled flat (``q: -0.5``)."""
    from tailmix.mixing import Mixer

    for k in ("class_counts", "num_classes", "neighbours", "generator"):
        if k in part:
            raise ParameterError(f"mixer.{k}", "not set in a config (tailmix fills it from "
                                 "the data and the run)", part[k])
    params = dict(part)
    preset = params.pop("preset", None)
    flat = {k: params.pop(k) for k in ("K", "tau", "q") if k in params}
    if flat:
        params["rule_params"] = {**(params.get("rule_params") or {}), **flat}
    given = list(params)
    params["class_counts"] = torch.tensor(counts, dtype=torch.float32)
    mixer = Mixer.preset(preset, **params) if preset else Mixer(**params)
    for name, needs in mixer.unused(given):
        raise ParameterError(f"mixer.{name}", f"left out unless {needs} (this mixer"
                             f"{f' ({preset})' if preset else ''} does not use it)",
                             part[name])
    return mixer


def make_loss(part: dict[str, Any], *, counts: list[int], spec: RunSpec | None = None):
    from tailmix.losses import build_loss

    params = _own_params(part, "loss", ("class_counts",))
    return build_loss(part["name"], class_counts=counts, **params)


def make_weights(part: dict[str, Any], *, counts: list[int], spec: RunSpec):
    from tailmix.weights import build_weight_schedule

    params = _own_params(part, "weights", ("class_counts", "epochs"))
    return build_weight_schedule(part["name"], class_counts=counts, epochs=spec.epochs,
                                 **params)


def check_head(comp: Any, crt_epochs: int = 0) -> None:
    """A loss that scales cosine logits needs the cosine head; cRT (whose loss reads the
    outputs as logits, unscaled) needs a linear one."""
    from tailmix.registry import LOSSES

    if getattr(LOSSES.get(comp.loss["name"], "loss.name"), "requires_cosine_head", False) \
            and comp.head != "cosine":
        raise ParameterError("model.head", f"'cosine' for the {comp.loss['name']!r} loss "
                             "(it scales cosine logits)", comp.head)
    if comp.head != "cosine":
        return
    if crt_epochs > 0:
        raise ParameterError("crt.epochs", "0 with a cosine head (cRT re-trains the head with "
                             "a loss that reads its outputs as logits, so its cosines "
                             "unscaled; use a linear head)", crt_epochs)
    if (comp.generative or {}).get("name") == "m2m":
        raise ParameterError("model.head", "a linear head for M2m (its classifier's softmax "
                             "over bare cosines is at most 0.88, under the default acceptance "
                             "threshold 0.9: no translation would be kept)", comp.head)


def checkpoint_logit_scale(config: dict[str, Any], *, counts: list[int]) -> float:
    """The scale a checkpoint's cosine head is read at: its loss's
    (:attr:`SoftTargetLoss.logit_scale`; 1 for a loss without one), or 1 when cRT (which
    reads the outputs as logits; allowed on a cosine head by older versions) trained the
    head last."""
    if ((config.get("crt") or {}).get("epochs") or 0) > 0:
        return 1.0
    loss = make_loss(config["composition"]["loss"], counts=counts)
    return float(getattr(loss, "logit_scale", 1.0))


def make_generative(part: dict[str, Any], *, counts: list[int]):
    """M2m or DeepSMOTE from a config's ``generative`` mapping (epochs already resolved)."""
    from tailmix._validation import check_choice, check_keywords
    from tailmix.generative import GENERATIVE

    if not isinstance(part, dict) or "name" not in part:
        raise ParameterError("generative", "a mapping with a 'name' ('m2m' or 'deepsmote')",
                             part)
    name = check_choice("generative.name", part["name"], GENERATIVE)
    kind = GENERATIVE[name]
    params = {k: v for k, v in part.items() if k != "name"}
    check_keywords(params, kind, what=f"the {name!r} oversampler", reserved=("class_counts",),
                   keyword_only=True, named_only=True, prefix="generative.")
    try:
        return kind(class_counts=counts, **params) if name == "m2m" else kind(**params)
    except ParameterError as e:
        raise ParameterError(f"generative.{e.name}", e.expected, e.got) from e


def check_components(spec: RunSpec, counts: list[int]) -> None:
    """Build every component of ``spec`` once on ``counts`` (no data): errors surface here
    with the config key they belong to."""
    comp = spec.composition
    for key, make in (("sampler", make_sampler),
                      ("mixer", make_mixer), ("loss", make_loss),
                      ("weights", make_weights)):
        part = getattr(comp, key)
        if part is None:
            continue
        try:
            make(part, counts=counts, spec=spec)
        except ParameterError as e:
            name = e.name if e.name.startswith(f"{key}.") else f"{key}.{e.name}"
            raise ParameterError(name, e.expected, e.got) from e
        except TypeError as e:  # a parameter the component's constructor does not take
            raise ParameterError(key, "parameters the component takes", str(e)) from e
    check_head(comp, spec.config["crt"]["epochs"])
    if comp.generative is not None:
        make_generative(comp.generative, counts=counts)
