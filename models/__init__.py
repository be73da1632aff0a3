"""Network code per model family, the checkpoint loader and the registry by `architectures`."""

from models.errors import CheckpointError
from models.registry import DEMO_MODEL_DIR, MODEL_REGISTRY, LoadedModel, load_model

__all__ = ["CheckpointError", "DEMO_MODEL_DIR", "MODEL_REGISTRY", "LoadedModel", "load_model"]
