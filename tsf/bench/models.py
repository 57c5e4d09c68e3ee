"""The benchmarked model and its Hugging Face twin: a seeded random init (or given weights), saved
as a tsf checkpoint for the training children and exported to the Hugging Face format."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..model import TimeSformer, create_model
from ..weights import from_pretrained, save_pretrained


def load_model(preset: str, weights: Optional[str]) -> TimeSformer:
    """The model in eval mode: ``weights`` when given, else ``preset`` from seed 0.

    Args:
        preset: a name in ``tsf.PRESETS``.
        weights: anything ``tsf.from_pretrained`` reads, or None.
    """
    if weights:
        return from_pretrained(weights).eval()
    torch.manual_seed(0)
    model = create_model(preset).eval()
    # the official init zeroes temporal_fc in all blocks but the first, which would make the
    # temporal branch (and any error in it) invisible in the logits: give it real weights
    with torch.no_grad():
        for block in model.blocks:
            if hasattr(block, "temporal_fc"):
                torch.nn.init.trunc_normal_(block.temporal_fc.weight, std=0.02)
    return model


def export(model: TimeSformer, folder: Path, hf: bool) -> tuple[Path, Optional[Path], Optional[str]]:
    """The tsf checkpoint and the Hugging Face export of the same weights, written under ``folder``.

    Args:
        model: the benchmarked model.
        folder: where to write them (a temporary folder).
        hf: export for the transformers baseline at all.

    Returns:
        The checkpoint, the Hugging Face folder (None without the baseline) and why there is no
        baseline (None when there is).
    """
    tsf_path = save_pretrained(model, folder / "model.pt")
    if not hf:
        return tsf_path, None, "Hugging Face baseline skipped (--no-hf)"
    try:
        import transformers  # noqa: F401
    except ImportError:
        return tsf_path, None, "transformers is not installed: Hugging Face baseline skipped"
    try:
        hf_dir = save_pretrained(model, folder / "hf", format="hf")
    except ValueError as err:
        return tsf_path, None, f"Hugging Face baseline skipped: {err}"
    return tsf_path, hf_dir, None


def load_hf(hf_dir: Path) -> torch.nn.Module:
    """transformers' ``TimesformerForVideoClassification`` from an export, in eval mode, quietly."""
    from transformers import TimesformerForVideoClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return TimesformerForVideoClassification.from_pretrained(str(hf_dir)).eval()
