"""LightGBM's binned form of one feature matrix, built once and reused for every fit on a subset of its rows.

LightGBM turns every column into at most ``max_bin`` histogram bins before boosting. On 768 embedding columns
that costs about 1 s per fit (docs/benchmarks.md, "SDM speed"), and a cross-validation fits the same species'
samples many times: 5 outer folds, each with its inner folds. :class:`BinnedFeatures` bins a matrix once;
:meth:`BinnedFeatures.rows` hands out a subset of rows that LightGBM takes as is (``Dataset.subset``,
about 0.01 s), with the labels and weights of that fit.

The bin edges are quantiles of the feature values of all the rows given (no labels). ``sdm compare`` bins each
feature table once over the union of the compared species' cells and hands every species a
:meth:`BinnedFeatures.view` of its own samples' rows (binning 768 columns cost about 1.7 CPU-s per species and
feature set, a quarter of a species' whole cross-validation). The edges see the features of every fold and of
other species' cells, never a label; split thresholds are still learnt on the training rows only, and
predictions use the raw feature values.
"""

from __future__ import annotations

import warnings

import numpy as np

#: Default histogram bins per feature. A boosting round on hundreds of columns costs in proportion to the bins
#: its trees scan; with at most 16 bins LightGBM also packs two values per byte. 15 bins made a round about a third
#: cheaper than 63 (which halved the cost of 255), and 7 a fit another fifth cheaper than 15, each within the noise
#: of the finer bins on two synthetic 768-d worlds and the demo's embeddings; 4 bins lose AUC and TSS
#: (docs/benchmarks.md, "SDM speed", sessions 10 and 12).
DEFAULT_MAX_BIN = 7


#: Rows LightGBM samples to place a column's bin edges (its default: 200,000). 20,000 values give each of 7 bins
#: some 2,900 of them; placing the edges on 200,000 was most of the cost of binning 100,000 x 768 (docs/benchmarks.md,
#: "SDM speed"). A fit on fewer rows uses them all, as before.
BIN_SAMPLE_ROWS = 20_000


def dataset_params(max_bin: int, threads: int | None = None) -> dict:
    """The Dataset parameters of every LightGBM fit here (binned once or per fit: the same bins either way).

    ``feature_pre_filter`` off: a column that the whole matrix cannot split is not dropped for a subset that
    could, and a subset keeps every column of its parent. ``threads``: OpenMP threads that bin (None:
    LightGBM's default; the bins do not depend on them)."""
    params = {"verbose": -1, "max_bin": int(max_bin), "feature_pre_filter": False,
              "bin_construct_sample_cnt": BIN_SAMPLE_ROWS}
    return params | ({"num_threads": int(threads)} if threads else {})


class BinnedFeatures:
    """A float feature matrix [n, F] binned once by LightGBM (``max_bin`` bins per column); NaN stays missing.

    The raw matrix is not kept: predictions need the caller's own copy. ``threads``: OpenMP threads that bin
    (None: LightGBM's default).
    :meth:`save` and :meth:`load` hand the bins to another process (LightGBM's binary Dataset file)."""

    def __init__(self, X, max_bin: int = DEFAULT_MAX_BIN, threads: int | None = None):
        import lightgbm as lgb

        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty 2-D matrix (samples x features), got shape {X.shape}")
        self.shape = X.shape
        self.max_bin = int(max_bin)
        self.dataset = lgb.Dataset(X, label=np.zeros(X.shape[0]), params=dataset_params(self.max_bin, threads),
                                   free_raw_data=True).construct()

    def save(self, path) -> dict:
        """Write the bins to ``path``; returns what :meth:`load` needs besides the path."""
        self.dataset.save_binary(str(path))
        return {"max_bin": self.max_bin}

    @classmethod
    def load(cls, path, max_bin: int) -> "BinnedFeatures":
        """The bins :meth:`save` wrote to ``path`` (a fraction of a second, against 13 CPU-s to bin 100,000 x 768)."""
        import lightgbm as lgb

        dataset = lgb.Dataset(str(path), params=dataset_params(max_bin)).construct()
        return cls._of(dataset, (dataset.num_data(), dataset.num_feature()), max_bin)

    @classmethod
    def _of(cls, dataset, shape: tuple[int, int], max_bin: int) -> "BinnedFeatures":
        out = cls.__new__(cls)
        out.dataset, out.shape, out.max_bin = dataset, (int(shape[0]), int(shape[1])), int(max_bin)
        return out

    def rows(self, index) -> "BinnedRows":
        """The rows ``index`` (integer positions, each at most once) as a training or validation matrix."""
        index = np.asarray(index, dtype=np.int64).ravel()
        if index.size == 0:
            raise ValueError("no rows selected")
        if index.min() < 0 or index.max() >= self.shape[0]:
            raise ValueError(f"row index outside 0..{self.shape[0] - 1}")
        # Increasing indices (every fold's rows) repeat none; only others pay for np.unique (0.5 ms per fit).
        if not np.all(index[1:] > index[:-1]) and np.unique(index).size != index.size:
            raise ValueError("a row is selected twice")
        return BinnedRows(self, index)

    def view(self, rows) -> "BinnedView":
        """The rows ``rows`` (integer positions, each at most once) as a matrix of their own: row i of the view
        is row ``rows[i]`` here. One species' samples of a feature table binned for many species."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        self.rows(rows)  # the same checks
        return BinnedView(self, rows)


class BinnedView:
    """Some rows of a :class:`BinnedFeatures` renumbered 0..n-1; :meth:`rows` as on the full matrix."""

    def __init__(self, parent: BinnedFeatures, rows: np.ndarray):
        self.parent = parent
        self.map = rows
        self.shape = (int(rows.size), int(parent.shape[1]))
        self.max_bin = parent.max_bin

    def rows(self, index) -> "BinnedRows":
        """The view's rows ``index`` (positions in the view)."""
        index = np.asarray(index, dtype=np.int64).ravel()
        if index.size and (index.min() < 0 or index.max() >= self.shape[0]):
            raise ValueError(f"row index outside 0..{self.shape[0] - 1}")
        return self.parent.rows(self.map[index])


class BinnedRows:
    """Some rows of a :class:`BinnedFeatures`, in the order given; a LightGBM model accepts it in place of X."""

    def __init__(self, parent: BinnedFeatures, index: np.ndarray):
        self.parent = parent
        self.index = index
        self._held_out = None

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.index.size), int(self.parent.shape[1]))

    @property
    def max_bin(self) -> int:
        return self.parent.max_bin

    def dataset(self, label: np.ndarray, weight: np.ndarray | None = None):
        """A constructed LightGBM Dataset of these rows with ``label`` and ``weight`` (both in the order of the
        rows given). LightGBM keeps a subset's rows in increasing index order; labels and weights follow."""
        order = np.argsort(self.index, kind="stable")
        data = self.parent.dataset.subset(self.index[order].tolist()).construct()
        data.set_label(np.asarray(label, dtype=np.float64)[order])
        if weight is not None:
            data.set_weight(np.asarray(weight, dtype=np.float64)[order])
        return data

    def held_out(self):
        """These rows as a constructed LightGBM Dataset that fits score while boosting (its labels, zeros, are
        not used), made on the first call and shared by every later one: copying rows out of the binned matrix
        costs about 3 ms plus 1.7 ms per 1,000 rows at 776 columns."""
        if self._held_out is None:
            self._held_out = self.dataset(np.zeros(self.index.size))
        return self._held_out


def with_columns(base: BinnedFeatures | BinnedView, extra: np.ndarray) -> BinnedView:
    """``base`` (n rows, F columns) with the columns of ``extra`` (float [n, K], row i beside base's row i) added
    after its own: a matrix of F + K columns whose first F keep base's bins, and only the K new columns are
    binned here (LightGBM ``Dataset.add_features_from``). ``base`` is left as it is.

    The principal components added to the embedding columns (``extra_pcs``) are fitted on each species'
    samples; binning 16 of them costs about 2 % of binning 768 (docs/benchmarks.md, "SDM speed")."""
    import lightgbm as lgb

    extra = np.asarray(extra, dtype=np.float32)
    view = base if isinstance(base, BinnedView) else base.view(np.arange(base.shape[0]))
    if extra.ndim != 2 or extra.shape[0] != view.shape[0]:
        raise ValueError(f"extra columns of shape {extra.shape} for {view.shape[0]} binned rows")
    # A subset holds its rows in increasing order of the parent's index: the new rows follow that order.
    order = np.argsort(view.map, kind="stable")
    data = view.parent.dataset.subset(view.map[order].tolist()).construct()
    added = lgb.Dataset(extra[order], label=np.zeros(extra.shape[0]), params=dataset_params(view.max_bin),
                        free_raw_data=True).construct()
    with warnings.catch_warnings():  # "cannot add raw data" (both were freed) and "resetting categorical"
        warnings.simplefilter("ignore", UserWarning)
        data.add_features_from(added)
    joined = BinnedFeatures._of(data, (view.shape[0], view.shape[1] + extra.shape[1]), view.max_bin)
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    return BinnedView(joined, position)
