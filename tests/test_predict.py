"""logoformer-predict and the Python API on real and synthetic videos: results, JSON schema, weights, user errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch

pytest.importorskip('av')
jsonschema = pytest.importorskip('jsonschema')

from logoformer_timm.video.predict import (  # noqa: E402
    PREDICTION_SCHEMA, RANDOM_INIT_WARNING, NoFaceError, clip_from_frames, load_clip, load_model, main,
    predict_video)
from video_helpers import frame_index, grey_video, media, write_video  # noqa: E402


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return timm.create_model('logoformer_tiny').eval()


@pytest.fixture(scope='module')
def single_face(model, tmp_path_factory):
    crops = tmp_path_factory.mktemp('crops')
    return predict_video(media('single_face.mp4'), model, save_crops=str(crops)), crops


def test_prediction_on_a_real_clip(model, single_face):
    result, _ = single_face
    jsonschema.validate(result.to_dict(), PREDICTION_SCHEMA)
    (window,) = result.windows
    assert (window.start, window.end) == (0., pytest.approx(2.4))
    assert window.frame_indices == [int((k + .5) * 72 / 16) for k in range(16)]
    assert window.faces_found == [True] * 16 and window.track == 0 and window.no_face is None
    assert window.alignment == ['roll'] * 16 and len(window.transforms) == 16
    assert result.face_pipeline == dict(detector='retinaface', align='roll', crop_size=112, margin=1.25)
    assert list(window.probabilities) == list(model.pretrained_cfg['label_names'])
    assert sum(window.probabilities.values()) == pytest.approx(1., abs=1e-5)
    probs = sorted(window.probabilities.items(), key=lambda kv: -kv[1])[:3]
    assert window.top_k == probs and result.model == 'logoformer_tiny' and result.warnings == []


def test_probabilities_match_the_model_on_load_clip(model, single_face):
    result, crops = single_face
    clip = load_clip(media('single_face.mp4'))
    assert clip.shape == (3, 16, 112, 112) and clip.dtype == torch.float32
    assert 0 <= clip.min() and clip.max() <= 1
    with torch.inference_mode():
        expected = model(clip[None]).softmax(-1)[0]
    got = torch.tensor(list(result.windows[0].probabilities.values()))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # the saved crops are what the model saw
    from PIL import Image
    files = sorted(os.listdir(crops / 'window_000'))
    assert len(files) == 16 and files[0] == '00_frame000002.png'
    saved = np.stack([np.asarray(Image.open(crops / 'window_000' / f)) for f in files])
    np.testing.assert_array_equal(torch.from_numpy(saved).permute(3, 0, 1, 2).float() / 255, clip.numpy())


def test_sliding_windows_on_a_synthetic_video(model, tmp_path):
    path = grey_video(tmp_path / 'grey.mp4', 25, size=(112, 112), fps=5)  # 5 s
    result = predict_video(path, model, window=2., stride=1., detect=False)
    assert [(w.start, w.end) for w in result.windows] == [(0., 2.), (1., 3.), (2., 4.), (3., 5.)]
    assert result.windows[1].frame_indices == [5 + int((k + .5) * 10 / 16) for k in range(16)]
    assert result.windows[1].frame_times == pytest.approx([i / 5 for i in result.windows[1].frame_indices])
    jsonschema.validate(result.to_dict(), PREDICTION_SCHEMA)


def test_short_video_and_own_crops(model, tmp_path):
    path = grey_video(tmp_path / 'short.mp4', 5, size=(64, 64))
    clip = load_clip(path, detect=False)
    assert clip.shape == (3, 16, 112, 112)
    assert [frame_index(255 * clip[:, k].permute(1, 2, 0).numpy()) for k in range(16)] == \
        [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    own = [np.full((80, 80, 3), 8 * i, dtype=np.uint8) for i in range(32)]
    clip = clip_from_frames(own)
    assert clip.shape == (3, 16, 112, 112)
    assert [round(float(clip[:, k].mean()) * 255 / 8) for k in range(16)] == list(range(1, 32, 2))


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert 'Traceback' not in out + err
    return code, out, err


def test_cli_json_and_table(capsys):
    path = media('single_face.mp4')
    code, out, _ = _run([path, '--model', 'logoformer_tiny', '--random-init', '--json', '--top-k', '2'], capsys)
    assert code == 0
    data = json.loads(out)
    jsonschema.validate(data, PREDICTION_SCHEMA)
    assert data['weights'] == 'random-init' and data['warnings'][0] == RANDOM_INIT_WARNING
    assert len(data['windows'][0]['top_k']) == 2 and data['windows'][0]['faces_found'] == [True] * 16
    code, out, _ = _run([path, '--model', 'logoformer_tiny', '--random-init'], capsys)
    assert code == 0 and '16/16' in out and 'meaningless' in out


def test_random_init_is_seeded_and_leaves_the_global_rng_alone():
    # docs/prediction.md prints --random-init output: it must come out the same on every run
    state = torch.random.get_rng_state()
    first, _ = load_model('logoformer_tiny', random_init=True)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.rand(3)
    second, _ = load_model('logoformer_tiny', random_init=True)
    for (name, p), q in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(p, q), name


def test_cli_no_detect_does_not_claim_faces(tmp_path, capsys):
    path = grey_video(tmp_path / 'v.mp4', 20, size=(32, 32))
    code, out, _ = _run([path, '--model', 'logoformer_tiny', '--random-init', '--no-detect'], capsys)
    row = out.splitlines()[4].split()
    assert code == 0 and row[2] == '-' and '/16' not in out, out


def test_cli_no_face(capsys):
    path = media('no_face.mp4')
    code, _, err = _run([path, '--model', 'logoformer_tiny', '--random-init'], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert 'No reliable face in any of the 1 window(s)' in err and 'no face found in any of the 16 sampled' in err
    code, out, _ = _run([path, '--model', 'logoformer_tiny', '--random-init', '--allow-no-face', '--json'], capsys)
    data = json.loads(out)
    jsonschema.validate(data, PREDICTION_SCHEMA)
    (window,) = data['windows']
    assert code == 0 and window['faces_found'] == [False] * 16 and window['track'] is None
    assert window['no_face'] == 'no face found in any of the 16 sampled frames' and window['probabilities']
    assert window['alignment'] == ['centre'] * 16 and window['boxes'] == [None] * 16
    assert any('classified anyway (--allow-no-face)' in w for w in data['warnings'])


@pytest.mark.parametrize('args, message', [
    (['{missing}', '--random-init'], 'No such file'),
    (['{text}', '--random-init'], 'not a readable video'),
    (['{video}'], 'Say where the weights come from'),
    (['{video}', '--pretrained', '--model', 'logoformer_tiny'], 'No pretrained weights are published'),
    (['{video}', '--model', 'resnet_nope', '--random-init'], "Unknown model 'resnet_nope'"),
    (['{video}', '--model', 'resnet18', '--random-init'], 'resnet18 is not a clip model'),
    (['{video}', '--checkpoint', '{missing}', '--model', 'logoformer_tiny'], 'Checkpoint not found'),
    (['{video}', '--checkpoint', '{text}', '--model', 'logoformer_tiny'], 'could not load'),
    (['{video}', '--checkpoint', '{tmp}', '--model', 'logoformer_tiny'], 'without config.json'),
])
def test_cli_user_errors(tmp_path, capsys, args, message):
    text = tmp_path / 'notes.txt'
    text.write_text('not a video\n')
    names = dict(missing=tmp_path / 'missing.mp4', text=text, tmp=tmp_path,
                 video=grey_video(tmp_path / 'v.mp4', 3, size=(32, 32)))
    code, _, err = _run([a.format(**names) for a in args], capsys)
    assert code == 1 and err.startswith('logoformer-predict: error:') and message in err


@pytest.fixture(scope='module')
def trained(model, tmp_path_factory):
    """A stand-in for trained weights: the tiny model with a perturbed state, saved three ways."""
    from safetensors.torch import save_file
    torch.manual_seed(1)
    other = timm.create_model('logoformer_tiny').eval()
    folder = tmp_path_factory.mktemp('ckpt')
    state = {k: v.contiguous() for k, v in other.state_dict().items()}
    save_file(state, str(folder / 'model.safetensors'))
    torch.save({'state_dict': state}, str(folder / 'model.pth'))
    timm.models.save_for_hf(other, str(folder / 'hub'), safe_serialization=True)
    return other, folder


@pytest.mark.parametrize('source', ['model.safetensors', 'model.pth', 'hub'])
def test_checkpoints_load_through_timm(trained, source):
    other, folder = trained
    loaded, weights = load_model('logoformer_tiny', str(folder / source))
    assert weights == f'checkpoint:{folder / source}'
    for (name, a), b in zip(other.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_console_script_is_installed(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), 'logoformer-predict')
    if not os.path.exists(script):
        pytest.skip('logoformer-predict is not on this interpreter\'s bin/ (package not pip-installed)')
    proc = subprocess.run([script, str(tmp_path / 'missing.mp4'), '--random-init'], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and 'No such file' in proc.stderr and 'Traceback' not in proc.stderr


def test_load_clip_with_boxes_per_video_frame(tmp_path):
    frame = np.zeros((60, 80, 3), dtype=np.uint8)
    frame[10:50, 30:70] = 255  # the "face"
    path = write_video(tmp_path / 'box.mp4', [frame] * 20)
    clip = load_clip(path, size=32, boxes=[(30, 10, 70, 50)] * 20, margin=1.)
    assert clip.shape == (3, 16, 32, 32) and clip[:, :, 4:-4, 4:-4].min() > 0.9
    with pytest.raises(ValueError, match='one .* per video frame .20 frames.'):
        load_clip(path, boxes=[(30, 10, 70, 50)] * 16)
    with pytest.raises(NoFaceError, match='a face in only 7 of the 16 sampled frames'):
        load_clip(path, size=32, boxes=[(30, 10, 70, 50)] * 9 + [None] * 11)


def test_a_window_with_a_face_in_fewer_than_half_its_frames_is_not_classified(model, tmp_path, capsys):
    """Two 2-second windows: the first has the face in 20 of its 20 frames, the second in 9 of 20 (a box given
    for frames 20-28 only): 7 of its 16 sampled frames, fewer than half."""
    frame = np.zeros((60, 80, 3), dtype=np.uint8)
    frame[10:50, 30:70] = 255
    path = write_video(tmp_path / 'half.mp4', [frame] * 40)  # 10 fps, 4 s
    boxes = [(30, 10, 70, 50)] * 29 + [None] * 11
    result = predict_video(path, model, window=2., boxes=boxes, margin=1.)
    first, second = result.windows
    assert first.classified and first.no_face is None and first.faces_found == [True] * 16
    sampled = [int((k + .5) * 20 / 16) for k in range(16)]  # frames 20 + these: 7 are below 29
    assert sum(s < 9 for s in sampled) == 7 and sum(second.faces_found) == 7
    assert not second.classified and second.probabilities is None and second.top_k is None
    assert second.no_face.startswith('a face in only 7 of the 16 sampled frames')
    data = result.to_dict()
    jsonschema.validate(data, PREDICTION_SCHEMA)
    assert data['windows'][1]['probabilities'] is None and data['windows'][1]['no_face'] == second.no_face
    assert 'the face boxes come without landmarks' in ' '.join(result.warnings)
    allowed = predict_video(path, model, window=2., boxes=boxes, margin=1., allow_no_face=True)
    assert allowed.windows[1].classified and allowed.windows[1].no_face == second.no_face
    with pytest.raises(NoFaceError, match='No reliable face in any of the 2 window'):
        predict_video(path, model, window=2., boxes=[None] * 34 + [(30, 10, 70, 50)] * 6)


@pytest.fixture(scope='module')
def two_faces(tmp_path_factory):
    """A video of two people side by side (test_faces.two_face_frames), 8 frames at 10 fps."""
    from logoformer_timm.faces import RetinaFaceDetector
    from test_faces import two_face_frames
    return write_video(tmp_path_factory.mktemp('two') / 'two.mp4', two_face_frames(RetinaFaceDetector(), 8))


def test_all_faces_a_row_per_track_and_its_crops_apart(model, two_faces, tmp_path, capsys):
    crops = tmp_path / 'crops'
    code, out, _ = _run([two_faces, '--model', 'logoformer_tiny', '--random-init', '--json', '--all-faces',
                         '--save-crops', crops], capsys)
    data = json.loads(out)
    jsonschema.validate(data, PREDICTION_SCHEMA)
    assert code == 0 and [w['track'] for w in data['windows']] == [0, 1]
    for w in data['windows']:
        assert w['faces_found'] == [True] * 16 and w['probabilities']
        centres = {(b[0] + b[2]) / 2 < 160 for b in w['boxes']}
        assert len(centres) == 1  # one side of the frame: one person
    assert {(w['boxes'][0][0] + w['boxes'][0][2]) / 2 < 160 for w in data['windows']} == {True, False}
    assert sorted(os.listdir(crops / 'window_000')) == ['track_00', 'track_01']
    assert len(os.listdir(crops / 'window_000' / 'track_01')) == 16
    code, out, _ = _run([two_faces, '--model', 'logoformer_tiny', '--random-init', '--json', '--face', '1'], capsys)
    (second,) = json.loads(out)['windows']
    assert code == 0 and second['track'] == 1 and second['boxes'] == data['windows'][1]['boxes']
    code, _, err = _run([two_faces, '--model', 'logoformer_tiny', '--random-init', '--face', '2'], capsys)
    assert code == 1 and 'no face 2 (faces are counted from 0): 2 face track(s) found' in err


@pytest.fixture(scope='module')
def two_faces_swapping(tmp_path_factory):
    """Two people side by side for 2 s at 10 fps: the left face is the larger one in the first second (pasted at
    150 px against 110), the right one in the next (150 against 130)."""
    from logoformer_timm.faces import RetinaFaceDetector
    from test_faces import two_face_frames
    frames = two_face_frames(RetinaFaceDetector(), 20, [(150, 110)] * 10 + [(130, 150)] * 10)
    return write_video(tmp_path_factory.mktemp('swap') / 'swap.mp4', frames)


def test_a_track_id_is_the_same_person_in_every_window(model, two_faces_swapping):
    """Ranked per window, track 0 would be the left face in the first window and the right one in the second; over
    the video the left face is the main one (median side 140 against 130, both in every frame), so --face 1 follows
    the right face in both windows, and --all-faces gives tracks 0 (left) and 1 (right) in each."""
    def right_side(w):
        return {(b[0] + b[2]) / 2 > 160 for b in w.boxes}

    second = predict_video(two_faces_swapping, model, window=1., face=1)
    assert [w.track for w in second.windows] == [1, 1]
    assert all(w.faces_found == [True] * 16 and right_side(w) == {True} for w in second.windows)
    everyone = predict_video(two_faces_swapping, model, window=1., all_faces=True)
    assert [(w.start, w.track) for w in everyone.windows] == [(0., 0), (0., 1), (1., 0), (1., 1)]
    assert [right_side(w) for w in everyone.windows] == [{False}, {True}] * 2
    assert [w.boxes for w in everyone.windows[1::2]] == [w.boxes for w in second.windows]


def test_windows_are_detected_once_then_decoded_again_when_their_frames_do_not_fit(tmp_path):
    """The detection pass sees every window first; the cropping pass gets the same frames, in each window's order
    with its repeats, from memory or, past the cache size, from a second decode, with no second detection."""
    from logoformer_timm.faces import FacePipeline
    from logoformer_timm.video.decode import probe_video
    from logoformer_timm.video.faces import WindowFaces, iter_windows
    path = grey_video(tmp_path / 'grey.mp4', 30)
    plans = [[0, 5, 5, 9], [8, 9, 20], [29, 0]]
    for cache_bytes in (0, 2 ** 20):
        seen = []
        window_faces = WindowFaces(FacePipeline(lambda f: seen.append(frame_index(f)) or np.zeros((0, 4)), size=8),
                                   probe_video(path))
        timing = dict(decode=0., faces=0.)
        windows = iter_windows(path, plans, window_faces, timing, cache_bytes)
        got = {n: [frame_index(f) for f in frames] for n, frames in windows}
        assert got == dict(enumerate(plans)) and sorted(seen) == [0, 5, 8, 9, 20, 29] and timing['decode'] > 0
        for number, frames in iter_windows(path, plans, window_faces, timing, cache_bytes):
            (faces,) = window_faces(frames, plans[number])
            assert faces.track_id is None and len(faces.status) == len(plans[number])
        assert len(seen) == 6


def test_zoo_tag_is_printed_and_one_view_is_worded_as_one(tmp_path, capsys):
    """On c37ee99 the table said 'model: former_dfer' and the note 'its 1 views merged'."""
    path = grey_video(tmp_path / 'v.mp4', 20, size=(32, 32))
    code, out, _ = _run([path, '--model', 'former_dfer.dfew_fold1', '--random-init', '--no-detect'], capsys)
    assert code == 0 and 'model: former_dfer.dfew_fold1 (random-init)' in out, out
    assert 'its one view used as the authors' in out and '1 views' not in out


def test_verbose_prints_throughput_and_time_shares(capsys):
    import re
    path = media('single_face.mp4')
    code, out, err = _run([path, '--model', 'logoformer_tiny', '--random-init', '--json', '--verbose',
                           '--window', '1', '--stride', '0.5'], capsys)
    assert code == 0 and json.loads(out)['windows']  # stdout stays JSON; the line goes to stderr
    (line,) = [x for x in err.splitlines() if x.startswith('throughput:')]
    match = re.match(r'throughput: ([\d.]+) clips/s \((\d+) clips in ([\d.]+) s\)', line)
    assert match and int(match[2]) == len(json.loads(out)['windows']) > 1
    assert float(match[1]) == pytest.approx(int(match[2]) / float(match[3]), rel=0.02)
    shares = dict((k, float(v)) for k, v in re.findall(r'(decoding|face detection and cropping|model|other) '
                                                      r'(-?[\d.]+) %', line))
    assert set(shares) == {'decoding', 'face detection and cropping', 'model', 'other'}
    assert sum(shares.values()) == pytest.approx(100, abs=0.3)
    assert all(v > 0 for k, v in shares.items() if k != 'other') and shares['other'] > -0.1


def test_load_model_precision_bf16_predicts_like_fp32(model, single_face):
    from logoformer_timm.weights.inference import InferenceModel
    fast, weights = load_model('logoformer_tiny', random_init=True, precision='bf16')
    assert isinstance(fast, InferenceModel) and weights == 'random-init'
    fast.model.load_state_dict(model.state_dict())
    result = predict_video(media('single_face.mp4'), fast)
    reference, _ = single_face
    got = result.windows[0].probabilities
    expected = reference.windows[0].probabilities
    assert got.keys() == expected.keys()
    assert max(abs(got[k] - expected[k]) for k in got) < 1e-2  # the bf16 tolerance of test_inference.py
    assert result.model == 'logoformer_tiny'


def test_haar_is_an_option_boxes_only(model):
    pytest.importorskip('cv2')
    result = predict_video(media('single_face.mp4'), model, detector='haar')
    (window,) = result.windows
    assert result.face_pipeline['detector'] == 'haar' and window.alignment == ['box'] * 16
    assert 'the face boxes come without landmarks (16 sampled frames)' in ' '.join(result.warnings)
    assert window.faces_found == [True] * 16 and window.classified


def test_precision_bf16_agrees_with_fp32_on_a_fixed_clip():
    """--precision bf16 (weights cast to bfloat16) on the face crops of single_face.mp4, logoformer_base with seed-0
    weights at 16x112: the agreement stated in logoformer_timm/weights/inference.py (measured 5.9e-3 on the logits,
    6e-4 on the probabilities, the same top class)."""
    from logoformer_timm.weights.inference import prepare_for_inference
    clip = load_clip(media('single_face.mp4'), 16, 112)[None]
    torch.manual_seed(0)
    model = timm.create_model('logoformer_base').eval()
    with torch.inference_mode():
        reference = model(clip)
        out = prepare_for_inference(model, 'bf16')(clip)
    assert model.token_embed.weight.dtype == torch.bfloat16
    assert 0 < (out - reference).abs().max() < 1e-2
    assert (out.softmax(-1) - reference.softmax(-1)).abs().max() < 1e-3
    assert out.argmax(-1) == reference.argmax(-1)


def test_cli_fp16_on_a_cpu_without_it_is_a_user_error(capsys):
    if torch.cpu._is_amx_fp16_supported():
        pytest.skip('this CPU runs fp16 natively')
    code, _, err = _run([media('single_face.mp4'), '--model', 'logoformer_tiny', '--random-init', '--precision',
                         'fp16'], capsys)
    assert code == 1 and 'fp16 on this CPU would be emulated' in err and len(err.strip().splitlines()) == 1


def test_implausible_landmarks_fall_back_to_the_box_and_the_result_says_so(model, tmp_path):
    """A detector giving profile landmarks (the nose left of both eyes) in every other frame."""
    from types import SimpleNamespace
    frame = np.zeros((60, 80, 3), dtype=np.uint8)
    frame[10:50, 20:60] = 255
    path = write_video(tmp_path / 'face.mp4', [frame] * 16)
    frontal = np.array([[30., 24.], [50., 24.], [40., 32.], [32., 42.], [48., 42.]])
    profile = frontal.copy()
    profile[2, 0] = 24.
    calls = []

    def detector(image):
        calls.append(1)
        points = profile if len(calls) % 2 else frontal
        return SimpleNamespace(boxes=np.array([[20., 10., 60., 50.]]), landmarks=points[None], scores=np.array([.9]))

    result = predict_video(path, model, detector=detector, margin=1.)
    (window,) = result.windows
    assert window.faces_found == [True] * 16 and window.classified
    assert window.alignment == ['roll-carried', 'roll'] * 8  # the neighbours' roll on the profile frames' box
    assert any("implausible landmarks (a profile?) in 8 of 16 sampled frames: aligned by the neighbouring frames' "
               "landmarks in 8." in w for w in result.warnings)
    frontal = profile  # profiles only: nothing to carry, the box
    calls.clear()
    boxed = predict_video(path, model, detector=detector, margin=1.)
    assert boxed.windows[0].alignment == ['box'] * 16
    assert any('implausible landmarks (a profile?) in 16 of 16 sampled frames: aligned by the box in 16.' in w
               for w in boxed.warnings)
    calls.clear()
    quiet = predict_video(path, model, detector=detector, align='box')  # asked for: nothing to report
    assert quiet.windows[0].alignment == ['box'] * 16 and not any('implausible' in w for w in quiet.warnings)
    assert not any('without landmarks' in w for w in result.warnings + quiet.warnings)
