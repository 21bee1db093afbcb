"""botaclip: botany-aware Earth-observation embeddings, an H3 feature store, and species distribution models."""

__version__ = "0.1.0"

from botaclip.errors import BotaclipError

__all__ = ["BotaclipError", "__version__"]
