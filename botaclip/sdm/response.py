"""Response curves of a fitted SDM for its scalar covariates.

For each scalar covariate: the model's prediction along GRID evenly spaced values from the lowest to the highest
value observed in the samples, every other input held at its median over the samples (the 'evaluation strip' of
biomod2 and Maxent's marginal response curves). Embedding dimensions get no curve: a single dimension of an
embedding has no ecological meaning and moving it alone leaves the manifold the model was trained on; they stay
at their medians in the other curves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GRID = 60
MAX_PANELS = 24


def response_curves(estimator, X: np.ndarray, covariates: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Covariate label -> (grid of its values, prediction). ``X``: the samples' kept columns; ``covariates``:
    label -> column index in ``X``."""
    X = np.asarray(X, dtype=np.float32)
    with np.errstate(all="ignore"):
        base = np.nan_to_num(np.nanmedian(X, axis=0), nan=0.0).astype(np.float32)
    out = {}
    for label, j in covariates.items():
        col = X[:, j][np.isfinite(X[:, j])]
        if not col.size:
            continue
        grid = np.linspace(float(col.min()), float(col.max()), GRID)
        rows = np.tile(base, (GRID, 1))
        rows[:, j] = grid
        out[label] = (grid, np.asarray(estimator.predict(rows), dtype=np.float64))
    return out


def response_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], out_png: str | Path, title: str,
                    ylabel: str = "suitability", rug: dict[str, np.ndarray] | None = None) -> Path:
    """One panel per covariate (at most MAX_PANELS, in the order given); ``rug``: the observed values to mark."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from botaclip.sdm.maps import save_png

    out_png = Path(out_png)
    items = list(curves.items())[:MAX_PANELS]
    ncol = min(4, len(items))
    nrow = int(np.ceil(len(items) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow + 0.6), dpi=110, squeeze=False)
    for ax, (label, (grid, pred)) in zip(axes.ravel(), items):
        ax.plot(grid, pred, color="#2c7fb8", linewidth=1.6)
        if rug is not None and label in rug:
            v = rug[label]
            ax.plot(v, np.zeros_like(v), "|", color="0.4", markersize=6, alpha=0.3, transform=ax.get_xaxis_transform())
        ax.set_title(label, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if ylabel == "suitability":
            ax.set_ylim(-0.02, 1.02)
    for ax in axes.ravel()[len(items):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, out_png)
