"""botaclip.store: the H3-keyed feature store (Parquet feature sets + a DuckDB catalog), SQL with H3 functions,
similarity search, import/export. Never imports torch.

    from botaclip.store import Store
    store = Store.create("alps.store", resolution=10)
    with store.writer("dofa_base", kind="backbone", dim=768, provenance={"model": "dofa_base"}) as w:
        w.write(h3=cells, embedding=vectors, valid_fraction=frac)
    h3, X, names = store.features_numpy("dofa_base")
"""

from botaclip.store.h3sql import register_h3_functions
from botaclip.store.schema import DTYPES, KINDS, SCHEMA_VERSION, FeatureSetSpec
from botaclip.store.store import FeatureMatrix, Store
from botaclip.store.writer import FeatureSetWriter

__all__ = ["Store", "FeatureSetWriter", "FeatureSetSpec", "FeatureMatrix", "register_h3_functions", "KINDS",
           "DTYPES", "SCHEMA_VERSION"]
