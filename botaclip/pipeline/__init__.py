"""botaclip.pipeline: the jobs that join imagery, model and store (the index job, the training-feature cache)."""

from botaclip.pipeline.index import IndexSummary, adapt_embeddings, run_index

__all__ = ["IndexSummary", "adapt_embeddings", "run_index"]
