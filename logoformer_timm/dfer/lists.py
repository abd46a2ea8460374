"""Annotation lists for DFEW (5 folds) and FERV39K from their official split files.

DFEW: ``<split_dir>/train(single-labeled)/set_<k>.csv`` and ``test(single-labeled)/set_<k>.csv`` with columns
``video_name,label`` (labels 1-7), frame folders ``<frames_dir>/<video_name:05d>/``.
FERV39K: ``<split_dir>/train_All.csv`` and ``test_All.csv`` with lines ``<clip path> <label name>``, frame folders
``<frames_dir>/<clip path>/``. Both give lists with labels 0-6 = Happy, Sad, Neutral, Angry, Surprise, Disgust, Fear
and the frame count of every folder on disk.

    python -m logoformer_timm.dfer.lists dfew --data-root DFEW --split-dir EmoLabel_DataSplit \\
        --frames-dir Clip/clip_224x224_16f --output lists/dfew
    python -m logoformer_timm.dfer.lists ferv39k --data-root FERV39K --split-dir 4_setups/All_scenes \\
        --frames-dir 2_ClipsforFaceCrop --output lists/ferv39k
"""
import argparse
import csv
import os
import sys
from typing import Dict, Iterable, List, Optional, Tuple

from ..models import DFER_LABELS
from .datasets import ClipLoadError, list_frames
from .run_folder import atomic_write

__all__ = ['build_dfew_lists', 'build_ferv39k_lists', 'write_annotation_list']

DFEW_FOLDS = (1, 2, 3, 4, 5)


def write_annotation_list(path: str, entries: Iterable[Tuple[str, int, int]]) -> int:
    """Write ``<frame_dir> <num_frames> <label>`` lines atomically (all or nothing); return the number written."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    count = 0
    with atomic_write(path) as f:
        for rel_dir, num_frames, label in entries:
            f.write(f'{rel_dir} {num_frames} {label}\n')
            count += 1
    return count


def _write_lists(lists: Dict[str, List[Tuple[str, int, int]]]) -> Dict[str, int]:
    """Write lists that were all read first, so a bad split file leaves no partial set of lists behind."""
    return {path: write_annotation_list(path, entries) for path, entries in lists.items()}


def _entry(data_root: str, rel_dir: str, label: int, source: str) -> Tuple[str, int, int]:
    frame_dir = os.path.join(data_root, rel_dir)
    if not os.path.isdir(frame_dir):
        raise FileNotFoundError(f'{source}: frame folder {frame_dir} does not exist; check --data-root / --frames-dir.')
    try:
        num_frames = len(list_frames(frame_dir))
    except ClipLoadError as e:
        raise ValueError(f'{source}: {e}') from e
    if num_frames == 0:
        raise ValueError(f'{source}: frame folder {frame_dir} holds no images.')
    return rel_dir.replace(os.sep, '/'), num_frames, label


def _dfew_split(csv_path: str, data_root: str, frames_dir: str) -> List[Tuple[str, int, int]]:
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f'DFEW split file not found: {csv_path}')
    entries = []
    with open(csv_path, newline='', encoding='utf-8-sig') as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {'video_name', 'label'} <= {n.strip() for n in reader.fieldnames}:
            raise ValueError(f'{csv_path}: expected the header "video_name,label", got {reader.fieldnames}.')
        for line_no, row in enumerate(reader, 2):
            row = {k.strip(): (v or '').strip() for k, v in row.items()}
            source = f'{csv_path}:{line_no}'
            if not row['video_name'].isdigit() or not row['label'].isdigit() or not 1 <= int(row['label']) <= 7:
                raise ValueError(f'{source}: expected "<video number>,<label 1-7>", got {row}.')
            rel_dir = os.path.join(frames_dir, f'{int(row["video_name"]):05d}')
            entries.append(_entry(data_root, rel_dir, int(row['label']) - 1, source))
    return entries


def build_dfew_lists(
        data_root: str,
        split_dir: str,
        frames_dir: str,
        output: str,
        folds: Iterable[int] = DFEW_FOLDS,
) -> Dict[str, int]:
    """Write ``output/set_<k>/{train,test}.txt`` for every DFEW fold; paths relative to ``data_root``."""
    lists = {}
    for fold in folds:
        for split in ('train', 'test'):
            csv_path = os.path.join(data_root, split_dir, f'{split}(single-labeled)', f'set_{fold}.csv')
            lists[os.path.join(output, f'set_{fold}', f'{split}.txt')] = _dfew_split(csv_path, data_root, frames_dir)
    return _write_lists(lists)


def build_ferv39k_lists(data_root: str, split_dir: str, frames_dir: str, output: str) -> Dict[str, int]:
    """Write ``output/{train,test}.txt`` from FERV39K's ``train_All.csv`` / ``test_All.csv``."""
    label_ids = {name.lower(): i for i, name in enumerate(DFER_LABELS)}
    lists = {}
    for split in ('train', 'test'):
        csv_path = os.path.join(data_root, split_dir, f'{split}_All.csv')
        if not os.path.isfile(csv_path):
            raise FileNotFoundError(f'FERV39K split file not found: {csv_path}')
        entries = []
        with open(csv_path, encoding='utf-8-sig') as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                fields = line.strip().replace(',', ' ').rsplit(maxsplit=1)
                source = f'{csv_path}:{line_no}'
                if len(fields) != 2 or fields[1].lower() not in label_ids:
                    raise ValueError(f'{source}: expected "<clip path> <label name in {DFER_LABELS}>", got {line.strip()!r}.')
                entries.append(_entry(data_root, os.path.join(frames_dir, fields[0]), label_ids[fields[1].lower()], source))
        lists[os.path.join(output, f'{split}.txt')] = entries
    return _write_lists(lists)


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: build the DFEW or FERV39K annotation lists."""
    from ..cli import ArgumentParser, run_cli
    parser = ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('dataset', choices=('dfew', 'ferv39k'))
    parser.add_argument('--data-root', required=True, help='dataset root; list paths are relative to it')
    parser.add_argument('--split-dir', required=True, help='folder of the official split files, relative to --data-root')
    parser.add_argument('--frames-dir', required=True, help='folder of the clip frame folders, relative to --data-root')
    parser.add_argument('--output', required=True, help='folder for the lists')
    args = parser.parse_args(argv)
    build = build_dfew_lists if args.dataset == 'dfew' else build_ferv39k_lists

    def run() -> None:
        for path, count in build(args.data_root, args.split_dir, args.frames_dir, args.output).items():
            print(f'{path}: {count} clips')
    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
