"""The notebooks' data and result figures (the attention-scheme comparison's too), and the example videos."""
import matplotlib
import numpy as np
import pytest
import torch

import tsf
from tsf.data import example_video, video_info
from tsf.plots import (
    SCHEME_COLOURS, class_balance, frame_strip, per_class_accuracy, plot_cost, plot_scheme_accuracy,
    sampling_timeline,
)
from tsf.schemes import PAPER_TABLE1, SCHEMES


def test_frame_strip_takes_dataset_and_reader_layouts():
    dataset_clip = torch.zeros(3, 4, 16, 16, dtype=torch.uint8)  # (3, T, H, W)
    decoded = np.full((4, 16, 16, 3), 200, np.uint8)  # (T, H, W, 3)
    figure = frame_strip([dataset_clip, decoded], row_labels=["a", "b"], title="t")
    assert len(figure.axes) == 8
    assert figure.axes[4].get_images()[0].get_array()[0, 0].tolist() == [200, 200, 200]
    with pytest.raises(ValueError, match="uint8"):
        frame_strip([np.zeros((4, 16, 16, 3), np.float32)])
    with pytest.raises(ValueError, match="same number of frames"):
        frame_strip([decoded, decoded[:2]])


def test_class_balance_per_class_accuracy_and_sampling_timeline():
    figure = class_balance({"train": [3, 1], "val": [1, 1]}, ["a", "b"])
    assert [bar.get_height() for bar in figure.axes[0].patches] == [3, 1, 1, 1]
    confusion = np.array([[3, 1], [0, 0]])  # class b absent: recall 0, not a division by zero
    heights = [bar.get_height() for bar in per_class_accuracy(confusion, ["a", "b"]).axes[0].patches]
    assert heights == [0.75, 0.0]
    figure = sampling_timeline(100, {"clip": [0, 10, 20]}, fps=25)
    assert figure.axes[0].collections[0].get_offsets()[:, 0].tolist() == [0, 10, 20]


def test_example_videos_are_found_and_decode():
    bunny = video_info(example_video("bigbuckbunny"))
    assert (bunny.width, bunny.height) == (1280, 720) and bunny.num_frames > 100
    assert video_info(example_video("bikes")).width == 640
    with pytest.raises(ValueError, match="bigbuckbunny, bikes"):
        example_video("kinetics")


def test_predict_is_callable_from_the_package():
    from tsf.prediction import predict

    assert tsf.predict is predict


def test_plot_scheme_accuracy_puts_the_paper_beside_this_run():
    tasks = ("appearance", "motion")
    results = {"val_top1": {t: {s: 0.25 + 0.25 * i for i, s in enumerate(SCHEMES)} for t in tasks},
               "params": {s: 1000 for s in SCHEMES}, "chance": {t: 0.25 for t in tasks}, "paper_table1": PAPER_TABLE1}
    figure = plot_scheme_accuracy(results, thresholds={"motion": 0.9})
    paper, ours = figure.axes
    assert [bar.get_height() for bar in paper.patches] == [PAPER_TABLE1[s][k] / 100 for s in SCHEMES for k in ("k400", "ssv2")]
    assert [bar.get_height() for bar in ours.patches] == [0.25, 0.25, 0.5, 0.5, 0.75, 0.75]
    assert [bar.get_facecolor() for bar in ours.patches[::2]] == [matplotlib.colors.to_rgba(SCHEME_COLOURS[s]) for s in SCHEMES]
    assert [line.get_ydata().tolist() for line in ours.lines] == [[0.25, 0.25], [0.25, 0.25], [0.9, 0.9]]  # chance, claim


def test_plot_cost_draws_hollow_estimates_where_a_point_was_not_run():
    def row(scheme, frames, size, measured):
        return {"attention_type": scheme, "num_frames": frames, "img_size": size, "gflops": frames * size / 100,
                "attention_gib": frames / 10, "measured": measured, "step_time_s": 0.1 * frames if measured else None,
                "peak_memory_gib": frames / 5 if measured else None}

    frame_rows = [row("divided_space_time", t, 32, True) for t in (4, 8)] + [row("joint_space_time", 4, 32, True),
                                                                            row("joint_space_time", 8, 32, False)]
    size_rows = [row(s, 8, px, True) for s in ("divided_space_time", "joint_space_time") for px in (32, 64)]
    figure = plot_cost(frame_rows, size_rows, memory_cap_gib=1.0)
    assert len(figure.axes) == 6
    flops, time, memory = figure.axes[:3]
    assert flops.get_xlabel() == "frames per clip (32 px)" and figure.axes[3].get_xlabel() == "frame size (px) (8 frames)"
    joint_time = [line for line in time.lines if line.get_label() == "Joint Space-Time"][0]
    assert joint_time.get_xdata().tolist() == [4]  # the point not run has no measured time...
    assert [c.get_offsets().tolist() for c in memory.collections] == [[[8.0, 0.8]]]  # ...but its estimate, hollow
    assert [c.get_offsets().tolist() for c in time.collections] == [[[8.0, 0.0]]]  # and an x on the axis
    assert any(line.get_label() == "cap 1 GiB" for line in memory.lines)
