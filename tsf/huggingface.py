"""The Hugging Face ``transformers`` Timesformer layout, both ways: parameter names, and the fields
of ``config.json`` and ``preprocessor_config.json``.

``tsf.weights`` reads and writes the files of a Hugging Face model directory; this module says
what goes in them. (transformers' ``space_only`` never averages the frames, so only the two other
attention types are exported.)
"""
from __future__ import annotations

from typing import Optional

import torch

from .model import TimeSformerConfig

StateDict = dict[str, torch.Tensor]

# tsf (= official) block suffix  <->  transformers TimesformerLayer suffix
_BLOCK = {
    "norm1": "layernorm_before",
    "attn.qkv": "attention.attention.qkv",
    "attn.proj": "attention.output.dense",
    "temporal_norm1": "temporal_layernorm",
    "temporal_attn.qkv": "temporal_attention.attention.qkv",
    "temporal_attn.proj": "temporal_attention.output.dense",
    "temporal_fc": "temporal_dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_TOP = {
    "cls_token": "timesformer.embeddings.cls_token",
    "pos_embed": "timesformer.embeddings.position_embeddings",
    "time_embed": "timesformer.embeddings.time_embeddings",
    "patch_embed.proj": "timesformer.embeddings.patch_embeddings.projection",
    "norm": "timesformer.layernorm",
    "head": "classifier",
}
_BLOCK_INVERSE = {v: k for k, v in _BLOCK.items()}
_TOP_INVERSE = {v: k for k, v in _TOP.items()}
_LAYER = "timesformer.encoder.layer."


def _name_to_hf(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "blocks":  # blocks.{i}.{suffix}.{weight|bias}
        return f"{_LAYER}{parts[1]}.{_BLOCK['.'.join(parts[2:-1])]}.{parts[-1]}"
    module, _, leaf = name.rpartition(".")
    return f"{_TOP[module]}.{leaf}" if module else _TOP[name]


def _name_from_hf(name: str) -> str:
    if name.startswith(_LAYER):  # timesformer.encoder.layer.{i}.{suffix}.{weight|bias}
        index, rest = name[len(_LAYER):].split(".", 1)
        suffix, leaf = rest.rsplit(".", 1)
        return f"blocks.{index}.{_BLOCK_INVERSE[suffix]}.{leaf}"
    if name in _TOP_INVERSE:
        return _TOP_INVERSE[name]
    module, leaf = name.rsplit(".", 1)
    return f"{_TOP_INVERSE[module]}.{leaf}"


def state_dict_to_hf(sd: StateDict) -> StateDict:
    """Official parameter names -> transformers' ``TimesformerForVideoClassification`` names."""
    return {_name_to_hf(k): v for k, v in sd.items()}


def state_dict_from_hf(sd: StateDict) -> StateDict:
    """transformers' ``TimesformerForVideoClassification`` names -> official parameter names."""
    unknown = [k for k in sd if not (k.startswith("timesformer.") or k.startswith("classifier."))]
    if unknown:
        raise ValueError(f"not a transformers Timesformer state dict: unexpected keys {unknown[:5]}")
    return {_name_from_hf(k): v for k, v in sd.items()}


def config_fields(config: dict, processor: Optional[dict], num_classes: int) -> dict:
    """The ``TimeSformerConfig`` fields a Hugging Face directory records beyond the weights.

    Args:
        config: its ``config.json``.
        processor: its ``preprocessor_config.json``, if it has one.
        num_classes: rows of the classifier in the weights (class names are kept only when
            ``id2label`` names that many, and not as the placeholders ``LABEL_<i>``).
    """
    fields = {
        "num_heads": config["num_attention_heads"],
        "layernorm_eps": config.get("layer_norm_eps", 1e-6),
        "num_frames": config.get("num_frames", 8),
    }
    id2label = config.get("id2label")
    if id2label and num_classes and len(id2label) == num_classes:
        names = tuple(id2label[str(i)] for i in range(len(id2label)))
        if not all(name == f"LABEL_{i}" for i, name in enumerate(names)):
            fields["class_names"] = names
    if processor and "image_mean" in processor and "image_std" in processor:
        fields["mean"], fields["std"] = tuple(processor["image_mean"]), tuple(processor["image_std"])
    return fields


def config_files(cfg: TimeSformerConfig) -> tuple[dict, dict]:
    """``config.json`` and ``preprocessor_config.json`` of a Hugging Face directory holding a model of ``cfg``."""
    if cfg.attention_type == "space_only":
        raise ValueError(
            "transformers' Timesformer does not implement space_only correctly (it never averages the "
            "frames), so a space_only model cannot be exported to the Hugging Face format; use format='tsf'"
        )
    names = cfg.class_names or tuple(f"LABEL_{i}" for i in range(cfg.num_classes))
    config = {
        "model_type": "timesformer",
        "architectures": ["TimesformerForVideoClassification"],
        "image_size": cfg.img_size,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans,
        "num_frames": cfg.num_frames,
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": int(cfg.embed_dim * cfg.mlp_ratio),
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.drop_rate,
        "attention_probs_dropout_prob": cfg.attn_drop_rate,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.layernorm_eps,
        "qkv_bias": cfg.qkv_bias,
        "attention_type": cfg.attention_type,
        # transformers >= 5 types this field as int and rejects 0.1; it only matters for training,
        # and the released Hugging Face configs ship 0 as well
        "drop_path_rate": 0,
        "id2label": {str(i): name for i, name in enumerate(names)},
        "label2id": {name: i for i, name in enumerate(names)},
    }
    processor = {
        "image_processor_type": "VideoMAEImageProcessor",
        "image_mean": list(cfg.mean),
        "image_std": list(cfg.std),
        "crop_size": {"height": cfg.img_size, "width": cfg.img_size},
        "size": {"shortest_edge": cfg.img_size},
        "do_normalize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
    }
    return config, processor
