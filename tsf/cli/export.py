"""`python -m tsf export CHECKPOINT --format onnx|exported-program --out FILE`: a checkpoint as an
ONNX file (onnxruntime) or a torch.export ExportedProgram, dynamic batch, tsf's metadata inside
(``tsf.export``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_checkpoint_flags, positive_int

FORMATS = ("onnx", "exported-program")  # tsf.export.FORMATS (that module loads torch)
SUFFIXES = {"onnx": ".onnx", "exported-program": ".pt2"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run's best.pt, an official .pyth, a Hugging Face folder or a zoo name")
    parser.add_argument("--format", choices=FORMATS, default="onnx",
                        help="onnx (runs in onnxruntime) or exported-program (torch.export.load) (default: onnx)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="the file to write (default: the checkpoint's name with .onnx or .pt2, in the current folder)")
    parser.add_argument("--frames", type=positive_int,
                        help="frames per clip of the exported model (default: the checkpoint's)")
    parser.add_argument("--img-size", type=positive_int,
                        help="frame side in pixels, a multiple of the patch size (default: the checkpoint's)")
    parser.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--check", action="store_true",
                        help="reload the file (onnxruntime / torch.export.load) and print its largest logit "
                             "difference from tsf at batch 3")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_checkpoint_flags(parser)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..evaluate import load_model
    from ..export import check_export, export, metadata
    from ..outputs import refuse_to_overwrite

    name = Path(str(args.checkpoint).rstrip("/")).name
    out = args.out or Path(Path(name).stem + SUFFIXES[args.format])
    refuse_to_overwrite([out], args.overwrite, "export files")
    model, _ = load_model(args.checkpoint, args.num_heads, args.trust_checkpoint)
    size = args.img_size or model.config.img_size
    if size % model.config.patch_size:
        raise ConfigError(f"--img-size {size} is not a multiple of the patch size {model.config.patch_size}")
    options = {"num_frames": args.frames, "img_size": args.img_size, "overwrite": args.overwrite}
    if args.format == "onnx":
        options["opset"] = args.opset
    path = export(model, out, args.format, **options)
    meta = metadata(model, args.frames, args.img_size)
    print(f"wrote {path} ({args.format}; input {meta['input_name']} {tuple(meta['input_shape'])} float32, "
          f"{len(meta['class_names'])} classes; metadata: class_names, mean, std, input layout)")
    if args.check:
        diff = check_export(model, path, args.format, num_frames=args.frames, img_size=args.img_size)
        print(f"reloaded: max |logits - tsf| = {diff:.2e} at batch 3")
    return 0
