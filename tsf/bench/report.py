"""The report's derived figures (fractions of the peak, ratios against HF) and its markdown tables."""
from __future__ import annotations

from typing import Any


def apply_peak(report: dict) -> None:
    """Add ``fraction_of_peak`` (and ``executed_fraction_of_peak``) to every timed row, against
    ``report["peak"]``."""
    peak = report["peak"]["flops_per_s"]
    rows = [row for rows in (_get(report, "inference", "batches") or {}).values() for row in rows.values()]
    rows += [row for row in (_get(report, "train", "configs") or {}).values() if "error" not in row]
    for row in rows:
        row["fraction_of_peak"] = row["flops_per_s"] / peak
        if "executed_flops_per_s" in row:
            row["executed_fraction_of_peak"] = row["executed_flops_per_s"] / peak


def ratios(report: dict) -> dict:
    """Each configuration against HF: ``inference_b{batch}_{config}_vs_hf`` (clips/s, higher is
    faster), ``train_{config}_speed_vs_hf`` (higher is faster), ``train_{config}_memory_vs_hf``
    (step peak memory, lower is leaner)."""
    out = {}
    for batch, rows in (_get(report, "inference", "batches") or {}).items():
        hf = rows.get("hf")
        for name, row in rows.items():
            if hf and name != "hf":
                out[f"inference_b{batch}_{name}_vs_hf"] = row["clips_per_s"] / hf["clips_per_s"]
    configs = _get(report, "train", "configs") or {}
    hf = configs.get("hf")
    if hf and "error" not in hf:
        for name, row in configs.items():
            if name == "hf" or "error" in row:
                continue
            out[f"train_{name}_speed_vs_hf"] = hf["median_s"] / row["median_s"]
            if row.get("step_peak_mb") and hf.get("step_peak_mb"):
                out[f"train_{name}_memory_vs_hf"] = row["step_peak_mb"] / hf["step_peak_mb"]
    return out


def markdown(report: dict) -> str:
    """The report as markdown: a header line, then one table per section that ran, then the notes."""
    dev, s = report["device"], report["settings"]
    precision = "fp32" if s["precision"] == "fp32" else f"{s['precision']} autocast (weights fp32)"
    lines = [
        f"## tsf bench: {s['preset']} on {dev.get('name')}",
        "",
        f"torch {report['versions']['torch']}, transformers {report['versions'].get('transformers')}, "
        f"{precision}, {s['threads']} threads, median of {s['repeats']}; weights: {s['weights']}; "
        f"peak {report['peak']['flops_per_s'] / 1e9:.0f} GFLOP/s ({report['peak']['kind']}); "
        f"{report['flops_per_clip_forward'] / 1e9:.1f} GFLOP per clip (forward)",
        "",
    ]
    lines += _inference_lines(report.get("inference")) + _train_lines(report.get("train"))
    lines += _data_lines(report.get("data"))
    lines += [f"Note: {note}\n" for note in report.get("notes", [])]
    return "\n".join(lines).rstrip("\n")


def _inference_lines(inf: dict | None) -> list[str]:
    if not inf:
        return []
    lines = ["| inference | batch | s/batch | clips/s | × HF | model GFLOP/s | % of peak | executed % of peak |",
             "|---|---|---|---|---|---|---|---|"]
    for batch, rows in inf["batches"].items():
        hf = rows.get("hf")
        for name, row in rows.items():
            ratio = row["clips_per_s"] / hf["clips_per_s"] if hf else None
            executed = row.get("executed_fraction_of_peak")
            lines.append(
                f"| {name} | {batch} | {_fmt(row['median_s'])} | {_fmt(row['clips_per_s'])} | {_fmt(ratio)} | "
                f"{row['flops_per_s'] / 1e9:.0f} | {100 * row['fraction_of_peak']:.0f}% | "
                f"{'-' if executed is None else f'{100 * executed:.0f}%'} |"
            )
    lines.append("")
    if "max_abs_logit_diff_vs_hf" in inf:
        lines.append(f"max |logits − HF| = {inf['max_abs_logit_diff_vs_hf']:.2e} (logits up to {inf['logit_scale']:.2f}); "
                     f"explicit vs fused {inf['max_abs_logit_diff_explicit_vs_fused']:.2e}")
    if "int8" in inf:
        q = inf["int8"]
        lines.append(f"int8 vs fp32 on {q['clips']} clips: top-1 agreement {q['top1_agreement']:.3f}, relative logit "
                     f"error {q['relative_logit_error']:.3f}, min cosine {q['cosine_similarity_min']:.4f} ({q['note']})")
    return lines + [""]


def _train_lines(train: dict | None) -> list[str]:
    if not train:
        return []
    lines = [f"| training step (batch {train['batch']}) | s/step | × HF speed | step peak MB | × HF memory | % of peak |",
             "|---|---|---|---|---|---|"]
    configs = train["configs"]
    hf = configs.get("hf") if "error" not in configs.get("hf", {"error": 1}) else None
    for name, row in configs.items():
        if "error" in row:
            lines.append(f"| {name} | error: {row['error'][:80]} | | | | |")
            continue
        speed = hf["median_s"] / row["median_s"] if hf else None
        memory = row.get("step_peak_mb")
        memory_ratio = memory / hf["step_peak_mb"] if hf and memory and hf.get("step_peak_mb") else None
        lines.append(f"| {name} | {_fmt(row['median_s'])} | {_fmt(speed)} | {_fmt(memory)} | {_fmt(memory_ratio)} | "
                     f"{100 * row['fraction_of_peak']:.0f}% |")
    return lines + [""]


def _data_lines(data: dict | None) -> list[str]:
    if data is None:
        return []
    if "error" in data:
        return [f"data: {data['error']}", ""]
    lines = [f"data loading, one worker: {data['settings']['video']}; {data['settings']['clip']}", "",
             "| keyframe every | reader | tsf clips/s | whole-video decoding clips/s | speedup |",
             "|---|---|---|---|---|"]
    for gop, readers in data["by_gop"].items():
        lines += [f"| {gop} frames | {reader} | {row['tsf_clips_per_s']} | {row['full_decode_clips_per_s']} | "
                  f"{row['speedup']}x |" for reader, row in readers.items()]
    return lines + [""]


def _get(d: dict, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)
