"""Does the DeepSMOTE classifier read "decoded by the autoencoder" as "minority class"?

Loads the finished DeepSMOTE run's last checkpoint and the autoencoder its synthetic images
came from (from the DeepSMOTE cache), then classifies: the real test set; the same test
images passed through the autoencoder; the synthetic training images; the real training
images. Prints per-class accuracy and the share of predictions per class for each, and
writes them as JSON.

    python scripts/deepsmote_domain_gap.py RUN_DIR [--out FILE.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tailmix.generative.deepsmote import ConvAutoencoder
from tailmix.io import write_json
from tailmix.pipeline.build import make_generative, restore


def _summary(logits: torch.Tensor, labels: torch.Tensor, c: int) -> dict:
    pred = logits.argmax(1).cpu()
    labels = labels.cpu()
    per_class = [float((pred[labels == k] == k).float().mean() * 100) if (labels == k).any()
                 else None for k in range(c)]
    shares = (torch.bincount(pred, minlength=c).double() / len(pred) * 100).tolist()
    return {"n": len(labels), "top1": float((pred == labels).float().mean() * 100),
            "per_class_accuracy": per_class, "predicted_share": shares}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    r = restore(args.run_dir / "checkpoints" / "last.pt", device="cpu")
    ds = make_generative(r.spec.composition.generative, counts=r.data.class_counts)
    stored = torch.load(ds.cache_path(r.data), map_location="cpu", weights_only=True)
    ae = ConvAutoencoder(input_shape=r.data.input_shape, latent_dim=ds.latent_dim,
                         width=ds.width)
    ae.load_state_dict(stored["autoencoder"])
    ae.eval()
    with torch.no_grad():
        recon = torch.cat([
            ae(r.data.test_inputs[s:s + 500].float() / 255).mul(255).round().clamp(0, 255)
            .to(torch.uint8) for s in range(0, len(r.data.test_inputs), 500)])
    c = r.data.num_classes
    out = {
        "classes": r.data.classes,
        "test_real": _summary(r.logits(r.data.test_inputs), r.data.test_labels, c),
        "test_through_autoencoder": _summary(r.logits(recon), r.data.test_labels, c),
        "train_synthetic": _summary(r.logits(stored["inputs"]), stored["labels"], c),
        "train_real": _summary(r.logits(r.data.train_inputs), r.data.train_labels, c),
    }
    for name, s in out.items():
        if name == "classes":
            continue
        print(f"{name:26s} n={s['n']:6d} top-1 {s['top1']:6.2f}")
        print("  per-class acc  ", " ".join(f"{v:5.1f}" for v in s["per_class_accuracy"]
                                           if v is not None))
        print("  predicted share", " ".join(f"{v:5.1f}" for v in s["predicted_share"]))
    if args.out:
        print(f"written to {write_json(args.out, out)}")


if __name__ == "__main__":
    main()
