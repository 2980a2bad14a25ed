"""A run's checkpoint files: reading one safely, the network it holds, and whether a run
may go on from it (its config's digest and what changed).

Everything here reads files and configs as plain data; it builds no run (that is
:mod:`tailmix.pipeline.build`, which reads its checkpoints through here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tailmix._validation import ParameterError
from tailmix.pipeline.config import ABSENT, RunSpec, flat_config, get_path, machine_keys

__all__ = ["RUN_IDENTITY", "changed_error", "check_resumable", "checkpoint_changes",
           "WEIGHTS", "checkpoint_network", "config_changes", "config_digest", "load_checkpoint",
           "with_weights",
           "weights_mismatch"]


#: The keys a checkpoint must hold (besides its network's weights, ``model``).
_CHECKPOINT_KEYS = ("model", "config", "epoch")


def load_checkpoint(path: str | Path, *, name: str = "checkpoint",
                    map_location: Any = "cpu") -> dict[str, Any]:
    """A tailmix checkpoint, loaded safely (``weights_only=True``).

    Raises
    ------
    ParameterError
        Naming ``name`` and the file: missing, empty, truncated or corrupted, holding
        Python objects beyond tensors and plain data (never unpickled), or a torch file that
        is not a tailmix checkpoint (a bare state dict, say).
    """
    from tailmix.io import load_torch

    what = "a tailmix checkpoint (a run's checkpoints/last.pt or best.pt)"
    ckpt = load_torch(path, name=name, what=what, map_location=map_location)
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor)
                                               for v in ckpt.values()):
        raise ParameterError(name, f"{what}, holding the network's weights with the run's "
                             "config and epoch", f"{path}: a bare state dict of "
                             f"{len(ckpt)} tensors")
    if not isinstance(ckpt, dict):
        raise ParameterError(name, what, f"{path}: a torch file holding a "
                             f"{type(ckpt).__name__}")
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    if missing or not isinstance(ckpt["config"], dict) or not isinstance(ckpt["model"], dict):
        raise ParameterError(name, f"{what}, holding " + ", ".join(_CHECKPOINT_KEYS),
                             f"{path}: a torch file without " + (", ".join(missing) or
                                                                 "a config mapping"))
    return ckpt


def weights_mismatch(model: nn.Module, state: Any) -> str | None:
    """Why ``state`` cannot be ``model``'s weights, in words (None: it can)."""
    if not isinstance(state, dict):
        return f"its weights are a {type(state).__name__}, not a state dict"
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and isinstance(state[k], torch.Tensor)
              and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return None

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    parts = ([f"{len(missing)} of the network's parameters missing ({few(missing)})"]
             if missing else [])
    parts += [f"{len(unexpected)} parameters the network has not ({few(unexpected)})"] \
        if unexpected else []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape ({k}: {tuple(state[k].shape)} in the "
                     f"file, {tuple(own[k].shape)} in the network)")
    return "weights of another network: " + "; ".join(parts)


def checkpoint_network(ckpt: dict[str, Any], *, num_classes: int, input_shape: tuple,
                       counts: list[int], model: nn.Module | None = None,
                       composition: dict[str, Any] | None = None, hint: str = "",
                       where: Any = "") -> nn.Module:
    """The network a checkpoint holds, with its weights (where it was built: the CPU).

    The built-in network its config names (``model.arch``, built without downloading
    weights), or ``model`` adapted to the checkpoint's classes when it was a user's own
    network (its config's ``model_class``). A cosine head reads its logits at the scale of
    the loss the run trained with (:func:`tailmix.pipeline.components.checkpoint_logit_scale`).
    ``composition``: the composition of a checkpoint that records none (an earlier
    version's); ``hint``: how to pass ``model``, for the error that asks for it.

    Raises
    ------
    ParameterError
        Naming ``model`` for a user's network that is missing, or given for a built-in
        one; naming ``checkpoint`` (``model`` for a user's network) for weights that are
        not those of the network.
    """
    from tailmix.models import adapt, build_model
    from tailmix.models.heads import logit_scale, set_logit_scale
    from tailmix.pipeline.components import checkpoint_logit_scale

    cfg = ckpt["config"]
    custom = cfg.get("model_class")
    saved = {"composition": composition, **cfg}
    head = (saved.get("composition") or {}).get("head")
    arch = (cfg.get("model") or {}).get("arch")
    if custom is not None:
        if model is None:
            raise ParameterError("model", f"the {custom} module this checkpoint was trained "
                                 f"with{hint}", None)
        net = adapt(model, num_classes=num_classes, input_shape=input_shape, head=head,
                    log=lambda _: None)
    elif model is not None:
        raise ParameterError("model", f"None: this checkpoint's network is the built-in "
                             f"{arch!r}", type(model).__name__)
    else:  # the weights come from the checkpoint, not a download
        net = build_model(arch, num_classes=num_classes, input_shape=input_shape, head=head,
                          pretrained=False)
    if logit_scale(net) is not None:  # the scale is not in the weights: the loss says it
        set_logit_scale(net, checkpoint_logit_scale(saved, counts=list(counts)))
    mismatch = weights_mismatch(net, ckpt["model"])
    if mismatch:
        raise ParameterError("model" if custom else "checkpoint",
                             f"the weights of the {custom or arch} network its config names",
                             f"{where}: {mismatch}")
    net.load_state_dict(ckpt["model"])
    return net


def changed_error(changes: dict[str, tuple[Any, Any]], out: Path) -> ParameterError:
    shown = "; ".join(f"{k}: {was!r} in the checkpoint, {now!r} now"
                      for k, (was, now) in list(changes.items())[:4])
    more = f" (and {len(changes) - 4} more)" if len(changes) > 4 else ""
    return ParameterError("resume", "the config the run was trained with (to go on with a "
                          "change, recorded in history.jsonl, pass --allow-changes, or "
                          "allow_changes=True in Python; or start a new run)",
                          f"{shown}{more} ({out})")


#: What identifies a run: a resumed run must agree with its checkpoint on each, also when
#: it is allowed other changes (the checkpoint would not be this run's otherwise).
RUN_IDENTITY = ("strategy", "train.seed", "model.arch", "model_class", "dataset.name",
                "dataset.profile", "dataset.ratio", "dataset.n_max", "dataset.counts",
                "dataset.data_seed", "dataset.validation")
# Recorded beside the config, not settings of it.
_RECORD_ONLY = ("composition", "class_counts", "model_class")


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run's config that decide what it computes, flat."""
    flat = flat_config({k: v for k, v in config.items() if k not in _RECORD_ONLY})
    machine = machine_keys()
    return {k: v for k, v in flat.items() if k not in machine}


def config_digest(config: dict[str, Any]) -> str:
    """The SHA-256 of a run config's settings (:func:`_settings`: neither the device nor
    the data's location): what a checkpoint records as ``config_sha256``, and what a
    resumed run must match."""
    import hashlib
    import json

    text = json.dumps(_settings(config), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def config_changes(was: dict[str, Any], now: dict[str, Any], *, older: bool = False
                   ) -> dict[str, tuple[Any, Any]]:
    """``{key: (was, now)}`` for every setting that differs between two run configs (a key
    one of them lacks counts as None there; ``older``: ``was`` was written by an earlier
    version, so the settings it lacks are not compared). A setting ``was`` lacks and
    ``now`` holds at its default is not a change either: a key added by a later version
    acts at its default as the run did without it, so an interrupted run resumes after an
    upgrade."""
    from tailmix.pipeline.config import default_config

    a, b = _settings(was), _settings(now)
    keys = a.keys() if older else a.keys() | b.keys()
    defaults = flat_config(default_config())
    return {k: (a.get(k), b.get(k)) for k in sorted(keys) if a.get(k) != b.get(k)
            and not (k not in a and k in defaults and b[k] == defaults[k])}


def checkpoint_changes(ckpt: dict[str, Any], config: dict[str, Any]
                       ) -> dict[str, tuple[Any, Any]]:
    """The settings of ``config`` that differ from the checkpoint's (none when its recorded
    ``config_sha256`` matches; a checkpoint without one is of an earlier version)."""
    digest = ckpt.get("config_sha256")
    if digest == config_digest(config):
        return {}
    return config_changes(ckpt["config"], config, older=digest is None)


def check_resumable(spec: RunSpec, ckpt: dict[str, Any], out: Path, *, path: Path,
                    history: list[dict[str, Any]], class_counts: list[int] | None = None,
                    model_class: str | None = None, allow_changes: bool = False
                    ) -> dict[str, tuple[Any, Any]]:
    """Refuse to resume ``spec`` from a run folder whose files disagree with it or with
    each other; return the settings this run changes (``{key: (was, now)}``, empty when
    none).

    The checkpoint's config, ``out/config.yaml`` (when there is one) and ``spec`` must
    agree on :data:`RUN_IDENTITY` (strategy, seed, architecture, dataset and its profile).
    Any other setting of ``spec`` that differs from the checkpoint's (its
    ``config_sha256``, :func:`config_digest`) is refused, naming the keys, unless
    ``allow_changes``; :func:`tailmix.pipeline.config.machine_keys` may differ. A run never
    has fewer epochs than its checkpoint. The checkpoint's class counts must be the data's, and
    ``history`` (``history.jsonl``) must hold epochs 1 to the checkpoint's (and at most
    the one after, whose checkpoint was not written yet).

    Raises
    ------
    ParameterError
        Naming ``resume`` and saying what differs, where.
    """
    import yaml

    epoch = ckpt["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise ParameterError("resume", "a checkpoint with the number of epochs it finished",
                             f"{path}: epoch {epoch!r}")
    if not isinstance(ckpt["config"], dict):
        raise ParameterError("resume", "a checkpoint holding its run's config",
                             f"{path}: config {type(ckpt['config']).__name__}")
    sources = {"the checkpoint": ckpt["config"]}
    saved = Path(out) / "config.yaml"
    if saved.is_file():
        try:
            sources["config.yaml"] = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ParameterError("resume", "a run folder whose config.yaml is valid YAML",
                                 f"{saved}: {str(e).splitlines()[0]}") from e
        if not isinstance(sources["config.yaml"], dict):
            raise ParameterError("resume", "a run folder whose config.yaml is a mapping",
                                 str(saved))
    sources["this run"] = {**spec.config, "model_class": model_class}
    for key in RUN_IDENTITY:
        # model_class is recorded for a user's network only; any other key a file lacks
        # (written by another version) cannot be compared.
        values = {where: (cfg.get(key) if key == "model_class" else get_path(cfg, key))
                  for where, cfg in sources.items()}
        values = {where: v for where, v in values.items() if v is not ABSENT}
        wanted = next(iter(values.values()))
        if any(value != wanted for value in values.values()):
            said = ", ".join(f"{w} {v!r}" for w, v in values.items())
            raise ParameterError("resume", f"a run folder whose checkpoint, config.yaml and "
                                 f"history agree with the run resumed ({key} differs)",
                                 f"{key}: {said} ({out})")
    if epoch > spec.epochs:
        raise ParameterError("resume", f"a run of at least the checkpoint's {epoch} epochs",
                             f"train.epochs: {spec.epochs} ({path})")
    changes = checkpoint_changes(ckpt, spec.config)
    if changes and not allow_changes:
        raise changed_error(changes, out)
    if class_counts is not None and ckpt.get("class_counts", sources["the checkpoint"].get(
            "class_counts")) not in (None, list(class_counts)):
        raise ParameterError("resume", "the data the run was trained on (the checkpoint's "
                             "class counts)", f"class counts {list(class_counts)}, the "
                             f"checkpoint {ckpt.get('class_counts')} ({path})")
    epochs = [h["epoch"] for h in history]
    if epochs[:epoch] != list(range(1, epoch + 1)) or epochs[epoch:] not in ([], [epoch + 1]):
        shown = (f"epochs {epochs[0]} to {epochs[-1]} ({len(epochs)} rows)" if epochs
                 else "no rows")
        raise ParameterError("resume", f"a history.jsonl holding epochs 1 to {epoch}, those "
                             "of the checkpoint", f"{Path(out) / 'history.jsonl'}: {shown}")
    return changes


#: Which weights of a checkpoint a tool reads: the network's own, or an average kept beside
#: it (:mod:`tailmix.averaging`).
WEIGHTS = ("model", "ema", "swa")


def with_weights(ckpt: dict[str, Any], weights: str = "model") -> dict[str, Any]:
    """``ckpt`` with the chosen weights as its ``model`` entry: its own (``"model"``), or
    those of the run's ``"ema"`` or ``"swa"`` average.

    Raises
    ------
    ParameterError
        Naming ``weights`` for an unknown name, or an average the run did not keep.
    """
    from tailmix._validation import check_choice

    check_choice("weights", weights, WEIGHTS)
    if weights == "model":
        return ckpt
    saved = (ckpt.get("averages") or {}).get(weights)
    if saved is None or saved.get("weights") is None:
        kept = sorted(k for k, v in (ckpt.get("averages") or {}).items() if v.get("weights"))
        expected = ("'model'" + "".join(f" or {k!r}" for k in kept) + f" (this checkpoint "
                    f"holds no {weights} average: the run had no {weights} config section, "
                    f"or stopped before its average began)")
        raise ParameterError("weights", expected, weights)
    return {**ckpt, "model": saved["weights"]}
