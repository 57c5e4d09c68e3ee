"""Loading and saving TimeSformer weights in every format a user may hold.

Formats, detected by content (never by file name):
    official   the paper's model zoo ``.pyth``: ``{"model_state": {"model.<param>": ...}, "epoch",
               "optimizer_state", "cfg"}``
    hf         a Hugging Face ``transformers`` Timesformer directory (``config.json`` plus
               ``model.safetensors`` or ``pytorch_model.bin``)
    tsf        tsf's own checkpoint ``{"tsf_version", "config", "state_dict"}``; training checkpoints
               add optimiser/scheduler/RNG state, which loading a model ignores
    state dict a bare state dict with the official parameter names (optionally ``model.``/``module.``
               prefixed), e.g. an official checkpoint re-saved by other tools

Every architecture number the weights determine is inferred from them; ``num_heads`` is not
visible in the weights and defaults to ``embed_dim // 64`` (true of every released model).
"""
from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
import yaml

from .model import TimeSformer, TimeSformerConfig

TSF_VERSION = 1
StateDict = dict[str, torch.Tensor]


def kinetics400_classes() -> list[str]:
    """The 400 Kinetics class names, index = label id."""
    text = resources.files("tsf").joinpath("resources/kinetics400_classes.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


# -- reading files -------------------------------------------------------------------------------
def load_checkpoint_file(path: Union[str, Path], trust_checkpoint: bool = False):
    """``torch.load`` on CPU with ``weights_only=True`` unless the file's source is trusted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds Python objects beyond tensors and plain containers, which are not loaded by "
            f"default because unpickling can run code. If you trust where the file came from, pass "
            f"trust_checkpoint=True. ({str(err).splitlines()[0]})"
        ) from err
    except RuntimeError as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {err}") from err


def _strip_prefixes(sd: StateDict) -> StateDict:
    out = {}
    for key, value in sd.items():
        for prefix in ("module.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


# -- Hugging Face name mapping ------------------------------------------------------------------
# tsf (= official) block suffix  <->  transformers TimesformerLayer suffix
_HF_BLOCK = {
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
_HF_TOP = {
    "cls_token": "timesformer.embeddings.cls_token",
    "pos_embed": "timesformer.embeddings.position_embeddings",
    "time_embed": "timesformer.embeddings.time_embeddings",
    "patch_embed.proj": "timesformer.embeddings.patch_embeddings.projection",
    "norm": "timesformer.layernorm",
    "head": "classifier",
}


_HF_LAYER = "timesformer.encoder.layer."


def _name_to_hf(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "blocks":  # blocks.{i}.{suffix}.{weight|bias}
        return f"{_HF_LAYER}{parts[1]}.{_HF_BLOCK['.'.join(parts[2:-1])]}.{parts[-1]}"
    module, _, leaf = name.rpartition(".")
    return f"{_HF_TOP[module]}.{leaf}" if module else _HF_TOP[name]


def _name_from_hf(name: str) -> str:
    if name.startswith(_HF_LAYER):  # timesformer.encoder.layer.{i}.{suffix}.{weight|bias}
        index, rest = name[len(_HF_LAYER):].split(".", 1)
        suffix, leaf = rest.rsplit(".", 1)
        return f"blocks.{index}.{_HF_BLOCK_INVERSE[suffix]}.{leaf}"
    if name in _HF_TOP_INVERSE:
        return _HF_TOP_INVERSE[name]
    module, leaf = name.rsplit(".", 1)
    return f"{_HF_TOP_INVERSE[module]}.{leaf}"


_HF_BLOCK_INVERSE = {v: k for k, v in _HF_BLOCK.items()}
_HF_TOP_INVERSE = {v: k for k, v in _HF_TOP.items()}


def state_dict_to_hf(sd: StateDict) -> StateDict:
    return {_name_to_hf(k): v for k, v in sd.items()}


def state_dict_from_hf(sd: StateDict) -> StateDict:
    unknown = [k for k in sd if not (k.startswith("timesformer.") or k.startswith("classifier."))]
    if unknown:
        raise ValueError(f"not a transformers Timesformer state dict: unexpected keys {unknown[:5]}")
    return {_name_from_hf(k): v for k, v in sd.items()}


# -- architecture inference ---------------------------------------------------------------------
def infer_config(sd: StateDict, **overrides) -> TimeSformerConfig:
    """The ``TimeSformerConfig`` that the weights in ``sd`` (official names) determine.

    Args:
        sd: state dict with official parameter names.
        **overrides: fields the weights do not determine (``num_heads``, dropout rates,
            ``class_names``, ``mean``/``std``...) or deliberate changes (``num_classes``,
            ``num_frames``, ``img_size``) which ``load_weights_into`` then adapts to.
    """
    required = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight")
    missing = [k for k in required if k not in sd]
    if missing:
        raise ValueError(
            f"these weights are not a TimeSformer: missing {missing} (found e.g. {list(sd)[:5]}). "
            f"For an ImageNet ViT use tsf.weights.from_imagenet_vit()"
        )
    embed_dim = sd["cls_token"].shape[-1]
    patch_size = sd["patch_embed.proj.weight"].shape[-1]
    num_patches = sd["pos_embed"].shape[1] - 1
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise ValueError(f"pos_embed has {num_patches} patch positions, not a square grid")
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    if "blocks.0.temporal_attn.qkv.weight" in sd:
        attention_type = "divided_space_time"
    elif "time_embed" in sd:
        attention_type = "joint_space_time"
    else:
        attention_type = "space_only"
    inferred = dict(
        img_size=grid * patch_size,
        patch_size=patch_size,
        in_chans=sd["patch_embed.proj.weight"].shape[1],
        num_frames=sd["time_embed"].shape[1] if "time_embed" in sd else overrides.get("num_frames", 8),
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=max(1, embed_dim // 64),
        mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        attention_type=attention_type,
    )
    return TimeSformerConfig(**{**inferred, **overrides})


# -- loading ------------------------------------------------------------------------------------
def read_weights(source: Union[str, Path], trust_checkpoint: bool = False) -> tuple[StateDict, dict]:
    """State dict (official names) and the config fields the file records beyond the weights.

    Returns:
        ``(state_dict, known)`` where ``known`` holds fields such as ``num_heads``, ``class_names``,
        ``mean``/``std`` and ``layernorm_eps`` when the format records them.
    """
    path = Path(source)
    if path.is_dir():
        return _read_hf_dir(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; give a checkpoint file, a Hugging Face model directory, "
            f"or a zoo name (tsf.list_models())"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return state_dict_from_hf(load_file(path)), {}
    ckpt = load_checkpoint_file(path, trust_checkpoint)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    if "tsf_version" in ckpt:
        return ckpt["state_dict"], TimeSformerConfig.from_dict(ckpt["config"]).to_dict()
    if "model_state" in ckpt:
        sd = _strip_prefixes(ckpt["model_state"])
        known = _official_cfg_fields(ckpt.get("cfg"))
        if "time_embed" in sd:  # the weights say how many frames; the cfg only matters for space_only
            known.pop("num_frames", None)
        return sd, known
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    if any(k.startswith("timesformer.") for k in ckpt):
        return state_dict_from_hf(ckpt), {}
    return _strip_prefixes(ckpt), {}


# fields the weights determine: from_pretrained refuses overrides that contradict them
_DETERMINED = ("embed_dim", "depth", "patch_size", "in_chans", "mlp_ratio", "qkv_bias", "attention_type")

def _official_cfg_fields(cfg) -> dict:
    """Frame count and normalisation from an official checkpoint's ``cfg`` (a YAML dump)."""
    if not isinstance(cfg, str):
        return {}
    try:
        data = (yaml.safe_load(cfg) or {}).get("DATA", {})
    except yaml.YAMLError:
        return {}
    known = {"num_frames": data["NUM_FRAMES"]} if "NUM_FRAMES" in data else {}
    if "MEAN" in data and "STD" in data:
        known["mean"], known["std"] = tuple(data["MEAN"]), tuple(data["STD"])
    return known


def _read_hf_dir(path: Path) -> tuple[StateDict, dict]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is a directory without config.json: not a Hugging Face model directory")
    hf = json.loads(config_file.read_text())
    if hf.get("model_type") != "timesformer":
        raise ValueError(f"{config_file} has model_type={hf.get('model_type')!r}, expected 'timesformer'")
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        sd = load_file(path / "model.safetensors")
    elif (path / "pytorch_model.bin").is_file():
        sd = load_checkpoint_file(path / "pytorch_model.bin")
    else:
        raise FileNotFoundError(f"{path} has neither model.safetensors nor pytorch_model.bin")
    known = {
        "num_heads": hf["num_attention_heads"],
        "layernorm_eps": hf.get("layer_norm_eps", 1e-6),
        "num_frames": hf.get("num_frames", 8),
    }
    id2label = hf.get("id2label")
    if id2label and "classifier.weight" in sd and len(id2label) == sd["classifier.weight"].shape[0]:
        names = tuple(id2label[str(i)] for i in range(len(id2label)))
        if not all(name == f"LABEL_{i}" for i, name in enumerate(names)):
            known["class_names"] = names
    processor = path / "preprocessor_config.json"
    if processor.is_file():
        proc = json.loads(processor.read_text())
        if "image_mean" in proc and "image_std" in proc:
            known["mean"], known["std"] = tuple(proc["image_mean"]), tuple(proc["image_std"])
    return state_dict_from_hf(sd), known


def adapt_state_dict(sd: StateDict, cfg: TimeSformerConfig) -> StateDict:
    """Resize ``pos_embed`` (bicubic 2-D, class position kept) and ``time_embed`` (linear 1-D) to ``cfg``.

    The official code resizes the patch grid as a 1-D sequence with nearest neighbours, which
    scrambles rows; this keeps the grid 2-D.
    """
    sd = dict(sd)
    pos = sd.get("pos_embed")
    if pos is not None and pos.shape[1] != cfg.num_patches + 1:
        old = math.isqrt(pos.shape[1] - 1)
        # (1, old*old, D) -> (1, D, old, old) -> (1, D, g, g) -> (1, g*g, D)
        grid = pos[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(cfg.grid_size, cfg.grid_size), mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, cfg.num_patches, -1).to(pos.dtype)
        sd["pos_embed"] = torch.cat((pos[:, :1], grid), dim=1)
    time = sd.get("time_embed")
    if time is not None and "time_embed" in sd and time.shape[1] != cfg.num_frames:
        # (1, T0, D) -> (1, D, T0) -> (1, D, T) -> (1, T, D)
        resized = F.interpolate(time.transpose(1, 2).float(), size=cfg.num_frames, mode="linear", align_corners=False)
        sd["time_embed"] = resized.transpose(1, 2).to(time.dtype)
    return sd


def load_weights_into(
    model: TimeSformer,
    source: Union[str, Path, StateDict],
    reinit_head: bool = True,
    trust_checkpoint: bool = False,
    source_name: Optional[str] = None,
) -> None:
    """Load weights from any supported format into an existing ``model``, strictly.

    Embeddings are resized to the model's frames and image size. A head of another class count
    is left freshly initialised when ``reinit_head`` (fine-tuning); every other missing or
    unexpected key or shape mismatch raises one error that lists them all.

    Args:
        model: the model to fill.
        source: a path in any supported format, or a state dict with official names.
        reinit_head: keep the model's fresh head when the checkpoint's class count differs.
        trust_checkpoint: allow full unpickling (trusted files only).
        source_name: what to call ``source`` in errors when it is a state dict.
    """
    source_name = source_name or (str(source) if not isinstance(source, dict) else "the given state dict")
    sd = source if isinstance(source, dict) else read_weights(source, trust_checkpoint)[0]
    sd = adapt_state_dict(sd, model.config)
    own = model.state_dict()
    head_differs = "head.weight" in sd and sd["head.weight"].shape != own.get("head.weight", torch.empty(0)).shape
    if head_differs and reinit_head:
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    missing = sorted(set(own) - set(sd) - ({"head.weight", "head.bias"} if head_differs and reinit_head else set()))
    unexpected = sorted(set(sd) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(sd) & set(own) if sd[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        lines = [f"weights from {source_name} do not fit this TimeSformer "
                 f"({model.config.attention_type}, depth {model.config.depth}, width {model.config.embed_dim}):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:12]) + (" ..." if len(items) > 12 else ""))
        if any(k.startswith("head.") for k in mismatched + missing) and not any(k.startswith("blocks.") for k in mismatched):
            lines.append("  fix: pass num_classes=<your class count> to re-initialise the head for fine-tuning")
        if any("temporal" in k or "time_embed" in k for k in missing + unexpected):
            lines.append("  fix: the attention_type differs; use tsf.from_pretrained(), which infers it from the weights")
        raise ValueError("\n".join(lines))
    model.load_state_dict(sd, strict=False)


def from_pretrained(name_or_path: Union[str, Path], trust_checkpoint: bool = False, **overrides) -> TimeSformer:
    """Build a TimeSformer from a zoo name, an official ``.pyth``, a Hugging Face directory or a tsf checkpoint.

    Args:
        name_or_path: a name from ``tsf.list_models()`` (downloaded once, cached) or a local path.
        trust_checkpoint: allow full unpickling for files holding Python objects (trusted sources only).
        **overrides: ``TimeSformerConfig`` fields. ``num_classes=K`` (K differing from the
            checkpoint) starts a fresh head for fine-tuning; ``num_frames``/``img_size`` resize the
            time/position embeddings; ``num_heads`` must be given for models whose heads are not
            64 wide; ``class_names``, dropout and drop-path rates are free.

    Returns:
        The model in eval mode, on CPU.
    """
    from . import zoo

    key = str(name_or_path)
    entry = zoo.ZOO.get(key)
    path = zoo.fetch(key) if entry else Path(name_or_path)
    sd, known = read_weights(path, trust_checkpoint)
    if entry:
        known.setdefault("num_heads", entry.num_heads)
    if "class_names" not in known and sd.get("head.weight", torch.empty(0)).shape[:1] == (400,):
        known["class_names"] = tuple(kinetics400_classes())
    conflicts = []
    if any(k in overrides for k in _DETERMINED):
        from_weights = infer_config(sd, **{k: v for k, v in known.items() if k != "num_heads"}, num_heads=1)
        conflicts = [f"{k}={overrides[k]!r} (the weights have {getattr(from_weights, k)!r})"
                     for k in _DETERMINED if k in overrides and overrides[k] != getattr(from_weights, k)]
    if conflicts:
        raise ValueError(
            f"{name_or_path}: {', '.join(conflicts)}; these are fixed by the weights. "
            f"Leave them out, or build tsf.TimeSformer(...) and train it from scratch"
        )
    inferred_classes = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    new_head = "num_classes" in overrides and overrides["num_classes"] != inferred_classes
    if new_head:  # the checkpoint's class names belong to its old head
        known.pop("class_names", None)
    cfg = infer_config(sd, **{**known, **overrides})
    model = TimeSformer.from_config(cfg)
    load_weights_into(model, sd, reinit_head=new_head, source_name=str(name_or_path))
    return model.eval()


# -- saving -------------------------------------------------------------------------------------
def model_checkpoint(model: TimeSformer) -> dict:
    """The tsf checkpoint of ``model``: config plus weights; training checkpoints add their own keys."""
    return {"tsf_version": TSF_VERSION, "config": model.config.to_dict(), "state_dict": model.state_dict()}


def atomic_save(obj, path: Union[str, Path]) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pretrained(model: TimeSformer, path: Union[str, Path], format: str = "tsf") -> Path:
    """Save ``model`` as a tsf checkpoint file, an official ``.pyth`` file, or a Hugging Face directory.

    Args:
        model: the model to save.
        path: file (tsf, official) or directory (hf) to write.
        format: ``"tsf"``, ``"official"`` (loads in facebookresearch/TimeSformer's
            ``load_checkpoint``) or ``"hf"`` (loads with
            ``transformers.TimesformerForVideoClassification.from_pretrained``).
    """
    path = Path(path)
    cfg = model.config
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if format == "tsf":
        atomic_save(model_checkpoint(model), path)
    elif format == "official":
        official_cfg = {
            "DATA": {"NUM_FRAMES": cfg.num_frames, "TRAIN_CROP_SIZE": cfg.img_size, "TEST_CROP_SIZE": cfg.img_size,
                     "MEAN": list(cfg.mean), "STD": list(cfg.std)},
            "MODEL": {"MODEL_NAME": "vit_base_patch16_224", "NUM_CLASSES": cfg.num_classes, "ARCH": "vit"},
            "TIMESFORMER": {"ATTENTION_TYPE": cfg.attention_type, "PRETRAINED_MODEL": ""},
        }
        atomic_save({"epoch": 0, "model_state": {f"model.{k}": v for k, v in sd.items()},
                     "optimizer_state": {}, "cfg": yaml.safe_dump(official_cfg)}, path)
    elif format == "hf":
        _save_hf(model, sd, path)
    else:
        raise ValueError(f"format={format!r}: expected 'tsf', 'official' or 'hf'")
    return path


def _save_hf(model: TimeSformer, sd: StateDict, path: Path) -> None:
    from safetensors.torch import save_file

    cfg = model.config
    if cfg.attention_type == "space_only":
        raise ValueError(
            "transformers' Timesformer does not implement space_only correctly (it never averages the "
            "frames), so a space_only model cannot be exported to the Hugging Face format; use format='tsf'"
        )
    names = cfg.class_names or tuple(f"LABEL_{i}" for i in range(cfg.num_classes))
    hf_config = {
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
    path.mkdir(parents=True, exist_ok=True)
    save_file(state_dict_to_hf(sd), str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    (path / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")


# -- ImageNet initialisation ----------------------------------------------------------------------
def from_imagenet_vit(vit: Union[str, Path, torch.nn.Module, StateDict], **config) -> TimeSformer:
    """A TimeSformer initialised from an ImageNet ViT, as the paper trained.

    Spatial attention, patch embedding, MLPs and norms come from the ViT; each block's temporal
    attention (and its norm) starts as a copy of its spatial attention; ``temporal_fc`` is zero in
    every block but the first, and ``time_embed`` is zero, so the model starts out computing the
    ViT on each frame. Like the official code, the first block's ``temporal_fc`` keeps its random
    initialisation. The position embedding is resized (bicubic) to the new grid; the ViT's head
    is dropped.

    Args:
        vit: a timm ViT model, its state dict, or a file holding one (``.pth``/``.bin``/``.safetensors``,
            optionally under a ``model``/``state_dict`` key). A state dict does not show the head
            count: pass ``num_heads`` unless the heads are 64 wide.
        **config: ``TimeSformerConfig`` fields (``num_classes``, ``num_frames``, ``img_size``,
            ``attention_type``...); width, depth and patch size come from the ViT.
    """
    if isinstance(vit, torch.nn.Module):
        sd = vit.state_dict()
        config.setdefault("num_heads", vit.blocks[0].attn.num_heads)
    elif isinstance(vit, dict):
        sd = vit
    elif str(vit).endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(str(vit))
    else:
        sd = load_checkpoint_file(vit)
        for key in ("model", "state_dict"):
            if isinstance(sd.get(key), dict):
                sd = sd[key]
    sd = {k: v for k, v in _strip_prefixes(sd).items() if not k.startswith("head.")}
    extra = sorted(k for k in sd if k.split(".")[0] not in {"cls_token", "pos_embed", "patch_embed", "blocks", "norm"})
    if extra:
        raise ValueError(
            f"this ViT has parameters a TimeSformer has no place for: {extra[:6]} "
            f"(register tokens, layer scale or a different pooling are not supported)"
        )
    vit_cfg = infer_config(sd)
    cfg = replace(  # the ViT has no time_embed: infer_config calls it space_only, the caller decides
        vit_cfg,
        attention_type=config.pop("attention_type", "divided_space_time"),
        num_classes=config.pop("num_classes", 400),
        img_size=config.pop("img_size", vit_cfg.img_size),
        **config,
    )
    model = TimeSformer.from_config(cfg)
    sd = adapt_state_dict(sd, cfg)
    if cfg.attention_type == "divided_space_time":
        for i in range(cfg.depth):
            for name in ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                         "norm1.weight", "norm1.bias"):
                if f"blocks.{i}.{name}" in sd:
                    sd[f"blocks.{i}.temporal_{name}"] = sd[f"blocks.{i}.{name}"].clone()
    own = model.state_dict()
    for name in own:
        if name.startswith("head.") or (name.startswith("blocks.") and "temporal_fc" in name):
            sd[name] = own[name]  # fresh head; temporal_fc as initialised (zero but block 0)
    if "time_embed" in own:
        sd["time_embed"] = torch.zeros_like(own["time_embed"])
    load_weights_into(model, sd, reinit_head=False)
    return model
