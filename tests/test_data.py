"""DFER data pipeline: the frame sampler against hand-computed indices, clip transforms, lists and bad input."""
import os

import pytest
import torch
from PIL import Image

from logoformer_timm.data import ClipTransform, sample_frame_indices, segment_starts
from logoformer_timm.dfer import (
    AnnotationError, ClipFolderDataset, ClipLoadError, build_dfew_lists, build_ferv39k_lists, collate_clips,
    list_frames, read_annotation_list)


# ------------------------------------------------------------------------------------------------- sampler

@pytest.mark.parametrize('num_frames, expected', [
    # F > 9: tick = (F - 1) / 8, start_s = int(tick / 2 + s * tick), frames p and p + 1
    (16, list(range(16))),  # tick 1.875: starts 0 2 4 6 8 10 12 14
    (30, [1, 2, 5, 6, 9, 10, 12, 13, 16, 17, 19, 20, 23, 24, 27, 28]),  # tick 3.625
    (10, [0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 6, 7, 7, 8, 8, 9]),  # tick 1.125: starts 0 1 2 3 5 6 7 8
    (9, [0, 1] * 8),  # F <= 9: all starts 0
    (5, [0, 1] * 8),
    (1, [0] * 16),  # one frame: p + 1 is clamped to F - 1 = 0
])
def test_test_sampler_matches_hand_computed_indices(num_frames, expected):
    assert sample_frame_indices(num_frames, train=False) == expected


def test_train_sampler_offsets_follow_the_protocol():
    # F = 25: avg = (25 - 1) // 8 = 3, start_s = 3 s + randint(0, 2)
    seen = set()
    for seed in range(60):
        starts = segment_starts(25, train=True, generator=torch.Generator().manual_seed(seed))
        offsets = [p - 3 * s for s, p in enumerate(starts)]
        assert all(0 <= o <= 2 for o in offsets)
        seen.update(offsets)
        expected_offsets = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(seed)).tolist()
        assert offsets == expected_offsets
    assert seen == {0, 1, 2}  # the offsets really are random


@pytest.mark.parametrize('num_frames, expected', [
    (9, [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8]),  # avg = 1: randint(0, 0) = 0, starts 0..7
    (8, [0, 1] * 8),  # avg = 0 and F <= 8: all starts 0
    (3, [0, 1] * 8),
    (1, [0] * 16),
])
def test_train_sampler_deterministic_cases(num_frames, expected):
    assert sample_frame_indices(num_frames, train=True, generator=torch.Generator().manual_seed(3)) == expected


def test_train_sampler_sorted_random_starts_when_segments_do_not_fit():
    # 8 segments of 4 frames in 10 frames: avg = (10 - 4 + 1) // 8 = 0 and F > 8: sorted starts in [0, 6]
    for seed in range(20):
        starts = segment_starts(10, 8, 4, train=True, generator=torch.Generator().manual_seed(seed))
        assert starts == sorted(starts) and 0 <= min(starts) and max(starts) <= 6
        expected = sorted(torch.randint(0, 7, (8,), generator=torch.Generator().manual_seed(seed)).tolist())
        assert starts == expected
        indices = sample_frame_indices(10, 8, 4, train=True, generator=torch.Generator().manual_seed(seed))
        assert indices == [min(p + i, 9) for p in starts for i in range(4)]


def test_sampler_configurable_segments():
    # 4 segments x 3 frames, F = 20, test: tick = (20 - 3 + 1) / 4 = 4.5, starts int(2.25 + 4.5 s) = 2 6 11 15
    assert sample_frame_indices(20, 4, 3) == [2, 3, 4, 6, 7, 8, 11, 12, 13, 15, 16, 17]
    # two deterministic views: start_s = int(tick * (s + (v + 0.5) / 2)); tick 1.875 for F = 16
    assert segment_starts(16, view=0, num_views=2) == [0, 2, 4, 6, 7, 9, 11, 13]
    assert segment_starts(16, view=1, num_views=2) == [1, 3, 5, 7, 8, 10, 12, 14]
    with pytest.raises(ValueError, match='at least one frame'):
        sample_frame_indices(0)


# ---------------------------------------------------------------------------------------------- transforms

def _ramp_frames(num_frames=6, height=40, width=50):
    """Frames = one left-to-right ramp image plus a per-frame brightness offset of 10 t."""
    ramp = torch.linspace(0, 150, width).expand(3, height, width)
    return torch.stack([(ramp + 10 * t).round().to(torch.uint8) for t in range(num_frames)])


def test_train_transform_applies_one_crop_and_flip_to_the_whole_clip():
    frames = _ramp_frames()
    transform = ClipTransform((32, 32), train=True, hflip=0.5)
    flips = set()
    outputs = []
    for seed in range(12):
        torch.manual_seed(seed)
        clip = transform(frames)
        assert clip.shape == (3, 6, 32, 32) and clip.dtype == torch.float32
        assert 0 <= clip.min() and clip.max() <= 1
        # same crop + flip for every frame: frame t - frame 0 is the constant offset 10 t / 255
        for t in range(1, 6):
            assert (clip[:, t] - clip[:, 0] - 10 * t / 255).abs().max() < 1.5 / 255
        flips.add(bool(clip[0, 0, :, -1].mean() < clip[0, 0, :, 0].mean()))  # ramp runs right-to-left when flipped
        outputs.append(clip)
    assert flips == {True, False}  # both flipped and unflipped clips occur
    assert not torch.equal(outputs[0], outputs[1])  # the crop is random per clip


def test_test_transform_is_a_plain_resize_and_normalises():
    frames = _ramp_frames()
    clip = ClipTransform((16, 24), train=False)(frames)
    expected = torch.nn.functional.interpolate(frames.float(), size=(16, 24), mode='bilinear', antialias=True,
                                               align_corners=False).permute(1, 0, 2, 3) / 255
    assert clip.shape == (3, 6, 16, 24)
    assert (clip - expected).abs().max() < 1.01 / 255  # torchvision rounds uint8 resize results
    norm = ClipTransform((16, 24), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(frames)
    torch.testing.assert_close(norm, (clip - 0.5) / 0.25)


def _noise_frames(num_frames, height, width, seed=0):
    """Smooth random frames (upsampled noise), so resampling differences stay small but every pixel matters."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(num_frames, 3, height // 4, width // 4, generator=g)
    return (torch.nn.functional.interpolate(small, size=(height, width), mode='bilinear') * 255).round().to(torch.uint8)


@pytest.mark.parametrize('frame_hw, size, crop_pct, crop_mode', [
    ((72, 96), (48, 48), 1.0, 'squash'),   # the DFER protocol: resize only, aspect not kept
    ((72, 96), (48, 48), 0.875, 'squash'),
    ((72, 96), (48, 48), 1.0, 'center'),   # shorter side to 48, centre crop
    ((96, 72), (40, 56), 0.875, 'center'),  # non-square target: timm's ResizeKeepRatio path
    ((40, 30), (64, 64), 0.9, 'center'),   # upsampling
])
def test_test_transform_equals_timm_image_eval_transform_on_every_frame(frame_hw, size, crop_pct, crop_mode):
    from timm.data import create_transform
    from torchvision.transforms.functional import to_pil_image
    frames = _noise_frames(3, *frame_hw)
    clip = ClipTransform((3, 3, *size), crop_pct=crop_pct, crop_mode=crop_mode, mean=(0.5, 0.4, 0.3),
                         std=(0.2, 0.3, 0.4))(frames)
    timm_eval = create_transform(input_size=(3, *size), crop_pct=crop_pct, crop_mode=crop_mode,
                                 interpolation='bilinear', mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), is_training=False)
    expected = torch.stack([timm_eval(to_pil_image(f)) for f in frames], dim=1)  # PIL per frame -> (C, T, H, W)
    assert clip.shape == expected.shape == (3, 3, *size)
    # PIL's and torch's antialiased bilinear kernels round differently: a few grey levels at most, ~0.5 on average
    diff = (clip - expected).abs() * torch.tensor((0.2, 0.3, 0.4)).view(3, 1, 1, 1) * 255
    assert diff.max() < 3 and diff.mean() < 0.6


def test_clip_transform_takes_the_resolved_model_config_and_feeds_the_model():
    import timm
    from logoformer_timm import resolve_video_data_config
    frames = _noise_frames(4, 80, 80)  # square: the same under either crop_mode at crop_pct 1.0
    for layout in ('BCTHW', 'BTCHW'):
        model = timm.create_model('logoformer_tiny', num_frames=4, img_size=64, input_layout=layout).eval()
        cfg = resolve_video_data_config(model)
        assert set(cfg) == {
            'input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode', 'input_layout', 'test_protocol'}
        assert cfg['input_size'] == (3, 4, 64, 64) and cfg['input_layout'] == layout
        # LOGO-Former's own protocol, fitted to this model's clip (2 segments x 2 frames at 64x64)
        protocol = cfg['test_protocol']
        assert (protocol.num_frames, protocol.size, protocol.resize, protocol.authors) == (4, (64, 64), 'tensor', False)
        clip = ClipTransform(**cfg)(frames)
        resized = torch.nn.functional.interpolate(frames.float(), size=(64, 64), mode='bilinear', antialias=True)
        expected = resized.transpose(0, 1) / 255 if layout == 'BCTHW' else resized / 255
        assert (clip - expected).abs().max() < 1.01 / 255
        with torch.no_grad():
            assert model(clip[None]).shape == (1, 7)


def test_model_cfg_states_the_dfer_test_protocol():
    """The DFER test transform is a resize only: the model's cfg must say so, not timm's 'center' default."""
    import timm
    from logoformer_timm import resolve_video_data_config
    model = timm.create_model('logoformer_tiny', num_frames=4, img_size=64)
    cfg = resolve_video_data_config(model)
    assert (cfg['crop_pct'], cfg['crop_mode']) == (1.0, 'squash')
    frames = _noise_frames(4, 48, 96)  # a wide frame: squashed whole to 64x64, nothing cropped away
    expected = torch.nn.functional.interpolate(frames.float(), size=(64, 64), mode='bilinear', antialias=True) / 255
    assert (ClipTransform(**cfg)(frames) - expected.transpose(0, 1)).abs().max() < 1.01 / 255


@pytest.mark.parametrize('kwargs, message', [
    (dict(crop_mode='border'), "crop_mode must be one of .*'border' pads"),
    (dict(crop_mode='middle'), 'crop_mode must be one of'),
    (dict(crop_pct=0), 'crop_pct must be > 0'),
    (dict(interpolation='lanczos'), 'interpolation must be one of'),
    (dict(input_layout='BHWCT'), 'input_layout must be one of'),
    (dict(input_size=(3, 4, 0, 64)), r'input_size must be an int, \(H, W\) or \(C, T, H, W\)'),
])
def test_clip_transform_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClipTransform(**kwargs)


# ---------------------------------------------------------------------------------------- lists and dataset

def _write_clip(root, rel, num_frames, size=20, ext='png', start=1):
    os.makedirs(os.path.join(root, rel), exist_ok=True)
    for t in range(num_frames):
        Image.new('RGB', (size, size), ((10 * t) % 256,) * 3).save(os.path.join(root, rel, f'img_{t + start}.{ext}'))


def _write_list(path, lines):
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return str(path)


def test_dataset_reads_numbered_frames_in_numeric_order(tmp_path):
    _write_clip(tmp_path, 'a', 12)  # img_1 .. img_12: lexical order would put img_10 before img_2
    assert [os.path.basename(p) for p in list_frames(tmp_path / 'a')][:3] == ['img_1.png', 'img_2.png', 'img_3.png']
    lst = _write_list(tmp_path / 'list.txt', ['# comment', 'a 12 3', ''])
    ds = ClipFolderDataset(lst, str(tmp_path), num_classes=7, num_segments=4, frames_per_segment=2)
    frames, label = ds[0]
    # test rule, F = 12, 4 x 2: tick = 11 / 4 = 2.75, starts int(1.375 + 2.75 s) = 1 4 6 9
    assert label == 3 and frames.shape == (8, 3, 20, 20)
    assert frames[:, 0, 0, 0].tolist() == [10 * i for i in (1, 2, 4, 5, 6, 7, 9, 10)]


def test_training_items_depend_only_on_seed_epoch_and_index(tmp_path):
    _write_clip(tmp_path, 'a', 30)
    lst = _write_list(tmp_path / 'list.txt', ['a 30 0'])
    transform = ClipTransform((16, 16), train=True)
    ds = ClipFolderDataset(lst, str(tmp_path), train=True, transform=transform, seed=5)
    first = ds[0][0]
    torch.manual_seed(123)  # the global RNG does not matter
    assert torch.equal(ds[0][0], first)
    ds.set_epoch(1)
    assert not torch.equal(ds[0][0], first)


@pytest.mark.parametrize('line, message, skippable', [
    ('a 12', 'expected "<frame_dir> <num_frames> <label>"', True),
    ('a twelve 1', 'expected "<frame_dir> <num_frames> <label>"', True),
    ('a 12 7', r'label 7 is outside \[0, 7\)', False),  # another label set's list: never skipped
    ('a 12 -1', r'label -1 is outside', False),
    ('missing 12 1', 'neither a frame folder nor a video file', True),
    ('a 0 1', 'num_frames must be >= 1', True),
])
def test_bad_list_lines_name_file_and_line(tmp_path, line, message, skippable):
    _write_clip(tmp_path, 'a', 12)
    lst = _write_list(tmp_path / 'list.txt', ['a 12 1', line])
    with pytest.raises(AnnotationError, match=message) as info:
        read_annotation_list(lst, str(tmp_path), num_classes=7)
    assert f'{lst}:2' in str(info.value)
    if not skippable:
        with pytest.raises(AnnotationError, match='--skip-bad-clips does not skip this'):
            read_annotation_list(lst, str(tmp_path), num_classes=7, skip_bad_clips=True)
        return
    records, problems = read_annotation_list(lst, str(tmp_path), num_classes=7, skip_bad_clips=True)
    assert len(records) == 1 and len(problems) == 1


def test_empty_list_and_missing_list(tmp_path):
    with pytest.raises(AnnotationError, match='no usable clips'):
        read_annotation_list(_write_list(tmp_path / 'empty.txt', ['# nothing']))
    with pytest.raises(AnnotationError, match='not found'):
        read_annotation_list(str(tmp_path / 'nope.txt'))


def test_unreadable_frames_and_wrong_counts(tmp_path):
    _write_clip(tmp_path, 'good', 10)
    _write_clip(tmp_path, 'bad', 10)
    with open(tmp_path / 'bad' / 'img_3.png', 'wb') as f:
        f.write(b'not an image')
    _write_clip(tmp_path, 'short', 5)
    lst = _write_list(tmp_path / 'list.txt', ['good 10 0', 'bad 10 1', 'short 10 2'])
    # a folder with another frame count than its line fails when the list is read, before any clip is loaded
    with pytest.raises(AnnotationError, match=r'list.txt:3: the list says 10 frames but .*short holds 5'):
        ClipFolderDataset(lst, str(tmp_path), num_segments=4, frames_per_segment=2)
    lst = _write_list(tmp_path / 'list.txt', ['good 10 0', 'bad 10 1', 'short 5 2'])
    ds = ClipFolderDataset(lst, str(tmp_path), num_segments=4, frames_per_segment=2)
    with pytest.raises(ClipLoadError, match=r'list.txt:2.*img_3.png'):
        ds[1]
    (tmp_path / 'short' / 'img_4.png').unlink()  # the folder changed after the list was read
    with pytest.raises(ClipLoadError, match=r'list.txt:3: the list says 5 frames but .* holds 4'):
        ds[2]
    skipping = ClipFolderDataset(lst, str(tmp_path), num_segments=4, frames_per_segment=2, skip_bad_clips=True)
    assert len(skipping) == 2 and len(skipping.problems) == 1  # the changed folder is skipped at the list
    clips, labels, skipped = collate_clips([skipping[i] for i in range(2)])
    assert clips.shape == (1, 8, 3, 20, 20) and labels.tolist() == [0] and skipped == 1


def test_multi_view_items(tmp_path):
    _write_clip(tmp_path, 'a', 16)
    lst = _write_list(tmp_path / 'list.txt', ['a 16 0'])
    ds = ClipFolderDataset(lst, str(tmp_path), num_views=2)
    views = ds[0][0]
    assert views.shape == (2, 16, 3, 20, 20)
    assert views[1, ::2, 0, 0, 0].tolist() == [10 * p for p in (1, 3, 5, 7, 8, 10, 12, 14)]


def test_video_file_clips(tmp_path):
    av = pytest.importorskip('av')
    path = str(tmp_path / 'clip.mp4')
    with av.open(path, 'w') as container:
        stream = container.add_stream('mpeg4', rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = 'yuv420p'
        for t in range(10):
            frame = av.VideoFrame.from_ndarray(torch.full((32, 32, 3), 20 * t, dtype=torch.uint8).numpy(), format='rgb24')
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    lst = _write_list(tmp_path / 'list.txt', ['clip.mp4 10 1', 'clip.mp4 12 1'])
    ds = ClipFolderDataset(lst, str(tmp_path), num_segments=2, frames_per_segment=2)
    frames, label = ds[0]
    # test rule, F = 10, 2 x 2: tick = 9 / 2 = 4.5, starts int(2.25 + 4.5 s) = 2, 6
    assert frames.shape == (4, 3, 32, 32) and label == 1
    assert (frames.float().mean(dim=(1, 2, 3)) - torch.tensor([40., 60., 120., 140.])).abs().max() < 6
    with pytest.raises(ClipLoadError, match='list.txt:2: the list says 12 frames but .*clip.mp4 has 10'):
        ds[1]


def test_dfew_and_ferv39k_lists_from_official_split_files(tmp_path):
    root = tmp_path / 'DFEW'
    for vid, frames in ((1, 16), (2, 16), (13, 11)):
        _write_clip(root, f'Clip/clip_224x224_16f/{vid:05d}', frames)
    for split in ('train', 'test'):
        os.makedirs(root / 'EmoLabel_DataSplit' / f'{split}(single-labeled)')
    for fold in range(1, 6):
        _write_list(root / 'EmoLabel_DataSplit' / 'train(single-labeled)' / f'set_{fold}.csv',
                    ['video_name,label', '1,1', '13,7'])
        _write_list(root / 'EmoLabel_DataSplit' / 'test(single-labeled)' / f'set_{fold}.csv', ['video_name,label', '2,5'])
    out = tmp_path / 'lists'
    build_dfew_lists(str(root), 'EmoLabel_DataSplit', 'Clip/clip_224x224_16f', str(out))
    assert (out / 'set_3' / 'train.txt').read_text().splitlines() == [
        'Clip/clip_224x224_16f/00001 16 0', 'Clip/clip_224x224_16f/00013 11 6']
    assert (out / 'set_5' / 'test.txt').read_text().splitlines() == ['Clip/clip_224x224_16f/00002 16 4']
    records, _ = read_annotation_list(str(out / 'set_1' / 'train.txt'), str(root), num_classes=7)
    assert [r.label for r in records] == [0, 6]

    _write_list(root / 'EmoLabel_DataSplit' / 'test(single-labeled)' / 'set_1.csv', ['video_name,label', '99,2'])
    with pytest.raises(FileNotFoundError, match=r'set_1.csv:2: frame folder .*00099 does not exist'):
        build_dfew_lists(str(root), 'EmoLabel_DataSplit', 'Clip/clip_224x224_16f', str(out), folds=(1,))

    ferv = tmp_path / 'FERV39K'
    _write_clip(ferv, '2_ClipsforFaceCrop/Action/0001/0001', 7)
    _write_clip(ferv, '2_ClipsforFaceCrop/Action/0001/0002', 20)
    os.makedirs(ferv / '4_setups' / 'All_scenes')
    _write_list(ferv / '4_setups' / 'All_scenes' / 'train_All.csv', ['Action/0001/0001 Fear'])
    _write_list(ferv / '4_setups' / 'All_scenes' / 'test_All.csv', ['Action/0001/0002 happy'])
    build_ferv39k_lists(str(ferv), '4_setups/All_scenes', '2_ClipsforFaceCrop', str(tmp_path / 'ferv'))
    assert (tmp_path / 'ferv' / 'train.txt').read_text() == '2_ClipsforFaceCrop/Action/0001/0001 7 6\n'
    assert (tmp_path / 'ferv' / 'test.txt').read_text() == '2_ClipsforFaceCrop/Action/0001/0002 20 0\n'
    _write_list(ferv / '4_setups' / 'All_scenes' / 'test_All.csv', ['Action/0001/0002 Contempt'])
    with pytest.raises(ValueError, match='test_All.csv:1: expected'):
        build_ferv39k_lists(str(ferv), '4_setups/All_scenes', '2_ClipsforFaceCrop', str(tmp_path / 'ferv'))
