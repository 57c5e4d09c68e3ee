"""tsf.export and `python -m tsf export`: ONNX in onnxruntime and a torch.export ExportedProgram give
tsf fp32's logits at a batch other than the example's, with the metadata inside; files are never
overwritten unasked and never left half-written."""
import json

import numpy as np
import pytest
import torch

from tsf.cli import main
from tsf.errors import OutputExistsError
from tsf.export import check_export, export_onnx, export_program, load_program, metadata, onnx_metadata
from tsf.model import create_model
from tsf.weights import save_pretrained

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CLASSES = ("right", "up-right", "up", "up-left")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model("tiny", class_names=CLASSES).eval()
    with torch.no_grad():  # real temporal weights (the official init zeroes temporal_fc past block 0)
        for block in m.blocks:
            torch.nn.init.normal_(block.temporal_fc.weight, std=0.05)
    return m


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def clips(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 32, 32, generator=torch.Generator().manual_seed(batch))


def test_onnx_runs_in_onnxruntime_with_tsf_logits_at_any_batch(model, onnx_file):
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (clip,), (logits,) = session.get_inputs(), session.get_outputs()
    assert clip.name == "clip" and clip.shape[1:] == [3, 8, 32, 32] and isinstance(clip.shape[0], str), "dynamic batch"
    assert logits.name == "logits"
    for batch in (3, 1, 5):
        x = clips(batch)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"clip": x.numpy()})[0]
        assert got.shape == (batch, 4) and np.abs(got - expected).max() <= 1e-4, batch
    assert check_export(model, onnx_file, "onnx") <= 1e-4


def test_onnx_metadata_carries_classes_normalisation_and_layout(model, onnx_file):
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    meta = onnx_metadata(session)
    assert meta == onnx_metadata(onnx_file)
    assert meta["class_names"] == list(CLASSES) and meta["mean"] == [0.45] * 3 and meta["std"] == [0.225] * 3
    assert meta["input_layout"] == "NCTHW" and meta["input_shape"] == ["batch", 3, 8, 32, 32]
    assert meta["num_frames"] == 8 and meta["img_size"] == 32 and "uint8 / 255" in meta["input"]


def test_onnx_with_numpy_only_as_the_readme_shows(onnx_file):
    """The README's example: uint8 frames -> normalised clip -> class name, with numpy and onnxruntime alone."""
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    frames = np.random.default_rng(0).integers(0, 256, (meta["num_frames"], 32, 32, 3), dtype=np.uint8)  # (T, H, W, RGB)
    clip = (frames / 255.0 - np.array(meta["mean"])) / np.array(meta["std"])
    clip = clip.transpose(3, 0, 1, 2)[None].astype(np.float32)  # (1, 3, T, H, W)
    logits = session.run(None, {meta["input_name"]: clip})[0]
    assert meta["class_names"][int(logits.argmax())] in CLASSES


def test_exported_program_reloads_with_torch_export_load(model, tmp_path):
    path = export_program(model, tmp_path / "tiny.pt2")
    reloaded = torch.export.load(str(path)).module()
    for batch in (3, 1):
        x = clips(batch)
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(reloaded(x), expected, atol=1e-5, rtol=1e-5)
    program, meta = load_program(path)
    assert meta == json.loads(json.dumps(metadata(model))) and meta["class_names"] == list(CLASSES)
    assert check_export(model, path, "exported-program") <= 1e-5


def test_exports_refuse_to_overwrite_and_leave_no_half_file(model, tmp_path, monkeypatch):
    target = tmp_path / "m.pt2"
    target.write_text("precious")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_program(model, target)
    assert target.read_text() == "precious"

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch.export, "save", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export_program(model, target, overwrite=True)
    assert target.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt2"]


def test_export_command(model, tmp_path, capsys):
    checkpoint = save_pretrained(model, tmp_path / "tiny.pt")
    out = tmp_path / "tiny.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(out), "--check"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "max |logits - tsf|" in printed and out.is_file()
    assert main(["export", str(checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tsf export: ") and "--overwrite" in err and len(err.strip().splitlines()) == 1
    pt2 = tmp_path / "tiny16.pt2"
    assert main(["export", str(checkpoint), "--format", "exported-program", "--out", str(pt2), "--frames", "16"]) == 0
    program, meta = load_program(pt2)
    assert meta["num_frames"] == 16 and meta["input_shape"] == ["batch", 3, 16, 32, 32]
    assert program.module()(torch.zeros(2, 3, 16, 32, 32)).shape == (2, 4)
