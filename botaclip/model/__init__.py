"""botaclip.model"""

from botaclip.model.adapter import AdapterBundle, load_adapter
from botaclip.model.backbones import BACKBONES, create_backbone
from botaclip.model.botaclip import BotaCLIP, ImageAdapter, ReleveEncoder
from botaclip.model.checkpoint import fit_state_dict, load_dofa_checkpoint, read_checkpoint
from botaclip.model.dofa import DOFA, DOFA_CONFIGS, DOFAConfig, RandomInitWarning
from botaclip.model.embedder import Embedder
from botaclip.model.loss import GeometryRegularizer, SigLIPLoss

__all__ = [
    "AdapterBundle",
    "BotaCLIP",
    "GeometryRegularizer",
    "ImageAdapter",
    "ReleveEncoder",
    "SigLIPLoss",
    "load_adapter",
    "BACKBONES",
    "DOFA",
    "DOFAConfig",
    "DOFA_CONFIGS",
    "Embedder",
    "RandomInitWarning",
    "create_backbone",
    "fit_state_dict",
    "load_dofa_checkpoint",
    "read_checkpoint",
]
