"""Annotation lists of frame folders (or video files) as clip datasets for the DFER protocol; :func:`build_dataset`
makes a model's (its resolution, class count and mean/std) for training and evaluation.

A list has one clip per line, ``<frame_dir> <num_frames> <label>``, paths relative to ``data_root``. A frame dir
holds numbered images (``00001.jpg``, ``frame_2.png``, ...), ordered by the last number in the name. A path
that is a video file (``.mp4``, ``.avi``, ...) is decoded with PyAV (``pip install logoformer-timm[video]``).
"""
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..data import ClipTransform, resolve_video_data_config, sample_frame_indices

__all__ = [
    'ClipRecord', 'ClipFolderDataset', 'EpochIndices', 'AnnotationError', 'ClipLoadError', 'read_annotation_list',
    'read_list_lines', 'list_frames',
    'collate_clips', 'build_dataset', 'default_num_workers', 'IMAGE_EXTENSIONS', 'VIDEO_EXTENSIONS',
]

_logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg')
_NUMBER = re.compile(r'(\d+)(?!.*\d)')


def default_num_workers() -> int:
    """DataLoader workers by default: ``min(4, os.cpu_count())`` (no oversubscription warning on 2 cores)."""
    return min(4, os.cpu_count() or 1)


class AnnotationError(ValueError):
    """A line of an annotation list that cannot be used (format, label range, missing clip)."""


class ClipLoadError(RuntimeError):
    """A clip whose frames cannot be read."""


@dataclass(frozen=True)
class ClipRecord:
    """One annotated clip: where it is, how many frames, its label, and the list line it came from."""
    path: str
    num_frames: int
    label: int
    source: str  # 'list_file:line' for error messages


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
) -> Tuple[List[ClipRecord], List[str]]:
    """Parse ``<frame_dir> <num_frames> <label>`` lines; return the records and the problems skipped.

    Every problem raises an ``AnnotationError`` naming the file and line, unless ``skip_bad_clips`` is set, in
    which case the line is skipped, a warning is logged and the problem is returned.
    """
    lines = read_list_lines(list_file)
    records, problems = [], []
    for line_no, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        source = f'{list_file}:{line_no}'
        try:
            records.append(_parse_line(line, source, data_root, num_classes))
        except AnnotationError as e:
            if not skip_bad_clips:
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


def _parse_line(line: str, source: str, data_root: str, num_classes: Optional[int]) -> ClipRecord:
    fields = line.rsplit(maxsplit=2)  # the path may contain spaces
    if len(fields) != 3 or not fields[1].isdigit() or not fields[2].lstrip('-').isdigit():
        raise AnnotationError(
            f'{source}: expected "<frame_dir> <num_frames> <label>" (two integers at the end), got {line!r}.')
    rel_path, num_frames, label = fields[0], int(fields[1]), int(fields[2])
    if num_frames < 1:
        raise AnnotationError(f'{source}: num_frames must be >= 1, got {num_frames}.')
    if label < 0 or (num_classes is not None and label >= num_classes):
        raise AnnotationError(
            f'{source}: label {label} is outside [0, {num_classes}); pass --num-classes for another label set.')
    path = os.path.join(data_root, rel_path)
    if not (os.path.isdir(path) or (os.path.isfile(path) and path.lower().endswith(VIDEO_EXTENSIONS))):
        raise AnnotationError(
            f'{source}: {path} is neither a frame folder nor a video file ({", ".join(VIDEO_EXTENSIONS)}); '
            f'check --data-root ({data_root or "."}) and the path in the list.')
    return ClipRecord(path, num_frames, label, source)


def list_frames(frame_dir: str) -> List[str]:
    """Image files of a frame folder, ordered by the last number in their names."""
    names = [n for n in os.listdir(frame_dir) if n.lower().endswith(IMAGE_EXTENSIONS)]
    unnumbered = [n for n in names if not _NUMBER.search(os.path.splitext(n)[0])]
    if unnumbered:
        raise ClipLoadError(f'{frame_dir}: frame files must be numbered, found {unnumbered[:3]}.')
    names.sort(key=lambda n: (int(_NUMBER.search(os.path.splitext(n)[0]).group(1)), n))
    return [os.path.join(frame_dir, n) for n in names]


def _read_frames(record: ClipRecord, indices: Sequence[int]) -> torch.Tensor:
    """uint8 frames ``(len(indices), 3, H, W)`` of a clip."""
    if os.path.isdir(record.path):
        files = list_frames(record.path)
        if len(files) != record.num_frames:
            raise ClipLoadError(
                f'{record.source}: the list says {record.num_frames} frames but {record.path} holds {len(files)} '
                f'images ({"/".join(IMAGE_EXTENSIONS)}); fix the list.')
        frames = {}
        for i in sorted(set(indices)):
            try:
                with Image.open(files[i]) as image:
                    frames[i] = torch.from_numpy(np.array(image.convert('RGB'))).permute(2, 0, 1)
            except (OSError, ValueError) as e:
                raise ClipLoadError(f'{record.source}: cannot read image {files[i]}: {e}') from e
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
    evenly shifted deterministic clips for test-time averaging.
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
    ):
        if num_views > 1 and train:
            raise ValueError('num_views > 1 is test-time averaging; use num_views=1 for training.')
        self.records, self.problems = read_annotation_list(list_file, data_root, num_classes, skip_bad_clips)
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

    def __getitem__(self, item: Union[int, Tuple[int, int]]) -> Optional[Tuple[torch.Tensor, int]]:
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        record = self.records[index]
        try:
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
) -> ClipFolderDataset:
    """The protocol's dataset for ``model``: its resolution, class count and pretrained mean/std."""
    transform = ClipTransform(
        **resolve_video_data_config(model), train=train, scale=tuple(scale), ratio=tuple(ratio), hflip=hflip)
    return ClipFolderDataset(
        list_file, data_root, num_classes=model.num_classes, train=train, transform=transform,
        num_segments=num_segments, frames_per_segment=frames_per_segment, num_views=num_views, seed=seed,
        skip_bad_clips=skip_bad_clips)


def collate_clips(batch: List[Optional[Tuple[torch.Tensor, int]]]) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Stack clips and labels, dropping the clips that failed to load: ``(clips, labels, num_skipped)``."""
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    clips = torch.stack([clip for clip, _ in good])
    labels = torch.tensor([label for _, label in good], dtype=torch.long)
    return clips, labels, skipped
