"""Building a TimeSformer to train on a label set: a preset from scratch, a preset started from an
ImageNet ViT (as the paper trained), or a checkpoint to fine-tune.

    model = build_model("tiny", class_names=classes)                      # random
    model = build_model("base_8x224", class_names=classes,
                        imagenet_init="timm:vit_base_patch16_224.orig_in21k_ft_in1k")
    model = build_model(init="runs/demo/best.pt", class_names=classes)   # fine-tune
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence, Union

from torch import nn

from .model import PRESETS, TimeSformer, create_model
from .weights import from_imagenet_vit, from_pretrained

# what an ImageNet ViT's weights fix; the preset must agree on each
_VIT_DETERMINED = ("embed_dim", "depth", "patch_size", "mlp_ratio", "qkv_bias", "in_chans")


def build_model(preset: Optional[str] = None, init: Optional[str] = None, class_names: Sequence[str] = (),
                imagenet_init: Optional[str] = None, trust_checkpoint: bool = False, **overrides) -> TimeSformer:
    """A TimeSformer to train on ``class_names``: a ``preset`` (random, or its spatial weights from
    an ImageNet ViT as the paper trained), or ``init`` to fine-tune.

    Fine-tuning keeps the checkpoint's head when it already predicts these classes (same count,
    and the same names if it records names) and starts a fresh head otherwise.

    Args:
        preset: a name in ``tsf.PRESETS`` (random initialisation; seed torch first).
        init: anything ``tsf.from_pretrained`` reads (a zoo name, ``.pyth``, HF folder, ``best.pt``).
        class_names: the data's classes, label id order.
        imagenet_init: with ``preset``: start from this ImageNet ViT (``tsf.weights.from_imagenet_vit``):
            a weights file, or ``timm:<name>`` for a timm model downloaded on first use (the paper's:
            ``timm:vit_base_patch16_224.orig_in21k_ft_in1k``). Its width, depth and patch size must
            be the preset's.
        trust_checkpoint: let ``init`` hold Python objects (unpickling can run code: trusted files only).
        **overrides: ``TimeSformerConfig`` fields (``num_frames``, ``img_size``, ``attention_type``,
            ``drop_path_rate``, ``mean``/``std``, ``num_heads`` for checkpoints whose heads are not
            64 wide...).
    """
    if (preset is None) == (init is None):
        raise ValueError("give either a preset (--model, to train from scratch) or a checkpoint (--init, to fine-tune), "
                         f"not {'both' if preset else 'neither'}")
    names = tuple(class_names)
    if imagenet_init is not None:
        if preset is None:
            raise ValueError(f"--imagenet-init {imagenet_init} starts a --model preset from an ImageNet ViT; --init "
                             f"{init} is already a whole video model: give one of them")
        return _from_imagenet(preset, imagenet_init, names, overrides)
    if preset is not None:
        return create_model(preset, num_classes=len(names), class_names=names, **overrides)
    model = from_pretrained(init, trust_checkpoint, **overrides)
    config = model.config
    if config.num_classes != len(names) or (config.class_names is not None and tuple(config.class_names) != names):
        model.reset_classifier(len(names), names)
    else:
        model.config = replace(config, class_names=names)
    return model


def _from_imagenet(preset: str, source: str, class_names: tuple[str, ...], overrides: dict) -> TimeSformer:
    """``preset`` (with ``overrides``) initialised from the ImageNet ViT ``source`` (see ``build_model``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(sorted(PRESETS))}")
    wanted = replace(PRESETS[preset], num_classes=len(class_names), class_names=class_names, **overrides)
    settings = {f: getattr(wanted, f) for f in wanted.__dataclass_fields__ if f not in _VIT_DETERMINED}
    vit: Union[str, nn.Module] = source
    if source.startswith("timm:"):
        import timm  # only this option needs it

        try:
            vit = timm.create_model(source[len("timm:"):], pretrained=True)
        except Exception as error:  # timm and the Hugging Face hub raise many kinds (unknown name, no network)
            raise ValueError(f"--imagenet-init {source}: timm could not load it ({error}); on a machine without "
                             f"network, save the ViT's state dict to a file and pass that path") from error
        settings.pop("num_heads")  # the module knows its heads
    elif not Path(source).is_file():
        raise FileNotFoundError(f"--imagenet-init {source} does not exist; give a ViT weights file "
                                f"(.pth/.bin/.safetensors) or timm:<model name>")
    model = from_imagenet_vit(vit, **settings)
    mismatched = [f"{f} {getattr(wanted, f)} (the ViT: {getattr(model.config, f)})"
                  for f in _VIT_DETERMINED + ("num_heads",) if getattr(wanted, f) != getattr(model.config, f)]
    if mismatched:
        raise ValueError(f"--imagenet-init {source} does not fit --model {preset}: {', '.join(mismatched)}; "
                         f"choose the preset of the ViT's size")
    return model


__all__ = ["build_model"]
