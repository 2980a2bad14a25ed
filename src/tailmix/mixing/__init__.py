"""The mixing family: SMOTE, soft SMOTE, Mixup, Remix and MAMix as settings of one mixer."""

from tailmix.mixing.label_rules import LABEL_RULES, RULE_DEFAULTS, label_weight, resolve_rule_params
from tailmix.mixing.mixer import MIN_ALPHA, PRESETS, Mixer, NeighbourTable, sample_beta
from tailmix.mixing.neighbours import knn_indices, neighbour_class_share, oversample_label_mass

__all__ = [
    "LABEL_RULES",
    "MIN_ALPHA",
    "PRESETS",
    "RULE_DEFAULTS",
    "Mixer",
    "NeighbourTable",
    "knn_indices",
    "label_weight",
    "neighbour_class_share",
    "oversample_label_mass",
    "resolve_rule_params",
    "sample_beta",
]
