"""Evaluation: the metrics, the multi-view protocol on a trained run and on the official fixture,
the CLI's files, and class-set mismatches."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

import tsf
import tsf.data
from test_train_cli import appearance_data, appearance_run, tsf_cli
from tsf.evaluate import EvaluationResult, evaluate

from conftest import OFFICIAL_PYTH as OFFICIAL


def test_metrics_from_averaged_probabilities():
    probabilities = np.array([
        [0.7, 0.2, 0.1, 0.0, 0.0, 0.0],  # label 0: right
        [0.1, 0.6, 0.3, 0.0, 0.0, 0.0],  # label 2: wrong, 2nd
        [0.1, 0.1, 0.8, 0.0, 0.0, 0.0],  # label 2: right
        [0.5, 0.1, 0.1, 0.1, 0.1, 0.1],  # label 5: wrong, 2nd-last of 6 (not in the top 5)
    ])
    labels = np.array([0, 2, 2, 5])
    result = EvaluationResult(np.arange(4), labels, probabilities, np.full(4, 3), [f"c{i}" for i in range(6)])
    assert result.top1 == 0.5 and result.top5 == 0.75
    assert result.mean_class_accuracy == pytest.approx((1 + 0.5 + 0) / 3)  # over the classes present
    assert result.confusion_matrix[2].tolist() == [0, 1, 1, 0, 0, 0] and result.confusion_matrix.sum() == 4
    assert result.loss == pytest.approx(-np.log([0.7, 0.3, 0.8, 0.1]).mean())
    assert result.rows()[1]["predicted_name"] == "c1" and result.rows()[1]["top_k"].startswith("c1 c2 c0")


def test_evaluate_cli_multi_view_on_the_trained_run(tmp_path_factory, tmp_path):
    run_dir = appearance_run(tmp_path_factory)
    data = appearance_data(tmp_path_factory)
    result = tsf_cli("evaluate", "--checkpoint", run_dir / "best.pt", "--data", data, "--temporal-clips", 2,
                     "--spatial-crops", 3, "--num-workers", 0, "--out", tmp_path, "--json")
    summary = json.loads(result.stdout)
    assert summary["views_per_video"] == 6 and summary["top1"] >= 0.9, summary
    assert json.loads((tmp_path / "eval_val_summary.json").read_text()) == summary
    with open(tmp_path / "eval_val_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["videos"] and all(Path(r["path"]).is_file() for r in rows)
    classes = (data / "classes.txt").read_text().split()
    assert {r["label_name"] for r in rows} == set(classes)
    confusion = list(csv.reader(open(tmp_path / "eval_val_confusion.csv")))
    assert confusion[0][1:] == classes and sum(int(x) for row in confusion[1:] for x in row[1:]) == summary["videos"]


def test_evaluate_python_api_on_the_official_fixture(tmp_path_factory, tmp_path):
    """The fixture (5 unnamed classes, 4 frames) on the 4-class synthetic data: a data folder is
    refused (the scores would be meaningless), a dataset handed over directly runs the protocol."""
    model = tsf.from_pretrained(OFFICIAL, num_heads=4)
    folder = appearance_data(tmp_path_factory)
    with pytest.raises(ValueError, match="lists 4 classes but the model predicts 5"):
        evaluate(model, folder, num_workers=0, progress=False)
    views = tsf.data.VideoClipDataset(tsf.data.read_manifest(folder / "val.csv"), num_frames=model.config.num_frames,
                                      crop_size=model.config.img_size, train=False, num_spatial_crops=3)
    scopes = []  # every batch runs in one TimeSformer.fixed_weights() scope: the weight caches checked once
    model.patch_embed.proj.register_forward_pre_hook(lambda module, args: scopes.append(model.blocks[0].fixed_weights_scope))
    result = evaluate(model, views, num_workers=0, out_dir=tmp_path, progress=False, batch_size=4)
    assert len(scopes) > 1 and scopes[0] is not None and all(s is scopes[0] for s in scopes)
    assert model.blocks[0].fixed_weights_scope is None
    assert result.probabilities.shape[1] == 5 and result.views.tolist() == [3] * result.num_videos
    assert np.allclose(result.probabilities.sum(1), 1, atol=1e-5)
    assert result.class_names == [f"class_{i}" for i in range(5)]
    assert (tmp_path / "eval_val_predictions.csv").is_file()


def test_evaluate_refuses_a_model_trained_on_other_classes(tmp_path_factory):
    model = tsf.create_model("tiny", class_names=("a", "b", "c", "d"))
    with pytest.raises(ValueError, match=r"classes.txt.*first differences: 0: model 'a' vs data"):
        evaluate(model, appearance_data(tmp_path_factory), num_workers=0, progress=False)
    few = tsf.create_model("tiny", num_classes=2)
    with pytest.raises(ValueError, match="lists 4 classes but the model predicts 2"):
        evaluate(few, appearance_data(tmp_path_factory), num_workers=0, progress=False)
