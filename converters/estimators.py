"""The scikit-learn pipelines edgeline trains, and how they are fitted.

* ``mlp``: StandardScaler -> PCA(64, whitened) -> MLPClassifier(64, alpha=1): the default; its MatMuls
  quantize to int8. Whitening and strong L2 matter on a few hundred images per class: without them
  the PCA bottleneck costs 2-3 points of accuracy against logistic regression on all features.
* ``logreg``: StandardScaler -> LogisticRegression: one MatMul, quantizes too.
* ``forest``: RandomForestClassifier: converts to the ``ai.onnx.ml`` TreeEnsemble operator, which ONNX
  Runtime does not quantize, so it ships as float32 and says so. (HistGradientBoosting would be the
  other ensemble, but its conversion crashes with protobuf 7 in skl2onnx 1.20.)
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from converters.errors import TrainingError

log = logging.getLogger(__name__)

ESTIMATORS: dict[str, str] = {
    "mlp": "StandardScaler + PCA(64) + MLP(64), quantizes to int8",
    "logreg": "StandardScaler + LogisticRegression, quantizes to int8",
    "forest": "RandomForest(100 trees), float32 (tree ensembles do not quantize)",
}


def make_estimator(name: str, *, seed: int = 0, params: dict[str, Any] | None = None) -> Pipeline:
    """A fresh, unfitted pipeline. ``params`` are scikit-learn ``set_params`` keys, e.g.
    ``{"pca__n_components": 32, "clf__alpha": 1e-3}``; an unknown key is a :class:`TrainingError`."""
    if name == "mlp":
        pipe = Pipeline(
            [
                ("scaler", StandardScaler()),
                ("pca", PCA(n_components=64, whiten=True, random_state=seed)),
                ("clf", MLPClassifier(hidden_layer_sizes=(64,), alpha=1.0, max_iter=400, random_state=seed)),
            ]
        )
    elif name == "logreg":
        pipe = Pipeline([("scaler", StandardScaler()), ("clf", LogisticRegression(C=0.1, max_iter=2000))])
    elif name == "forest":
        pipe = Pipeline([("clf", RandomForestClassifier(n_estimators=100, n_jobs=1, random_state=seed))])
    else:
        raise TrainingError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    if params:
        valid = pipe.get_params(deep=True)
        for key in params:
            if key not in valid or "__" not in key:
                settable = ", ".join(k for k in sorted(valid) if "__" in k and k.startswith(("pca__", "clf__")))
                raise TrainingError(f"estimator {name!r} has no parameter {key!r}; settable: {settable}")
        try:
            pipe.set_params(**params)
            for _, step in pipe.steps:  # check values now, not after minutes of feature extraction
                validate = getattr(step, "_validate_params", None)
                if callable(validate):
                    validate()
        except (ValueError, TypeError) as exc:
            raise TrainingError(f"bad parameter for {name!r}: {exc}") from exc
    return pipe


def fit(pipe: Pipeline, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> dict[str, Any]:
    """Fit in place. Clamps PCA components to what the data allows. Returns fit notes (iterations,
    convergence) for the report; scikit-learn errors become :class:`TrainingError`."""
    notes: dict[str, Any] = {}
    if "pca" in pipe.named_steps:
        pca = pipe.named_steps["pca"]
        limit = min(x.shape[0], x.shape[1])
        if isinstance(pca.n_components, int) and pca.n_components > limit:
            log.warning("PCA components clamped from %d to %d (only %d rows)", pca.n_components, limit, x.shape[0])
            notes["pca_components_clamped_to"] = limit
            pca.set_params(n_components=limit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            if sample_weight is None:
                pipe.fit(x, y)
            else:  # class weights for rare defects; every estimator offered takes sample weights
                pipe.fit(x, y, clf__sample_weight=sample_weight)
        except (ValueError, MemoryError) as exc:
            raise TrainingError(f"training failed: {exc}") from exc
    clf = pipe.named_steps["clf"]
    if hasattr(clf, "n_iter_"):
        n_iter = clf.n_iter_
        notes["iterations"] = int(np.max(n_iter))
    notes["converged"] = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if not notes["converged"]:
        log.warning("%s did not fully converge; the held-out metrics tell whether it matters", type(clf).__name__)
    return notes
