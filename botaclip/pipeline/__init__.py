"""botaclip.pipeline: the jobs that join imagery, model and store (the index job, the training-feature cache)."""

from botaclip.pipeline.index import run_index
from botaclip.pipeline.index_config import (
    ChipConfig,
    IndexConfig,
    ModelConfig,
    OutputConfig,
    RuntimeConfig,
    ScaleConfig,
)
from botaclip.pipeline.index_steps import IndexSummary, adapt_embeddings

__all__ = ["ChipConfig", "IndexConfig", "IndexSummary", "ModelConfig", "OutputConfig", "RuntimeConfig", "ScaleConfig",
           "adapt_embeddings", "run_index"]
