"""Shared fixtures."""
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

# the official-format checkpoint, its input and the logits the official code produced (.json: its config)
OFFICIAL_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"
OFFICIAL_PYTH = OFFICIAL_FIXTURES / "tiny_divided_space_time.pyth"


@pytest.fixture(scope="module")
def one_thread():
    """Micro models gain nothing from a second intra-op thread and lose a lot when another
    process competes for the cores (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def frame_level(index: int) -> int:
    """The grey level test videos give frame ``index`` (readable back after lossy coding)."""
    return (20 + 9 * index) % 230


def encode_test_video(path: Path, frames: int = 40, width: int = 64, height: int = 48, codec: str = "libx264",
                      pix_fmt: str = "yuv420p", options: dict | None = None, frame_ms: list[int] | None = None,
                      container_options: dict | None = None) -> Path:
    """A video whose frame ``i`` is grey level ``frame_level(i)`` with a square moving right.

    Args:
        path: the file; its suffix picks the container.
        frames: frame count.
        width: frame width.
        height: frame height.
        codec: FFmpeg encoder.
        pix_fmt: encoder pixel format.
        options: encoder options (default: a keyframe every 10 frames, B-frames on).
        frame_ms: per-frame durations in ms for a variable-frame-rate video (default: 25 fps).
        container_options: muxer options (``{"movflags": "faststart"}``: the mp4 index first).
    """
    import av

    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options if options is not None else {"g": "10", "crf": "10", "bf": "2"}
        if frame_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        clock = 0
        for i in range(frames):
            image = np.full((height, width, 3), frame_level(i), np.uint8)
            x = (2 * i) % (width - 8)
            image[4:12, x:x + 8] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if frame_ms is not None:
                frame.pts, frame.time_base = clock, Fraction(1, 1000)
                clock += frame_ms[i]
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="session")
def test_videos(tmp_path_factory) -> dict[str, Path]:
    """Good videos in several codecs and containers, encoded once per session. (No VP8/VP9:
    importing decord loads its own libvpx globally, which breaks PyAV's libvpx encoders.)"""
    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    return {
        "h264_bframes": encode_test_video(folder / "h264.mp4"),
        "vfr": encode_test_video(folder / "vfr.mp4", frame_ms=list(rng.choice([20, 40, 100], 40))),
        "odd_size": encode_test_video(folder / "odd.mkv", width=33, height=25, pix_fmt="yuv444p"),
        "mpeg4_avi": encode_test_video(folder / "mpeg4.avi", codec="mpeg4", options={"qscale": "2"}),
        "hevc_mp4": encode_test_video(folder / "hevc.mp4", codec="libx265", options={"crf": "16", "x265-params": "log-level=none"}),
        # decord's bundled FFmpeg has no AV1 decoder: the reader falls back to PyAV
        "av1_webm": encode_test_video(folder / "av1.webm", codec="libsvtav1", options={"preset": "12"}),
        "mjpeg_mov": encode_test_video(folder / "mjpeg.mov", codec="mjpeg", pix_fmt="yuvj420p", options={"q:v": "2"}),
    }


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A Hugging Face Hub stand-in on 127.0.0.1 serving ``ROOT/<org>/<name>/<file>`` the way the Hub's
    ``resolve`` endpoint does (the headers huggingface_hub reads), for ``tsf.zoo``. Yields ROOT."""
    import hashlib
    import http.server
    import threading

    from tsf import zoo

    root = tmp_path / "hub"
    root.mkdir()

    class Resolve(http.server.BaseHTTPRequestHandler):
        def _serve(self, body: bool):
            parts = self.path.split("?")[0].strip("/").split("/")  # org/name/resolve/<revision>/<file>
            path = root.joinpath(parts[0], parts[1], *parts[4:]) if len(parts) >= 5 and parts[2] == "resolve" else None
            if path is None or not path.is_file():
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", "0" * 40)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self):
            self._serve(False)

        def do_GET(self):
            self._serve(True)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Resolve)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(zoo, "HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield root
    server.shutdown()
    server.server_close()


def synthetic_shards(root: Path, videos_per_class: int, shard_size: str) -> tuple[Path, Path]:
    """The appearance task in ``root/data`` and its shards (``tsf data shard``) in ``root/shards``."""
    from tsf.cli import main
    from tsf.data.synth import generate

    data = generate("appearance", root / "data", videos_per_class=videos_per_class)
    assert main(["data", "shard", str(data), "--out", str(root / "shards"), "--shard-size", shard_size, "--workers", "1",
                 "--no-progress"]) == 0
    return data, root / "shards"


@pytest.fixture(scope="session")
def small_shards(tmp_path_factory) -> tuple[Path, Path]:
    """4 classes x 6 videos (~19 in train) in 4 kB shards: several shards per split. Read-only: copy to edit."""
    return synthetic_shards(tmp_path_factory.mktemp("small_shards"), videos_per_class=6, shard_size="4KB")
