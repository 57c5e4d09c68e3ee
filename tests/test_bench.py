"""`python -m tsf bench` smoke run (the report's structure, never its timings: those and the targets
live in bench/README.md) and int8 quantization (the lean path against the reference path:
test_lean.py)."""
import json

import pytest
import torch

from tsf.bench import SECTIONS, BenchSettings
from tsf.bench.report import markdown, ratios
from tsf.cli import main
from tsf.model import create_model
from tsf.quantize import DynamicInt8Linear, int8_agreement, quantize

# the report's ratios that bench/README.md's targets are judged by
TARGET_RATIOS = ("inference_b1_tsf_fused_vs_hf", "inference_b1_tsf_int8_vs_hf", "train_tsf_speed_vs_hf",
                 "train_tsf_memory_vs_hf", "train_tsf_checkpointing_memory_vs_hf")


def test_bench_tiny_smoke_run_writes_the_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--device", "cpu", "--preset", "tiny", "--repeats", "1", "--warmup", "0",
                 "--batch-sizes", "1,2", "--agreement-clips", "4", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report.keys() == {"schema", "created", "device", "versions", "settings", "peak", "flops_per_clip_forward",
                             "inference", "train", "data", "ratios", "notes"}
    assert report["device"]["type"] == "cpu" and report["versions"]["torch"] == torch.__version__
    assert report["settings"]["precision"] == "fp32" and report["settings"]["sections"] == list(SECTIONS)
    assert report["peak"]["flops_per_s"] > 0 and report["flops_per_clip_forward"] > 0
    for batch in ("1", "2"):
        rows = report["inference"]["batches"][batch]
        assert {"tsf_fused", "tsf_explicit", "tsf_int8", "hf"} <= rows.keys()
        for row in rows.values():
            assert len(row["times_s"]) == 1 and row["clips_per_s"] > 0 and row["fraction_of_peak"] > 0
    executed = report["inference"]["executed_flops_per_clip"]
    assert executed["tsf_fused"] < report["flops_per_clip_forward"] == executed["hf"], "the lean path was taken"
    assert report["inference"]["max_abs_logit_diff_vs_hf"] < 1e-4
    assert 0.0 <= report["inference"]["int8"]["top1_agreement"] <= 1.0
    train = report["train"]["configs"]
    assert set(train) == {"tsf", "tsf_checkpointing", "hf", "hf_checkpointing"}
    for name, row in train.items():
        assert "error" not in row, (name, row)
        assert row["median_s"] > 0 and row["step_peak_mb"] >= 0
    assert set(TARGET_RATIOS) <= report["ratios"].keys() and report["data"]["speedup_per_worker"] > 0
    printed = capsys.readouterr().out
    assert "| tsf_fused | 1 |" in printed and "| tsf_checkpointing |" in printed
    assert markdown(report) in printed and ratios(report) == report["ratios"]


def test_bench_settings_refuse_what_cannot_run(capsys):
    with pytest.raises(ValueError, match="unknown sections"):
        BenchSettings(sections=("inference", "speed"))
    with pytest.raises(ValueError, match="repeats"):
        BenchSettings(repeats=0)
    with pytest.raises(ValueError, match="batch sizes"):
        BenchSettings(batch_sizes=())
    assert main(["bench", "--sections", "inference,speed"]) == 2
    assert "unknown sections ['speed']" in capsys.readouterr().err


def test_int8_keeps_top1_on_a_tiny_model():
    torch.manual_seed(0)
    model = create_model("tiny", num_classes=10).eval()
    with torch.no_grad():  # a head that separates the classes, so top-1 is a fair question
        model.head.weight.mul_(20)
    clips = torch.randn(16, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    int8 = quantize(model)
    assert int8 is not model and type(model.blocks[0].mlp.fc1) is torch.nn.Linear, "the fp32 model is untouched"
    assert all(type(m) is not torch.nn.Linear for m in int8.modules())
    assert isinstance(int8.head, DynamicInt8Linear)
    with torch.no_grad():
        ref, got = model(clips), int8(clips)
    assert ((got - ref).norm() / ref.norm()) < 0.05
    assert int8_agreement(model, clips, quantized=int8) >= 0.9
    assert int8_agreement(model, [(clips[:8], None), (clips[8:], None)]) >= 0.9

