"""Does attention follow the object: where the object is, temporal attention along its track, the
block-by-block following of a recording and its summaries, and the moving square of notebook 05."""
import numpy as np
import pytest
import torch

from tsf.attention import AttentionRecording, attention_map, record_attention
from tsf.data.synth import TASKS, render
from tsf.following import (
    divided_attention_follows, following_findings, following_summary, following_table, follows_moving_square,
    map_peaks, moved_frames, object_following, object_frame_share, object_patches, object_tracks,
    tracked_temporal_attention,
)
from tsf.model import ATTENTION_TYPES, create_model


pytestmark = pytest.mark.usefixtures("one_thread")


def micro(attention_type: str):
    torch.manual_seed(0)
    return create_model("micro", attention_type=attention_type).eval()


def bright_patch_frames(path: torch.Tensor, grid=(2, 3), patch_px=16) -> np.ndarray:
    """Black frames with one white patch each, at ``path[t]`` in frame t."""
    frames = np.zeros((len(path), grid[0] * patch_px, grid[1] * patch_px, 3), np.uint8)
    for t, (row, col) in enumerate(path.tolist()):
        frames[t, row * patch_px:(row + 1) * patch_px, col * patch_px:(col + 1) * patch_px] = 255
    return frames


# -- where the object is ---------------------------------------------------------------------------
def test_object_patches_and_map_peaks():
    frames = np.full((2, 32, 48, 3), 60, np.uint8)  # a 4 x 6 grid of 8 px patches
    frames[0, 10:17, 20:27] = (230, 60, 60)  # a 7 px square, mostly in patch (1, 2)
    frames[1, 13:20, 44:48] = 240  # half a square at the right edge, (2, 5)
    assert object_patches(frames, (4, 6)).tolist() == [[1, 2], [2, 5]]
    with pytest.raises(ValueError, match="4x5 patch grid"):
        object_patches(frames, (4, 5))
    maps = torch.zeros(3, 2, 2, 3)
    maps[1, 0, 1, 2] = 1.0
    assert map_peaks(maps).shape == (3, 2, 2) and map_peaks(maps)[1, 0].tolist() == [1, 2]


def test_object_tracks_and_the_frames_the_object_moved_on_from():
    # neither row-major nor column-major in time, so a swapped axis shows
    path = torch.tensor([[0, 1], [1, 2], [1, 0], [0, 2]])
    still = torch.tensor([[1, 1], [1, 1], [0, 1], [1, 1]])  # leaves its patch once, then comes back
    frames = np.stack([bright_patch_frames(path), bright_patch_frames(still)])  # (V, T, H, W, 3)
    tracks = object_tracks(frames, (2, 3))
    assert torch.equal(tracks, torch.stack([path, still]))
    assert torch.equal(object_tracks(torch.from_numpy(frames), (2, 3)), tracks)
    assert moved_frames(tracks).tolist() == [[False, True, True, True], [False, False, True, False]]


# -- temporal attention along the track ------------------------------------------------------------
def test_temporal_attention_along_a_track_and_the_share_on_the_objects_frames():
    grid, T, N = (2, 3), 4, 6
    # the object sits at patch (0, 1) in frames 0-1, then at (1, 2) in frames 2-3
    track = torch.tensor([[[0, 1], [0, 1], [1, 2], [1, 2]]])
    temporal = torch.full((1, N, 2, T, T), 1.0 / T)  # uniform everywhere but at the object's two patches
    temporal[0, 1, :] = torch.tensor([0.1, 0.7, 0.1, 0.1])  # patch 1 looks at frame 1 whatever the query frame
    temporal[0, 5, 0] = torch.eye(T)  # patch 5: head 0 looks at its own frame, head 1 at frame 0
    temporal[0, 5, 1] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    rows = tracked_temporal_attention(temporal, track, grid)
    expected = torch.stack([temporal[0, 1, :, 0].mean(0), temporal[0, 1, :, 1].mean(0),
                            temporal[0, 5, :, 2].mean(0), temporal[0, 5, :, 3].mean(0)])
    assert torch.equal(rows[0], expected)
    share, uniform = object_frame_share(temporal, track, grid)
    # frame 0: of the 0.9 it gives other frames, 0.7 goes to frame 1, where the object still is;
    # frame 1: 0.1 of 0.3; frames 2 and 3 (the object at patch 5): head 1's attention goes to frame 0, gone
    torch.testing.assert_close(share[0], torch.tensor([0.7 / 0.9, 0.1 / 0.3, 0.0, 0.0]))
    torch.testing.assert_close(uniform[0], torch.full((4,), 1 / 3))
    with pytest.raises(ValueError, match=r"track must be \(B, T, 2\)"):
        tracked_temporal_attention(temporal, track[:, :3], grid)


# -- block by block --------------------------------------------------------------------------------
def test_object_following_of_hand_built_attention_on_the_objects_path():
    # divided attention in which every frame's class token looks at the object's patch, every patch
    # attends to itself alone, and in time every patch looks at frame 0
    path, grid, T, N = torch.tensor([[0, 1], [1, 2], [1, 0], [0, 2]]), (2, 3), 4, 6
    spatial = torch.eye(1 + N).repeat(1, T, 2, 1, 1)  # (1, T, heads, 1+N, 1+N)
    spatial[0, torch.arange(T), :, 0] = 0.0
    spatial[0, torch.arange(T), :, 0, 1 + path[:, 0] * 3 + path[:, 1]] = 1.0
    temporal = torch.zeros(1, N, 2, T, T)
    temporal[..., 0] = 1.0
    rec = AttentionRecording("divided_space_time", grid, T, [spatial], [temporal])
    following = object_following(rec, path[None])
    assert following["cls"].shape == (1, 1, T) and following["cls"].all()
    # the object is never at its frame-0 patch again: frame 0 is the only one its patch looks at from there
    assert following["time_share"][0, 0, 1:].tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(following["time_uniform"][0, 0], torch.zeros(T))
    with pytest.raises(ValueError, match="no complete forward pass"):
        object_following(AttentionRecording("divided_space_time"), path[None])


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_object_following_gathers_the_peaks_of_every_block(attention_type):
    model = micro(attention_type)
    with record_attention(model) as rec:
        model(torch.randn(2, 3, 4, 32, 48, generator=torch.Generator().manual_seed(1)))
    track = torch.tensor([[[0, 1], [0, 2], [1, 2], [1, 2]], [[1, 0], [1, 0], [0, 0], [0, 1]]])
    following = object_following(rec, track)
    names = {"cls", "rollout"} | ({"patch_rollout", "patch_rollout_away"} if attention_type != "space_only" else set())
    names |= {"time_share", "time_uniform"} if attention_type == "divided_space_time" else set()
    assert set(following) == names and all(value.shape == (2, 2, 4) for value in following.values())
    for block in range(2):
        for sample in range(2):
            def on_object(kind: str) -> torch.Tensor:
                maps = attention_map(rec, kind, block, patch=tuple(track[sample, 0].tolist()), frame=0, sample=sample)
                return (map_peaks(maps) == track[sample]).all(-1)

            for kind in names & {"cls", "rollout", "patch_rollout"}:
                assert torch.equal(following[kind][block, sample], on_object(kind)), (kind, block, sample)
            if "patch_rollout_away" in names:
                maps = attention_map(rec, "patch_rollout", block, patch=tuple(track[sample, 0].tolist()), sample=sample)
                maps[:, track[sample, 0, 0], track[sample, 0, 1]] = 0.0
                peaks_elsewhere = (map_peaks(maps) == track[sample]).all(-1)
                assert torch.equal(following["patch_rollout_away"][block, sample], peaks_elsewhere)
        if attention_type == "divided_space_time":
            share, uniform = object_frame_share(rec.temporal[block], track, rec.grid)
            assert torch.equal(following["time_share"][block], share)
            assert torch.equal(following["time_uniform"][block], uniform)
    with pytest.raises(ValueError, match=r"track must be \(B, T, 2\) = \(2, 4, 2\)"):
        object_following(rec, track[:1])


# -- summing up ------------------------------------------------------------------------------------
def hand_built_following() -> tuple[dict, torch.Tensor]:
    """``object_following``-like results of two networks: 2 blocks, 2 clips, 4 frames, half of them moved."""
    moved = torch.tensor([[False, True, True, False], [False, False, True, True]])
    no, yes = torch.zeros(2, 4, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool)
    trained = {
        "cls": torch.stack([no, torch.tensor([[True, True, False, False], [True, True, True, True]])]),
        "rollout": torch.stack([no, no]),
        "patch_rollout": torch.stack([yes, torch.tensor([[False, True, False, False], [False, False, True, True]])]),
        "patch_rollout_away": torch.stack([no, yes]),
        "time_share": torch.stack([torch.full((2, 4), 0.5), torch.full((2, 4), 0.25)]),
        "time_uniform": torch.full((2, 2, 4), 1 / 3),
    }
    untrained = {"cls": torch.stack([yes, no]), "rollout": torch.stack([no, no]),
                 "patch_rollout": torch.stack([yes, no]), "patch_rollout_away": torch.stack([no, no]),
                 "time_share": torch.full((2, 2, 4), 1 / 3), "time_uniform": torch.full((2, 2, 4), 1 / 3)}
    return {"trained": trained, "untrained": untrained}, moved


def test_following_findings_count_the_last_block_on_the_moved_frames_and_the_best_class_token_block():
    following, moved = hand_built_following()
    findings = following_findings(following, moved, (2, 3))
    assert findings["moved_frames"] == 0.5 and findings["chance"] == pytest.approx(1 / 6)
    # the last block only, on the 4 moved frames: 3 of them on the object
    assert findings["patch_rollout_on_square_moved_frames"] == {"trained": 0.75, "untrained": 0.0}
    assert findings["patch_rollout_away_on_square_moved_frames"] == {"trained": 1.0, "untrained": 0.0}
    # block 1 is the trained network's best (6 of 8 frames); the untrained network is read at the same block
    assert findings["best_cls_block"] == 1 and findings["cls_on_square_best_block"] == {"trained": 0.75, "untrained": 0.0}
    assert findings["time_share_per_block"]["trained"] == [0.5, 0.25]
    assert findings["time_share_uniform_per_block"] == pytest.approx([1 / 3, 1 / 3])
    departure = findings["time_share_largest_departure_from_uniform"]
    assert departure["trained"] == pytest.approx(1 / 6) and departure["untrained"] == pytest.approx(0.0, abs=1e-7)
    # a space_only model's result has neither the patch rollouts nor the temporal shares
    space_only = {name: {key: result[key] for key in ("cls", "rollout")} for name, result in following.items()}
    assert set(following_findings(space_only, moved, (2, 3))) == {"moved_frames", "chance", "best_cls_block",
                                                                  "cls_on_square_best_block"}


def test_following_table_has_a_row_per_map_and_block_and_a_column_pair_per_network():
    following, moved = hand_built_following()
    table = following_table(following, moved, (2, 3), thing="square").splitlines()
    assert table[0].startswith("chance 17% of the frames (20% with one place left out); a map that never moves: 50%")
    assert table[2].startswith("map peak on the square") and "trained: all" in table[2] and "untrained: all" in table[2]
    row = next(line for line in table if line.startswith("class token, block 1"))
    assert row.split()[-4:] == ["75%", "75%", "0%", "0%"]  # trained all, moved; untrained all, moved
    assert sum(line.startswith("  the same, its own place left out") for line in table) == 2
    time_row = next(line for line in table if line.startswith("on the frames the square is there, block 0"))
    assert time_row.split()[-3:] == ["50%", "33%", "33%"]  # trained, untrained, uniform
    space_only = {name: {key: result[key] for key in ("cls", "rollout")} for name, result in following.items()}
    assert not any("rollout of the frame-0 patch" in line or "temporal" in line
                   for line in following_table(space_only, moved, (2, 3)).splitlines())


# -- the moving square of notebook 05 --------------------------------------------------------------
def test_divided_attention_follows_gives_maps_and_shares():
    torch.manual_seed(0)
    model = create_model("micro", attention_type="divided_space_time", num_classes=4)
    frames = render("motion", 3, 4, 32, np.random.default_rng(0))
    clip = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255
    found = divided_attention_follows(model, clip, frames)
    assert found["temporal"].shape == found["space_time"].shape == (4, 2, 2) and found["track"].shape == (4, 2)
    assert len(found["on_object"]) == 4 and all(0 <= s <= 1 for s in found["on_object"])
    assert found["uniform"] == 0.25 and found["query"][0] == 2 and found["block"] == 1
    assert sum(found["probabilities"]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs a divided_space_time model"):
        divided_attention_follows(create_model("micro", attention_type="space_only"), clip, frames)


def test_follows_moving_square_measures_the_share_on_the_square_where_it_moved():
    torch.manual_seed(0)
    model = create_model("tiny", attention_type="divided_space_time", class_names=TASKS["motion"], depth=1)
    found = follows_moving_square(model, num_clips=6, seed=7)
    label, frames, follows = found["example"]
    assert 0 < found["clips"] <= 6 and 0.0 <= found["share"] <= 1.0 and found["uniform"] == 1 / 16
    assert frames.shape == (8, 32, 32, 3) and found["block"] == 0 and label in range(4)
    # the example's frames are clip `label` mod 4 of the seed: the square really moves in that direction
    assert (follows["track"] != follows["track"][follows["query"][0]]).any()
    with pytest.raises(ValueError, match="needs a divided_space_time model"):
        follows_moving_square(create_model("tiny", attention_type="space_only"), num_clips=1)
    with pytest.raises(ValueError, match="no square left its patch in 0 clips"):
        follows_moving_square(model, num_clips=0)


def test_following_summary_puts_every_networks_share_beside_the_first_ones_reference():
    found = {"trained": {"share": 0.4, "uniform": 1 / 16, "block": 0, "clips": 20, "example": None},
             "untrained": {"share": 0.1, "uniform": 1 / 16, "block": 0, "clips": 18, "example": None}}
    assert following_summary(found) == {"trained": 0.4, "untrained": 0.1, "uniform": 1 / 16, "block": 0, "clips": 20}
