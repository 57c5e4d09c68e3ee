"""The synthetic default data: deterministic, the motion survives H.264, the appearance task is
readable from one frame, on-demand generation, the CLI, and the loading benchmark."""
import json

import numpy as np
import pytest

from tsf.cli import main as tsf_main
from tsf.data import VideoClipDataset, ensure_synthetic, generate, read_manifest, read_video_frames
from tsf.data.synth import APPEARANCE_COLOURS, DIRECTIONS, MARKER, TASKS, render


def displacement(video: np.ndarray) -> tuple[int, int]:
    """The (dx, dy) that best maps each frame onto the next on the torus, summed over the clip:
    the square's motion (the background noise is new in every frame and does not correlate)."""
    grey = video.astype(np.float64).mean(-1)
    grey -= grey.mean(axis=(1, 2), keepdims=True)
    scores = {(dx, dy): sum(float((np.roll(grey[t], (dy, dx), axis=(0, 1)) * grey[t + 1]).sum())
                            for t in range(len(grey) - 1))
              for dx in range(-3, 4) for dy in range(-3, 4)}
    return max(scores, key=scores.get)


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    return generate("motion", tmp_path_factory.mktemp("synth") / "motion", videos_per_class=6, seed=3)


@pytest.fixture(scope="module")
def dots(tmp_path_factory):
    return generate("dots", tmp_path_factory.mktemp("synth") / "dots", videos_per_class=6, seed=3)


@pytest.mark.parametrize("task", ["motion", "dots"])
def test_motion_clips_carry_the_direction_of_their_label(task, request):
    manifest = read_manifest(request.getfixturevalue(task) / "train.csv")
    assert manifest.classes == list(TASKS[task]) and len(manifest.samples) == 4 * 5
    for sample in manifest.samples:
        frames = read_video_frames(sample.path, range(8))
        assert frames.shape == (8, 32, 32, 3)
        dx, dy = displacement(frames)
        assert (np.sign(dx), np.sign(dy)) == tuple(np.sign(DIRECTIONS[manifest.classes[sample.label]])), sample.path
        assert 1 <= max(abs(dx), abs(dy)) <= 2  # 1-2 px per frame, a quarter of a patch at most


def test_motion_directions_are_unit_steps_and_none_reverses_another():
    # a direction and its reverse differ only in the order of the frames (see tsf.data.synth)
    steps = np.array([DIRECTIONS[name] for name in TASKS["motion"]])
    np.testing.assert_allclose(np.linalg.norm(steps, axis=1), 1.0)
    for i, step in enumerate(steps):
        assert not np.isclose(steps, -step).all(1).any(), TASKS["motion"][i]


@pytest.mark.parametrize("task", ["motion", "dots"])
def test_motion_frames_look_alike_across_classes(task):
    # with the same seed, the four classes draw the same square(s), colours, speed, background and
    # noise and differ only in the direction: every frame has the same content, elsewhere
    for seed in range(10):
        videos = [render(task, label, 8, 32, np.random.default_rng(seed)).astype(np.float64) for label in range(4)]
        stats = np.array([[(frame.mean(), frame.std()) for frame in video] for video in videos])  # (class, T, 2)
        means, spreads = stats[..., 0], stats[..., 1]
        np.testing.assert_allclose(means, np.broadcast_to(means[0], means.shape), rtol=0.01)
        # diagonal steps put the square's antialiased edges at other sub-pixel phases: a little spread
        np.testing.assert_allclose(spreads, np.broadcast_to(spreads[0], spreads.shape), rtol=0.1)
        assert not np.array_equal(videos[0][-1], videos[1][-1])


@pytest.mark.parametrize("task", ["motion", "dots"])
def test_motion_dataset_clips_keep_the_motion(task, request):
    dataset = VideoClipDataset(read_manifest(request.getfixturevalue(task) / "val.csv"), num_frames=8, train=False,
                               crop_size=32)
    for item in (dataset[i] for i in range(len(dataset))):
        clip = item["clip"].permute(1, 2, 3, 0).numpy()
        dx, dy = displacement(clip)
        assert (np.sign(dx), np.sign(dy)) == tuple(np.sign(DIRECTIONS[dataset.classes[item["label"]]]))


def test_generation_is_deterministic_per_seed(motion, tmp_path):
    again = generate("motion", tmp_path / "again", videos_per_class=6, seed=3)
    other = generate("motion", tmp_path / "other", videos_per_class=6, seed=4)
    for name in ("train.csv", "val.csv", "classes.txt"):
        assert (again / name).read_text() == (motion / name).read_text()
    for label, video in ((0, 0), (2, 3)):
        np.testing.assert_array_equal(render("motion", label, 8, 32, np.random.default_rng([3, 1, label, video])),
                                      render("motion", label, 8, 32, np.random.default_rng([3, 1, label, video])))
    first = read_manifest(motion / "train.csv").samples[1].path
    same = read_video_frames(first.replace(str(motion), str(again)), range(8)).astype(int)
    # the same frames went in; x264 here rounds a few pixels differently from one encode to the next
    assert np.abs(read_video_frames(first, range(8)).astype(int) - same).max() <= 12
    assert np.abs(read_video_frames(first.replace(str(motion), str(other)), range(8)).astype(int) - same).max() > 50


def test_dots_frames_show_a_field_of_dots_and_the_other_tasks_one_square():
    rng = np.random.default_rng(0)
    frame = render("dots", 0, 1, 32, rng)[0].astype(np.float64)
    background = np.median(frame.reshape(-1, 3), axis=0)
    covered = (np.abs(frame - background).max(-1) > 60).mean()
    assert 0.08 < covered < 0.3, covered  # 20 dots of 3x3 px, some overlapping, on 32x32
    for task in ("appearance", "motion"):
        video = render(task, 1, 2, 32, np.random.default_rng(0)).astype(np.float64)
        on = np.abs(video[0] - np.median(video[0].reshape(-1, 3), axis=0)).max(-1) > 60
        assert 30 <= on.sum() <= 64, (task, on.sum())  # one 7x7 square (its antialiased edges may fall below)


def test_appearance_class_is_the_square_colour(tmp_path):
    out = generate("appearance", tmp_path / "appearance", videos_per_class=4, frames=4, size=48)
    manifest = read_manifest(out / "train.csv")
    palette = np.array([APPEARANCE_COLOURS[name] for name in manifest.classes], dtype=np.float64)
    for sample in manifest.samples:
        frame = read_video_frames(sample.path, [2])[0].astype(np.float64)
        saturation = frame.max(-1) - frame.min(-1)
        square = frame[saturation >= np.percentile(saturation, 98)].mean(0)  # the most colourful pixels
        assert np.argmin(((palette - square) ** 2).sum(1)) == sample.label, sample.path
        assert frame.shape == (48, 48, 3)


def test_ensure_synthetic_generates_once_and_redoes_an_interrupted_run(tmp_path):
    out = ensure_synthetic("motion", tmp_path, videos_per_class=2)
    video = out / "train" / "up" / "0000.mp4"
    written = video.stat().st_mtime_ns
    assert ensure_synthetic("motion", tmp_path, videos_per_class=2) == out and video.stat().st_mtime_ns == written
    (out / MARKER).write_text('{"task": "motion", "complete": false}')  # as if interrupted before the end
    ensure_synthetic("motion", tmp_path, videos_per_class=2)
    assert video.stat().st_mtime_ns != written and json.loads((out / MARKER).read_text())["videos_per_class"] == 2
    ensure_synthetic("motion", tmp_path, videos_per_class=3)  # other parameters: regenerated
    assert len(read_manifest(out / "train.csv").samples) == 4 * 2
    marker = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**marker, "classes": ["up", "down", "left", "right"]}))  # an older task
    written = video.stat().st_mtime_ns
    ensure_synthetic("motion", tmp_path, videos_per_class=3)
    assert video.stat().st_mtime_ns != written and json.loads((out / MARKER).read_text())["classes"] == list(TASKS["motion"])


def test_synth_cli_and_its_errors(tmp_path, capsys):
    assert tsf_main(["data", "synth", "--task", "appearance", "--out", str(tmp_path / "a"), "--videos-per-class", "2",
                     "--frames", "16", "--size", "16"]) == 0
    assert "appearance: 8 videos" in capsys.readouterr().out
    assert read_video_frames(tmp_path / "a" / "val" / "red" / "0001.mp4", [15]).shape == (1, 16, 16, 3)
    assert tsf_main(["data", "synth", "--task", "motion", "--out", str(tmp_path / "m"), "--size", "33"]) == 2
    assert "size=33: use an even size" in capsys.readouterr().err


def test_loading_benchmark_reports_clips_per_second():
    from tsf.data.bench import benchmark_loading

    result = benchmark_loading(num_frames=4, crop_size=32, sampling_rate=2, seconds=1, fps=30, height=64,
                               gops=(10,), clips=3, repeats=1, readers=["pyav"])
    row = result["by_gop"][10]["pyav"]
    assert row["tsf_clips_per_s"] > 0 and row["full_decode_clips_per_s"] > 0
    assert result["speedup_per_worker"] == row["speedup"]
