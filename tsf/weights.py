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
``tsf.huggingface`` holds the Hugging Face layout (names, config files); building a model to
train (preset, fine-tuning, ImageNet ViT) is ``tsf.build``.
"""
from __future__ import annotations

import difflib
import json
import math
import os
import pickle
import tempfile
import warnings
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Optional, Union

import torch
import yaml

from . import huggingface, zoo
from .errors import CheckpointError, ConfigError
from .model import TimeSformer, TimeSformerConfig, resize_pos_embed, resize_time_embed

TSF_VERSION = 1
StateDict = dict[str, torch.Tensor]


def kinetics400_classes() -> list[str]:
    """The 400 Kinetics class names, index = label id."""
    text = resources.files("tsf").joinpath("resources/kinetics400_classes.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


# -- reading files -------------------------------------------------------------------------------
def load_checkpoint_file(path: Union[str, Path], trust_checkpoint: bool = False):
    """``torch.load`` on CPU with ``weights_only=True`` unless the file's source is trusted.

    Raises:
        CheckpointError: the file does not exist, is empty, is not a PyTorch checkpoint, or holds
            Python objects and is not trusted (the message says how to trust it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): an interrupted copy or save? Use another checkpoint")
    try:
        with warnings.catch_warnings():  # a damaged file's stray protocol byte: the error below says it better
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # not a class reference: the bytes are no pickle at all
            raise CheckpointError(f"{path} is not a PyTorch checkpoint (its contents are not a saved "
                                  f"state dict or model): check the file") from None
        raise CheckpointError(
            f"{path} holds Python objects beyond tensors and plain containers, which are not loaded by "
            f"default because unpickling can run code. If you trust where the file came from, pass "
            f"--trust-checkpoint (in Python: trust_checkpoint=True)"
        ) from None
    except Exception as err:  # other bytes fail in many ways inside the unpickler (IndexError, UnicodeDecodeError, ...)
        raise CheckpointError(f"{path} is not a PyTorch checkpoint, or a damaged one ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'truncated'}); check the file") from None


def _strip_prefixes(sd: StateDict) -> StateDict:
    """``sd`` without the ``module.`` (DDP) and ``model.`` (official wrapper) prefixes of its keys."""
    out = {}
    for key, value in sd.items():
        for prefix in ("module.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


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
        raise CheckpointError(
            f"these weights are not a TimeSformer: missing {missing} (found e.g. {list(sd)[:5]}). "
            f"For an ImageNet ViT use tsf.weights.from_imagenet_vit()"
        )
    embed_dim = sd["cls_token"].shape[-1]
    patch_size = sd["patch_embed.proj.weight"].shape[-1]
    num_patches = sd["pos_embed"].shape[1] - 1
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise CheckpointError(f"pos_embed has {num_patches} patch positions, not a square grid")
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
        num_heads=overrides.get("num_heads") or _assumed_heads(embed_dim),
        mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        attention_type=attention_type,
    )
    return TimeSformerConfig(**{**inferred, **overrides})


def _assumed_heads(embed_dim: int) -> int:
    """The head count of weights that do not record it: 64-wide heads, said out loud."""
    heads = max(1, embed_dim // 64)
    warnings.warn(f"the checkpoint does not record its attention heads: assuming num_heads={heads} (embed_dim "
                  f"{embed_dim} / 64, true of every released TimeSformer); if its heads are not 64 wide pass "
                  f"num_heads= (--num-heads), or its outputs will be wrong", stacklevel=3)
    return heads


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
        near = difflib.get_close_matches(str(source), list(zoo.ZOO), n=1, cutoff=0.6)
        raise CheckpointError(
            f"{path} does not exist; give a checkpoint file, a Hugging Face model directory, "
            f"or a zoo name (tsf.list_models())" + (f"; did you mean the zoo model {near[0]!r}?" if near else "")
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return huggingface.state_dict_from_hf(load_file(path)), {}
    ckpt = load_checkpoint_file(path, trust_checkpoint)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
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
        return huggingface.state_dict_from_hf(ckpt), {}
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
        raise CheckpointError(f"{path} is a directory without config.json: not a Hugging Face model directory")
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "timesformer":
        raise CheckpointError(f"{config_file} has model_type={config.get('model_type')!r}, expected 'timesformer'")
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        sd = load_file(path / "model.safetensors")
    elif (path / "pytorch_model.bin").is_file():
        sd = load_checkpoint_file(path / "pytorch_model.bin")
    else:
        raise CheckpointError(f"{path} has neither model.safetensors nor pytorch_model.bin")
    processor_file = path / "preprocessor_config.json"
    processor = json.loads(processor_file.read_text()) if processor_file.is_file() else None
    sd = huggingface.state_dict_from_hf(sd)
    return sd, huggingface.config_fields(config, processor, sd["head.weight"].shape[0] if "head.weight" in sd else 0)


def adapt_state_dict(sd: StateDict, cfg: TimeSformerConfig) -> StateDict:
    """``sd`` with ``pos_embed`` and ``time_embed`` resized to ``cfg``'s patch grid and frames
    (``tsf.model.resize_pos_embed``, ``resize_time_embed``, as the forward pass resizes them)."""
    sd = dict(sd)
    if "pos_embed" in sd:
        sd["pos_embed"] = resize_pos_embed(sd["pos_embed"], (cfg.grid_size, cfg.grid_size))
    if "time_embed" in sd:
        sd["time_embed"] = resize_time_embed(sd["time_embed"], cfg.num_frames)
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
        raise CheckpointError("\n".join(lines))
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
        raise CheckpointError(
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
        raise ConfigError(f"format={format!r}: expected 'tsf', 'official' or 'hf'")
    return path


def _save_hf(model: TimeSformer, sd: StateDict, path: Path) -> None:
    from safetensors.torch import save_file

    config, processor = huggingface.config_files(model.config)
    path.mkdir(parents=True, exist_ok=True)
    save_file(huggingface.state_dict_to_hf(sd), str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
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
        raise CheckpointError(
            f"this ViT has parameters a TimeSformer has no place for: {extra[:6]} "
            f"(register tokens, layer scale or a different pooling are not supported)"
        )
    vit_cfg = infer_config(sd, **({"num_heads": config["num_heads"]} if config.get("num_heads") else {}))
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
