"""Post-hoc analysis of a finished run folder."""

from __future__ import annotations

from pathlib import Path

from tailmix._validation import ParameterError, check_choice
from tailmix.io import write_json


def margins_for_run(run_dir: str | Path, *, checkpoint: str = "last",
                    device: str = "auto") -> Path:
    """Compute per-class margins of a run's checkpoint and write ``margins.json``."""
    from tailmix.engine import restore
    from tailmix.margins import margin_report

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
