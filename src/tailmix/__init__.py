"""tailmix: deep imbalanced classification on PyTorch.

SMOTE, soft SMOTE, Mixup, Remix and margin-aware Mixup (MAMix) as one augmentation family,
composed with losses, class-weight schedules and samplers into named strategies.
"""

__version__ = "0.1.0"
