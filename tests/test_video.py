"""Streaming video reader: metadata, decode round trip, uniform sampling, sliding windows, bad files."""
import numpy as np
import pytest

pytest.importorskip('av')

from logoformer_timm.video.decode import (  # noqa: E402
    VideoError, iter_clips, probe_video, sliding_windows, uniform_indices, window_indices)
from video_helpers import frame_index, grey_video, level, media, write_video  # noqa: E402


def test_probe_and_decode_round_trip(tmp_path):
    path = grey_video(tmp_path / 'grey.mp4', 20, size=(48, 64), fps=10)
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames, info.codec) == (64, 48, 20, 'h264')
    assert info.fps == pytest.approx(10.)
    assert info.duration == pytest.approx(2.0)
    assert info.frame_times == pytest.approx([i / 10 for i in range(20)])
    (number, frames), = iter_clips(path, [list(range(20))])
    assert number == 0 and len(frames) == 20
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert [frame_index(f) for f in frames] == list(range(20))
    assert max(abs(float(f.mean()) - level(i)) for i, f in enumerate(frames)) < 3


def test_uniform_indices_are_segment_centres():
    # floor((k + 0.5) * 100 / 16), worked out by hand
    assert uniform_indices(100, 16) == [3, 9, 15, 21, 28, 34, 40, 46, 53, 59, 65, 71, 78, 84, 90, 96]
    assert uniform_indices(16, 16) == list(range(16))
    assert uniform_indices(5, 16) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4]  # short: frames repeat
    assert uniform_indices(10, 4, start=20) == [21, 23, 26, 28]
    with pytest.raises(ValueError):
        uniform_indices(0, 16)


def test_sliding_windows_cover_the_whole_video():
    assert sliding_windows(10., 4., 2.) == [(0., 4.), (2., 6.), (4., 8.), (6., 10.)]
    assert sliding_windows(9., 4., 2.) == [(0., 4.), (2., 6.), (4., 8.), (5., 9.)]  # last one ends at the end
    assert sliding_windows(3., 4., 2.) == [(0., 3.)]
    with pytest.raises(ValueError, match='positive'):
        sliding_windows(10., 0., 1.)


def test_window_indices_and_clips_complete_in_decode_order(tmp_path):
    path = grey_video(tmp_path / 'grey.mp4', 30, fps=10)
    info = probe_video(path)
    assert window_indices(info, 0.5, 1.0) == range(5, 10)
    assert window_indices(info, 2.95, 3.0) == range(29, 30)
    clips = [[3, 3, 4], [20, 25], [4, 5]]
    got = list(iter_clips(path, clips))
    assert [number for number, _ in got] == [0, 2, 1]
    for number, frames in got:
        assert [frame_index(f) for f in frames] == clips[number]


def test_short_video_repeats_frames(tmp_path):
    path = grey_video(tmp_path / 'short.mp4', 5)
    info = probe_video(path)
    (_, frames), = iter_clips(path, [uniform_indices(info.num_frames, 16)])
    assert [frame_index(f) for f in frames] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4]


@pytest.mark.parametrize('content, match', [
    (None, 'No such file'),
    (b'', 'not a readable video'),
    (b'this is a text file, not a video\n' * 20, 'not a readable video'),
    (bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8)), 'not a readable video'),
])
def test_bad_files_raise_video_error(tmp_path, content, match):
    path = tmp_path / 'clip.mp4'
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoError, match=match):
        probe_video(path)


def test_truncated_video_raises_video_error(tmp_path):
    data = open(grey_video(tmp_path / 'full.mp4', 30), 'rb').read()
    path = tmp_path / 'truncated.mp4'
    path.write_bytes(data[:len(data) // 2])  # the index (moov) is at the end: it is lost
    with pytest.raises(VideoError, match='not a readable video'):
        probe_video(path)


@pytest.mark.parametrize('ext, match', [('mp4', 'no video stream'), ('avi', 'no frames')])
def test_zero_frames_raise_video_error(tmp_path, ext, match):
    import av
    path = str(tmp_path / f'empty.{ext}')
    with av.open(path, 'w') as container:
        stream = container.add_stream('mpeg4', rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, 'yuv420p'
        container.start_encoding()
    with pytest.raises(VideoError, match=match):
        probe_video(path)


def test_decoder_running_short_of_the_packets_is_reported(tmp_path):
    path = grey_video(tmp_path / 'grey.mp4', 10)
    with pytest.raises(VideoError, match='only 10 frames decode'):
        list(iter_clips(path, [[2, 12]]))


def test_real_clip_metadata():
    info = probe_video(media('single_face.mp4'))
    assert (info.width, info.height, info.num_frames) == (640, 360, 72)
    assert info.fps == pytest.approx(30.) and info.duration == pytest.approx(2.4)
    # no_face.mp4 lists 98 packets, 3 of which an edit list discards: 95 frames are shown
    assert probe_video(media('no_face.mp4')).num_frames == 95
