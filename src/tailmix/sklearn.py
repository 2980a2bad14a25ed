"""tailmix as a scikit-learn classifier.

:class:`TailmixClassifier` trains one of tailmix's strategies on in-memory arrays - feature
vectors ``(N, D)`` or ``uint8`` images ``(N, C, H, W)`` - through the same loop as
``tailmix train``, and then predicts like any scikit-learn classifier: it fits in a
``Pipeline``, ``GridSearchCV`` or ``cross_val_score``, clones, pickles, and passes every
one of scikit-learn's estimator checks, on one thread or several.

>>> from sklearn.datasets import make_classification
>>> X, y = make_classification(n_samples=60, weights=[0.85], random_state=0)
>>> TailmixClassifier(epochs=2, batch_size=30).fit(X, y).predict_proba(X[:2]).shape
(2, 2)
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

try:
    from sklearn.utils.validation import validate_data
except ImportError as error:  # scikit-learn < 1.6
    raise ImportError("tailmix.sklearn needs scikit-learn 1.6 or later (estimator tags and "
                      "validate_data); upgrade it with pip install -U scikit-learn") from error

from tailmix._validation import ParameterError, check_number
from tailmix.pipeline.config import ABSENT, get_path

__all__ = ["TailmixClassifier"]

# Config keys the constructor's parameters fill, named as the user spelled them when the
# ``config`` mapping does not set them itself.
_PARAM_OF_KEY = {"model.arch": "arch", "train.device": "device", "strategy": "strategy"}
# The network predicts in chunks of exactly this many rows, the last one padded with zeros,
# so that every row goes through products of one shape whatever the number of rows given:
# matrix-product kernels choose their blocking and threading by shape, and a row's logits
# could otherwise move in the last bit with the size of the batch it came in.
_PREDICT_CHUNK = 64
_SEED_LIMIT = 2**31 - 1


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (grid searches pass ``np.int64``)."""
    return value.item() if isinstance(value, np.generic) else value


def _is_images(X: Any) -> bool:
    """Whether ``X`` holds ``uint8`` images: ``(N, C, H, W)``, or ``(N, H, W)`` for one
    channel."""
    return isinstance(X, np.ndarray) and X.dtype == np.uint8 and X.ndim in (3, 4)


def _refuse_other_arrays(X: Any) -> None:
    """An array of more than two dimensions that is not ``uint8`` images is a mistake
    worth naming (scikit-learn's own message would only say it is not 2-D)."""
    if isinstance(X, np.ndarray) and X.ndim > 2 and not _is_images(X):
        raise ParameterError("X", "uint8 images (N, C, H, W) or (N, H, W), or a 2-D array "
                             "of feature vectors", f"a {X.ndim}-D array of {X.dtype}")


def _quiet(message: str) -> None:
    """A log that drops its messages (``verbose=False``)."""


def _kept_rng() -> Any:
    """A context that restores torch's global random state afterwards: building a run
    seeds it for the network's initial weights, which should not leak into the caller."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    return torch.random.fork_rng(devices=devices)




def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class TailmixClassifier(ClassifierMixin, BaseEstimator):
    """A tailmix strategy trained and used as a scikit-learn classifier.

    ``fit`` trains a fresh network with the named strategy on the data exactly as given
    (tailmix's ``original`` profile: no long-tailed cut). Feature vectors are standardised
    inside with the training set's mean and standard deviation, and images scaled to
    ``[0, 1]`` and normalised per channel, so no scaler is needed in front. Images are
    augmented while training with random crops (zero padding of an eighth of the side) and
    horizontal flips; ``config={"dataset": {"hflip": False}}`` turns the flips off for
    images with a handedness (digits, text). Training is deterministic for an integer
    ``random_state`` on the CPU.

    Parameters
    ----------
    strategy : str, default="MAMix-DRW"
        A named strategy (``tailmix strategies`` lists them): ``"ERM"``, ``"DRW"``,
        ``"LDAM-DRW"``, ``"Mixup-DRW"``, ``"Remix-DRW"``, ``"MAMix-DRW"``, ``"SMOTE"``, ...
    arch : str, default="mlp"
        The network: ``"mlp"`` for feature vectors, ``"small_cnn"`` or ``"resnet32"`` (or
        any registered image model) for images.
    epochs : int, default=30
        Training epochs.
    batch_size : int, default=128
        Examples a step, at least 2; clipped to the number of training examples.
    lr : float, default=0.05
        Peak learning rate of SGD (momentum 0.9), decayed by tailmix's step schedule.
    weight_decay : float, default=2e-4
        L2 weight decay.
    warmup_epochs : float, default=0
        Epochs of linear learning-rate warm-up.
    random_state : int, RandomState instance or None, default=0
        The run's seed (initial weights, order, mixing partners, augmentation). A
        ``RandomState`` instance, or None (numpy's global generator), gives one draw for the
        seed, so repeated fits then differ.
    device : str, default="cpu"
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"`` (a GPU when there is one).
    config : dict or None, default=None
        Extra tailmix config merged over the one built from the parameters above: a section
        updates that section key by key (``{"train": {"schedule": "cosine"}}``,
        ``{"dataset": {"hflip": False}}``), a component replaces or adjusts the strategy's
        part (``{"mixer": {"q": -0.5}}``, ``{"loss": {"name": "focal", "gamma": 2}}``).
        Values set here win over the parameters. Unknown keys, wrong types and out-of-range
        values raise :class:`~tailmix._validation.ParameterError` naming the key. A held-out
        validation split, ``{"dataset": {"validation": {"share": 0.1}}}`` (or
        ``{"per_class": n}``), is carved out of ``X`` before training; the network is then
        evaluated on it every epoch (``eval.every``), the epoch with the best validation
        balanced accuracy is kept, and ``{"eval": {"patience": p}}`` stops training after
        ``p`` evaluations without improvement.
    verbose : bool, default=False
        Show tailmix's progress bar and log lines while fitting.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels (``np.unique`` order); the network's output ``k`` is
        ``classes_[k]``.
    class_counts_ : ndarray of shape (n_classes,)
        Training examples per class (after a validation split, if any).
    n_features_in_ : int
        Features of one input: ``D`` for vectors, ``C * H * W`` for images.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when ``X`` was a DataFrame with string column names.
    input_shape_ : tuple of int
        Shape of one input: ``(D,)`` or ``(C, H, W)``.
    model_ : torch.nn.Module
        The trained network (in eval mode, on ``device_``); it maps normalised inputs to
        logits.
    augment_ : tailmix.data.BatchAugment
        The normalisation fitted on the training set (``augment_(raw, train=False)``
        turns raw inputs into the network's inputs).
    device_ : torch.device
        Where the network lives.
    amp_ : torch.dtype or None
        The autocast dtype used for the network (None: float32).
    config_ : dict
        The resolved tailmix config the network was trained with.
    history_ : list of dict
        One row per epoch: ``train_loss``, ``train_acc`` (against the mixed targets), ``lr``,
        ``epoch_time_s``, ``images_per_s`` (both leave out time the process was stopped;
        ``stopped_s``, where there was such time, says how long), and with a validation split
        ``val_top1``, ``val_balanced_accuracy`` and ``val_loss``.
    best_epoch_ : int or None
        With a validation split, the epoch (1-based) whose network ``model_`` holds; None
        without one (``model_`` is the last epoch's network).

    See Also
    --------
    tailmix.train : The same training from a config, with a test set, metrics and a run folder.

    Notes
    -----
    tailmix's loop evaluates on a test set; the estimator hands it a placeholder one (one
    training example a class) and removes the evaluation (with a validation split, only the
    end-of-run report reads the placeholder), so no test metrics are computed while fitting
    and nothing is written to disk. Score held-out data with ``score``,
    ``cross_val_score`` or ``sklearn.metrics`` (``balanced_accuracy_score`` suits long-tailed
    data).

    The network predicts in chunks of 64 rows, the last padded with zeros, so a row's
    outputs are bitwise the same whether it is predicted alone or among any other rows, in
    any order, for a given number of torch threads (matrix products block their work by the
    batch's shape, which would otherwise move the last bit with the batch's size).

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(n_samples=100, n_classes=3, n_informative=4,
    ...                            weights=[0.8, 0.15], random_state=0)
    >>> clf = TailmixClassifier(strategy="MAMix-DRW", epochs=2, batch_size=50).fit(X, y)
    >>> clf.classes_
    array([0, 1, 2])
    >>> clf.predict(X[:3]).shape
    (3,)
    """

    def __init__(
        self,
        strategy: str = "MAMix-DRW",
        arch: str = "mlp",
        epochs: int = 30,
        batch_size: int = 128,
        lr: float = 0.05,
        weight_decay: float = 2e-4,
        warmup_epochs: float = 0,
        random_state: int | np.random.RandomState | None = 0,
        device: str = "cpu",
        config: dict[str, Any] | None = None,
        verbose: bool = False,
    ) -> None:
        self.strategy = strategy
        self.arch = arch
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.random_state = random_state
        self.device = device
        self.config = config
        self.verbose = verbose

    # -- scikit-learn protocol ---------------------------------------------------------

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # (N, H, W) uint8 images
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        # Bitwise reproducible for a fixed seed on the CPU; GPU kernels may not be.
        tags.non_deterministic = (self.random_state is None
                                  or isinstance(self.random_state, np.random.RandomState)
                                  or str(self.device) != "cpu")
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    # -- fitting ---------------------------------------------------------------------

    def fit(self, X: Any, y: Any) -> TailmixClassifier:
        """Train a network on ``X`` and ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or ndarray of uint8
            Feature vectors (any real dtype; a DataFrame too), or images as ``uint8``
            ``(n_samples, C, H, W)`` (``(n_samples, H, W)`` for one channel).
        y : array-like of shape (n_samples,)
            Class labels of any kind ``np.unique`` sorts (ints, strings, ...); at least two
            classes. A class may have a single example.

        Returns
        -------
        TailmixClassifier
            The fitted estimator.

        Raises
        ------
        ParameterError
            For a constructor parameter or ``config`` key out of range (naming it), and for
            ``y`` with a single class.
        ValueError
            For malformed ``X`` or ``y`` (scikit-learn's own input checks).
        """
        from tailmix.data import from_arrays
        from tailmix.pipeline.build import build_run

        params = self._checked_params()
        X, y = self._fit_inputs(X, y)
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ParameterError("y", "labels of at least two classes (a classifier cannot "
                                 "learn from one class)", f"one class only, {classes[0]!r}")
        y_index = y_index.astype(np.int64).reshape(-1)
        # No test set: the run evaluates nothing but a validation split, if it has one.
        raw = from_arrays(X, y_index, classes=[str(c) for c in classes])
        config = self._build_config(params, n_samples=len(y_index))
        log = print if self.verbose else _quiet
        with _kept_rng():
            try:
                run = build_run(config, None, data=raw, log=log)
            except ParameterError as e:
                raise self._renamed(e) from e
            run.fit()
        model = run.trainer.model
        best = run.trainer.state.selected_state
        self.best_epoch_ = None
        if best is not None:  # the epoch chosen on the validation split
            model.load_state_dict(best)
            self.best_epoch_ = int(run.trainer.state.best["epoch"])
        self.classes_ = classes
        self.class_counts_ = np.asarray(run.data.class_counts, dtype=np.int64)
        self.model_ = model.eval()
        self.augment_ = run.data.augment
        self.device_ = run.device
        self.amp_ = run.amp
        self.config_ = run.spec.to_dict()
        self.history_ = [dict(row) for row in run.trainer.state.history]
        return self

    def _checked_params(self) -> dict[str, Any]:
        """The constructor's parameters, checked (scikit-learn checks them in ``fit``)."""
        for name in ("strategy", "arch", "device"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ParameterError(name, "a string", value)
        if self.config is not None and not isinstance(self.config, dict):
            raise ParameterError("config", "a mapping of tailmix config sections and keys, "
                                 "or None", self.config)
        seed = _plain(self.random_state)
        if seed is None or isinstance(seed, np.random.RandomState):
            seed = int(check_random_state(seed).randint(_SEED_LIMIT))
        else:
            seed = check_number("random_state", seed, low=0, high=_SEED_LIMIT, integer=True)
        return {
            "epochs": check_number("epochs", _plain(self.epochs), low=1, integer=True),
            "batch_size": check_number("batch_size", _plain(self.batch_size), low=2,
                                       integer=True),
            "lr": check_number("lr", _plain(self.lr), low=0, low_open=True),
            "weight_decay": check_number("weight_decay", _plain(self.weight_decay), low=0),
            "warmup_epochs": check_number("warmup_epochs", _plain(self.warmup_epochs),
                                          low=0),
            "seed": seed,
        }

    def _build_config(self, params: dict[str, Any], *, n_samples: int) -> dict[str, Any]:
        """The run's config: the data as given (no test set), ``config`` merged over; a
        validation split is evaluated every epoch unless ``config`` says otherwise."""
        from tailmix.pipeline.config import schema

        sections = schema()

        config: dict[str, Any] = {
            "strategy": self.strategy,
            "dataset": {"name": "arrays", "profile": "original"},
            "model": {"arch": self.arch},
            "train": {"epochs": params["epochs"], "batch_size": params["batch_size"],
                      "lr": params["lr"], "weight_decay": params["weight_decay"],
                      "warmup_epochs": params["warmup_epochs"], "seed": params["seed"],
                      "device": self.device},
            "eval": {"margins": False},
            "log": {"progress": bool(self.verbose), "tensorboard": False,
                    "checkpoint_best": False},
        }
        for key, value in copy.deepcopy(self.config or {}).items():
            if key in sections and isinstance(value, dict) and key in config:
                config[key].update(value)
            else:  # a component, or anything the config check should see as given
                config[key] = value
        dataset, evaluation = config["dataset"], config["eval"]
        given = (self.config or {}).get("eval")
        if isinstance(dataset, dict) and dataset.get("validation") is not None \
                and isinstance(evaluation, dict) and "every" not in (given or {}):
            evaluation["every"] = 1  # a validation split: select the epoch, stop early
        train = config["train"]
        batch = train.get("batch_size") if isinstance(train, dict) else None
        if isinstance(batch, int) and not isinstance(batch, bool) and batch > n_samples:
            train["batch_size"] = n_samples  # tailmix's trainer drops a final batch of one
        return config

    def _renamed(self, error: ParameterError) -> ParameterError:
        """A config error named after the constructor parameter that filled the key."""
        param = _PARAM_OF_KEY.get(error.name)
        if param is None or get_path(self.config or {}, error.name) is not ABSENT:
            return error
        return ParameterError(param, error.expected, error.got)

    def _fit_inputs(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Checked training arrays; sets ``n_features_in_``, ``feature_names_in_`` and
        ``input_shape_``."""
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        _refuse_other_arrays(X)
        if not _is_images(X):
            X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
            self.input_shape_ = (int(X.shape[1]),)
            return X, y
        X, y = check_X_y(X, y, allow_nd=True, ensure_2d=False, dtype=None)
        if X.ndim == 3:
            X = X[:, None]
        if hasattr(self, "feature_names_in_"):  # refitted on images after a DataFrame
            del self.feature_names_in_
        self.input_shape_ = tuple(int(d) for d in X.shape[1:])
        self.n_features_in_ = int(np.prod(self.input_shape_))
        return X, y

    # -- predicting ----------------------------------------------------------------

    def _predict_inputs(self, X: Any) -> torch.Tensor:
        """``X`` checked against the training inputs, as a fresh CPU tensor."""
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        if len(self.input_shape_) == 1:
            X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
            return torch.from_numpy(np.array(X, dtype=np.float32))
        expected = "(n_samples, {}, {}, {})".format(*self.input_shape_)
        if not _is_images(X):
            got = getattr(X, "shape", None)
            raise ValueError(f"X must be uint8 images of shape {expected}, as in fit; got "
                             f"{type(X).__name__} of shape {got}.")
        X = check_array(X, allow_nd=True, ensure_2d=False, dtype=None)
        if X.ndim == 3:
            X = X[:, None]
        if tuple(X.shape[1:]) != self.input_shape_:
            raise ValueError(f"X has images of shape {tuple(X.shape[1:])}, but "
                             f"{type(self).__name__} is expecting {expected}.")
        return torch.from_numpy(np.array(X, dtype=np.uint8))

    def _logits(self, X: Any) -> np.ndarray:
        from tailmix.pipeline.steps import predict

        check_is_fitted(self)
        inputs = self._predict_inputs(X)
        n = len(inputs)
        whole = n - n % _PREDICT_CHUNK
        parts = []
        if whole:
            parts.append(predict(self.model_, inputs[:whole], self.augment_,
                                 batch_size=_PREDICT_CHUNK, device=self.device_, amp=self.amp_))
        if whole < n:  # the rest, padded to a whole chunk
            rest = inputs.new_zeros((_PREDICT_CHUNK, *inputs.shape[1:]))
            rest[:n - whole] = inputs[whole:]
            parts.append(predict(self.model_, rest, self.augment_, batch_size=_PREDICT_CHUNK,
                                 device=self.device_, amp=self.amp_)[:n - whole])
        return torch.cat(parts).cpu().numpy().astype(np.float64)

    def decision_function(self, X: Any) -> np.ndarray:
        """The network's logits: ``(n_samples, n_classes)``, or for two classes the logit
        of ``classes_[1]`` minus that of ``classes_[0]``, ``(n_samples,)``.

        Parameters
        ----------
        X : array-like
            Inputs like those given to ``fit``.

        Returns
        -------
        ndarray of float64
        """
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities: the softmax of the network's logits.

        Parameters
        ----------
        X : array-like
            Inputs like those given to ``fit``.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), float64
            Rows sum to one; columns follow ``classes_``.
        """
        return _softmax(self._logits(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each input.

        Parameters
        ----------
        X : array-like
            Inputs like those given to ``fit``.

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        best = np.argmax(self._logits(X), axis=1)  # checks fitting before classes_ is read
        return self.classes_[best]
