"""Sampling (dense, uniform, multi-view), transforms, normalisation and ``VideoClipDataset``."""
import json

import numpy as np
import pytest
import torch

from conftest import frame_level
from tsf.data import Manifest, VideoClipDataset, VideoSample, normalize, read_manifest
from tsf.data.sampling import crop_offsets, dense_indices, uniform_indices
from tsf.data.transforms import horizontal_flip, short_side_scale, spatial_crop


def levels(clip: torch.Tensor) -> list[int]:
    """The frame indices a clip of the test video holds, read back from each frame's grey level."""
    medians = clip.float().flatten(2).median(dim=2).values.mean(0)  # (T,)
    lookup = {frame_level(i): i for i in range(40)}
    return [lookup[min(lookup, key=lambda level: abs(level - m))] for m in medians.tolist()]


def one_video(path, **sample) -> Manifest:
    return Manifest([VideoSample(str(path), 0, **sample)], ["only"], path, "csv")


def test_dense_training_windows_are_random_and_inside_the_video():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        indices = dense_indices(100, 8, 4, rng)
        assert len(indices) == 8 and np.all(np.diff(indices) > 0) and indices[0] >= 0 and indices[-1] <= 99
        assert indices[-1] - indices[0] <= 31  # a window of 8 x 4 frames
        starts.add(int(indices[0]))
    assert min(starts) <= 5 and max(starts) >= 63
    np.testing.assert_array_equal(dense_indices(50, 8, 1, np.random.default_rng(3)),
                                  dense_indices(50, 8, 1, np.random.default_rng(3)))


def test_dense_test_clips_are_evenly_spread_not_at_frame_zero():
    assert dense_indices(100, 8, 4)[0] == 34  # one clip: the centre of the 68 frames of room
    clips = [dense_indices(100, 8, 4, clip=k, num_clips=3) for k in range(3)]
    assert [c[0] for c in clips] == [0, 34, 68] and clips[-1][-1] == 99
    np.testing.assert_array_equal(dense_indices(100, 8, 1), np.arange(46, 54))  # rate 1: consecutive frames
    # shorter than the window: the whole video, the last frame repeated (the official padding)
    assert dense_indices(20, 8, 4).tolist() == [0, 4, 8, 13, 17, 19, 19, 19]


def test_uniform_sampling_takes_one_frame_per_segment():
    rng = np.random.default_rng(0)
    bounds = [(round(i * 99 / 8), round((i + 1) * 99 / 8)) for i in range(8)]
    for _ in range(50):
        indices = uniform_indices(100, 8, rng)
        assert all(lo <= i <= hi for i, (lo, hi) in zip(indices, bounds))
    assert uniform_indices(100, 8).tolist() == [(lo + hi) // 2 for lo, hi in bounds]  # the official test frames
    early, late = uniform_indices(100, 8, clip=0, num_clips=2), uniform_indices(100, 8, clip=1, num_clips=2)
    assert np.all(early < late)


def test_spatial_crops_cover_the_long_side():
    assert crop_offsets(100, 40, 1) == [30] and crop_offsets(100, 40, 3) == [0, 30, 60]
    clip = torch.arange(10 * 30, dtype=torch.uint8).view(1, 1, 10, 30).expand(3, 2, 10, 30)
    lefts = [spatial_crop(clip, 10, k, 3)[0, 0, 0, 0].item() for k in range(3)]
    assert lefts == [0, 10, 20]


def test_transforms_keep_uint8_and_the_layout():
    clip = torch.randint(0, 256, (3, 4, 25, 33), dtype=torch.uint8)
    scaled = short_side_scale(clip, 40)
    assert scaled.dtype == torch.uint8 and scaled.shape == (3, 4, 40, 53)
    assert short_side_scale(clip, 20).shape == (3, 4, 20, 26)
    assert torch.equal(horizontal_flip(clip)[..., 0], clip[..., -1])


def test_normalize_uses_the_model_statistics_on_a_batch():
    batch = torch.full((2, 3, 4, 8, 8), 255, dtype=torch.uint8)
    batch[:, 1] = 0
    out = normalize(batch, (0.45, 0.45, 0.45), (0.225, 0.225, 0.225))
    assert out.dtype == torch.float32 and out.shape == batch.shape
    assert out[0, 0, 0, 0, 0].item() == pytest.approx((1 - 0.45) / 0.225)
    assert out[1, 1, 3, 7, 7].item() == pytest.approx(-0.45 / 0.225)
    assert normalize(batch[0], (0.5,) * 3, (0.5,) * 3, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(TypeError, match="expects a uint8 clip"):
        normalize(batch.float(), (0.45,) * 3, (0.225,) * 3)
    with pytest.raises(ValueError, match=r"got shape \(2, 4, 8, 8\)"):
        normalize(batch[:, 0], (0.45,) * 3, (0.225,) * 3)


def test_multi_view_testing_is_deterministic_and_spread(test_videos):
    dataset = VideoClipDataset(one_video(test_videos["h264_bframes"]), num_frames=4, sampling_rate=2, train=False,
                               crop_size=32, num_temporal_clips=3, num_spatial_crops=3)
    assert len(dataset) == 9
    items = [dataset[i] for i in range(9)]
    assert [(item["index"], item["view"], item["bad"]) for item in items] == [(0, v, 0) for v in range(9)]
    assert all(item["clip"].shape == (3, 4, 32, 32) and item["clip"].dtype == torch.uint8 for item in items)
    # windows of 4 x 2 frames at the start, centre and end; 4 samples spread over each window's 8 frames
    assert [levels(items[3 * t]["clip"]) for t in range(3)] == [[0, 2, 4, 7], [16, 18, 20, 23], [32, 34, 36, 39]]
    # the indices behind a view, for showing what a prediction saw: the frames its clip holds
    sample = dataset.manifest.samples[0]
    assert [dataset.view_indices(sample, t).tolist() for t in range(3)] == [levels(items[3 * t]["clip"]) for t in range(3)]
    # spatial crops: left, centre and right of the 43 x 32 frame, so the square (top left) moves across them
    assert not torch.equal(items[0]["clip"], items[2]["clip"])
    assert all(torch.equal(a["clip"], b["clip"]) for a, b in zip(items, (dataset[i] for i in range(9))))


def test_one_test_view_is_the_centre_clip(test_videos):
    dataset = VideoClipDataset(one_video(test_videos["h264_bframes"]), num_frames=8, sampling_rate=1, train=False,
                               crop_size=32)
    assert levels(dataset[0]["clip"]) == list(range(16, 24))
    uniform = VideoClipDataset(one_video(test_videos["h264_bframes"]), num_frames=4, sampling="uniform", train=False,
                               crop_size=32)
    assert levels(uniform[0]["clip"]) == [5, 15, 24, 34]  # the middles of segments [0, 10], [10, 20], [20, 29], [29, 39]


def test_target_fps_converts_the_sampling_rate(test_videos):
    # 6 frames at 30 fps = 5 frames of the 25 fps video: a window of 4 x 5 frames in the centre
    dataset = VideoClipDataset(one_video(test_videos["h264_bframes"]), num_frames=4, sampling_rate=6, target_fps=30,
                               train=False, crop_size=32)
    assert levels(dataset[0]["clip"]) == [10, 16, 22, 29]


def test_training_clips_are_reproducible_per_seed_epoch_and_index(test_videos):
    manifest = Manifest([VideoSample(str(test_videos["h264_bframes"]), 0)] * 4, ["only"], test_videos["h264_bframes"], "csv")
    settings = dict(num_frames=4, sampling_rate=2, crop_size=24, short_side_range=(26, 40), hflip=True)
    first, second = VideoClipDataset(manifest, **settings), VideoClipDataset(manifest, **settings)
    epoch0 = [first[i]["clip"] for i in range(4)]
    assert all(torch.equal(a, second[i]["clip"]) for i, a in enumerate(epoch0))
    assert all(clip.shape == (3, 4, 24, 24) for clip in epoch0)
    assert len({tuple(levels(c)) for c in epoch0}) > 1  # a random start per item
    first.set_epoch(1)
    assert not all(torch.equal(a, first[i]["clip"]) for i, a in enumerate(epoch0))
    reseeded = VideoClipDataset(manifest, **settings, seed=5)
    assert not all(torch.equal(a, reseeded[i]["clip"]) for i, a in enumerate(epoch0))


def test_odd_sized_and_other_codec_videos_give_square_clips(test_videos):
    for name in ("odd_size", "mpeg4_avi", "hevc_mp4", "mjpeg_mov", "av1_webm", "vfr"):
        for train in (True, False):
            clip = VideoClipDataset(one_video(test_videos[name]), num_frames=8, train=train, crop_size=16)[0]["clip"]
            assert clip.shape == (3, 8, 16, 16) and clip.dtype == torch.uint8, name


def test_start_and_end_seconds_limit_the_frames(test_videos, tmp_path):
    (tmp_path / "m.csv").write_text(f"path,label,start,end\n{test_videos['h264_bframes']},0,0.8,1.2\n")
    manifest = read_manifest(tmp_path / "m.csv")  # 25 fps: frames 20..29
    clips = [VideoClipDataset(manifest, num_frames=4, sampling_rate=2, train=False, crop_size=32,
                              num_temporal_clips=2)[i]["clip"] for i in range(2)]
    assert [levels(c) for c in clips] == [[20, 22, 24, 27], [22, 24, 26, 29]]


def test_ssv2_frame_list_videos_load_like_files(tmp_path, test_videos):
    from PIL import Image

    from tsf.data.readers import read_video_frames

    frames = read_video_frames(test_videos["h264_bframes"], range(12))
    lines = ["original_vido_id video_id frame_id path labels"]
    for f, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"5_{f:06d}.png")
        lines.append(f"5 0 {f} 5_{f:06d}.png \"\"")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "something-something-v2-labels.json").write_text(json.dumps({"Doing something": "0"}))
    (tmp_path / "something-something-v2-train.json").write_text(json.dumps([{"id": "5", "template": "Doing [something]"}]))
    dataset = VideoClipDataset(read_manifest(tmp_path / "train.csv"), num_frames=4, sampling="uniform", train=False,
                               crop_size=32)
    assert levels(dataset[0]["clip"]) == [1, 4, 7, 9]  # segments of 11/4 frames, their middles


def test_bad_settings_are_refused_with_the_fix(test_videos):
    manifest = one_video(test_videos["h264_bframes"])
    for settings, words in ((dict(sampling="random"), "sampling='random'"), (dict(reader="opencv"), "reader='opencv'"),
                            (dict(num_temporal_clips=3), "test views; use 1 with train=True"),
                            (dict(crop_size=224, short_side_range=(128, 160)), "crop_size=224 <= min"),
                            (dict(max_bad_fraction=2), "max_bad_fraction=2")):
        with pytest.raises(ValueError, match=words.replace("(", r"\(")):
            VideoClipDataset(manifest, **settings)


def test_datasets_pickle_for_notebooks_and_spawned_workers(test_videos):
    import pickle

    dataset = VideoClipDataset(one_video(test_videos["h264_bframes"]), num_frames=4, crop_size=16, train=False)
    copy = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(copy[0]["clip"], dataset[0]["clip"])
