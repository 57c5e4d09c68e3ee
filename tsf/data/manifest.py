"""Manifests: which videos a split holds and their labels, read from the formats datasets ship in.

``read_manifest`` detects the format from what it is given:

- a folder: folder-per-class, ``ROOT/<class>/<video>`` (class names sorted alphabetically);
- a CSV whose first row is a header starting with ``path``: ``path,label[,start,end]``, label by
  class name or integer id, ``start``/``end`` in seconds (blank: the whole video);
- a space-separated ``path label_id`` file without header: the official Kinetics CSVs;
- the official Something-Something-v2 layout: the split's ``something-something-v2-<split>.json``
  or its frame list ``train.csv``/``val.csv`` (header ``original_vido_id video_id frame_id path
  labels``), with ``something-something-v2-labels.json`` beside it.

Relative paths resolve against the manifest's folder. Errors name the file and line and say how
to fix it.
"""
from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import DataError

PathLike = Union[str, os.PathLike]
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv", ".3gp")
SSV2_LABELS = "something-something-v2-labels.json"
SSV2_SPLITS = {"train.csv": "something-something-v2-train.json", "val.csv": "something-something-v2-validation.json"}
FRAME_LIST_HEADER = "original_vido_id"  # sic: the official frame lists spell it so
CSV_COLUMNS = ("path", "label", "start", "end")


class ManifestError(DataError):
    """A manifest that cannot be read as written; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class VideoSample:
    """One video of a manifest.

    Args:
        path: the video file (absolute), or for a frame-list video the folder of its frames.
        label: class id, an index into ``Manifest.classes``.
        start: first second of the video to use (None: from the start).
        end: second at which to stop (None: to the end).
        frames: the image files of a frame-list video (SSv2 frame lists); None for video files.
        line: where the sample is defined in the manifest (1-based; None for folder-per-class).
    """

    path: str
    label: int
    start: Optional[float] = None
    end: Optional[float] = None
    frames: Optional[tuple[str, ...]] = None
    line: Optional[int] = None


@dataclass(frozen=True)
class ManifestProblem:
    """A row ``read_manifest(..., errors="collect")`` could not turn into a sample.

    Args:
        where: ``file:line`` of the row (``file`` alone for JSON entries).
        path: the row's video path or id as written (empty if the row has none).
        status: ``"bad_label"`` or ``"malformed"``.
        reason: what is wrong and how to fix it.
    """

    where: str
    path: str
    status: str
    reason: str


@dataclass
class Manifest:
    """The videos of one split.

    Args:
        samples: the videos, in manifest order.
        classes: class names; label ``i`` is ``classes[i]``.
        source: the manifest file or folder.
        format: ``"csv"``, ``"kinetics"``, ``"ssv2"`` or ``"folders"``.
        problems: rows skipped with ``errors="collect"`` (always empty with ``errors="raise"``).
    """

    samples: list[VideoSample]
    classes: list[str]
    source: Path
    format: str
    problems: list[ManifestProblem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)


def load_classes(path: PathLike) -> list[str]:
    """Class names in label-id order.

    Args:
        path: ``classes.txt`` (one name per line, blank lines ignored), or a JSON file holding a
            list of names or a ``{name: id}`` mapping (as SSv2's ``something-something-v2-labels.json``).

    Raises:
        FileNotFoundError: no such file.
        ManifestError: duplicate names, ids that are not ``0..N-1``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list {path} does not exist (one class name per line; `python -m tsf data "
                                f"manifest` and `python -m tsf data synth` write it as classes.txt)")
    if path.suffix.lower() == ".json":
        return _classes_from_json(path)
    names: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            raise ManifestError(f"{path}:{number}: class {name!r} is listed again (first on line {seen[name]}); "
                                f"each class name must appear once")
        seen[name] = number
        names.append(name)
    if not names:
        raise ManifestError(f"{path} lists no classes; write one class name per line")
    return names


def _classes_from_json(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from error
    if isinstance(data, list) and all(isinstance(name, str) for name in data):
        names = data
    elif isinstance(data, dict):
        try:
            by_id = {int(i): str(name) for name, i in data.items()}
        except (TypeError, ValueError) as error:
            raise ManifestError(f"{path}: a {{name: id}} class mapping needs integer ids ({error})") from error
        if sorted(by_id) != list(range(len(data))):
            raise ManifestError(f"{path}: class ids must be 0..{len(data) - 1}, each once; got {sorted(by_id)[:10]}...")
        names = [by_id[i] for i in range(len(data))]
    else:
        raise ManifestError(f"{path}: expected a list of class names or a {{name: id}} mapping")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ManifestError(f"{path}: class names {duplicates} appear more than once")
    return list(names)


def read_manifest(path: PathLike, classes: Optional[Sequence[str]] = None, errors: str = "raise") -> Manifest:
    """Read a split's videos and labels, detecting the format (see the module docstring).

    Args:
        path: a manifest file, an SSv2 split file, or a folder-per-class root.
        classes: class names in id order (``load_classes``). Default: ``classes.txt`` beside the
            manifest if there is one, else the names found (sorted) or the ids used; pass it so
            that train and val agree on ids.
        errors: ``"raise"`` stops at the first bad row; ``"collect"`` skips bad rows and lists
            them in ``Manifest.problems`` (what ``tsf data check`` does).

    Raises:
        FileNotFoundError: the manifest does not exist.
        ManifestError: malformed line, unknown label, unknown format (with file and line).
    """
    if errors not in ("raise", "collect"):
        raise ValueError(f"errors={errors!r}: use 'raise' or 'collect'")
    source = Path(os.path.abspath(os.path.expanduser(str(path))))
    if not source.exists():
        raise FileNotFoundError(
            f"manifest {path} does not exist; give a CSV (path,label[,start,end]), a Kinetics `path label_id` file, "
            f"an SSv2 split file or a folder-per-class root (`python -m tsf data manifest ROOT --out DIR` writes CSVs)")
    if classes is None and source.is_file() and (source.parent / "classes.txt").is_file():
        classes = load_classes(source.parent / "classes.txt")
    collect = _Collector(errors)
    if source.is_dir():
        if (source / SSV2_LABELS).is_file():
            raise ManifestError(f"{source} is an SSv2 folder: give the split, e.g. {source / SSV2_SPLITS['train.csv']} "
                                f"or its frame list {source / 'train.csv'}")
        return _read_folders(source, classes)
    if source.suffix.lower() == ".json":
        return _read_ssv2(source, split_json=source, frame_list=_frame_list_for(source), collect=collect)
    first_line = _first_line(source)
    if first_line.startswith(FRAME_LIST_HEADER):
        return _read_ssv2(source, split_json=_split_json_for(source), frame_list=source, collect=collect)
    cells = [c.strip().lower() for c in next(csv.reader([first_line]), [])]
    if cells[:1] == ["path"]:
        return _read_header_csv(source, classes, collect)
    if cells[:2] == ["label", "youtube_id"]:
        raise ManifestError(f"{source}:1: this is the Kinetics annotation file (label,youtube_id,...), not a list of "
                            f"downloaded videos; write `path label_id` lines or a `path,label` CSV for your files")
    if len(cells) >= 2 and all(re.fullmatch(r"[a-z_][a-z0-9_ ]*", c) for c in cells):  # names, not a video and its id
        raise ManifestError(f"{source}:1: a header with the columns {','.join(cells)}; tsf reads CSVs whose header is "
                            f"path,label[,start,end]: rename the columns (e.g. {cells[0]} -> path, {cells[1]} -> label)")
    return _read_kinetics(source, classes, collect)


class _Collector:
    """Raises a row's error, or records it (``errors="collect"``)."""

    def __init__(self, errors: str):
        self.raising, self.problems = errors == "raise", []

    def __call__(self, where: str, path: str, status: str, reason: str) -> None:
        if self.raising:
            raise ManifestError(f"{where}: {reason}")
        self.problems.append(ManifestProblem(where, path, status, reason))


def _first_line(source: Path) -> str:
    with open(source, encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            if line.strip():
                return line.strip()
    return ""


def _resolve(folder: Path, written: str) -> str:
    path = Path(os.path.expanduser(written))
    return os.path.normpath(path if path.is_absolute() else folder / path)


class _Labels:
    """Turns the label cells of a manifest into ids, by name or by id."""

    def __init__(self, classes: Optional[Sequence[str]]):
        self.classes = list(classes) if classes is not None else None
        self.index = {name: i for i, name in enumerate(self.classes or [])}

    def lookup(self, cell: str, by_id_only: bool) -> tuple[Optional[int], str]:
        """``(id, "")`` or ``(None, why not)``."""
        if not by_id_only and cell in self.index:
            return self.index[cell], ""
        try:
            label = int(cell)
        except ValueError:
            if by_id_only:
                return None, (f"label {cell!r} is not an integer class id; the Kinetics format is `path label_id` "
                              f"(space separated); for class names use a CSV with a `path,label` header")
            return None, (f"unknown label {cell!r}; known classes: {_preview(self.classes)} "
                          f"(fix the label or add the class to the class list)")
        if label < 0 or (self.classes is not None and label >= len(self.classes)):
            bound = f"0..{len(self.classes) - 1}" if self.classes is not None else ">= 0"
            return None, f"label id {label} is outside {bound}; fix the id or the class list"
        return label, ""


def _preview(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _read_header_csv(source: Path, classes: Optional[Sequence[str]], collect: _Collector) -> Manifest:
    folder = source.parent
    rows: list[tuple[int, list[str]]] = []
    with open(source, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [c.strip().lower() for c in next(reader)]
        unknown = [c for c in header if c not in CSV_COLUMNS]
        if unknown or "label" not in header or len(set(header)) != len(header):
            raise ManifestError(f"{source}:1: header {','.join(header)!r}: the columns are path,label and optionally "
                                f"start,end (seconds), each once; unknown: {unknown or 'none'}")
        rows = [(reader.line_num, [cell.strip() for cell in row]) for row in reader if any(c.strip() for c in row)]
    labels = _Labels(classes)
    if classes is None:
        # without a class list, names are sorted and ids are taken as written; a mix is ambiguous
        cells = [(line, row[header.index("label")]) for line, row in rows if len(row) == len(header)]
        numeric = [cell.lstrip("-").isdigit() for _, cell in cells]
        if any(numeric) and not all(numeric):
            raise ManifestError(f"{source}:{cells[numeric.index(not numeric[0])][0]}: labels mix class names and ids; "
                                f"pass the class list (classes.txt beside the manifest, or classes=) to map both")
        if cells and not numeric[0]:
            labels = _Labels(sorted({cell for _, cell in cells}))
    samples = []
    for line, cells in rows:
        where = f"{source}:{line}"
        if len(cells) != len(header):
            collect(where, cells[0], "malformed", f"{len(cells)} fields, the header has {len(header)} "
                                                  f"({','.join(header)}); quote paths that contain commas")
            continue
        row = dict(zip(header, cells))
        label, why = labels.lookup(row["label"], by_id_only=False)
        if label is None:
            collect(where, row["path"], "bad_label", why)
            continue
        if not row["path"]:
            collect(where, "", "malformed", "the path is empty")
            continue
        try:
            start, end = _seconds(row.get("start", ""), "start"), _seconds(row.get("end", ""), "end")
        except ValueError as error:
            collect(where, row["path"], "malformed", str(error))
            continue
        if start is not None and end is not None and end <= start:
            collect(where, row["path"], "malformed", f"end {end} is not after start {start}")
            continue
        samples.append(VideoSample(_resolve(folder, row["path"]), label, start, end, line=line))
    class_names = labels.classes if labels.classes is not None else _id_names(s.label for s in samples)
    return Manifest(samples, class_names, source, "csv", collect.problems)


def _seconds(cell: str, column: str) -> Optional[float]:
    if cell == "":
        return None
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{column} {cell!r} is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"{column} {value} is negative")
    return value


def _id_names(labels) -> list[str]:
    labels = list(labels)
    return [str(i) for i in range(max(labels) + 1)] if labels else []


def _read_kinetics(source: Path, classes: Optional[Sequence[str]], collect: _Collector) -> Manifest:
    folder = source.parent
    labels = _Labels(classes)
    samples = []
    with open(source, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.strip().rsplit(None, 1)  # paths may contain spaces; the label cannot
            if len(parts) != 2:
                collect(f"{source}:{number}", parts[0] if parts else "", "malformed",
                        f"expected `path label_id` (space separated), got {line.strip()!r}")
                continue
            label, why = labels.lookup(parts[1], by_id_only=True)
            if label is None:
                collect(f"{source}:{number}", parts[0], "bad_label", why)
                continue
            samples.append(VideoSample(_resolve(folder, parts[0]), label, line=number))
    class_names = labels.classes if labels.classes is not None else _id_names(s.label for s in samples)
    return Manifest(samples, class_names, source, "kinetics", collect.problems)


def _read_folders(root: Path, classes: Optional[Sequence[str]]) -> Manifest:
    videos: dict[str, list[Path]] = {}
    empty = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
        if files:
            videos[folder.name] = files
        else:
            empty.append(folder.name)
    if empty:
        raise ManifestError(f"{root}: class folders {empty} hold no videos ({' '.join(VIDEO_EXTENSIONS)}); "
                            f"add videos or move the folders out of {root}")
    if not videos:
        raise ManifestError(f"{root} has no class folders; the folder-per-class layout is {root}/<class>/<video>.mp4")
    names = list(classes) if classes is not None else sorted(videos)
    unknown = sorted(set(videos) - set(names))
    if unknown:
        raise ManifestError(f"{root}: folders {unknown} are not in the class list ({_preview(names)}); "
                            f"add them to it or move them away")
    index = {name: i for i, name in enumerate(names)}
    samples = [VideoSample(str(p), index[name]) for name in sorted(videos, key=index.get) for p in videos[name]]
    return Manifest(samples, names, root, "folders")


def _frame_list_for(split_json: Path) -> Optional[Path]:
    for frame_list, json_name in SSV2_SPLITS.items():
        if split_json.name == json_name and (split_json.parent / frame_list).is_file():
            return split_json.parent / frame_list
    return None


def _split_json_for(frame_list: Path) -> Path:
    name = SSV2_SPLITS.get(frame_list.name)
    if name is None:
        raise ManifestError(f"{frame_list} is an SSv2 frame list; name it train.csv or val.csv (the official names) so "
                            f"that its labels are read from {' or '.join(SSV2_SPLITS.values())} beside it")
    return frame_list.parent / name


def _read_ssv2(source: Path, split_json: Path, frame_list: Optional[Path], collect: _Collector) -> Manifest:
    """The official SSv2 layout: labels from the JSON files, frames from the frame list (or the
    ``<id>.webm`` videos in ``20bn-something-something-v2/`` when there is no frame list)."""
    folder = split_json.parent
    for needed in (folder / SSV2_LABELS, split_json):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} does not exist; the SSv2 layout keeps {SSV2_LABELS} and "
                                    f"something-something-v2-<split>.json beside the frame lists")
    templates = load_classes(folder / SSV2_LABELS)
    index = {name: i for i, name in enumerate(templates)}
    try:
        entries = json.loads(split_json.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ManifestError(f"{split_json}:{error.lineno}: not valid JSON ({error.msg})") from error
    frames = _read_frame_list(frame_list, collect) if frame_list is not None else None
    samples = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            raise ManifestError(f"{split_json}: entry {number} has no id/template (the test split has no labels)")
        template = entry["template"].replace("[", "").replace("]", "")  # as the official loader does
        video_id = str(entry["id"])
        if template not in index:
            collect(f"{split_json} (entry {number})", video_id, "bad_label",
                    f"template {template!r} of video {video_id} is not in {SSV2_LABELS}")
            continue
        if frames is None:
            video = folder / "20bn-something-something-v2" / f"{video_id}.webm"
            samples.append(VideoSample(str(video), index[template], line=number))
        elif video_id in frames:
            files = tuple(_resolve(folder, f) for f in frames[video_id])
            samples.append(VideoSample(os.path.dirname(files[0]), index[template], frames=files, line=number))
        else:
            collect(f"{split_json} (entry {number})", video_id, "malformed", f"video {video_id} has no frames in {frame_list}")
    return Manifest(samples, templates, source, "ssv2", collect.problems)


def _read_frame_list(path: Path, collect: _Collector) -> dict[str, list[str]]:
    frames: dict[str, list[str]] = defaultdict(list)
    with open(path, encoding="utf-8-sig") as f:
        next(f)
        for number, line in enumerate(f, start=2):
            row = line.split()
            if not row:
                continue
            if len(row) not in (4, 5):  # the labels column may be empty
                collect(f"{path}:{number}", row[0], "malformed",
                        f"expected `original_vido_id video_id frame_id path labels`, got {len(row)} fields")
                continue
            frames[row[0]].append(row[3])
    return frames
