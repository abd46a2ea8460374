"""Face alignment against explicit formulas: the frame-to-crop matrix, the one-warp crop of a rotated point set, the
roll and its clamp, the profile fallback, the 5-point similarity, and the crop size a model's cfg asks for."""
import math

import numpy as np
import pytest
import timm

from logoformer_timm.faces.align import (
    DEFAULT_MARGIN, MAX_ROLL_DEGREES, SIMILARITY_TEMPLATE, FaceGeometry, align_face, crop_matrix, face_crop_size,
    plausible_landmarks, resize_frame, similarity_geometry, transform_points, warp_crop)

# a frontal face: image-left eye, image-right eye, nose, mouth corners, in a 100x120 box at (100, 80)
BOX = np.array([100., 80., 200., 200.])
FRONTAL = np.array([[130., 120.], [170., 120.], [150., 145.], [135., 170.], [165., 170.]])


def _rotate(points, degrees, centre):
    a = math.radians(degrees)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (np.asarray(points) - centre) @ rot.T + centre


def test_crop_matrix_by_hand():
    # centre (50, 40), side 20 -> size 10: scale 1/2, then rotation by -90 degrees (a frame vector along +y
    # becomes +x in the crop)
    m = crop_matrix(FaceGeometry(50., 40., 20., math.pi / 2), 10)
    np.testing.assert_allclose(transform_points(m, [[50., 40.]]), [[5., 5.]], atol=1e-12)
    np.testing.assert_allclose(transform_points(m, [[50., 44.]]), [[7., 5.]], atol=1e-12)  # +y -> +x
    np.testing.assert_allclose(transform_points(m, [[54., 40.]]), [[5., 3.]], atol=1e-12)  # +x -> -y


@pytest.mark.parametrize('degrees', [-25., 25.])
def test_one_warp_levels_a_rotated_point_set(degrees):
    """Dots placed at centre + R(a) offsets come out at crop centre + offsets x size / side: level and scaled."""
    size, side, centre = 64, 128., np.array([150., 110.])
    offsets = np.array([[-30., -20.], [30., -20.], [0., 25.]])  # eyes and a chin dot, upright
    dots = _rotate(centre + offsets, degrees, centre)
    frame = np.zeros((240, 320, 3), dtype=np.uint8)
    for x, y in dots:  # 5x5 white squares centred on each dot (pixel (i, j) covers [i, i + 1))
        frame[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] = 255
    crop = warp_crop(frame, crop_matrix(FaceGeometry(*centre, side, math.radians(degrees)), size), size)
    expected = size / 2 + offsets * size / side
    for ex, ey in expected:
        window = crop[int(ey) - 4:int(ey) + 5, int(ex) - 4:int(ex) + 5, 0].astype(float)
        ys, xs = np.mgrid[int(ey) - 4:int(ey) + 5, int(ex) - 4:int(ex) + 5]
        found = np.array([(xs * window).sum(), (ys * window).sum()]) / window.sum() + 0.5  # pixel centres
        np.testing.assert_allclose(found, [ex, ey], atol=0.6)
    assert crop.sum() > 0 and crop[crop.shape[0] - 4:].max() == 0  # nothing else in the crop


def test_outside_the_frame_is_black_and_a_crop_outside_is_all_black():
    frame = np.full((20, 20, 3), 200, dtype=np.uint8)
    crop = warp_crop(frame, crop_matrix(FaceGeometry(0., 0., 20., 0.), 20), 20)
    assert (crop[:9, :9] == 0).all() and (crop[11:, 11:] == 200).all()
    far = warp_crop(frame, crop_matrix(FaceGeometry(500., 500., 20., 0.), 8), 8)
    assert far.shape == (8, 8, 3) and (far == 0).all()


def test_a_strong_shrink_is_not_aliased():
    """A 1-pixel checkerboard shrunk 8x is mid grey (a plain bilinear warp would pick pixels: black or white)."""
    frame = ((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, -1)
    crop = warp_crop(frame, crop_matrix(FaceGeometry(128., 128., 256., 0.), 32), 32)
    assert abs(crop[2:-2, 2:-2].astype(float).mean() - 127.5) < 3 and crop[2:-2, 2:-2].std() < 3


def test_roll_levels_the_eye_line_and_is_clamped():
    for degrees in (-25., 10., 25.):
        landmarks = _rotate(FRONTAL, degrees, np.array([150., 140.]))
        g = align_face(BOX, landmarks, 'roll')
        assert g.mode == 'roll' and math.degrees(g.angle) == pytest.approx(degrees)
        assert (g.cx, g.cy, g.side) == (150., 140., 120. * DEFAULT_MARGIN)  # box centre, longer side x margin
        eyes = transform_points(crop_matrix(g, 100), landmarks[:2])
        assert eyes[0, 1] == pytest.approx(eyes[1, 1])  # level in the crop
    steep = _rotate(FRONTAL, 60., np.array([150., 140.]))
    big_box = np.array([60., 40., 240., 240.])
    assert plausible_landmarks(big_box, steep)
    assert math.degrees(align_face(big_box, steep, 'roll').angle) == pytest.approx(MAX_ROLL_DEGREES)


def test_implausible_landmarks_fall_back_to_the_box():
    profile = FRONTAL.copy()
    profile[2, 0] = 120.  # the nose left of both eyes: a profile
    assert plausible_landmarks(BOX, FRONTAL) and not plausible_landmarks(BOX, profile)
    outside = FRONTAL.copy()
    outside[4] = [400., 170.]
    upside_down = FRONTAL[[1, 0, 2, 4, 3]]  # eyes swapped
    for landmarks in (profile, outside, upside_down, None):
        for mode in ('roll', 'similarity'):
            g = align_face(BOX, landmarks, mode)
            assert (g.mode, g.angle, g.cx, g.cy) == ('box', 0., 150., 140.)
    with pytest.raises(ValueError, match='Unknown face alignment'):
        align_face(BOX, FRONTAL, 'affine')


def test_similarity_puts_the_landmarks_on_the_template():
    """Landmarks made from the template by a known similarity land back on it, and the geometry is that similarity."""
    size, scale, degrees, shift = 112, 3., 20., np.array([300., 200.])
    a = math.radians(degrees)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    landmarks = (SIMILARITY_TEMPLATE * size) @ rot.T * scale + shift
    g = similarity_geometry(landmarks)
    assert g.mode == 'similarity' and math.degrees(g.angle) == pytest.approx(degrees)
    assert g.side == pytest.approx(size * scale)
    np.testing.assert_allclose(transform_points(crop_matrix(g, size), landmarks), SIMILARITY_TEMPLATE * size,
                               atol=1e-9)
    wide = similarity_geometry(landmarks, margin=2 * DEFAULT_MARGIN)
    assert wide.side == pytest.approx(2 * g.side) and (wide.cx, wide.cy) == pytest.approx((g.cx, g.cy))


@pytest.mark.parametrize('name, size', [
    ('mae_dfer.dfew_fold1', 256), ('mae_dfer.mafw_fold1', 224), ('mae_dfer.ferv39k', 224),
    ('former_dfer.dfew_fold1', 224), ('dfer_clip.mafw_fold2', 224), ('logoformer_tiny', 112)])
def test_crop_size_comes_from_the_model_cfg(name, size):
    import logoformer_timm  # noqa: F401
    cfg = timm.models.get_pretrained_cfg(name).to_dict() if '.' in name else {'test_protocol': 'logoformer'}
    img_size = cfg['input_size'][1:] if '.' in name else (112, 112)
    assert face_crop_size(cfg, tuple(img_size)) == size


def test_resize_frame_is_pil_bilinear():
    from PIL import Image
    frame = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(frame).resize((30, 20), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(resize_frame(frame, (20, 30)), expected)
    assert resize_frame(frame, (40, 60)) is frame
