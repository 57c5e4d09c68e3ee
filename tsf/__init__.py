"""tsf: a research kit for TimeSformer (divided space-time attention, ICML 2021).

    import tsf
    model = tsf.from_pretrained("best.pt")          # or a zoo name, an official .pyth, a Hugging Face folder
    prediction = tsf.predict(model, "video.mp4")

The names below are imported on first use, so ``python -m tsf <command> --help`` loads no torch.
"""
from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "PRESETS": "model",
    "TimeSformer": "model",
    "TimeSformerConfig": "model",
    "create_model": "model",
    "count_flops": "cost",
    "record_attention": "attention",
    "predict": "prediction",
    "from_imagenet_vit": "weights",
    "from_pretrained": "weights",
    "save_pretrained": "weights",
    "list_models": "zoo",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
