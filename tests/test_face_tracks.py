"""Face tracks on hand-made detections: linking, ranking by presence x size, gap filling in time, light smoothing."""
import math

import numpy as np
import pytest

from logoformer_timm.faces.align import FaceGeometry, align_face, crop_matrix, geometry_from_box, transform_points
from logoformer_timm.faces.pipeline import FaceCrops, as_detections
from logoformer_timm.faces.tracks import Detection, build_tracks, link_cost


def _det(x, y, side, angle=0.):
    box = np.array([x - side / 2, y - side / 2, x + side / 2, y + side / 2])
    return Detection(box, None, 0.9, FaceGeometry(x, y, side, angle, 'roll'))


def test_link_gates_by_centre_shift_size_ratio_and_overlap():
    a = (0., 0., 100., 100.)
    assert link_cost(a, (10., 0., 110., 100.)) == pytest.approx(0.1)  # shift 10 / size 100, same size
    assert link_cost(a, (0., 0., 120., 120.)) == pytest.approx(math.hypot(10, 10) / 110 + math.log(1.2))
    assert link_cost(a, (0., 0., 160., 160.)) is None  # size ratio 1.6 > 1.5
    assert link_cost(a, (110., 0., 210., 100.)) is None  # the face beside it: shift 1.1 sizes, no overlap


def test_two_people_side_by_side_never_swap():
    """Person A (left) is larger in frames 0, 2, 3; person B (right) in 1: each frame's largest box would swap."""
    frames = [[_det(100, 100, 80), _det(220, 100, 76)],
              [_det(222, 101, 84), _det(102, 99, 78)],  # B listed first and larger
              [_det(104, 100, 82), _det(224, 100, 75)],
              [_det(226, 100, 70), _det(106, 101, 80)]]
    tracks = build_tracks(frames, smooth=False)
    assert len(tracks) == 2
    main, other = tracks
    assert [f.geometry.cx for f in main.frames] == [100, 102, 104, 106]  # A: larger over the clip
    assert [f.geometry.cx for f in other.frames] == [220, 222, 224, 226]
    assert (main.id, other.id) == (0, 1) and main.presence == other.presence == 1.


def test_main_track_is_presence_times_size():
    # a big face in 1 frame of 4, a smaller one in all 4: presence x size 1/4 x 200 < 4/4 x 60
    frames = [[_det(100, 100, 60), _det(400, 300, 200)], [_det(100, 100, 60)], [_det(100, 100, 60)],
              [_det(100, 100, 60)]]
    tracks = build_tracks(frames)
    assert tracks[0].size == 60 and tracks[1].size == 200
    assert [f.status for f in tracks[1].frames] == ['detected', 'held', 'held', 'held']
    assert tracks[1].presence == 0.25


def test_short_gaps_are_interpolated_in_time_long_ones_held():
    """Centre linear, side geometric (log scale), angle linear, at the frame's time between its neighbours."""
    times = [0., 0.1, 0.4, 1.0, 1.1]
    frames = [[_det(100, 50, 100, 0.)], [], [_det(140, 50, 140, 0.5)], [], [_det(150, 50, 140, 0.5)]]
    (track,) = build_tracks(frames, times, max_gap=0.5, smooth=False)
    assert [f.status for f in track.frames] == ['detected', 'interpolated', 'detected', 'held', 'detected']
    g = track.frames[1].geometry  # a quarter of the way from t=0 to t=0.4
    assert (g.cx, g.cy) == pytest.approx((110., 50.))
    assert g.side == pytest.approx(100 * 1.4 ** 0.25) and g.angle == pytest.approx(0.125)
    held = track.frames[3]  # the gap 0.4 -> 1.1 is 0.7 s: no face; the nearest detection (t=1.1) held
    assert held.geometry.cx == pytest.approx(150.) and not held.has_face and held.detection is None
    np.testing.assert_allclose(track.frames[1].box, 0.75 * np.array([50., 0., 150., 100.])
                               + 0.25 * np.array([70., -20., 210., 120.]))  # boxes: linear in time
    assert track.presence == pytest.approx(4 / 5)
    (untimed,) = build_tracks(frames, None, smooth=False)  # no times: every gap inside the track is filled
    assert [f.status for f in untimed.frames].count('held') == 0


def test_smoothing_weights_and_where_it_stops():
    xs = [100., 104., 100., 110.]
    frames = [[_det(x, 50, 40)] for x in xs]
    (track,) = build_tracks(frames, [0., 0.1, 0.2, 0.9], max_gap=0.5, smooth=True)
    got = [f.geometry.cx for f in track.frames]
    # 1/4, 1/2, 1/4 with the edge and the frame 0.7 s later (beyond max_gap) standing in for themselves
    assert got == pytest.approx([(100 * 3 + 104) / 4, (100 + 2 * 104 + 100) / 4, (104 + 100 * 3) / 4, 110.])
    angles = [[_det(100, 50, 40, a)] for a in (math.pi - 0.1, -math.pi + 0.1, math.pi - 0.1)]
    (wrapped,) = build_tracks(angles, smooth=True)  # angles average the short way round, across +-pi
    assert abs(wrapped.frames[1].geometry.angle) == pytest.approx(math.pi)  # the naive mean is 0


def test_times_are_checked():
    with pytest.raises(ValueError, match='non-decreasing'):
        build_tracks([[_det(1, 1, 1)], []], [1., 0.])
    with pytest.raises(ValueError, match='one time per frame'):
        build_tracks([[_det(1, 1, 1)], []], [0.])


def test_detector_outputs_boxes_only_or_with_landmarks():
    boxes_only = as_detections(np.array([[10., 20., 50., 70.]]), 'roll', 1.25)
    assert boxes_only[0].landmarks is None and math.isnan(boxes_only[0].score)
    assert boxes_only[0].geometry == geometry_from_box([10, 20, 50, 70], 1.25)  # no landmarks: by the box
    assert as_detections(np.zeros((0, 4)), 'roll', 1.25) == []
    with pytest.raises(ValueError, match=r'\(N, 4\) boxes'):
        as_detections(np.zeros((2, 5)), 'roll', 1.25)
    with pytest.raises(ValueError, match='x2 > x1'):
        as_detections(np.array([[50., 20., 10., 70.]]), 'roll', 1.25)


def _crops(status):
    n = len(status)
    return FaceCrops(np.zeros((n, 2, 2, 3), np.uint8), [np.eye(2, 3)] * n, [None] * n, [None] * n, [math.nan] * n,
                     status, ['roll'] * n, 0, 1)


def test_a_window_needs_a_face_in_half_of_its_frames():
    """DFEW's clip rule: detected or interpolated frames count, held ones do not; exactly half is enough."""
    assert _crops(['detected'] * 8 + ['held'] * 8).reliable
    assert _crops(['detected'] * 4 + ['interpolated'] * 4 + ['held'] * 8).reliable
    seven = _crops(['detected'] * 7 + ['held'] * 9)
    assert not seven.reliable and seven.reason.startswith('a face in only 7 of the 16 sampled frames')
    no_track = FaceCrops(np.zeros((2, 2, 2, 3), np.uint8), [np.eye(2, 3)] * 2, [None] * 2, [None] * 2,
                         [math.nan] * 2, ['none'] * 2, ['centre'] * 2, None, 0)
    assert not no_track.reliable and no_track.reason == 'no face found in any of the 2 sampled frames'


def _video(num_frames, fps=10):
    from logoformer_timm.video.decode import VideoInfo
    return VideoInfo('hand-made', 320, 120, fps, num_frames, num_frames / fps, 'none',
                     tuple(k / fps for k in range(num_frames)))


class _HandMade:
    """A user's detector (boxes only) that finds hand-made faces: frame ``k`` (its pixel (0, 0) holds ``k``) has the
    boxes ``faces[k]``, ``(centre x, side)`` each at y = 60; counts the frames it was called on."""

    def __init__(self, faces):
        self.faces, self.calls = faces, []

    def __call__(self, frame):
        k = int(frame[0, 0, 0])
        self.calls.append(k)
        return np.array([[x - s / 2, 60 - s / 2, x + s / 2, 60 + s / 2] for x, s in self.faces[k]]).reshape(-1, 4)


def _window_faces(faces, fps=10):
    from logoformer_timm.faces.pipeline import FacePipeline
    from logoformer_timm.video.faces import WindowFaces
    detector = _HandMade(faces)
    frames = [np.full((120, 320, 3), k, np.uint8) for k in range(len(faces))]
    return WindowFaces(FacePipeline(detector, size=8, margin=1., smooth=False), _video(len(faces), fps)), detector, frames


def _centres(crops):
    return [None if b is None else round((b[0] + b[2]) / 2) for b in crops.boxes]


def _run_windows(window_faces, frames, plans, faces):
    for plan in plans:  # every window is detected before any is cropped, as predict_video does
        window_faces.detect([frames[i] for i in plan], plan)
    return [window_faces([frames[i] for i in plan], plan, faces) for plan in plans]


def test_track_ids_are_the_video_s_not_each_window_s():
    """A (left, x=80) is larger in the first window, B (right, x=240) in the second, and the detector lists them in
    the opposite order there: ranked per window, track 0 would be A then B. Over the video A is the main face
    (presence x size: 8 x 60 against 8 x 56), so track 0 is A in both windows and track 1 is B."""
    faces = [[(80, 70), (240, 50)]] * 4 + [[(240, 62), (80, 50)]] * 4
    window_faces, _, frames = _window_faces(faces)
    (a1, b1), (a2, b2) = _run_windows(window_faces, frames, [[0, 1, 2, 3], [4, 5, 6, 7]], (0, 1))
    assert _centres(a1) == _centres(a2) == [80] * 4 and _centres(b1) == _centres(b2) == [240] * 4
    assert (a1.track_id, a2.track_id, b1.track_id, b2.track_id) == (0, 0, 1, 1)
    assert a1.num_tracks == a2.num_tracks == 2 and all(c.reliable for c in (a1, a2, b1, b2))
    assert [t.id for t in window_faces.tracks] == [0, 1] and window_faces.tracks[0].size == 60


def test_a_face_that_leaves_and_comes_back_keeps_its_id():
    """Windows at 0-0.3 s, 1.0-1.3 s and 2.0-2.3 s: B (right) is in all of them, A (left) leaves in the second and
    comes back in the third. A is the same track before and after (the main one: 8 x 80 against 12 x 50); in the
    second window it has no face there."""
    faces = [[(80, 80), (240, 50)] if k < 10 or k >= 20 else [(240, 50)] for k in range(24)]
    window_faces, _, frames = _window_faces(faces)
    plans = [[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]]
    (first,), (gone,), (back,) = _run_windows(window_faces, frames, plans, (0,))
    assert len(window_faces.tracks) == 2  # A's absence starts no new track when A comes back
    assert first.track_id == back.track_id == gone.track_id == 0 and _centres(first) == _centres(back) == [80] * 4
    assert first.reliable and back.reliable and gone.status == ['held'] * 4 and not gone.reliable
    everyone = _run_windows(window_faces, frames, plans, None)  # --all-faces: the tracks present in each window
    assert [[c.track_id for c in window] for window in everyone] == [[0, 1], [1], [0, 1]]


def test_overlapping_windows_and_repeated_frames_share_one_detection_per_frame():
    """Two overlapping windows with repeats (a protocol's views, a short video): each frame is detected once, a
    frame in both windows gets the same crop in both, and each window's crops follow its own frame order."""
    faces = [[(80 + 4 * k, 60)] for k in range(6)]
    window_faces, detector, frames = _window_faces(faces)
    (one,), (two,) = _run_windows(window_faces, frames, [[0, 1, 1, 2, 3], [3, 2, 2, 4, 5, 5]], (0,))
    assert sorted(detector.calls) == list(range(6))
    assert _centres(one) == [80, 84, 84, 88, 92] and _centres(two) == [92, 88, 88, 96, 100, 100]
    np.testing.assert_array_equal(one.crops[3], two.crops[1])  # frame 2 in both windows
    np.testing.assert_array_equal(one.transforms[4], two.transforms[0])  # frame 3 in both windows
    with pytest.raises(RuntimeError, match='Detect every window before cropping'):
        window_faces.detect([np.full((120, 320, 3), 9, np.uint8)], [9])


# eyes, nose, mouth corners of a face in the box (-50, -60, 50, 60) about its centre, rolled by 10 degrees
_C, _S = math.cos(math.radians(10)), math.sin(math.radians(10))
_ROLLED = np.array([[-20., -20.], [20., -20.], [0., 5.], [-15., 30.], [15., 30.]]) @ np.array([[_C, _S], [-_S, _C]])


def _moving_face(mode, plausible, step=8.):
    """Per frame, one face moving ``step`` px to the right; where ``plausible`` is False its nose lies left of both
    eyes (a profile), so its landmarks fall back to the box."""
    frames = []
    for t, ok in enumerate(plausible):
        centre = np.array([100. + step * t, 120.])
        landmarks = _ROLLED + centre
        if not ok:
            landmarks[2, 0] = landmarks[0, 0] - 10
        box = np.concatenate([centre - (50, 60), centre + (50, 60)])
        frames.append([Detection(box, landmarks, 0.9, align_face(box, landmarks, mode))])
    return frames


def _corner_jerk(track):
    """Per frame, the crop's corners in frame pixels; the largest norm of their second difference over the frames."""
    corners = np.array([[0., 0.], [100., 0.], [0., 100.], [100., 100.]])
    pts = np.stack([transform_points(np.linalg.inv(np.vstack([crop_matrix(f.geometry, 100), [0, 0, 1]]))[:2],
                                     corners) for f in track.frames])
    return float(np.linalg.norm(pts[2:] - 2 * pts[1:-1] + pts[:-2], axis=-1).max())


@pytest.mark.parametrize('smooth', [False, True])
@pytest.mark.parametrize('mode', ['roll', 'similarity'])
def test_landmarks_flickering_at_the_threshold_do_not_make_the_crop_jump(mode, smooth):
    """A face whose landmarks are plausible every other frame: its crop moves as smoothly as the box's, and the
    fallback frames say their alignment was carried from their neighbours."""
    plausible = [t % 2 == 0 for t in range(12)]
    times = [t / 30 for t in range(12)]
    (track,) = build_tracks(_moving_face(mode, plausible), times, smooth=smooth)
    (boxed,) = build_tracks(_moving_face('box', plausible), times, smooth=smooth)
    assert _corner_jerk(boxed) < (2.5 if smooth else 0.5)  # constant speed (smoothing moves the end frames by 2)
    assert _corner_jerk(track) < _corner_jerk(boxed) + 0.5
    assert [f.geometry.mode for f in track.frames] == [mode if ok else f'{mode}-carried' for ok in plausible]
    if mode == 'roll':  # the box's centre and side, the neighbours' angle
        assert all(math.degrees(f.geometry.angle) == pytest.approx(10.) for f in track.frames)
        assert [f.geometry.cx for f in track.frames] == pytest.approx([f.geometry.cx for f in boxed.frames])


def test_a_fallback_run_far_from_landmark_frames_stays_box():
    """Implausible landmarks for 2 s, then plausible ones (10 frames per second): only the fallback frames within
    max_gap (0.5 s) of a landmark frame take its alignment."""
    plausible = [t >= 20 for t in range(30)]
    (track,) = build_tracks(_moving_face('roll', plausible), [t / 10 for t in range(30)], max_gap=0.5)
    assert [f.geometry.mode for f in track.frames] == ['box'] * 15 + ['roll-carried'] * 5 + ['roll'] * 10
    (boxed,) = build_tracks(_moving_face('box', [True] * 30), [t / 10 for t in range(30)])
    assert {f.geometry.mode for f in boxed.frames} == {'box'}  # 'box' asked for: nothing to carry
