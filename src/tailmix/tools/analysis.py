"""Post-hoc analysis of a finished run folder."""

from __future__ import annotations

from pathlib import Path

from tailmix._validation import ParameterError, check_choice
from tailmix.io import write_json


def margins_for_run(run_dir: str | Path, *, checkpoint: str = "last",
                    device: str = "auto") -> Path:
    """Compute per-class margins of a run's checkpoint and write ``margins.json``."""
    from tailmix.margins import margin_report
    from tailmix.pipeline.build import restore

    run_dir = Path(run_dir)
    check_choice("checkpoint", checkpoint, ("last", "best"))
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        raise ParameterError("run_dir", f"a run folder holding checkpoints/{checkpoint}.pt",
                             str(run_dir))
    r = restore(path, device=device)
    report = margin_report(r.logits(r.data.train_inputs), r.data.train_labels,
                           r.logits(r.data.test_inputs), r.data.test_labels,
                           r.data.class_counts)
    report["checkpoint"] = checkpoint
    report["epoch"] = r.epoch
    return write_json(run_dir / "margins.json", report)


def neighbour_balance(config: dict) -> dict:
    """How a kNN mixer's partners redistribute the labels, before any training.

    Builds the config's dataset and mixer, searches the neighbours exactly as training
    would (input space), and returns per class: training count, the share of neighbour
    slots in the class itself, the other class most of them fall in, and the expected
    label mass one epoch of the mixer gives the class (:func:`~tailmix.mixing.
    oversample_label_mass`). For SMOTE every class ends at ``n_max``; for soft SMOTE a
    tail class whose neighbours are head examples ends well short of it.

    Raises
    ------
    ParameterError
        When the strategy has no kNN mixer with anchors ``"oversample"`` and rule ``"hard"``
        or ``"soft"``, or its neighbours live in feature space (they need a trained network).
    """
    import torch

    from tailmix.mixing import neighbour_class_share, oversample_label_mass
    from tailmix.pipeline.build import load_data, make_mixer
    from tailmix.pipeline.config import resolve

    spec = resolve(config)
    data = load_data(spec)
    part = spec.composition.mixer
    mixer = None if part is None else make_mixer(part, counts=data.class_counts)
    wanted = "a strategy whose mixer oversamples with kNN partners (SMOTE, soft-SMOTE)"
    if (mixer is None or not mixer.uses_neighbours or mixer.anchors != "oversample"
            or mixer.rule not in ("hard", "soft")):
        raise ParameterError("strategy", wanted, spec.strategy)
    if mixer.space != "input":
        raise ParameterError("mixer.space", "'input' (feature-space neighbours need a "
                             "trained network)", mixer.space)

    labels = data.train_labels
    c = data.num_classes
    table = mixer.neighbours.fit(data.train_inputs, labels)  # as training searches
    share = neighbour_class_share(table.indices, labels, c)
    counts = torch.tensor(data.class_counts)
    mass = oversample_label_mass(counts, share, rule=mixer.rule)
    others = share.clone().fill_diagonal_(-1.0)
    rows = []
    for k in range(c):
        top = int(others[k].argmax())
        rows.append({
            "class": data.classes[k], "count": int(counts[k]),
            "own_share": float(share[k, k]),
            "top_other": data.classes[top], "top_other_share": float(share[k, top]),
            "label_mass": float(mass[k]),
        })
    return {"strategy": spec.strategy, "partner": mixer.partner, "k": mixer.k,
            "rule": mixer.rule, "n_max": int(counts.max()), "classes": rows}
