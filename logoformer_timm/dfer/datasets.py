"""Annotation lists of frame folders (or video files) as clip datasets for the DFER protocol; :func:`build_dataset`
makes a model's (its resolution, class count, mean/std and test protocol) for training and evaluation.

A list has one clip per line, ``<frame_dir> <num_frames> <label>`` (this project's lists and Former-DFER's /
DFER-CLIP's ``annotation/*.txt``) or ``<frame_dir> <label>`` (MAE-DFER's ``saved/data/*/test.csv``: every frame of
the folder), or is a CSV file whose header names a path column and a label column, then ``<frame_dir>,<label>``
rows (S2D's split files: ``video_name,label``, ``path,id``, ``video_name,labels``; every frame of the folder);
paths relative to ``data_root`` (the authors' ``data_path``), or absolute. ``path_prefix=(OLD, NEW)``
(``--path-prefix OLD=NEW``) maps the authors' absolute paths onto yours: a path whose leading components are OLD's
starts with NEW instead (``/data/DFEW=X`` maps ``/data/DFEW/a``, not ``/data/DFEW_old/a``). A frame dir holds
numbered images (``00001.jpg``, ``frame_2.png``, ...), ordered by the last number in the name (:mod:`.frames` says
which files are frames and how their pixels are read). A path that is a video file (``.mp4``, ``.avi``, ...) is
decoded with PyAV (``pip install logoformer-timm[video]``).
"""
import csv
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.utils.data import Dataset, Sampler

from ..data import ClipTransform, TestProtocol, resolve_video_data_config, sample_frame_indices
from .frames import IMAGE_EXTENSIONS, ClipLoadError, check_clip_frames, list_frames, read_frame

__all__ = [
    'ClipRecord', 'ClipFolderDataset', 'EpochIndices', 'AnnotationError', 'LabelRangeError', 'ClipLoadError',
    'read_annotation_list', 'read_list_lines', 'list_frames', 'collate_clips', 'build_dataset', 'default_num_workers', 'parse_path_prefix',
    'map_path_prefix', 'IMAGE_EXTENSIONS', 'VIDEO_EXTENSIONS', 'CSV_PATH_COLUMNS', 'CSV_LABEL_COLUMNS',
]

_logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg')
_INTEGER = re.compile(r'-?[0-9]+')  # ASCII digits only: '²'.isdigit() holds, but int('²') fails
# a CSV list's header: a path column, then a label column (S2D's split files: video_name,label / path,id /
# video_name,labels)
CSV_PATH_COLUMNS = ('video_name', 'path')
CSV_LABEL_COLUMNS = ('label', 'labels', 'id')


def default_num_workers() -> int:
    """DataLoader workers by default: ``min(4, os.cpu_count())`` (no oversubscription warning on 2 cores)."""
    return min(4, os.cpu_count() or 1)


class AnnotationError(ValueError):
    """A line of an annotation list that cannot be used (format, label range, missing clip)."""


class LabelRangeError(AnnotationError):
    """A label outside the model's classes: the list and the model disagree, so no line of it can be trusted.

    ``--skip-bad-clips`` never skips it: dropping those lines would score the rest under a shifted label set
    (DFEW's own ``set_K.csv`` counts from 1, S2D's ``test_set_K.csv`` from 0, under the same header).
    """


@dataclass(frozen=True)
class ClipRecord:
    """One annotated clip: where it is, how many frames, its label, and the list line it came from."""
    path: str
    num_frames: int
    label: int
    source: str  # 'list_file:line' for error messages
    name: str = ''  # the path as the list gives it


PathPrefix = Optional[Tuple[str, str]]


def parse_path_prefix(value: str) -> Tuple[str, str]:
    """``'OLD=NEW'`` (the value of ``--path-prefix``) as ``(OLD, NEW)``."""
    old, sep, new = value.partition('=')
    if not sep or not old:
        raise ValueError(f'--path-prefix takes OLD=NEW (e.g. /mnt/data/DFEW/Clip/jpg_256=DFEW/jpg_256), got {value!r}.')
    return old, new


def map_path_prefix(path: str, path_prefix: PathPrefix) -> str:
    """``path`` with its leading components OLD replaced by NEW; whole components only: ``/data/DFEW`` maps
    ``/data/DFEW/a`` and ``/data/DFEW``, not ``/data/DFEW_old/a``."""
    if path_prefix is None:
        return path
    old, new = path_prefix
    old = old.rstrip('/') if old.strip('/') else old
    if path != old and not path.startswith(old if old.endswith('/') else old + '/'):
        return path
    rest = path[len(old):].lstrip('/')
    return os.path.join(new, rest) if new and rest else new or rest


def read_list_lines(list_file: str) -> List[str]:
    """The lines of an annotation list; an ``AnnotationError`` when it is missing or not UTF-8 text (the commands
    call it before they build a model)."""
    if not os.path.isfile(list_file):
        raise AnnotationError(f'Annotation list not found: {list_file}')
    try:
        with open(list_file, encoding='utf-8-sig') as f:  # a UTF-8 byte order mark (Windows editors) is not a path
            return f.read().splitlines()
    except UnicodeDecodeError as e:
        line_no = e.object[:e.start].count(b'\n') + 1
        raise AnnotationError(
            f'{list_file}:{line_no} is not UTF-8 text (byte {e.object[e.start]:#04x}); save the list as UTF-8.') from None


def read_annotation_list(
        list_file: str,
        data_root: str = '',
        num_classes: Optional[int] = None,
        skip_bad_clips: bool = False,
        path_prefix: PathPrefix = None,
        check_frames: bool = False,
) -> Tuple[List[ClipRecord], List[str]]:
    """Parse ``<frame_dir> <num_frames> <label>`` or ``<frame_dir> <label>`` lines (one form per file, that of its
    first line), or the ``<frame_dir>,<label>`` rows of a CSV file with a header; return the records and the
    problems skipped.

    Every problem (a bad line, a missing folder, a folder with another number of frames than its line says, with
    ``check_frames`` a frame that does not open: :func:`check_clip_frames`) raises an ``AnnotationError`` naming
    the file and line, unless ``skip_bad_clips`` is set, in which case the line is skipped, a warning is logged and
    the problem is returned.
    """
    lines = read_list_lines(list_file)
    records, problems = [], []
    columns = None
    for line_no, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        source = f'{list_file}:{line_no}'
        if columns is None:  # the first line's form is the file's
            csv_form = ',' in line and not line.split()[-1].lstrip('-').isdigit()  # not '<path,with,commas> 0'
            columns = _csv_header(line, source) if csv_form else (2 if len(line.split()) == 2 else 3)
            if columns == 'csv':
                continue
        try:
            record = _parse_line(line, source, data_root, num_classes, columns, path_prefix)
            if check_frames:
                try:
                    check_clip_frames(record)
                except ClipLoadError as e:
                    raise AnnotationError(str(e) if source in str(e) else f'{source}: {e}') from None
            records.append(record)
        except AnnotationError as e:
            if not skip_bad_clips or isinstance(e, LabelRangeError):
                raise
            _logger.warning('skipping clip: %s', e)
            problems.append(str(e))
    counts = Counter(record.path for record in records)
    repeated = [path for path, n in counts.items() if n > 1]
    if repeated:
        _logger.warning('%s lists %d clips more than once (they count once per line): %s', list_file,
                        len(repeated), ', '.join(repeated[:3]))
    if not records:
        raise AnnotationError(
            f'Annotation list {list_file} has no usable clips'
            + (f' ({len(problems)} bad lines skipped)' if problems else '')
            + '; expected lines "<frame_dir> <num_frames> <label>".')
    return records, problems


def _csv_header(line: str, source: str) -> str:
    """``'csv'`` for a CSV list's header line (a path column, then a label column), else an ``AnnotationError``."""
    names = [name.strip() for name in next(csv.reader([line]))]
    if len(names) != 2 or names[0] not in CSV_PATH_COLUMNS or names[1] not in CSV_LABEL_COLUMNS:
        raise AnnotationError(
            f'{source}: a CSV list starts with a header of a path column ({" / ".join(CSV_PATH_COLUMNS)}) and a label '
            f'column ({" / ".join(CSV_LABEL_COLUMNS)}), as S2D\'s split files (video_name,label); got {line!r}.')
    return 'csv'


def _parse_line(
        line: str, source: str, data_root: str, num_classes: Optional[int], columns: Union[int, str],
        path_prefix: PathPrefix,
) -> ClipRecord:
    if columns == 'csv':
        fields = next(csv.reader([line]))
        form, columns = '"<frame_dir>,<label>" rows under the CSV header (an integer label)', 2
    else:
        fields = line.rsplit(maxsplit=columns - 1)  # the path may contain spaces
        form = '"<frame_dir> <num_frames> <label>"' if columns == 3 else '"<frame_dir> <label>"'
        form += ' like the file\'s first line (integers at the end)'
    if len(fields) != columns or not all(_INTEGER.fullmatch(f) for f in fields[1:]):
        raise AnnotationError(f'{source}: expected {form}, got {line!r}.')
    rel_path, label = fields[0], int(fields[-1])
    num_frames = int(fields[1]) if columns == 3 else None
    if num_frames is not None and num_frames < 1:
        raise AnnotationError(f'{source}: num_frames must be >= 1, got {num_frames}.')
    if label < 0 or (num_classes is not None and label >= num_classes):
        raise LabelRangeError(
            f'{source}: label {label} is outside [0, {num_classes}), the model\'s classes: the list and the model '
            f'disagree (DFEW\'s own set_K.csv counts from 1: make lists with python -m logoformer_timm.dfer.lists), '
            f'or pass --num-classes for another label set; --skip-bad-clips does not skip this.')
    path = os.path.join(data_root, map_path_prefix(rel_path, path_prefix))
    if not (os.path.isdir(path) or (os.path.isfile(path) and path.lower().endswith(VIDEO_EXTENSIONS))):
        hint = (f'map the list\'s absolute paths onto your copy with --path-prefix {os.path.dirname(rel_path)}=DIR'
                if os.path.isabs(rel_path) and path_prefix is None else
                f'check --data-root ({data_root or "."}){" and --path-prefix" if path_prefix else ""} and the list')
        raise AnnotationError(
            f'{source}: {path} is neither a frame folder nor a video file ({", ".join(VIDEO_EXTENSIONS)}); {hint}.')
    if os.path.isdir(path):
        try:
            found = len(list_frames(path))
        except ClipLoadError as e:
            raise AnnotationError(f'{source}: {e}') from None
        if found == 0 or (num_frames is not None and found != num_frames):
            said = f'the list says {num_frames} frames but ' if num_frames is not None else ''
            raise AnnotationError(
                f'{source}: {said}{path} holds {found} images ({"/".join(IMAGE_EXTENSIONS)}); fix the list or the folder.')
        num_frames = found
    elif num_frames is None:
        from ..video.decode import VideoError, probe_video
        try:
            num_frames = probe_video(path).num_frames
        except (ImportError, VideoError) as e:
            raise AnnotationError(f'{source}: {e}') from None
    return ClipRecord(path, num_frames, label, source, rel_path)


def _read_frames(record: ClipRecord, indices: Sequence[int]) -> torch.Tensor:
    """uint8 frames ``(len(indices), 3, H, W)`` of a clip."""
    if os.path.isdir(record.path):
        files = list_frames(record.path)
        if len(files) != record.num_frames:
            raise ClipLoadError(
                f'{record.source}: the list says {record.num_frames} frames but {record.path} holds {len(files)} '
                f'images ({"/".join(IMAGE_EXTENSIONS)}); fix the list.')
        try:
            frames = {i: read_frame(files[i]) for i in sorted(set(indices))}
        except ClipLoadError as e:
            raise ClipLoadError(f'{record.source}: {e}') from e
    else:
        frames = _read_video_frames(record, indices)
    shapes = {tuple(f.shape) for f in frames.values()}
    if len(shapes) > 1:
        raise ClipLoadError(f'{record.source}: frames of {record.path} differ in size: {sorted(shapes)}.')
    return torch.stack([frames[i] for i in indices])


def _read_video_frames(record: ClipRecord, indices: Sequence[int]) -> dict:
    try:
        from ..video.decode import VideoError, iter_clips, probe_video
        info = probe_video(record.path)
        if info.num_frames != record.num_frames:
            raise ClipLoadError(
                f'{record.source}: the list says {record.num_frames} frames but {record.path} has {info.num_frames}; '
                f'fix the list.')
        _, frames = next(iter_clips(record.path, [list(indices)]))
    except (ImportError, VideoError) as e:
        raise ClipLoadError(f'{record.source}: {e}') from e
    return {i: torch.from_numpy(frame).permute(2, 0, 1) for i, frame in zip(indices, frames)}


class ClipFolderDataset(Dataset):
    """Clips of an annotation list, sampled by the DFER protocol and transformed as one clip.

    Training randomness (frame offsets, crop, flip) is a function of ``(seed, epoch, index)`` only, so a
    run gives the same clips whatever the number of workers or processes, and a resumed run repeats it.
    Call ``set_epoch`` before every epoch, or index it with ``(epoch, index)`` pairs (:class:`EpochIndices`),
    which also reach persistent DataLoader workers. With ``num_views > 1`` (test only) an item is ``(V, C, T, H, W)``:
    evenly shifted deterministic clips for test-time averaging. With a test ``protocol`` (test only) the protocol
    samples the frames: an item is ``(views, label, index)``, ``views`` of shape ``(V, ...)``, one per temporal
    view (its spatial views are the same pixels), each made by ``transform``.
    """

    def __init__(
            self,
            list_file: str,
            data_root: str = '',
            num_classes: Optional[int] = None,
            train: bool = False,
            transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
            num_segments: int = 8,
            frames_per_segment: int = 2,
            num_views: int = 1,
            seed: int = 0,
            skip_bad_clips: bool = False,
            protocol: Optional[TestProtocol] = None,
            path_prefix: PathPrefix = None,
            listed: Optional[Tuple[List[ClipRecord], List[str]]] = None,
    ):
        if (num_views > 1 or protocol is not None) and train:
            raise ValueError('num_views > 1 and a test protocol are for testing; training samples one random clip.')
        if num_views > 1 and protocol is not None:
            raise ValueError('Pass num_views or a test protocol (which has its own views), not both.')
        self.records, self.problems = listed or read_annotation_list(  # ``listed``: read by the command already
            list_file, data_root, num_classes, skip_bad_clips, path_prefix)
        self.protocol = protocol
        self.list_file = list_file
        self.train = train
        self.transform = transform
        self.num_segments = num_segments
        self.frames_per_segment = frames_per_segment
        self.num_views = num_views
        self.seed = seed
        self.epoch = 0
        self.skip_bad_clips = skip_bad_clips

    @property
    def labels(self) -> List[int]:
        return [r.label for r in self.records]

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of this epoch (training)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, record: ClipRecord, view: int) -> torch.Tensor:
        indices = sample_frame_indices(
            record.num_frames, self.num_segments, self.frames_per_segment, self.train,
            view=view, num_views=self.num_views)
        frames = _read_frames(record, indices)
        return self.transform(frames) if self.transform is not None else frames

    def view_indices(self, index: int) -> List[List[int]]:
        """The frame indices of every temporal view of clip ``index`` under the test protocol."""
        return self.protocol.view_indices(self.records[index].num_frames)

    def _load_views(self, record: ClipRecord) -> torch.Tensor:
        views = self.protocol.view_indices(record.num_frames)
        needed = sorted({i for view in views for i in view})
        frames = _read_frames(record, needed)
        position = {i: k for k, i in enumerate(needed)}
        return torch.stack([self.transform(frames[[position[i] for i in view]]) for view in views])

    def __getitem__(self, item: Union[int, Tuple[int, int]]) -> Optional[Tuple[torch.Tensor, ...]]:
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        record = self.records[index]
        try:
            if self.protocol is not None:
                return self._load_views(record), record.label, index
            if self.train:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
                    clip = self._load(record, 0)
            elif self.num_views == 1:
                clip = self._load(record, 0)
            else:
                clip = torch.stack([self._load(record, v) for v in range(self.num_views)])
        except (ClipLoadError, OSError) as e:
            if not self.skip_bad_clips:
                raise ClipLoadError(str(e) if record.source in str(e) else f'{record.source}: {e}') from e
            _logger.warning('skipping clip: %s', e)
            return None  # dropped (and counted) by collate_clips
        return clip, record.label


class EpochIndices(Sampler):
    """``(epoch, index)`` pairs of ``sampler``'s indices: the epoch reaches persistent DataLoader workers too.

    A worker keeps its own copy of the dataset for the whole run, so ``set_epoch`` on the main process's copy
    would not reach it; the epoch travels with each index instead.
    """

    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the indices to come (and of ``sampler``'s shuffle, where it has one)."""
        self.epoch = epoch
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def build_dataset(
        model: nn.Module,
        list_file: str,
        data_root: str,
        train: bool,
        num_segments: int,
        frames_per_segment: int,
        num_views: int = 1,
        seed: int = 0,
        skip_bad_clips: bool = False,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        protocol: Optional[TestProtocol] = None,
        path_prefix: PathPrefix = None,
        listed: Optional[Tuple[List[ClipRecord], List[str]]] = None,
) -> ClipFolderDataset:
    """The dataset for ``model``: its resolution, class count and pretrained mean/std; with a test ``protocol``
    its sampling, views and transform (``num_segments`` / ``frames_per_segment`` / ``num_views`` unused). ``listed``:
    the list as :func:`read_annotation_list` returned it, where the command read it before building the model."""
    config = resolve_video_data_config(model)
    if protocol is not None:
        config['test_protocol'] = protocol
    transform = ClipTransform(**config, train=train, scale=tuple(scale), ratio=tuple(ratio), hflip=hflip)
    return ClipFolderDataset(
        list_file, data_root, num_classes=model.num_classes, train=train, transform=transform,
        num_segments=num_segments, frames_per_segment=frames_per_segment, num_views=num_views, seed=seed,
        skip_bad_clips=skip_bad_clips, protocol=protocol, path_prefix=path_prefix, listed=listed)


def collate_clips(batch: List[Optional[Tuple[torch.Tensor, ...]]]) -> Tuple[Any, ...]:
    """Stack clips and labels, dropping the clips that failed to load: ``(clips, labels, num_skipped)``, and the
    clips' dataset indices last where the items carry them (a test protocol's)."""
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    with_index = any(len(item) == 3 for item in good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    clips = torch.stack([item[0] for item in good])
    labels = torch.tensor([item[1] for item in good], dtype=torch.long)
    if with_index:
        return clips, labels, skipped, torch.tensor([item[2] for item in good], dtype=torch.long)
    return clips, labels, skipped
