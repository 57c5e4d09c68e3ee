"""Prediction on video files: whole videos, a timeline over a long video, embeddings, JSON, the
official fixture, and missing files."""
import json
from pathlib import Path

import numpy as np

import tsf
from test_train_cli import appearance_data, appearance_run, tsf_cli
from tsf.data import read_manifest, read_video_frames, video_info
from tsf.data.synth import write_video
from tsf.prediction import predict, timeline

from conftest import OFFICIAL_PYTH as OFFICIAL


def val_videos(data: Path, per_class: int = 1) -> list[tuple[Path, int]]:
    """The first ``per_class`` validation videos of each class, with their labels."""
    chosen, counts = [], {}
    for sample in read_manifest(data / "val.csv").samples:
        if counts.get(sample.label, 0) < per_class:
            counts[sample.label] = counts.get(sample.label, 0) + 1
            chosen.append((Path(sample.path), sample.label))
    return chosen


def concatenate(videos: list[Path], out: Path) -> float:
    """One mp4 made of ``videos`` (all of the same length) back to back; returns each one's seconds."""
    info = video_info(videos[0])
    frames = [read_video_frames(v, range(info.num_frames)) for v in videos]
    write_video(out, np.concatenate(frames), fps=round(info.fps))
    return info.num_frames / info.fps


def test_predict_cli_names_the_right_class(tmp_path_factory, tmp_path):
    run_dir = appearance_run(tmp_path_factory)
    data = appearance_data(tmp_path_factory)
    videos = val_videos(data)
    classes = (data / "classes.txt").read_text().split()
    result = tsf_cli("predict", *[v for v, _ in videos], "--checkpoint", run_dir / "best.pt", "--topk", 2, "--json",
                     "--features", tmp_path / "emb.npy")
    out = json.loads(result.stdout)
    assert [entry["top"][0]["class"] for entry in out] == [classes[label] for _, label in videos]
    assert all(len(entry["top"]) == 2 and entry["top"][0]["probability"] > 0.5 for entry in out)
    assert np.load(tmp_path / "emb.npy").shape == (len(videos), 64)
    text = tsf_cli("predict", videos[0][0], "--checkpoint", run_dir / "best.pt").stdout
    assert text.startswith(f"{videos[0][0]}: {classes[videos[0][1]]} ")


def test_timeline_over_a_long_video_follows_its_segments(tmp_path_factory, tmp_path):
    run_dir = appearance_run(tmp_path_factory)
    data = appearance_data(tmp_path_factory)
    videos = val_videos(data)[:3]
    seconds = concatenate([v for v, _ in videos], tmp_path / "long.mp4")
    model = tsf.from_pretrained(run_dir / "best.pt")
    scopes = []  # every batch of windows runs in one TimeSformer.fixed_weights() scope
    model.patch_embed.proj.register_forward_pre_hook(lambda module, args: scopes.append(model.blocks[0].fixed_weights_scope))
    windows = timeline(model, tmp_path / "long.mp4", window=seconds, stride=seconds, batch_size=1)
    assert len(scopes) == 3 and scopes[0] is not None and all(s is scopes[0] for s in scopes)
    assert [(round(w.start, 3), round(w.end, 3)) for w in windows] == [
        (round(i * seconds, 3), round((i + 1) * seconds, 3)) for i in range(3)]
    classes = model.config.class_names
    assert [w.top[0][0] for w in windows] == [classes[label] for _, label in videos]
    out = json.loads(tsf_cli("predict", tmp_path / "long.mp4", "--checkpoint", run_dir / "best.pt", "--window", seconds,
                             "--stride", seconds / 2, "--json", "--features", tmp_path / "f.npy").stdout)
    assert len(out[0]["timeline"]) == 5 and [w["feature_row"] for w in out[0]["timeline"]] == list(range(5))
    assert np.load(tmp_path / "f.npy").shape == (5, 64)


def test_predict_python_api_and_the_official_fixture(tmp_path_factory):
    video, _ = val_videos(appearance_data(tmp_path_factory))[0]
    model = tsf.from_pretrained(OFFICIAL, num_heads=4)
    prediction = predict(model, video, topk=3, temporal_clips=2, spatial_crops=3)
    assert len(prediction.top) == 3 and prediction.top[0][0].startswith("class_")
    assert prediction.probabilities.shape == (5,) and abs(prediction.probabilities.sum() - 1) < 1e-5
    info = video_info(video)
    assert prediction.features.shape == (64,) and prediction.end == info.num_frames / info.fps
    out = tsf_cli("predict", video, "--checkpoint", OFFICIAL, "--num-heads", 4, "--json").stdout
    assert len(json.loads(out)[0]["top"]) == 5


def test_predict_reports_missing_and_unreadable_files(tmp_path):
    missing = tsf_cli("predict", tmp_path / "nothere.mp4", "--checkpoint", OFFICIAL, "--num-heads", 4, check=False)
    assert missing.returncode == 2 and "skipped" in missing.stderr and "nothere.mp4: no such file" in missing.stderr
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    junk = tsf_cli("predict", tmp_path / "junk.mp4", "--checkpoint", OFFICIAL, "--num-heads", 4, check=False)
    assert junk.returncode == 2 and "junk.mp4: not a video" in junk.stderr and "nothing was written" in junk.stderr
