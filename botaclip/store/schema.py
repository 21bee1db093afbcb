"""What a feature set is: its spec (kind, dim or columns, on-disk dtype, provenance), its Arrow/Parquet schema,
and the encoding between float32 values and the on-disk precision.

On disk (one Parquet file per partition), columns are, in order:
  h3 UINT64; then either `embedding` FIXED_SIZE_LIST<float32|float16|int8>[D] (+ `embedding_scale` float32 per row
  when int8: value = q * scale) or one float32/float16 column per named covariate; then the extras of the kind:
  `valid_fraction` float32 (imagery kinds), `n_obs` int32 (imported / covariates), or both (external).
Readers always get float32 back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from botaclip.errors import InvalidInputError
from botaclip.store.float16 import to_float16

SCHEMA_VERSION = 1
KINDS = ("backbone", "botaclip", "covariates", "imported", "external", "predictions", "location")
DTYPES = ("float32", "float16", "int8")
# Catalog tables (a view of that name would clash) and on-disk column names.
RESERVED_NAMES = {"feature_sets", "runs", "store_meta", "feature_set_geometry", "cross_fits", "ann_indexes",
                  "partitions", "h3", "embedding", "embedding_scale", "valid_fraction", "n_obs"}
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
FOOTER_KEY = b"botaclip"


def check_identifier(name: str, what: str = "feature-set name") -> str:
    """Validate a name used as a SQL identifier and directory name (lower-case letters, digits, underscore)."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise InvalidInputError(f"invalid {what} {name!r}: use 1-63 lower-case letters, digits or '_', "
                                "starting with a letter or '_'")
    return name


def extras_for(kind: str) -> tuple[str, ...]:
    """Per-row bookkeeping columns a kind carries besides its features."""
    if kind in ("backbone", "botaclip"):
        return ("valid_fraction",)
    if kind in ("imported", "covariates"):
        return ("n_obs",)
    if kind == "external":  # other products' embeddings: pixels' valid fraction and count (rasters), rows (tables)
        return ("valid_fraction", "n_obs")
    return ()


@dataclass
class FeatureSetSpec:
    """Everything that fixes a feature set's layout; equal specs may append to each other."""

    name: str
    kind: str
    dtype: str = "float32"
    dim: int | None = None
    columns: tuple[str, ...] | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_identifier(self.name)
        if self.name in RESERVED_NAMES:
            raise InvalidInputError(f"feature-set name {self.name!r} is reserved; choose another name")
        if self.kind not in KINDS:
            raise InvalidInputError(f"unknown feature-set kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.dtype not in DTYPES:
            raise InvalidInputError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if (self.dim is None) == (self.columns is None):
            raise InvalidInputError(f"feature set {self.name!r}: give exactly one of dim (embeddings) or columns")
        if self.dim is not None:
            if int(self.dim) < 1:
                raise InvalidInputError(f"feature set {self.name!r}: dim must be >= 1, got {self.dim}")
            self.dim = int(self.dim)
        else:
            cols = tuple(self.columns)
            if not cols:
                raise InvalidInputError(f"feature set {self.name!r}: columns must not be empty")
            for c in cols:
                check_identifier(c, "column name")
                if c in RESERVED_NAMES:
                    raise InvalidInputError(f"column name {c!r} is reserved; rename it")
            if len(set(cols)) != len(cols):
                raise InvalidInputError(f"feature set {self.name!r}: duplicate column names in {list(cols)}")
            if self.dtype == "int8":
                raise InvalidInputError("int8 quantisation is for embeddings only; use float32 or float16 for columns")
            self.columns = cols
        if self.kind == "predictions" and self.columns is None:
            raise InvalidInputError("a 'predictions' feature set has named columns (e.g. columns=['suitability'])")
        self.provenance = dict(self.provenance or {})

    @property
    def is_embedding(self) -> bool:
        return self.dim is not None

    @property
    def extras(self) -> tuple[str, ...]:
        return extras_for(self.kind)

    def feature_names(self) -> list[str]:
        """Names of the float32 feature columns readers get (e{i} for embedding dimensions)."""
        return [f"e{i}" for i in range(self.dim)] if self.is_embedding else list(self.columns)

    def to_record(self) -> dict:
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype, "dim": self.dim,
                "columns": list(self.columns) if self.columns else None, "provenance": self.provenance}

    @classmethod
    def from_record(cls, rec: dict) -> "FeatureSetSpec":
        prov = rec.get("provenance") or {}
        if isinstance(prov, str):
            prov = json.loads(prov)
        return cls(name=rec["name"], kind=rec["kind"], dtype=rec["dtype"], dim=rec.get("dim"),
                   columns=tuple(rec["columns"]) if rec.get("columns") else None, provenance=prov)

    def conflicts_with(self, other: "FeatureSetSpec") -> str | None:
        """Why `other` cannot be appended to this feature set, or None if it can."""
        for attr in ("kind", "dim", "columns", "dtype"):
            if getattr(self, attr) != getattr(other, attr):
                return f"{attr} {getattr(self, attr)!r} vs {getattr(other, attr)!r}"
        for key in ("model", "weights_sha256"):
            a, b = self.provenance.get(key), other.provenance.get(key)
            if a is not None and b is not None and a != b:
                return f"{key} {a!r} vs {b!r}"
        return None

    # ---- Arrow schema and encoding -------------------------------------------------------------------------

    def arrow_schema(self, resolution: int, partition_resolution: int) -> pa.Schema:
        """On-disk schema, with the STAC-embedding-like description in its metadata (copied to the footer)."""
        store_type = {"float32": pa.float32(), "float16": pa.float16(), "int8": pa.int8()}[self.dtype]
        fields = [pa.field("h3", pa.uint64(), nullable=False)]
        if self.is_embedding:
            fields.append(pa.field("embedding", pa.list_(store_type, self.dim), nullable=False))
            if self.dtype == "int8":
                fields.append(pa.field("embedding_scale", pa.float32(), nullable=False))
        else:
            fields += [pa.field(c, store_type) for c in self.columns]
        if "valid_fraction" in self.extras:
            fields.append(pa.field("valid_fraction", pa.float32()))
        if "n_obs" in self.extras:
            fields.append(pa.field("n_obs", pa.int32()))
        meta = {
            "schema_version": SCHEMA_VERSION, "feature_set": self.name, "kind": self.kind,
            "resolution": resolution, "partition_resolution": partition_resolution,
            "dimensions": self.dim, "columns": list(self.columns) if self.columns else None,
            "data_type": self.dtype,
            "quantization": ({"method": "symmetric per-row absmax", "scale_column": "embedding_scale",
                              "dequantize": "value = q * embedding_scale"} if self.dtype == "int8" else None),
            "normalization": "unit L2" if self.is_embedding else None,
            "model": self.provenance.get("model"), "weights_sha256": self.provenance.get("weights_sha256"),
            "wavelengths_um": self.provenance.get("wavelengths"), "provenance": self.provenance,
        }
        return pa.schema(fields, metadata={FOOTER_KEY: json.dumps(meta, default=str).encode()})

    def encode(self, schema: pa.Schema, h3: np.ndarray, values: np.ndarray,
               extras: dict[str, np.ndarray | None], *, norms: np.ndarray | None = None) -> pa.Table:
        """Build an on-disk table from uint64 cells, float32 values [N, D or F] and extras.

        `norms` (embeddings): the rows' L2 norms, to store ``values / norms`` (0 rows stay 0) without a float32
        copy of the normalised matrix; None stores `values` as they are. A float32 matrix is not copied at all."""
        n = len(h3)
        arrays: list[pa.Array] = [pa.array(h3, pa.uint64())]
        if self.is_embedding:
            arrays += self._encode_embedding(values, norms)
        else:
            npt = np.float16 if self.dtype == "float16" else np.float32
            for j, _ in enumerate(self.columns):
                col = values[:, j].astype(npt)
                arrays.append(pa.array(col, mask=np.isnan(col)))
        for name in self.extras:
            v = extras.get(name)
            typ = pa.float32() if name == "valid_fraction" else pa.int32()
            arrays.append(pa.nulls(n, typ) if v is None else pa.array(np.asarray(v), typ))
        return pa.Table.from_arrays(arrays, schema=schema)

    def _encode_embedding(self, values: np.ndarray, norms: np.ndarray | None) -> list[pa.Array]:
        n = len(values)
        if self.dtype == "int8":
            # Codes are scale-free: round(x / |x| / (max|x| / |x| / 127)) = round(x * 127 / max|x|), so the
            # normalised floats are never materialised; only the stored scale carries the norm.
            maxabs = np.maximum(values.max(axis=1), -values.min(axis=1)) if n else np.zeros(0, np.float32)
            maxabs = maxabs.astype(np.float64)
            inv64 = np.where(maxabs > 0, 127.0 / np.where(maxabs > 0, maxabs, 1), 0.0)
            with np.errstate(over="ignore"):
                inv = inv64.astype(np.float32)
            q = np.multiply(values, inv[:, None], dtype=np.float32)
            np.rint(q, out=q)  # |x| <= max|x| makes |q| <= 127 (1 + 2^-23) < 127.5: no clip needed
            tiny = ~np.isfinite(inv)  # max|x| below about 1e-37: 127 / max|x| overflows float32; in float64
            if tiny.any():
                q[tiny] = np.rint(values[tiny].astype(np.float64) * inv64[tiny, None])
            unit = norms if norms is not None else np.ones(n)
            scale = np.where(maxabs > 0, maxabs / (127.0 * np.where(unit > 0, unit, 1)), 1.0).astype(np.float32)
            return [pa.FixedSizeListArray.from_arrays(pa.array(q.astype(np.int8).ravel()), self.dim),
                    pa.array(scale, pa.float32())]
        if norms is not None:  # float32 (a float16 `out` would make numpy convert value by value, in its slow cast)
            values = np.divide(values, np.where(norms > 0, norms, 1).astype(np.float32)[:, None], dtype=np.float32)
        if self.dtype == "float16":
            flat = to_float16(np.ascontiguousarray(values, dtype=np.float32), np.empty(values.shape, np.float16))
        else:
            flat = np.ascontiguousarray(values, dtype=np.float32)
        return [pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), self.dim)]

    def decode(self, table: pa.Table, columns: list[str] | None = None) -> np.ndarray:
        """float32 matrix [N, D] (embedding) or [N, F] (named columns, NaN for nulls) from an on-disk table."""
        n = table.num_rows
        if self.is_embedding:
            emb = table.column("embedding").combine_chunks()
            flat = emb.flatten().to_numpy(zero_copy_only=False)
            x = flat.reshape(n, self.dim).astype(np.float32, copy=False)
            if self.dtype == "int8":
                scale = table.column("embedding_scale").to_numpy().astype(np.float32)
                x = x * scale[:, None]
            return np.ascontiguousarray(x, dtype=np.float32)
        names = columns or list(self.columns)
        out = np.empty((n, len(names)), dtype=np.float32)
        for j, c in enumerate(names):
            out[:, j] = table.column(c).to_numpy(zero_copy_only=False).astype(np.float32)
        return out
