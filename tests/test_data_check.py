"""A messy dataset through `tsf data check` (every bad file flagged with its reason, good files
"ok") and through the training dataset (no crash, bad videos replaced and counted, a clear stop
above the allowed fraction)."""
import json
import multiprocessing
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import encode_test_video
from tsf.cli import main as tsf_main
from tsf.data import BadVideosError, VideoClipDataset, check_manifest, read_manifest

GOOD = ("h264_bframes", "odd_size", "mpeg4_avi", "hevc_mp4", "mjpeg_mov", "av1_webm", "vfr")
# bad file -> (status, words of the reason)
BAD = {
    "zero_bytes.mp4": ("unreadable", "empty file (0 bytes)"),
    "truncated.mp4": ("unreadable", "not a video FFmpeg can open"),
    "truncated_indexed.mp4": ("unreadable", "truncated: its index lists 60 frames but the file holds"),
    "not_a_video.mp4": ("unreadable", "not a video FFmpeg can open"),
    "missing.mp4": ("missing", "no such file"),
    "audio_only.m4a": ("unreadable", "no video stream (it has only audio)"),
    "one_frame.mp4": ("too_short", "1 frame, the clip needs 8"),
    "no_frames.avi": ("zero_frames", "no frames"),
}


def write_bad_files(folder: Path, good_mp4: Path) -> None:
    import av

    (folder / "zero_bytes.mp4").touch()
    data = good_mp4.read_bytes()  # its index (moov) is at the end: cut, the file cannot be opened
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    indexed = encode_test_video(folder / "indexed.mp4", frames=60, container_options={"movflags": "faststart"})
    data = indexed.read_bytes()  # index at the front: it opens, but the last frames are not there
    (folder / "truncated_indexed.mp4").write_bytes(data[: len(data) * 2 // 3])
    indexed.unlink()
    (folder / "not_a_video.mp4").write_text("this is a text file\n" * 100)
    with av.open(str(folder / "audio_only.m4a"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    encode_test_video(folder / "one_frame.mp4", frames=1)
    with av.open(str(folder / "no_frames.avi"), "w") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        container.start_encoding()


@pytest.fixture(scope="module")
def messy(test_videos, tmp_path_factory) -> Path:
    """``messy/train.csv``: the good test videos copied next to every kind of bad file, one bad
    label and one malformed row; ``messy/videos.csv``: the same files with good labels only."""
    folder = tmp_path_factory.mktemp("messy")
    (folder / "videos").mkdir()
    for name in GOOD:
        shutil.copy(test_videos[name], folder / "videos" / f"{name}{test_videos[name].suffix}")
    write_bad_files(folder / "videos", test_videos["h264_bframes"])
    files = sorted(p.name for p in (folder / "videos").iterdir()) + ["missing.mp4"]
    (folder / "classes.txt").write_text("good\nbad\n")
    rows = [f"videos/{name},{'good' if name.split('.')[0] in GOOD else 'bad'}" for name in files]
    (folder / "videos.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (folder / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\nvideos/h264_bframes.mp4,ugly\n"
                                      "videos/x.mp4,good,extra\n")
    return folder


def test_check_flags_every_bad_file_with_its_reason(messy):
    report = check_manifest(messy / "train.csv", progress=False, workers=2)
    by_name = {Path(f["path"]).name: f for f in report["files"]}
    for name in GOOD:
        entry = next(f for n, f in by_name.items() if n.startswith(name + "."))
        assert (entry["status"], entry["reason"]) == ("ok", ""), entry
    for name, (status, words) in BAD.items():
        assert by_name[name]["status"] == status and words in by_name[name]["reason"], by_name[name]
    label_row = next(f for f in report["files"] if f["status"] == "bad_label")
    assert label_row["where"] == f"{messy / 'train.csv'}:17" and "unknown label 'ugly'" in label_row["reason"]
    assert sum(f["status"] == "malformed" for f in report["files"]) == 1
    assert (report["ok"], report["bad"]) == (len(GOOD), len(BAD) + 2)
    assert report["counts"]["unreadable"] == 5


def test_check_cli_writes_the_report_and_the_clean_manifest(messy, tmp_path, capsys):
    report, clean = tmp_path / "report.json", tmp_path / "clean.csv"
    code = tsf_main(["data", "check", str(messy / "train.csv"), "--report", str(report), "--write-clean", str(clean),
                     "--no-progress", "--workers", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "  too short" in out and "missing: " in out and "zero_frames: " in out
    saved = json.loads(report.read_text())
    assert set(saved) >= {"ok", "bad", "files"} and saved["bad"] == len(BAD) + 2
    assert all({"path", "status", "reason"} <= set(f) for f in saved["files"])
    shutil.copy(messy / "classes.txt", tmp_path / "classes.txt")
    assert len(read_manifest(clean).samples) == len(GOOD)
    assert tsf_main(["data", "check", str(clean), "--no-progress"]) == 0
    assert tsf_main(["data", "check", str(tmp_path / "absent.csv"), "--no-progress"]) == 2
    assert "absent.csv does not exist" in capsys.readouterr().err


# the training dataset fails the same videos: a truncated file whose index is intact would still
# give clips from its first frames, but never a fragment in place of the video
FAILS_IN_TRAINING = sorted(BAD)


def test_training_on_the_messy_dataset_replaces_and_counts_bad_videos(messy):
    manifest = read_manifest(messy / "videos.csv")
    dataset = VideoClipDataset(manifest, num_frames=8, crop_size=16, max_bad_fraction=1.0)
    items = [dataset[i] for i in range(len(dataset))]
    assert all(Path(manifest.samples[item["index"]].path).name not in FAILS_IN_TRAINING for item in items)
    assert sum(item["bad"] for item in items) >= len(FAILS_IN_TRAINING)  # each bad video skipped at least once
    assert sorted(Path(p).name for p in dataset.bad_videos) == FAILS_IN_TRAINING
    assert dataset.bad_videos[str(messy / "videos" / "one_frame.mp4")] == "1 frame, the clip needs 8"


def test_bad_video_counts_reach_the_main_process_from_workers(messy):
    manifest = read_manifest(messy / "videos.csv")
    dataset = VideoClipDataset(manifest, num_frames=8, crop_size=16, max_bad_fraction=1.0)
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2))
    assert sum(int(b["bad"].sum()) for b in batches) >= len(FAILS_IN_TRAINING)
    assert all(b["clip"].dtype == torch.uint8 and b["clip"].shape[1:] == (3, 8, 16, 16) for b in batches)
    assert dataset.bad_count == len(FAILS_IN_TRAINING)  # flagged in the workers, seen here
    assert dataset.bad_videos[str(messy / "videos" / "missing.mp4")] == "missing"


def test_too_many_bad_videos_stop_with_their_names(messy):
    manifest = read_manifest(messy / "videos.csv")
    dataset = VideoClipDataset(manifest, num_frames=8, crop_size=16, max_bad_fraction=0.1, train=False)
    with pytest.raises(BadVideosError) as raised:
        for i in range(len(dataset)):
            dataset[i]
    message = str(raised.value)
    assert "2 of the 15 videos are bad, more than max_bad_fraction=0.1" in message
    assert "audio_only.m4a: no video stream" in message and "tsf data check" in message


def crash_on_the_mjpeg_file(sample, num_frames, reader):
    """``check_video`` that dies like a crashing decoder on one file."""
    from tsf.data.check import _real_check_video

    if sample.path.endswith("mjpeg_mov.mov"):
        os.kill(os.getpid(), signal.SIGKILL)  # as a segfault would, without the faulthandler dump
    return _real_check_video(sample, num_frames, reader)


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="the simulated crash is patched in by fork")
def test_a_decoder_crash_is_pinned_on_its_file(messy, monkeypatch):
    from tsf.data import check

    monkeypatch.setattr(check, "_real_check_video", check.check_video, raising=False)
    monkeypatch.setattr(check, "check_video", crash_on_the_mjpeg_file)
    report = check_manifest(messy / "videos.csv", progress=False, workers=2)
    by_name = {Path(f["path"]).name: f for f in report["files"]}
    assert by_name["mjpeg_mov.mov"]["status"] == "unreadable"
    assert "the decoder crashed or hung on it (exit code -9" in by_name["mjpeg_mov.mov"]["reason"]
    assert report["ok"] == len(GOOD) - 1 and report["bad"] == len(BAD) + 1
