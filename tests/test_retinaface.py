"""RetinaFace: priors, decoding and NMS against explicit formulas; the detector against the authors' recorded outputs.

``tests/data/retinaface_reference.json`` holds what biubug6/Pytorch_Retinaface's own code computes on real frames
with the same weights (its note says how it was made); the real media come from ``tests/fetch_media.py``.
"""
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from logoformer_timm.faces import FaceDetections, RetinaFace, RetinaFaceDetector, load_retinaface
from logoformer_timm.faces.detect import anchor_priors, batched_nms, box_iou, decode_boxes, decode_landmarks, nms
from logoformer_timm.faces.retinaface import WEIGHTS_PATH, checkpoint_filter_fn
from video_helpers import media

REFERENCE = json.loads((Path(__file__).parent / 'data' / 'retinaface_reference.json').read_text())


@pytest.fixture(scope='module')
def detector():
    return RetinaFaceDetector(max_size=None)  # the reference ran each frame at its own size


def reference_frame(spec: dict) -> np.ndarray:
    """The RGB frame a reference entry was computed on (the recipe in the reference file's note)."""
    return _frame(spec['source'], spec.get('frame', 0), spec.get('rotate', 0))


@functools.lru_cache(maxsize=None)  # decode each frame once per session
def _frame(source: str, index: int, rotate: float) -> np.ndarray:
    from PIL import Image
    if source.endswith('.mp4'):
        from logoformer_timm.video.decode import iter_clips
        frame = next(iter_clips(media(source), [[index]]))[1][0]
    else:
        frame = np.asarray(Image.open(media(source)).convert('RGB'))
    if rotate:
        frame = np.asarray(Image.fromarray(frame).rotate(rotate, resample=Image.BILINEAR))
    return frame


def test_priors_count_and_positions_by_hand():
    priors = anchor_priors(33, 40)  # ceil(33 / s) x ceil(40 / s) positions per stride s, two sizes each
    assert priors.shape == ((5 * 5 + 3 * 3 + 2 * 2) * 2, 4)
    assert priors[:4].tolist() == [[4, 4, 16, 16], [4, 4, 32, 32], [12, 4, 16, 16], [12, 4, 32, 32]]
    assert priors[2 * 5].tolist() == [4, 12, 16, 16]  # second row of stride 8
    assert priors[50].tolist() == [8, 8, 64, 64]  # first of stride 16
    assert priors[50 + 18].tolist() == [16, 16, 256, 256]  # first of stride 32
    assert priors[-1].tolist() == [48, 48, 512, 512]


def test_decode_a_hand_made_delta():
    prior = torch.tensor([[100., 50., 20., 40.]])
    delta = torch.tensor([[1., -2., math.log(2) / 0.2, 0.]])  # centre + 0.1 * d * size, size * exp(0.2 * d)
    assert torch.allclose(decode_boxes(delta, prior), torch.tensor([[82., 22., 122., 62.]]))
    points = decode_landmarks(torch.tensor([[1., 1.] + [0.] * 8]), prior)
    assert points.shape == (1, 5, 2)
    assert torch.allclose(points[0, 0], torch.tensor([102., 54.])) and torch.allclose(points[0, 1], prior[0, :2])


def test_nms_on_hand_made_boxes():
    a, b, c, d = [0, 0, 9, 9], [1, 0, 10, 9], [20, 20, 29, 29], [0, 5, 9, 14]
    boxes = torch.tensor([b, c, a, d], dtype=torch.float32)
    assert box_iou(torch.tensor([a], dtype=torch.float32), torch.tensor([b, d], dtype=torch.float32))[0].tolist() == \
        pytest.approx([90 / 110, 50 / 150])  # inclusive pixels: a 0..9 box is 10 wide
    # by score a, d, b, c: b overlaps a by 0.82 and goes; d (0.33 with a) and c stay
    assert nms(boxes, torch.tensor([.8, .7, .9, .85]), 0.4).tolist() == [2, 3, 1]
    # the same overlapping pair in two frames: each frame keeps its own
    kept = batched_nms(torch.tensor([a, b, a, b], dtype=torch.float32), torch.tensor([.9, .8, .7, .95]),
                       torch.tensor([0, 0, 1, 1]), 0.4)
    assert sorted(kept.tolist()) == [0, 3]


def test_bad_frames_get_a_clear_error(detector):
    with pytest.raises(ValueError, match='uint8'):
        detector(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r'frame\[None\]'):
        detector(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match='frame 1'):
        detector([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8)])
    assert detector(np.zeros((0, 32, 32, 3), np.uint8)) == []
    empty = detector([np.zeros((40, 48, 3), np.uint8)])[0]
    assert isinstance(empty, FaceDetections) and empty.boxes.shape == (0, 4) and empty.landmarks.shape == (0, 5, 2)


@pytest.mark.parametrize('index', range(len(REFERENCE['frames'])),
                         ids=[f"{s['source']}-{s.get('frame', 0)}-r{s.get('rotate', 0)}" for s in REFERENCE['frames']])
def test_equals_the_authors_outputs(detector, index):
    spec = REFERENCE['frames'][index]
    frame = reference_frame(spec)
    assert list(frame.shape[:2]) == spec['size']
    faces = detector(frame[None])[0]
    assert len(faces) == len(spec['scores'])
    if len(faces):
        assert torch.allclose(faces.scores, torch.tensor(spec['scores']), atol=1e-4, rtol=0)
        assert torch.allclose(faces.boxes, torch.tensor(spec['boxes']), atol=1e-3, rtol=0)
        assert torch.allclose(faces.landmarks, torch.tensor(spec['landmarks']), atol=1e-3, rtol=0)


def test_a_batch_of_frames_equals_frame_by_frame(detector):
    specs = [s for s in REFERENCE['frames'] if s['source'] == 'WolfgangLanger_Pexels.mp4']
    frames = np.stack([reference_frame(s) for s in specs])
    for faces, spec in zip(detector(frames), specs):  # one batch, one NMS pass over frames
        assert torch.allclose(faces.boxes, torch.tensor(spec['boxes']), atol=1e-3, rtol=0)
        assert torch.allclose(faces.scores, torch.tensor(spec['scores']), atol=1e-4, rtol=0)
    mixed = detector([reference_frame(REFERENCE['frames'][0])[:300], frames[0]])  # two sizes in one list
    assert torch.allclose(mixed[1].boxes, torch.tensor(specs[0]['boxes']), atol=1e-3, rtol=0)


def test_downscaled_frames_map_back_to_input_pixels(detector):
    spec = REFERENCE['frames'][0]  # 640 x 360, one face
    small = RetinaFaceDetector(max_size=320, model=detector.model)
    assert small.input_size(360, 640) == (180, 320)
    faces = small(reference_frame(spec)[None])[0]
    box = torch.tensor(spec['boxes'])
    assert len(faces) == 1 and box_iou(faces.boxes, box, 0.).item() > 0.85
    width = float(box[0, 2] - box[0, 0])
    assert (faces.landmarks - torch.tensor(spec['landmarks'])).abs().max() < 0.08 * width


def test_load_retinaface_reads_safetensors_and_the_authors_names(tmp_path):
    model = RetinaFace().eval()
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    path = tmp_path / 'w.safetensors'
    save_file(model.state_dict(), str(path))
    loaded = load_retinaface(path)
    x = torch.randn(1, 3, 64, 80)
    assert all(torch.equal(a, b) for a, b in zip(model(x), loaded(x)))
    fused = RetinaFaceDetector(model=loaded).model  # batch norms folded in, on a copy: the caller's model is kept
    assert isinstance(loaded.backbone.stage1[0].bn, torch.nn.BatchNorm2d)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(loaded(x), fused(x)))
    with pytest.raises(FileNotFoundError, match='safetensors'):
        load_retinaface(tmp_path / 'missing.safetensors')
    # the authors' key names (a few, spelled as in their state_dict) map onto this module's
    authors = {'body.stage1.0.0.weight': 1, 'body.stage2.3.4.running_var': 2, 'fpn.output3.1.bias': 3,
               'fpn.merge1.0.weight': 4, 'ssh2.conv7x7_3.1.weight': 5, 'ssh1.conv5X5_1.0.weight': 6,
               'LandmarkHead.2.conv1x1.bias': 7}
    assert checkpoint_filter_fn(authors) == {
        'backbone.stage1.0.conv.weight': 1, 'backbone.stage2.3.pw.bn.running_var': 2, 'fpn.lateral.2.bn.bias': 3,
        'fpn.merge.0.conv.weight': 4, 'ssh.1.conv7_3.bn.weight': 5, 'ssh.0.conv5_1.conv.weight': 6,
        'landmark_head.2.bias': 7}


def test_the_shipped_weights_load_strictly():
    state = load_file(str(WEIGHTS_PATH))
    assert set(state) == set(RetinaFace().state_dict())
    assert (WEIGHTS_PATH.parent / 'LICENSE').read_text().startswith('The file retinaface_mobilenet0.25')


def test_fx_trace_for_feature_extraction():
    from timm.models import create_feature_extractor
    model = RetinaFace().eval()
    extractor = create_feature_extractor(model, {'ssh.0': 'p3', 'class_head.2': 'logits5'})
    out = extractor(torch.randn(1, 3, 64, 96))
    assert out['p3'].shape == (1, 64, 8, 12) and out['logits5'].shape == (1, 4, 2, 3)


def test_top_k_and_keep_top_k_count_per_frame(detector):
    frames = np.random.default_rng(0).integers(0, 255, (3, 48, 64, 3), dtype=np.uint8)
    every = RetinaFaceDetector(score_threshold=0., confidence_threshold=0., nms_threshold=1., top_k=5,
                               model=detector.model)
    assert [len(f) for f in every(frames)] == [5, 5, 5]  # NMS at IoU 1 drops nothing: top_k per frame
    every.keep_top_k = 2
    faces = every(frames)
    assert [len(f) for f in faces] == [2, 2, 2]
    assert all((f.scores[:-1] >= f.scores[1:]).all() for f in faces)
