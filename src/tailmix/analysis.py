"""Post-hoc analysis of a finished run folder."""

from __future__ import annotations

from pathlib import Path

import torch

from tailmix._validation import ParameterError, check_choice
from tailmix.io import write_json


def margins_for_run(run_dir: str | Path, *, checkpoint: str = "last",
                    device: str = "auto") -> Path:
    """Compute per-class margins of a run's checkpoint and write ``margins.json``."""
    from tailmix.engine import autocast_dtype, load_data, predict, resolve_device
    from tailmix.margins import margin_report
    from tailmix.models import build_model

    run_dir = Path(run_dir)
    check_choice("checkpoint", checkpoint, ("last", "best"))
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        raise ParameterError("run_dir", f"a run folder holding checkpoints/{checkpoint}.pt",
                             str(run_dir))
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    from tailmix.config import resolve_config

    cfg = resolve_config({k: v for k, v in ckpt["config"].items()
                          if k not in ("composition", "class_counts")})
    dev = resolve_device(device)
    data = load_data(cfg).to(dev)
    model = build_model(cfg["model"]["arch"], num_classes=data.num_classes,
                        input_shape=data.input_shape,
                        head=ckpt["config"]["composition"]["head"]).to(dev)
    model.load_state_dict(ckpt["model"])
    amp = autocast_dtype(cfg["train"]["precision"], dev, cfg["model"]["arch"])
    kw = dict(batch_size=cfg["eval"]["batch_size"], device=dev, amp=amp)
    tr = predict(model, data.train_inputs, data.augment, **kw)
    te = predict(model, data.test_inputs, data.augment, **kw)
    report = margin_report(tr, data.train_labels, te, data.test_labels, data.class_counts)
    report["checkpoint"] = checkpoint
    report["epoch"] = int(ckpt["epoch"])
    return write_json(run_dir / "margins.json", report)
