"""Test-time protocols as data: which frames of a clip a model sees, in how many views, resized how, merged how.

A :class:`TestProtocol` is a small frozen description, named in :data:`TEST_PROTOCOLS`. Each zoo tag's pretrained
cfg names its authors' protocol under ``test_protocol`` (as timm keeps ``crop_pct`` and ``interpolation`` there),
LOGO-Former's cfgs name this project's; :func:`~logoformer_timm.data.resolve_video_data_config` returns it, and
the one implementation turns it into view tensors: :meth:`TestProtocol.view_indices` samples every temporal view's
frames, :class:`~logoformer_timm.data.ClipTransform` resizes and scales one view, :func:`merge_views` merges
the views' logits. ``docs/zoo.md`` ("Test-time protocols") explains each protocol and where its authors define it.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from .sampling import sample_frame_indices

__all__ = [
    'TestProtocol', 'TEST_PROTOCOLS', 'DFER_LABELS', 'MAFW_LABELS', 'DFER_CLIP_MAFW_LABELS', 'S2D_FERV39K_LABELS',
    'S2D_MAFW_LABELS', 'IMAGENET_MEAN', 'IMAGENET_STD', 'SAMPLERS', 'RESIZES', 'MERGES', 'get_test_protocol',
    'merge_views']

# the label orders of the datasets' lists (a protocol's label order; the models' cfgs name them too)
DFER_LABELS = ('Happy', 'Sad', 'Neutral', 'Angry', 'Surprise', 'Disgust', 'Fear')  # DFEW, FERV39K: list label 0-6
MAFW_LABELS = (  # MAFW: the label order of MAE-DFER's preprocess/mafw.py
    'Anger', 'Disgust', 'Fear', 'Happiness', 'Neutral', 'Sadness', 'Surprise', 'Contempt', 'Anxiety', 'Helplessness',
    'Disappointment')
DFER_CLIP_MAFW_LABELS = (  # MAFW in DFER-CLIP's order (its models/Text.py and annotation files): not MAE-DFER's
    'Happiness', 'Sadness', 'Neutral', 'Anger', 'Surprise', 'Disgust', 'Fear', 'Contempt', 'Anxiety', 'Helplessness',
    'Disappointment')
# S2D's own split files: DFEW labels 0-6 in DFER_LABELS' order; FERV39K and MAFW alphabetical (its
# data/FERV39K/Annotation/label_index.txt and data/MAFW/anno/single/no_caption/id_to_calss.txt)
S2D_FERV39K_LABELS = ('Angry', 'Disgust', 'Fear', 'Happy', 'Neutral', 'Sad', 'Surprise')
S2D_MAFW_LABELS = (
    'Anger', 'Anxiety', 'Contempt', 'Disappointment', 'Disgust', 'Fear', 'Happiness', 'Helplessness', 'Neutral',
    'Sadness', 'Surprise')

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SAMPLERS = ('segments', 'stride')
SHORT_CLIPS = ('first', 'edge')
RESIZES = ('pil', 'tensor')
MERGES = ('softmax_mean', 'logit_mean')


@dataclass(frozen=True)
class TestProtocol:
    """How a clip is evaluated: frames, views, resize, scaling, normalisation, merge and label order.

    Frame source: every frame of the clip's folder, in the order of the numbers in their names.

    Samplers (``n`` frames in the clip):

    * ``'segments'``: ``num_segments`` segments of ``frames_per_segment`` consecutive frames. When
      ``n > num_segments + frames_per_segment - 1``: ``tick = (n - frames_per_segment + 1) / num_segments`` and
      segment ``s`` of view ``v`` (of ``temporal_views``) starts at ``int(tick * (v + 0.5) / temporal_views + tick
      * s)`` (for one view the segment centres, ``int(tick / 2 + tick * s)``). Shorter clips: ``short_clip='first'``
      starts every segment at 0, ``'edge'`` starts them at ``0, 1, ..., n - 1`` and repeats the last. A segment's
      frames past the end repeat the last frame.
    * ``'stride'``: every ``stride``-th frame from the first, the last one repeated up to ``clip_len``; view ``v``
      takes ``clip_len`` of those from ``int(v * max((T' - clip_len) / (temporal_views - 1), 0))``: the first and
      the last ``clip_len`` for two views.

    Every view is resized to ``size`` (both sides: a squash, so ``spatial_views`` crops of it are the same pixels
    and are computed once) by ``resize``: ``'pil'`` (``PIL.Image.resize`` with ``interpolation``, as the
    authors' loaders) or ``'tensor'`` (torchvision's antialiased resize of the uint8 frames); then divided by
    ``scale`` and normalised by ``mean`` / ``std``. ``merge``: ``'softmax_mean'`` (softmax per view, mean of the
    probabilities, argmax) or ``'logit_mean'`` (mean of the logits, then softmax).
    """

    name: str
    source: str  # where the protocol is defined: the authors' file, or this project
    sampler: str = 'segments'
    num_segments: int = 8
    frames_per_segment: int = 2
    short_clip: str = 'first'
    stride: int = 1
    clip_len: int = 16
    temporal_views: int = 1
    spatial_views: int = 1
    size: Tuple[int, int] = (112, 112)
    resize: str = 'pil'
    interpolation: str = 'bilinear'
    scale: float = 255.
    mean: Tuple[float, ...] = (0., 0., 0.)
    std: Tuple[float, ...] = (1., 1., 1.)
    merge: str = 'softmax_mean'
    label_names: Tuple[str, ...] = DFER_LABELS
    authors: bool = True  # the protocol the model's authors evaluated with (False: this project's, or changed)

    def __post_init__(self):
        for field, allowed in (('sampler', SAMPLERS), ('short_clip', SHORT_CLIPS), ('resize', RESIZES),
                               ('merge', MERGES)):
            if getattr(self, field) not in allowed:
                raise ValueError(f'TestProtocol {self.name!r}: {field} must be one of {allowed}, got '
                                 f'{getattr(self, field)!r}.')
        counts = (self.num_segments, self.frames_per_segment, self.stride, self.clip_len, self.temporal_views,
                  self.spatial_views, *self.size)
        if len(self.size) != 2 or not all(isinstance(c, int) and c >= 1 for c in counts):
            raise ValueError(f'TestProtocol {self.name!r}: counts and size must be positive ints, got {self}.')
        object.__setattr__(self, 'size', tuple(self.size))
        object.__setattr__(self, 'mean', tuple(self.mean))
        object.__setattr__(self, 'std', tuple(self.std))
        object.__setattr__(self, 'label_names', tuple(self.label_names))

    @property
    def num_frames(self) -> int:
        """Frames per view: the model's clip length."""
        return self.num_segments * self.frames_per_segment if self.sampler == 'segments' else self.clip_len

    @property
    def num_views(self) -> int:
        """Views the protocol averages over (temporal x spatial)."""
        return self.temporal_views * self.spatial_views

    def view_indices(self, num_frames: int) -> List[List[int]]:
        """The frame indices of every temporal view of a clip of ``num_frames`` frames."""
        if num_frames < 1:
            raise ValueError(f'A clip needs at least one frame, got num_frames={num_frames}.')
        if self.sampler == 'segments':
            return [sample_frame_indices(
                num_frames, self.num_segments, self.frames_per_segment, view=v, num_views=self.temporal_views,
                short_clip=self.short_clip) for v in range(self.temporal_views)]
        sampled = list(range(0, num_frames, self.stride))
        sampled += [sampled[-1]] * (self.clip_len - len(sampled))
        step = max((len(sampled) - self.clip_len) / (self.temporal_views - 1), 0) if self.temporal_views > 1 else 0
        return [sampled[int(v * step):][:self.clip_len] for v in range(self.temporal_views)]

    def replace(self, **changes: Any) -> 'TestProtocol':
        """This protocol with ``changes``; a changed protocol is no longer its authors' (``authors=False``)."""
        changes = {k: v for k, v in changes.items() if v is not None and getattr(self, k) != v}
        if not changes:
            return self
        what = ', '.join(f'{k}={"x".join(map(str, v)) if isinstance(v, tuple) else v}' for k, v in changes.items())
        return dataclasses.replace(self, **changes, name=f'{self.name} with {what}', authors=False)

    def fit_clip(self, num_frames: int, size: Tuple[int, int]) -> 'TestProtocol':
        """This protocol for a model that takes ``num_frames`` frames of ``size``: unchanged when they are the
        protocol's, else with as many segments (or a clip length) and the size that fit (``authors=False``)."""
        changes: Dict[str, Any] = dict(size=tuple(size))
        if num_frames != self.num_frames:
            if self.sampler == 'stride':
                changes['clip_len'] = num_frames
            elif num_frames % self.frames_per_segment == 0:
                changes['num_segments'] = num_frames // self.frames_per_segment
            else:
                changes.update(num_segments=num_frames, frames_per_segment=1)
        return self.replace(**changes)

    def to_dict(self) -> Dict[str, Any]:
        """The fields as JSON-ready values (what ``metrics.json`` records)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def describe(self) -> str:
        """One line: frames, views, resize, pixels and merge."""
        if self.sampler == 'segments':
            frames = (f'{self.num_segments} segments x {self.frames_per_segment} consecutive frames '
                      f'({"segment centres" if self.temporal_views == 1 else "evenly shifted per view"}, '
                      f'short clips: {self.short_clip})')
        else:
            every = 'every frame' if self.stride == 1 else f'every {self.stride}th frame'
            frames = (f'{every}, {self.clip_len} frames per '
                      f'view (the first and last {self.clip_len} sampled for 2 views)')
        pixels = f'/ {self.scale:g}'
        if any(m != 0 for m in self.mean) or any(s != 1 for s in self.std):
            pixels += f', mean {list(self.mean)}, std {list(self.std)}'
        resize = 'PIL' if self.resize == 'pil' else 'antialiased tensor'
        spatial = ' (the same pixels after the squash: computed once)' if self.spatial_views > 1 else ''
        return (f'{self.name}: {frames}; {self.temporal_views} temporal x {self.spatial_views} spatial views{spatial}; '
                f'{resize} {self.interpolation} resize to {self.size[0]}x{self.size[1]}; {pixels}; '
                f'views merged by {self.merge.replace("_", " ")}; source: {self.source}')


def _stride(name: str, stride: int, labels: Tuple[str, ...], size: int, source: str) -> TestProtocol:
    """MAE-DFER's ``VideoClsDatasetFrame`` test (S2D's is the same code): 2 temporal x 2 spatial views of 16 frames."""
    return TestProtocol(
        name=name, sampler='stride', stride=stride, clip_len=16, temporal_views=2, spatial_views=2, size=(size, size),
        mean=IMAGENET_MEAN, std=IMAGENET_STD, merge='softmax_mean', label_names=labels, source=source)


def _mae_dfer(name: str, stride: int, labels: Tuple[str, ...], dataset: str) -> TestProtocol:
    return _stride(
        name, stride, labels, 160,
        f'MAE-DFER (sunlicai/MAE-DFER kinetics.py VideoClsDatasetFrame test mode, engine_for_finetuning.py '
        f'final_test and merge; scripts/{dataset}: --sampling_rate {stride} --test_num_segment 2 --test_num_crop 2)')


def _s2d(name: str, labels: Tuple[str, ...], dataset: str) -> TestProtocol:
    return _stride(
        name, 1, labels, 224,
        f'S2D (MSA-LMC/S2D datasets/kinetics.py VideoClsDatasetFrame test mode, engine_for_finetuning.py final_test '
        f'and merge; scripts/ft_{dataset}.sh: --num_frames 16 --sampling_rate 1 --input_size 224 --test_num_segment 2 '
        f'--test_num_crop 2)')


TEST_PROTOCOLS: Dict[str, TestProtocol] = {p.name: p for p in (
    TestProtocol(
        name='logoformer', source='this project (logoformer-eval\'s DFER protocol, docs/zoo.md)', resize='tensor',
        merge='logit_mean', authors=False),
    TestProtocol(
        name='former_dfer',
        source='Former-DFER (zengqunzhao/Former-DFER dataloader/dataset_DFEW.py test_data_loader)'),
    _mae_dfer('mae_dfer_dfew', 4, DFER_LABELS, 'dfew'),
    _mae_dfer('mae_dfer_ferv39k', 1, DFER_LABELS, 'ferv39k'),
    _mae_dfer('mae_dfer_mafw', 4, MAFW_LABELS, 'mafw'),
    _s2d('s2d_dfew', DFER_LABELS, 'dfew'),
    _s2d('s2d_ferv39k', S2D_FERV39K_LABELS, 'ferv39k'),
    _s2d('s2d_mafw', S2D_MAFW_LABELS, 'mafw'),
    *(TestProtocol(
        name=name, num_segments=16, frames_per_segment=1, short_clip='edge', size=(224, 224), label_names=labels,
        source='DFER-CLIP (zengqunzhao/DFER-CLIP dataloader/video_dataloader.py test_data_loader, main.py: '
               '16 segments, duration 1, 224)')
      for name, labels in (('dfer_clip', DFER_LABELS), ('dfer_clip_mafw', DFER_CLIP_MAFW_LABELS))),
)}


def get_test_protocol(protocol: Union[str, Mapping[str, Any], TestProtocol, None]) -> Optional[TestProtocol]:
    """A protocol from its name in :data:`TEST_PROTOCOLS`, a dict of its fields (a cfg read from JSON) or itself."""
    if protocol is None or isinstance(protocol, TestProtocol):
        return protocol
    if isinstance(protocol, str):
        if protocol not in TEST_PROTOCOLS:
            raise ValueError(f'Unknown test protocol {protocol!r}; known: {", ".join(TEST_PROTOCOLS)}.')
        return TEST_PROTOCOLS[protocol]
    if isinstance(protocol, Mapping):
        fields = {f.name for f in dataclasses.fields(TestProtocol)}
        unknown = sorted(set(protocol) - fields)
        if unknown:
            raise ValueError(f'test_protocol has unknown fields {unknown}; TestProtocol fields: {sorted(fields)}.')
        return TestProtocol(**{k: tuple(v) if isinstance(v, list) else v for k, v in protocol.items()})
    raise TypeError(f'test_protocol must be a protocol name, a dict or a TestProtocol, got {type(protocol).__name__}.')


def merge_views(logits: torch.Tensor, merge: str) -> torch.Tensor:
    """Class probabilities ``(B, K)`` (float64) of the views' logits ``(B, V, K)``, merged by ``merge``."""
    logits = logits.double()
    if merge == 'softmax_mean':
        return logits.softmax(dim=-1).mean(dim=1)
    if merge == 'logit_mean':
        return logits.mean(dim=1).softmax(dim=-1)
    raise ValueError(f'merge must be one of {MERGES}, got {merge!r}.')
