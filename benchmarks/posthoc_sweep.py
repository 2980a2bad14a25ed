"""How far each finished run is from its best post-hoc logit adjustment, on the test set.

For each run folder, restores ``checkpoints/last.pt`` (the final epoch) with its data and
prints its test top-1 after subtracting ``tau * log(class count)`` from the logits, for each
tau. Tau chosen this way is chosen on the test set: the figures are a diagnostic (is the
classifier under- or over-corrected, and by how much), never a result to report as a
run's accuracy; a run with ``dataset.validation`` chooses its tau on validation instead.

Run: ``python benchmarks/posthoc_sweep.py RUN_DIR... [--data-root DATA] [--taus -0.25 0 0.5]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _machine import describe

from tailmix.build import restore

TAUS = (-0.25, 0.0, 0.25, 0.5, 0.75, 1.0)


def sweep(run: Path, taus: tuple[float, ...], data_root: str | None) -> dict[float, float]:
    """Test top-1 per tau. The formula is ``tailmix.losses.posthoc_adjust``'s, written out
    because that function accepts tau >= 0 only and the sweep also looks below 0 (is tau 0
    a peak from both sides?); log(n_c) and log(prior) differ by a constant, same argmax."""
    r = restore(run / "checkpoints" / "last.pt", data_root=data_root, device="cpu")
    logits = r.logits(r.data.test_inputs)  # float32, no gradients
    log_prior = torch.tensor(r.data.class_counts, dtype=torch.float32).log()
    labels = r.data.test_labels
    return {tau: round(((logits - tau * log_prior).argmax(1) == labels).float().mean().item()
                       * 100, 2) for tau in taus}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--data-root", default=None)
    p.add_argument("--taus", nargs="+", type=float, default=list(TAUS))
    args = p.parse_args()
    print(describe())
    taus = tuple(args.taus)
    print("| run | " + " | ".join(f"tau {t:g}" for t in taus) + " |")
    print("|---|" + "---:|" * len(taus))
    for run in args.runs:
        top1 = sweep(run, taus, args.data_root)
        best = max(top1.values())
        cells = [f"**{v:.2f}**" if v == best else f"{v:.2f}" for v in top1.values()]
        print(f"| {run.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
