"""Face crops: box bookkeeping by hand, the detector interface, and the Haar default on real clips."""
import numpy as np
import pytest

pytest.importorskip('cv2')

from logoformer_timm.video.faces import (  # noqa: E402
    HaarFaceDetector, NoFaceError, box_iou, crop_box, crop_faces, fill_and_smooth_boxes, largest_box, square_box)
from video_helpers import media  # noqa: E402


def test_box_helpers_by_hand():
    assert largest_box(np.zeros((0, 4))) is None
    assert largest_box([[0, 0, 10, 10], [5, 5, 30, 20], [0, 0, 12, 12]]) == (5., 5., 30., 20.)
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.
    assert square_box((10, 20, 30, 60), margin=1.) == (0., 20., 40., 60.)
    assert square_box((10, 20, 30, 60), margin=1.5) == (-10., 10., 50., 70.)


def test_missing_boxes_are_interpolated_and_held_at_the_ends():
    boxes = [None, (0, 0, 10, 10), None, (10, 10, 20, 20), None]
    assert fill_and_smooth_boxes(boxes, smooth=1) == [
        (0, 0, 10, 10), (0, 0, 10, 10), (5, 5, 15, 15), (10, 10, 20, 20), (10, 10, 20, 20)]
    with pytest.raises(NoFaceError):
        fill_and_smooth_boxes([None, None])
    with pytest.raises(ValueError, match='odd'):
        fill_and_smooth_boxes(boxes, smooth=2)


def test_running_median_drops_a_single_wrong_detection():
    good = (100., 50., 200., 150.)
    boxes = [good, good, (0., 0., 30., 30.), good, good]
    assert fill_and_smooth_boxes(boxes, smooth=3) == [good] * 5


def test_crop_pads_outside_the_frame_with_black():
    frame = np.full((20, 20, 3), 200, dtype=np.uint8)
    crop = crop_box(frame, (-10, -10, 10, 10), (20, 20))
    assert (crop[:10, :10] == 0).all() and (crop[10:, 10:] == 200).all()
    assert (crop[:10, 10:] == 0).all() and (crop[10:, :10] == 0).all()


def _frames_with_squares(positions, size=(120, 160)):
    frames = []
    for x, y, side in positions:
        frame = np.zeros((*size, 3), dtype=np.uint8)
        frame[y:y + side, x:x + side] = 255
        frames.append(frame)
    return frames


def test_custom_detector_largest_face_and_interpolation():
    frames = _frames_with_squares([(20, 30, 40), (30, 30, 40), (40, 30, 40)])

    def detector(frame):  # finds the white square, plus a small decoy; misses the middle frame
        ys, xs = np.nonzero(frame[..., 0])
        if xs[0] == 30:
            return np.zeros((0, 4))
        return np.array([[0, 0, 5, 5], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32)

    with pytest.warns(UserWarning, match='interpolated'):
        faces = crop_faces(frames, size=32, detector=detector, margin=1., smooth=1)
    assert faces.detected == [True, False, True]
    assert faces.boxes == [(20, 30, 60, 70), (30, 30, 70, 70), (40, 30, 80, 70)]
    assert faces.crops.shape == (3, 32, 32, 3) and faces.crops.dtype == np.uint8
    assert (faces.crops == 255).all()  # every crop is exactly the square, the interpolated one too
    assert faces.warnings == ['No face found in 1 of 3 sampled frames: boxes interpolated.']


def test_user_boxes_skip_the_detector_and_are_checked():
    frames = _frames_with_squares([(20, 30, 40), (20, 30, 40)])
    with pytest.warns(UserWarning, match='No box given in 1 of 2'):
        faces = crop_faces(frames, size=16, boxes=[(20, 30, 60, 70), None], margin=1.)
    assert faces.detected == [True, False] and (faces.crops == 255).all()
    with pytest.raises(ValueError, match='one box'):
        crop_faces(frames, boxes=[(20, 30, 60, 70)])
    with pytest.raises(ValueError, match='x2 > x1'):
        crop_faces(frames, boxes=[(60, 30, 20, 70), None])


def test_no_face_raises_or_falls_back_to_a_centre_crop():
    frames = [np.zeros((40, 80, 3), dtype=np.uint8) for _ in range(4)]
    for f in frames:
        f[:, 20:60] = 255  # the centre square
    never = lambda frame: np.zeros((0, 4))  # noqa: E731
    with pytest.raises(NoFaceError, match='--allow-no-face'):
        crop_faces(frames, detector=never)
    with pytest.warns(UserWarning, match='centre crop'):
        faces = crop_faces(frames, size=8, detector=never, allow_no_face=True)
    assert faces.boxes == [(20., 0., 60., 40.)] * 4 and (faces.crops == 255).all()
    assert faces.detected == [False] * 4


def test_no_detect_resizes_whole_frames():
    frames = [np.full((50, 70, 3), 9, dtype=np.uint8)]
    faces = crop_faces(frames, size=(32, 16), detect=False)
    assert faces.crops.shape == (1, 32, 16, 3) and (faces.crops == 9).all()


@pytest.fixture(scope='module')
def single_face_frames():
    from logoformer_timm.video.decode import iter_clips, probe_video, uniform_indices
    path = media('single_face.mp4')
    (_, frames), = iter_clips(path, [uniform_indices(probe_video(path).num_frames, 16)])
    return frames


def test_haar_finds_the_face_in_every_sampled_frame(single_face_frames):
    detector = HaarFaceDetector()
    boxes = [largest_box(detector(f)) for f in single_face_frames]
    assert all(b is not None for b in boxes)
    assert all(box_iou(a, b) > 0.5 for a, b in zip(boxes, boxes[1:]))
    for x1, y1, x2, y2 in boxes:  # a face-sized box in the frame, not a corner artefact
        assert 0.3 * 360 < y2 - y1 < 0.9 * 360 and 0 <= x1 < x2 <= 640


def test_crops_still_show_a_centred_face(single_face_frames):
    faces = crop_faces(single_face_frames, size=112)
    assert faces.detected == [True] * 16 and faces.crops.shape == (16, 112, 112, 3)
    detector = HaarFaceDetector()
    for crop in faces.crops:
        box = largest_box(detector(crop))
        assert box is not None, 'no face found again in a crop'
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        assert abs(cx - 56) < 12 and abs(cy - 56) < 12
        assert 0.6 < (box[2] - box[0]) / (112 / 1.25) < 1.4  # the face fills the crop as the margin says


def test_no_face_clip_has_no_face_in_any_sampled_frame():
    from logoformer_timm.video.predict import load_clip
    with pytest.raises(NoFaceError, match='No face found in any of the 16 sampled frames'):
        load_clip(media('no_face.mp4'))
