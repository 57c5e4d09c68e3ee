"""Manifests in every supported format, their errors (file and line), class lists, and the
`tsf data manifest` stratified split."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tsf.cli import main as tsf_main
from tsf.data import ManifestError, load_classes, read_manifest, write_split_manifests


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_header_csv_by_name_and_by_id_with_times(tmp_path):
    write(tmp_path / "classes.txt", "jump\nrun\n\nswim\n")
    manifest = read_manifest(write(tmp_path / "lists" / "train.csv",
                                   "path,label,start,end\n"
                                   "../videos/a.mp4,run,1.5,4\n"
                                   '"/abs/with, comma.mp4",2,,\n'
                                   "\n"
                                   "b.mp4,jump,,3\n"), classes=load_classes(tmp_path / "classes.txt"))
    assert manifest.format == "csv" and manifest.classes == ["jump", "run", "swim"]
    a, b, c = manifest.samples
    assert (a.path, a.label, a.start, a.end, a.line) == (str(tmp_path / "videos" / "a.mp4"), 1, 1.5, 4.0, 2)
    assert (b.path, b.label, b.start, b.end) == ("/abs/with, comma.mp4", 2, None, None)
    assert (c.path, c.label, c.end, c.line) == (str(tmp_path / "lists" / "b.mp4"), 0, 3.0, 5)


def test_header_csv_uses_classes_txt_beside_it_or_sorted_names(tmp_path):
    csv_text = "path,label\nx.mp4,swim\ny.mp4,jump\n"
    assert read_manifest(write(tmp_path / "alone" / "val.csv", csv_text)).classes == ["jump", "swim"]
    write(tmp_path / "with" / "classes.txt", "swim\nfly\njump\n")
    manifest = read_manifest(write(tmp_path / "with" / "val.csv", csv_text))
    assert manifest.classes == ["swim", "fly", "jump"] and [s.label for s in manifest.samples] == [0, 2]


def test_kinetics_space_separated_ids(tmp_path):
    manifest = read_manifest(write(tmp_path / "train.csv", "abseiling/a b.mp4 0\n/data/k400/x.mp4 3\n\n"))
    assert manifest.format == "kinetics" and manifest.classes == ["0", "1", "2", "3"]
    assert [(s.path, s.label) for s in manifest.samples] == [(str(tmp_path / "abseiling" / "a b.mp4"), 0),
                                                            ("/data/k400/x.mp4", 3)]
    named = read_manifest(tmp_path / "train.csv", classes=[f"c{i}" for i in range(400)])
    assert named.classes[3] == "c3"


def test_folder_per_class(tmp_path):
    for name in ("run/1.mp4", "run/sub/2.MKV", "jump/3.avi", "run/notes.txt", ".cache/x.mp4"):
        write(tmp_path / name, "")
    manifest = read_manifest(tmp_path)
    assert manifest.format == "folders" and manifest.classes == ["jump", "run"]
    assert [(Path(s.path).name, s.label) for s in manifest.samples] == [("3.avi", 0), ("1.mp4", 1), ("2.MKV", 1)]
    with pytest.raises(ManifestError, match=r"folders \['run'\] are not in the class list"):
        read_manifest(tmp_path, classes=["jump", "swim"])
    write(tmp_path / "empty" / "readme.md", "")
    with pytest.raises(ManifestError, match=r"class folders \['empty'\] hold no videos"):
        read_manifest(tmp_path)


def ssv2_layout(root: Path, with_frames: bool) -> None:
    write(root / "something-something-v2-labels.json",
          json.dumps({"Approaching something with your camera": "0", "Pushing something from left to right": "1"}))
    write(root / "something-something-v2-train.json", json.dumps([
        {"id": "101", "label": "pushing a cup from left to right", "template": "Pushing [something] from left to right",
         "placeholders": ["a cup"]},
        {"id": "7", "label": "approaching a box with your camera", "template": "Approaching [something] with your camera",
         "placeholders": ["a box"]},
    ]))
    if with_frames:
        lines = ["original_vido_id video_id frame_id path labels"]
        for video, count in (("101", 3), ("7", 2)):
            lines += [f"{video} {i} {f} frames/{video}/{video}_{f:06d}.jpg \"\"" for i, f in enumerate(range(1, count + 1))]
        write(root / "train.csv", "\n".join(lines) + "\n")


def test_ssv2_frame_lists_with_labels_json(tmp_path):
    ssv2_layout(tmp_path, with_frames=True)
    for source in (tmp_path / "train.csv", tmp_path / "something-something-v2-train.json"):
        manifest = read_manifest(source)
        assert manifest.format == "ssv2"
        assert manifest.classes == ["Approaching something with your camera", "Pushing something from left to right"]
        first, second = manifest.samples
        assert (first.label, second.label) == (1, 0)
        assert first.path == str(tmp_path / "frames" / "101")
        assert first.frames == tuple(str(tmp_path / "frames" / "101" / f"101_{f:06d}.jpg") for f in (1, 2, 3))
        assert len(second.frames) == 2


def test_ssv2_video_files_without_frame_lists(tmp_path):
    ssv2_layout(tmp_path, with_frames=False)
    manifest = read_manifest(tmp_path / "something-something-v2-train.json")
    assert [s.path for s in manifest.samples] == [str(tmp_path / "20bn-something-something-v2" / f"{i}.webm")
                                                  for i in ("101", "7")]
    assert all(s.frames is None for s in manifest.samples)
    with pytest.raises(ManifestError, match="is an SSv2 folder: give the split"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("text, line, words", [
    ("path,label\na.mp4,run\nb.mp4,fly\n", 3, "unknown label 'fly'; known classes: run, jump"),
    ("path,label\na.mp4,run\nb.mp4,run,extra\n", 3, "3 fields, the header has 2"),
    ("path,label\na.mp4,7\n", 2, "label id 7 is outside 0..1"),
    ("path,label,start,end\na.mp4,run,3,1\n", 2, "end 1.0 is not after start 3.0"),
    ("path,label,start\na.mp4,run,soon\n", 2, "start 'soon' is not a number of seconds"),
    ("path,lable\n", 1, "the columns are path,label"),
    ("a.mp4 0\nb.mp4 run\n", 2, "label 'run' is not an integer class id"),
    ("a.mp4 0\nnolabel\n", 2, "expected `path label_id`"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path / "m.csv", text)
    with pytest.raises(ManifestError) as raised:
        read_manifest(path, classes=["run", "jump"])
    assert f"{path}:{line}: " in str(raised.value) and words in str(raised.value)


def test_collect_mode_keeps_the_good_rows(tmp_path):
    path = write(tmp_path / "m.csv", "path,label\na.mp4,run\nb.mp4,fly\nc.mp4,jump,x\nd.mp4,jump\n")
    manifest = read_manifest(path, classes=["run", "jump"], errors="collect")
    assert [Path(s.path).name for s in manifest.samples] == ["a.mp4", "d.mp4"]
    assert [(p.where, p.status) for p in manifest.problems] == [(f"{path}:3", "bad_label"), (f"{path}:4", "malformed")]


def test_missing_and_ambiguous_manifests(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest .*nope.csv does not exist.*tsf data manifest"):
        read_manifest(tmp_path / "nope.csv")
    with pytest.raises(ManifestError, match=r"m.csv:3: labels mix class names and ids"):
        read_manifest(write(tmp_path / "m.csv", "path,label\na.mp4,run\nb.mp4,1\n"))
    with pytest.raises(ManifestError, match="Kinetics annotation file"):
        read_manifest(write(tmp_path / "k.csv", "label,youtube_id,time_start,time_end,split\n"))


def test_load_classes_formats_and_errors(tmp_path):
    assert load_classes(write(tmp_path / "c.json", json.dumps({"b": "1", "a": 0}))) == ["a", "b"]
    assert load_classes(write(tmp_path / "l.json", json.dumps(["x", "y"]))) == ["x", "y"]
    with pytest.raises(ManifestError, match=r"c.txt:3: class 'a' is listed again \(first on line 1\)"):
        load_classes(write(tmp_path / "c.txt", "a\nb\na\n"))
    with pytest.raises(ManifestError, match="class ids must be 0..1"):
        load_classes(write(tmp_path / "gap.json", json.dumps({"a": 0, "b": 2})))
    with pytest.raises(FileNotFoundError, match="one class name per line"):
        load_classes(tmp_path / "absent.txt")


def test_manifest_cli_writes_a_stratified_split(tmp_path, capsys):
    counts = {"cat": 10, "dog": 5, "eel": 2}
    for name, n in counts.items():
        for i in range(n):
            write(tmp_path / "root" / name / f"{i}.mp4", "")
    out = tmp_path / "lists"
    assert tsf_main(["data", "manifest", str(tmp_path / "root"), "--out", str(out), "--val-fraction", "0.2"]) == 0
    assert "3 classes; train 13 videos" in capsys.readouterr().out
    classes = load_classes(out / "classes.txt")
    assert classes == ["cat", "dog", "eel"]
    train, val = (read_manifest(out / f"{split}.csv", classes=classes) for split in ("train", "val"))
    assert np.bincount([s.label for s in val.samples]).tolist() == [2, 1, 1]  # round(n * 0.2), at least one
    assert np.bincount([s.label for s in train.samples]).tolist() == [8, 4, 1]
    assert not {s.path for s in train.samples} & {s.path for s in val.samples}
    assert all(os.path.isfile(s.path) for s in train.samples + val.samples)
    assert (out / "val.csv").read_text().splitlines()[1].startswith("../root/cat/")  # relative to the CSV
    again = tmp_path / "again"
    write_split_manifests(tmp_path / "root", again, 0.2, seed=0)
    assert (again / "val.csv").read_text() == (out / "val.csv").read_text()
    write_split_manifests(tmp_path / "root", again, 0.2, seed=1, overwrite=True)
    assert (again / "val.csv").read_text() != (out / "val.csv").read_text()
    assert tsf_main(["data", "manifest", str(tmp_path / "nope"), "--out", str(tmp_path / "other")]) == 2
    assert "does not exist" in capsys.readouterr().err
