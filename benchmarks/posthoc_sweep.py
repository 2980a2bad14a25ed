"""How far each finished run is from its best post-hoc re-balancing, on the test set.

For each run folder, restores ``checkpoints/last.pt`` (the final epoch) with its data and
prints its test top-1 for each tau, after one of two post-hoc rules: ``--rule la`` (the
default) subtracts ``tau * log(class count)`` from the logits (logit adjustment), ``--rule
norm`` divides each classifier row by its norm to the power tau (tau-normalisation, Kang et
al. 2020; tau 0 is the run as it is). Tau chosen this way is chosen on the test set: the
figures are a diagnostic (is the classifier under- or over-corrected, and by how much),
never a result to report as a run's accuracy; a run with ``dataset.validation`` chooses its
tau on validation instead.

Run: ``python benchmarks/posthoc_sweep.py RUN_DIR... [--data-root DATA] [--rule la|norm]
[--taus -0.25 0 0.5]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _machine import describe

from tailmix.pipeline.build import restore
from tailmix.pipeline.callbacks import tau_normalised
from tailmix.pipeline.steps import autocast, eval_batch_size, predict

TAUS = (-0.25, 0.0, 0.25, 0.5, 0.75, 1.0)
RULES = ("la", "norm")


def sweep(run: Path, taus: tuple[float, ...], data_root: str | None, *, rule: str = "la"
          ) -> dict[float, float]:
    """Test top-1 per tau under ``rule``. For ``la`` the formula is
    ``tailmix.losses.posthoc_adjust``'s, written out because that function accepts tau >= 0
    only and the sweep also looks below 0 (is tau 0 a peak from both sides?); log(n_c) and
    log(prior) differ by a constant, same argmax. ``norm`` is the run's own
    ``eval.tau_norm`` evaluation (:func:`~tailmix.pipeline.callbacks.tau_normalised`)."""
    r = restore(run / "checkpoints" / "last.pt", data_root=data_root, device="cpu")
    labels = r.data.test_labels

    def top1(logits: torch.Tensor) -> float:
        return round((logits.argmax(1) == labels).float().mean().item() * 100, 2)

    if rule == "norm":  # one pass for the features; only the head is applied per tau
        feats = predict(r.model, r.data.test_inputs, r.data.augment, device=r.device,
                        amp=r.amp, features=True,
                        batch_size=eval_batch_size(r.spec.eval["batch_size"], r.device))
        out = {}
        for tau in taus:
            with torch.no_grad(), tau_normalised(r.model, tau), autocast(r.device, r.amp):
                out[tau] = top1(r.model.head(feats).float())
        return out
    logits = r.logits(r.data.test_inputs)  # float32, no gradients
    log_prior = torch.tensor(r.data.class_counts, dtype=torch.float32).log()
    return {tau: top1(logits - tau * log_prior) for tau in taus}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--data-root", default=None)
    p.add_argument("--rule", choices=RULES, default="la",
                   help="la: logits - tau * log(n_c); norm: classifier rows / ||w_c|| ** tau")
    p.add_argument("--taus", nargs="+", type=float, default=list(TAUS))
    args = p.parse_args()
    print(describe())
    print(f"rule: {args.rule}")
    taus = tuple(args.taus)
    print("| run | " + " | ".join(f"tau {t:g}" for t in taus) + " |")
    print("|---|" + "---:|" * len(taus))
    for run in args.runs:
        top1 = sweep(run, taus, args.data_root, rule=args.rule)
        best = max(top1.values())
        cells = [f"**{v:.2f}**" if v == best else f"{v:.2f}" for v in top1.values()]
        print(f"| {run.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
