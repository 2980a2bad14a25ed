"""The form every dataset reader returns before profiles and devices are applied."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RawDataset:
    """A dataset as read from its source, balanced or not, on the host.

    Attributes
    ----------
    train_x, test_x:
        ``uint8`` arrays of shape (N, C, H, W) for images, or ``float32`` arrays of shape
        (N, D) for tabular feature vectors.
    train_y, test_y:
        ``int64`` arrays of shape (N,) with labels in ``0..len(classes) - 1``.
    classes:
        Class names, index = label.
    name:
        A short name for reports (``"cifar10"``, ``"digits"``, ...).
    hflip:
        Whether horizontal flips are a sensible augmentation (False for digits).
    skipped:
        Image files left out as unusable (``bad_images: skip``), each as its path and why.
    test_split:
        False for data that comes without a test set on purpose (:func:`~tailmix.data.
        from_arrays` without test arrays): its test split is empty and nothing is evaluated
        on it. A source that finds no test images is refused instead.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    name: str = "dataset"
    hflip: bool = True
    skipped: list[str] = field(default_factory=list)
    test_split: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_image(self) -> bool:
        return self.train_x.ndim == 4
