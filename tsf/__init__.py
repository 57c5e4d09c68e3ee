"""tsf: a research kit for TimeSformer (divided space-time attention, ICML 2021)."""
from .attention import record_attention
from .model import PRESETS, TimeSformer, TimeSformerConfig, count_flops, create_model
from .predict import predict
from .weights import from_imagenet_vit, from_pretrained, save_pretrained
from .zoo import list_models

__version__ = "0.1.0"
__all__ = [
    "PRESETS", "record_attention", "TimeSformer", "TimeSformerConfig", "count_flops", "create_model",
    "from_imagenet_vit", "from_pretrained", "save_pretrained", "list_models", "predict",
]
