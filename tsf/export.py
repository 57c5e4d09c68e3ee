"""A TimeSformer for deployment: ONNX (``onnxruntime``, any language) and a ``torch.export``
``ExportedProgram`` (``torch.export.load``, no tsf needed), both with a dynamic batch axis.

Both files carry what a user needs to feed them (``metadata``): class names, the normalisation
``(x / 255 - mean) / std`` per RGB channel, and the input layout ``(batch, 3, frames, height,
width)`` float32. ONNX keeps them in the model's ``metadata_props``, each value JSON (onnxruntime:
``session.get_modelmeta().custom_metadata_map``), the ExportedProgram in an extra file
``tsf.json`` inside its archive (``torch.export.load(path, extra_files={"tsf.json": ""})``).

    from tsf.export import export_onnx, export_program
    export_onnx(model, "model.onnx")               # python -m tsf export CKPT --format onnx --out model.onnx
    export_program(model, "model.pt2")             # ... --format exported-program --out model.pt2

The exported graph is the reference path of ``tsf.model`` (``lean_path(False)``: plain
operators, no caches) with fused attention (``scaled_dot_product_attention``); the frame count and
crop size are fixed at export time (those of the model's config unless given), the batch is free.
Files are written whole or not at all (``tsf.outputs.atomic_path``), and an existing file is
replaced only with ``overwrite=True``.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional, Union

import torch

from . import __version__
from .errors import ConfigError
from .model import TimeSformer
from .outputs import atomic_path, refuse_to_overwrite

FORMATS = ("onnx", "exported-program")
INPUT_NAME, OUTPUT_NAME = "clip", "logits"
METADATA_FILE = "tsf.json"  # the ExportedProgram archive's extra file
DEFAULT_OPSET = 18
PathLike = Union[str, Path]


def metadata(model: TimeSformer, num_frames: Optional[int] = None, img_size: Optional[int] = None) -> dict:
    """What the exported file needs to be used without tsf: classes, normalisation, layout.

    Args:
        model: the exported model.
        num_frames: frames per clip of the export (default: the config's).
        img_size: frame side of the export (default: the config's).
    """
    cfg = model.config
    frames, size = num_frames or cfg.num_frames, img_size or cfg.img_size
    names = list(cfg.class_names) if cfg.class_names else [f"class_{i}" for i in range(cfg.num_classes)]
    return {
        "producer": f"tsf {__version__}",
        "class_names": names,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_layout": "NCTHW",
        "input_shape": ["batch", cfg.in_chans, frames, size, size],
        "input_dtype": "float32",
        "input": (f"float32 (batch, {cfg.in_chans}, {frames}, {size}, {size}): RGB frames in time order, scaled to "
                  f"[0, 1] (uint8 / 255), then (x - mean) / std per channel; short side resized to {size} and "
                  f"centre-cropped {size}x{size}"),
        "output": f"float32 (batch, {cfg.num_classes}) logits; softmax for probabilities, class_names[argmax]",
        "num_frames": frames,
        "img_size": size,
        "attention_type": cfg.attention_type,
    }


def export_onnx(model: TimeSformer, path: PathLike, num_frames: Optional[int] = None, img_size: Optional[int] = None,
                opset: int = DEFAULT_OPSET, overwrite: bool = False) -> Path:
    """Write ``model`` as one ONNX file (weights inside) with a dynamic batch axis and tsf's metadata.

    Args:
        model: the model (fp32 weights; it is exported on CPU and left as it was).
        path: the ``.onnx`` file.
        num_frames: frames per clip (default: the model's config).
        img_size: frame side in pixels (default: the model's config).
        opset: the ONNX opset (default 18).
        overwrite: replace an existing file.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        ConfigError: onnx/onnxscript are not installed.
    """
    path = Path(path)
    refuse_to_overwrite([path], overwrite, "export files")
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as error:
        raise ConfigError(f"ONNX export needs onnx and onnxscript ({error}): pip install onnx onnxscript onnxruntime "
                          f"(the dev extras have them)") from None
    meta = metadata(model, num_frames, img_size)
    example, restore = _prepared(model, meta)
    try:
        with atomic_path(path) as tmp, model.lean_path(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                dynamo=True, dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
                external_data=False, verbose=False,
            )
            proto = program.model_proto
            for key, value in meta.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, json.dumps(value)  # every value JSON: json.loads reads any of them
            proto.producer_name, proto.producer_version = "tsf", __version__
            onnx.save_model(proto, str(tmp))
    finally:
        restore()
    return path


def export_program(model: TimeSformer, path: PathLike, num_frames: Optional[int] = None,
                   img_size: Optional[int] = None, overwrite: bool = False) -> Path:
    """Write ``model`` as a ``torch.export`` ExportedProgram archive (``.pt2``) with a dynamic batch
    axis; tsf's metadata rides along as the extra file ``tsf.json``.

    Args: as ``export_onnx`` (no opset).
    """
    path = Path(path)
    refuse_to_overwrite([path], overwrite, "export files")
    meta = metadata(model, num_frames, img_size)
    example, restore = _prepared(model, meta)
    try:
        with model.lean_path(False), torch.no_grad():
            program = torch.export.export(model, (example,),
                                          dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}})
        with atomic_path(path) as tmp:
            torch.export.save(program, str(tmp), extra_files={METADATA_FILE: json.dumps(meta)})
    finally:
        restore()
    return path


def export(model: TimeSformer, path: PathLike, format: str = "onnx", **kwargs) -> Path:
    """``export_onnx`` or ``export_program`` by ``format`` (one of ``FORMATS``)."""
    if format == "onnx":
        return export_onnx(model, path, **kwargs)
    if format == "exported-program":
        kwargs.pop("opset", None)
        return export_program(model, path, **kwargs)
    raise ConfigError(f"format={format!r}: choose one of {', '.join(FORMATS)}")


def load_program(path: PathLike) -> tuple[torch.export.ExportedProgram, dict]:
    """An exported program and its tsf metadata (``torch.export.load`` with the extra file)."""
    extra = {METADATA_FILE: ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program, json.loads(extra[METADATA_FILE]) if extra[METADATA_FILE] else {}


def onnx_metadata(path_or_session) -> dict:
    """The tsf metadata of an ONNX file (or an ``onnxruntime.InferenceSession``), values decoded."""
    if hasattr(path_or_session, "get_modelmeta"):
        props = path_or_session.get_modelmeta().custom_metadata_map
    else:
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path_or_session), load_external_data=False).metadata_props}
    out = {}
    for key, value in props.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def onnx_session(path: PathLike, threads: Optional[int] = None):
    """An ``onnxruntime.InferenceSession`` on the CPU for an exported file.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: onnxruntime's, one per core).
    """
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("onnxruntime is not installed: pip install onnxruntime (the dev extras have it)") from None
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_export(model: TimeSformer, path: PathLike, format: str = "onnx", num_frames: Optional[int] = None,
                 img_size: Optional[int] = None, batch: int = 3) -> float:
    """The largest |logit| difference between ``model`` (fp32, CPU) and its export at ``path``,
    reloaded (onnxruntime / ``torch.export.load``), on a random clip batch of ``batch``."""
    meta = metadata(model, num_frames, img_size)
    cfg = model.config
    clip = torch.randn(batch, cfg.in_chans, meta["num_frames"], meta["img_size"], meta["img_size"],
                       generator=torch.Generator().manual_seed(1))
    device, training = next(model.parameters()).device, model.training
    try:
        reference = model.cpu().eval()(clip)
    finally:
        model.to(device).train(training)
    if format == "onnx":
        got = torch.from_numpy(onnx_session(path).run([OUTPUT_NAME], {INPUT_NAME: clip.numpy()})[0])
    else:
        got = load_program(path)[0].module()(clip)
    return (got - reference).abs().max().item()


def _prepared(model: TimeSformer, meta: dict):
    """An example clip of batch 2 (batch 1 would be specialised) for ``model`` on CPU in eval mode,
    and the function that returns the model to its device and mode."""
    device, training = next(model.parameters()).device, model.training
    model.cpu().eval()
    cfg = model.config
    example = torch.randn(2, cfg.in_chans, meta["num_frames"], meta["img_size"], meta["img_size"],
                          generator=torch.Generator().manual_seed(0))

    def restore() -> None:
        model.to(device).train(training)

    return example, restore


__all__ = ["FORMATS", "metadata", "export", "export_onnx", "export_program", "load_program", "onnx_metadata",
           "onnx_session", "check_export"]
