"""The notebooks' data and result figures, and the example videos."""
import numpy as np
import pytest
import torch

import tsf
from tsf.data import example_video, video_info
from tsf.plots import class_balance, frame_strip, per_class_accuracy, sampling_timeline


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
    from tsf.predict import predict

    assert tsf.predict is predict
