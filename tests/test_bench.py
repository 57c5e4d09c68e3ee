"""`python -m tsf bench`: the report's structure (never its timings: those and the targets live in
bench/README.md), which paths apply on CPUs with and without bf16 units (simulated), the
recommendation, and int8 quantization (static and dynamic; the lean path against the reference
path: test_lean.py)."""
import json

import pytest
import torch

from tsf import cpu
from tsf.bench import SECTIONS, BenchSettings
from tsf.bench.paths import applicable
from tsf.bench.report import markdown, ratios, recommend
from tsf.cli import main
from tsf.model import create_model
from tsf.quantize import DynamicInt8Linear, Int8Linear, calibrate, int8_agreement, kernels, quantize

# the report's ratios that bench/README.md's targets are judged by
TARGET_RATIOS = ("inference_b1_tsf_fp32_vs_hf_fp32", "inference_b1_tsf_bf16_vs_hf_bf16", "inference_b1_tsf_int8_vs_tsf_bf16",
                 "inference_b1_tsf_int8_vs_hf_fp32", "inference_b1_onnxruntime_fp32_vs_tsf_fp32", "train_tsf_speed_vs_hf",
                 "train_tsf_memory_vs_hf", "train_tsf_checkpointing_memory_vs_hf", "train_tsf_bf16_speed_vs_hf",
                 "train_tsf_bf16_speed_vs_hf_bf16")
FULL_ROWS = {"tsf_fp32", "tsf_fp32_explicit", "hf_fp32", "tsf_bf16", "hf_bf16", "tsf_int8", "tsf_int8_dynamic", "hf_int8",
             "onnxruntime_fp32", "onnxruntime_int8"}


def test_bench_tiny_full_run_writes_the_report(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "bench.json"
    assert main(["bench", "--full", "--device", "cpu", "--preset", "tiny", "--repeats", "1", "--warmup", "0",
                 "--batch-sizes", "1,2", "--agreement-clips", "4", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report.keys() == {"schema", "created", "device", "versions", "settings", "peak", "flops_per_clip_forward",
                             "inference", "train", "data", "agreement", "ratios", "ratios_min", "recommendation", "notes"}
    assert report["device"]["type"] == "cpu" and report["versions"]["torch"] == torch.__version__
    assert report["device"]["matrix_units"]["names"] == cpu.matrix_units().names
    assert report["settings"]["full"] and report["settings"]["sections"] == list(SECTIONS)
    assert report["peak"]["flops_per_s"] > 0 and report["flops_per_clip_forward"] > 0
    inference = report["inference"]
    for batch in ("1", "2"):
        rows = inference["batches"][batch]
        assert set(rows) == FULL_ROWS, "--full measures bf16 even without bf16 units"
        for row in rows.values():
            assert len(row["times_s"]) == 1 and row["clips_per_s"] > 0 and row["fraction_of_peak"] > 0
    assert inference["rows"]["tsf_bf16"]["baseline"] == "hf_bf16" and inference["rows"]["tsf_int8"]["baseline"] == "hf_int8"
    executed = inference["executed_flops_per_clip"]
    assert executed["tsf_fp32"] < report["flops_per_clip_forward"] == executed["hf_fp32"], "the lean path was taken"
    checks = inference["fidelity"]["rows"]
    assert checks["hf_fp32"]["max_abs_logit_diff"] < 1e-4 and checks["onnxruntime_fp32"]["max_abs_logit_diff"] < 1e-4
    assert checks["tsf_bf16"]["relative_logit_error"] < 0.03 and checks["tsf_int8"]["relative_logit_error"] < 0.1
    assert all(0.0 <= c["top1_agreement"] <= 1.0 for c in checks.values())
    train = report["train"]["configs"]
    assert set(train) == {"tsf", "tsf_checkpointing", "hf", "hf_checkpointing", "tsf_bf16", "hf_bf16"}
    for name, row in train.items():
        assert "error" not in row, (name, row)
        assert row["median_s"] > 0 and row["step_peak_mb"] >= 0
    assert set(TARGET_RATIOS) <= report["ratios"].keys() and report["data"]["speedup_per_worker"] > 0
    assert "skipped" in report["agreement"], "random-init weights: no agreement on real videos"
    assert report["recommendation"]["answer"].startswith("On this machine (matrix units: ")
    printed = capsys.readouterr().out
    assert "| tsf_fp32 | 1 |" in printed and "| tsf_checkpointing |" in printed and report["recommendation"]["answer"] in printed
    assert markdown(report) in printed and ratios(report) == report["ratios"]
    assert ratios(report, "min").keys() == report["ratios"].keys() == report["ratios_min"].keys()


def test_the_quick_run_is_the_default_and_full_widens_it():
    quick, full = BenchSettings(), BenchSettings(full=True)
    assert quick.sections == ("inference",) and quick.batch_sizes == (1,) and quick.repeats == 3
    assert full.sections == SECTIONS and full.batch_sizes == (1, 4) and full.repeats == 5
    assert BenchSettings(full=True, batch_sizes=(2,)).batch_sizes == (2,), "a given value wins"


@pytest.mark.parametrize(("flags", "bf16_measured"), [
    ({"avx512f", "avx512_bf16", "amx_bf16", "amx_int8"}, True),
    ({"avx512f", "avx512_bf16", "avx512_vnni"}, True),
    ({"avx2", "fma"}, False),
])
def test_paths_that_apply_with_and_without_bf16_units(monkeypatch, flags, bf16_measured):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    chosen, skipped = applicable(BenchSettings(device="cpu"), torch.device("cpu"))
    assert ("bf16" in chosen) == bf16_measured and ("fp32" in chosen)
    if not bf16_measured:
        assert "no bf16 matrix units" in skipped["bf16"]
    assert "bf16" in applicable(BenchSettings(device="cpu", full=True), torch.device("cpu"))[0]
    assert "bf16" in applicable(BenchSettings(device="cpu", precision="bf16"), torch.device("cpu"))[0]
    fp32_only, why = applicable(BenchSettings(device="cpu", precision="fp32"), torch.device("cpu"))
    assert "bf16" not in fp32_only and "int8" not in fp32_only and why["int8"] == "--precision fp32"


def test_recommendation_takes_the_fastest_path_within_its_fidelity_bound():
    def row(clips_per_s):
        return {"clips_per_s": clips_per_s, "median_s": 1 / clips_per_s}

    report = {"inference": {
        "batches": {"1": {"tsf_fp32": row(1.0), "hf_fp32": row(0.9), "tsf_bf16": row(2.0), "tsf_int8": row(3.0)}},
        "rows": {"tsf_fp32": {"family": "tsf", "precision": "fp32"}, "hf_fp32": {"family": "hf", "precision": "fp32"},
                 "tsf_bf16": {"family": "tsf", "precision": "bf16", "baseline": "hf_bf16"},
                 "tsf_int8": {"family": "tsf", "precision": "int8"}},
        "fidelity": {"rows": {"tsf_fp32": {"relative_logit_error": 0.0}, "tsf_bf16": {"relative_logit_error": 0.01},
                              "tsf_int8": {"relative_logit_error": 0.04}}},
        "matrix_units": ["AVX512-BF16"]}}
    answer = recommend(report)
    assert answer["batches"]["1"]["fastest"] == "tsf_int8" and answer["batches"]["1"]["fastest_same_model"] == "tsf_bf16"
    assert "tsf_int8 (3.00x tsf fp32)" in answer["answer"] and "tsf_bf16 (2.00x tsf fp32)" in answer["answer"]
    report["inference"]["fidelity"]["rows"]["tsf_int8"]["relative_logit_error"] = 0.5  # out of its bound
    assert recommend(report)["batches"]["1"]["fastest"] == "tsf_bf16"


def test_bench_settings_refuse_what_cannot_run(capsys, tmp_path):
    with pytest.raises(ValueError, match="unknown sections"):
        BenchSettings(sections=("inference", "speed"))
    with pytest.raises(ValueError, match="unknown paths"):
        BenchSettings(paths=("int4",))
    with pytest.raises(ValueError, match="repeats"):
        BenchSettings(repeats=0)
    with pytest.raises(ValueError, match="batch sizes"):
        BenchSettings(batch_sizes=())
    assert main(["bench", "--sections", "inference,speed"]) == 2
    assert "unknown sections ['speed']" in capsys.readouterr().err
    existing = tmp_path / "bench.json"
    existing.write_text("{}")
    assert main(["bench", "--out", str(existing)]) == 2
    assert "--overwrite" in capsys.readouterr().err and existing.read_text() == "{}"


def _tiny_model():
    torch.manual_seed(0)
    model = create_model("tiny", num_classes=10).eval()
    with torch.no_grad():  # a head that separates the classes, so top-1 is a fair question
        model.head.weight.mul_(20)
        for block in model.blocks:
            torch.nn.init.normal_(block.temporal_fc.weight, std=0.05)
    return model


@pytest.mark.parametrize("mode", ["static", "dynamic", "fallback"])
def test_int8_keeps_top1_on_a_tiny_model(mode):
    if mode != "fallback" and "onednn" not in kernels():
        pytest.skip("this PyTorch has no oneDNN qlinear")
    model = _tiny_model()
    clips = torch.randn(16, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    calibration = torch.randn(8, 3, 8, 32, 32, generator=torch.Generator().manual_seed(2))
    int8 = quantize(model, calibration=calibration if mode == "static" else None,
                    kernel="dynamic" if mode == "fallback" else None)
    layer = {"static": Int8Linear, "dynamic": Int8Linear, "fallback": DynamicInt8Linear}[mode]
    assert int8 is not model and type(model.blocks[0].mlp.fc1) is torch.nn.Linear, "the fp32 model is untouched"
    assert all(type(m) is not torch.nn.Linear for m in int8.modules()) and isinstance(int8.head, layer)
    if mode == "static":
        assert int8.blocks[0].mlp.fc2.input_range is not None, "calibrated: the GELU output is quantized in fc1's kernel"
    with torch.no_grad():
        ref, got = model(clips), int8(clips)
        with int8.lean_path(False):  # the reference path: GELU on its own, fc2 quantizes its input itself
            plain = int8(clips)
    assert ((got - ref).norm() / ref.norm()) < 0.05 and ((plain - ref).norm() / ref.norm()) < 0.05
    assert int8_agreement(model, clips, quantized=int8) >= 0.9
    assert int8_agreement(model, [(clips[:8], None), (clips[8:], None)]) >= 0.9


def test_calibration_records_every_linear_input_range():
    model = _tiny_model()
    ranges = calibrate(model, torch.randn(4, 3, 8, 32, 32))
    linears = {name for name, m in model.named_modules() if type(m) is torch.nn.Linear}
    assert set(ranges) == linears and all(low < high for low, high in ranges.values())
    assert ranges["blocks.0.mlp.fc2"][0] >= -0.2, "fc2 sees GELU outputs (>= -0.17)"
    with pytest.raises(ValueError, match="no clips"):
        calibrate(model, [])
