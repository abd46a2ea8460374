"""The README and the docs/ pages run as written: every ```python block and every cheap command of the ```bash
blocks is executed.

Each Python block runs on its own in a fresh interpreter, in an empty folder, offline, unchanged. Files a block
names as the user's own (``my_model.safetensors``, ``clip.mp4``, ``former_dfer_dfew_fold1.pth``, ...) are made
there first by ``FIXTURES`` / ``RUN_BLOCKS``; a block that needs what a test cannot make (your detector, your
data) is skipped with the reason (``SKIP_PYTHON``). Every ```bash command is either run (``RUN``) or skipped for a
stated reason (``SKIP``): a command in neither table fails the test, so a new command on any page has to be
classified here and cannot drift unseen. ```text blocks are output; those of the commands in ``RUN_OUTPUT`` are
compared with what the command prints. Every relative link of these pages points to a file of the repository.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
PAGES = [README] + sorted((REPO / 'docs').glob('*.md'))  # the README and every docs/ page

# bash commands, by their leading words: run them (cheap, offline) ...
RUN = (
    'python -m logoformer_timm.bench.summary',
    'logoformer-bench --help',
    'logoformer-hub --help',
    'python -m logoformer_timm.bench.gpu plan',
)
# ... or say why not
SKIP = {
    'pip install': 'installs packages (CI runs the README install itself: .ci/run)',
    'python -m pytest': 'this test suite itself',
    'python tests/fetch_media.py': 'downloads from PyPI (.ci/run runs it)',
    'python -m venv .venv': 'makes the virtual environment of the install (.ci/run makes its own)',
    'source .venv/bin/activate': 'activates that environment (.ci/run does)',
    'python -m venv': 'makes a virtual environment and installs olah from PyPI (optional, .ci/run does it)',
    '.cache/olah-venv/bin/pip': 'installs olah from PyPI (.ci/run does it)',
    'python benchmarks/flops.py': 'benchmarks take minutes (committed results: benchmarks/results/)',
    'bash benchmarks/gpu.sh --dry-run': 'tests/test_benchmark_gpu.py runs it as written (30 s)',
    'bash benchmarks/gpu.sh': 'needs a CUDA GPU (benchmarks/results/gpu/README.md says how to run it and read its folder)',
    'logoformer-hub export': 'needs a trained checkpoint (tests/test_hub.py runs export, verify and push)',
    'logoformer-hub verify': 'needs an exported folder and its checkpoint (tests/test_hub.py)',
    'logoformer-hub push': 'needs an exported folder, its checkpoint and a Hub token (tests/test_hub.py)',
    'logoformer-predict clip.mp4': "needs your video and checkpoint (tests/test_predict.py runs the CLI)",
    'python -m logoformer_timm.video.export': 'needs a checkpoint (tests/test_export.py runs it)',
    'python -m logoformer_timm.dfer.lists': 'needs the DFEW / FERV39K downloads',
    'python -m logoformer_timm.dfer.synthetic': 'the training demo (tests/test_train_learning.py runs it as written)',
    'logoformer-train': 'training on DFEW / FERV39K (tests/test_train.py), or the demo (tests/test_train_learning.py)',
    'logoformer-eval': 'needs a trained checkpoint and data (tests/test_train.py; the demo: tests/test_train_learning.py)',
    'torchrun': 'several processes on DFEW (tests/test_train.py runs torchrun)',
}


def _save_weights(path: Path, name: str, **kwargs) -> None:
    import timm
    from safetensors.torch import save_file

    import logoformer_timm  # noqa: F401
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(timm.create_model(name, **kwargs).state_dict(), str(path))


def _video(path: Path) -> None:
    from video_helpers import media
    shutil.copy(media('single_face.mp4'), path)


def _former_dfer_file(folder: Path) -> None:
    """An official Former-DFER checkpoint as the user downloads it (rebuilt from tests/data's recording)."""
    from official_files import write_former_dfer_file
    write_former_dfer_file(folder / 'former_dfer_dfew_fold1.pth')


def _zoo_files(folder: Path) -> None:
    """The official Former-DFER file, a DFEW-like list of clips and a face video."""
    from logoformer_timm.dfer import synthetic
    _former_dfer_file(folder)
    synthetic.main(['--output', str(folder / 'DFEW'), '--size', '32', '--frames', '6', '8', '--classes',
                    'static,moving', '--train-clips', '2', '--test-clips', '2'])
    (folder / 'lists' / 'dfew' / 'set_1').mkdir(parents=True)
    shutil.copy(folder / 'DFEW' / 'test.txt', folder / 'lists' / 'dfew' / 'set_1' / 'test.txt')
    _video(folder / 'clip.mp4')


def _clone_root(folder: Path) -> None:
    """The block runs from the root of a clone: its tests/ folder is there."""
    (folder / 'tests').symlink_to(REPO / 'tests', target_is_directory=True)


# ```bash blocks that run whole, command after command in one folder, once a fixture made the files they name
RUN_BLOCKS: Dict[str, Callable[[Path], None]] = {'--checkpoint former_dfer_dfew_fold1.pth': _zoo_files,
                                                 'python tests/official_files.py': _clone_root}

# ```text blocks that show a command's output ("$ command" on the first line): run, and compare the output exactly
RUN_OUTPUT = ('logoformer-predict single_face.mp4', 'python -c ')
MODULES = {'logoformer-predict': 'logoformer_timm.video.predict'}  # run as python -m, installed or not
CONSOLE_MODULES = {'logoformer-eval': 'logoformer_timm.dfer.evaluate', 'logoformer-train': 'logoformer_timm.dfer.train',
                   'logoformer-hub': 'logoformer_timm.weights.hub', 'logoformer-bench': 'logoformer_timm.bench'}

# Python blocks that name the user's own files: the files are made in the block's folder first
FIXTURES: Dict[str, Callable[[Path], None]] = {
    "checkpoint='my_model.safetensors'": lambda d: (_save_weights(d / 'my_model.safetensors', 'logoformer_base'),
                                                    _video(d / 'clip.mp4')),
    "file='former_dfer_dfew_fold1.pth'": lambda d: _former_dfer_file(d),
}
# Python blocks that cannot run on their own, by a line they contain
SKIP_PYTHON = {
    "clip = load_clip('clip.mp4', detector=my_detector)":
        'needs your own detector, boxes and crops, and continues the block before it (tests/test_predict.py)',
    "ClipFolderDataset('my_train.txt', 'my_data'":
        'needs your own data: trains logoformer_small at 112x112 for 10 epochs (tests/test_train*.py do the same)',
    "landmark_file='mobilefacenet_model_best.pth.tar'":
        "needs the authors' two S2D files, 95 M weights (tests/test_s2d.py loads both on every route, at small width)",
    "timm.create_model('hf-hub:ORG/NAME', pretrained=True)":
        'needs your own checkpoints and Hub repo (tests/test_loading.py and tests/test_hub.py load each route)',
}


def _page_blocks(page: Path) -> List[Tuple[str, str, str]]:
    """(language, 'page:line', code) of every fenced block of one page."""
    blocks, lang, start, lines = [], None, 0, []
    name = page.relative_to(REPO).as_posix()
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if lang is None and line.startswith('```'):
            lang, start, lines = line[3:].strip(), number, []
        elif lang is not None and line.startswith('```'):
            blocks.append((lang, f'{name}:{start}', '\n'.join(lines)))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def readme_blocks() -> List[Tuple[str, str, str]]:
    """(language, 'page:line', code) of every fenced block of the README and the docs/ pages, page by page."""
    return [block for page in PAGES for block in _page_blocks(page)]


def _block_commands(code: str) -> List[str]:
    """The commands of a ```bash block, continuation lines joined and comments removed."""
    commands = []
    for text in re.sub(r'\\\n\s*', ' ', code).splitlines():
        words = shlex.split(text, comments=True)
        if words:
            commands.append(shlex.join(words))
    return commands


def _run_block_fixture(code: str):
    return next((make for marker, make in RUN_BLOCKS.items() if marker in code), None)


def bash_commands() -> List[Tuple[str, str]]:
    """('page:line', command) of every ```bash command outside the ``RUN_BLOCKS`` blocks."""
    return [(start, command) for lang, start, code in readme_blocks()
            if lang == 'bash' and _run_block_fixture(code) is None for command in _block_commands(code)]


def _run_blocks():
    return [pytest.param(code, id=start) for lang, start, code in readme_blocks()
            if lang == 'bash' and _run_block_fixture(code) is not None]


def _env() -> Dict[str, str]:
    path = os.environ.get('PYTHONPATH')
    return dict(os.environ, HF_HUB_OFFLINE='1', PYTHONPATH=os.pathsep.join([str(REPO)] + ([path] if path else [])))


def _python_blocks():
    return [pytest.param(code, id=start) for lang, start, code in readme_blocks() if lang == 'python']


def _classified(command: str) -> Tuple[str, str]:
    for prefix in RUN:
        if command.startswith(prefix):
            return 'run', ''
    for prefix, reason in SKIP.items():
        if command.startswith(prefix):
            return 'skip', reason
    return 'unknown', ''


def test_the_readme_has_blocks_of_each_kind():
    kinds = {lang for lang, _, _ in readme_blocks()}
    assert {'python', 'bash'} <= kinds, kinds
    assert any(_classified(c)[0] == 'run' for _, c in bash_commands())
    pages = {where.split(':')[0] for _, where, _ in readme_blocks()}
    assert {'README.md', 'docs/zoo.md', 'docs/training.md', 'docs/prediction.md', 'docs/weights.md'} <= pages, pages


def test_the_readme_links_every_docs_page():
    text = README.read_text()
    assert [p.name for p in PAGES[1:] if f'](docs/{p.name})' not in text] == []
    assert len(README.read_text().splitlines()) < 250


def test_the_readme_names_every_extra_and_what_video_adds():
    import configparser
    config = configparser.ConfigParser()
    config.read(REPO / 'setup.cfg')
    extras = config['options.extras_require']
    text = ' '.join(README.read_text().split())
    assert [name for name in extras if f'`{name}`' not in text] == []
    assert re.search(r'^av\b', extras['video'], re.M)  # PyAV
    assert 'The `video` extra adds what `logoformer-predict` and video files in annotation lists need (PyAV' in text

def _links(page: Path) -> List[str]:
    return re.findall(r'\]\(([^)\s]+)\)', page.read_text())


@pytest.mark.parametrize('page', PAGES + [REPO / 'benchmarks' / 'results' / 'README.md',
                                          REPO / 'benchmarks' / 'results' / 'gpu' / 'README.md'],
                         ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_into_the_repository(page):
    """A link is a web address (papers, PyPI, upstream code) or a file of this repository, never a path outside it."""
    for target in _links(page):
        if re.match(r'https?://', target):
            continue
        path = (page.parent / target.split('#')[0]).resolve()
        assert path.is_relative_to(REPO) and path.exists(), f'{page.name}: {target}'


@pytest.mark.parametrize('code', _python_blocks())
def test_python_block_runs_as_written(code, tmp_path):
    for marker, reason in SKIP_PYTHON.items():
        if marker in code:
            pytest.skip(reason)
    for marker, make in FIXTURES.items():
        if marker in code:
            make(tmp_path)
    proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f'block failed:\n{code}\n--- stderr:\n{proc.stderr[-3000:]}'


@pytest.mark.parametrize('line, command', bash_commands(), ids=lambda v: str(v)[:60])
def test_bash_command_is_run_or_skipped_for_a_reason(line, command, tmp_path):
    kind, reason = _classified(command)
    assert kind != 'unknown', f'{line}: add {command!r} to RUN or SKIP in tests/test_readme.py'
    if kind == 'skip':
        pytest.skip(reason)
    words = shlex.split(command)
    if words[0] != 'python' and shutil.which(words[0]) is None:
        pytest.skip(f'{words[0]} is not installed in this environment: pip install -e . makes it')
    words = [sys.executable if w == 'python' and i == 0 else w for i, w in enumerate(words)]
    proc = subprocess.run(words, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f'{line}: {command}\n{proc.stderr[-3000:]}'


@pytest.mark.parametrize('code', _run_blocks())
def test_bash_block_runs_as_written(code, tmp_path):
    _run_block_fixture(code)(tmp_path)
    for command in _block_commands(code):
        words = shlex.split(command)
        words = ([sys.executable, *words[1:]] if words[0] == 'python' else
                 [sys.executable, '-m', MODULES[words[0]], *words[1:]] if words[0] in MODULES else
                 [sys.executable, '-m', CONSOLE_MODULES[words[0]], *words[1:]])
        proc = subprocess.run(words, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f'block command failed: {command}\n{proc.stderr[-3000:]}'


def _output_blocks():
    blocks = [(start, code.splitlines()) for lang, start, code in readme_blocks() if lang == 'text']
    return [pytest.param(lines[0][2:], lines[1:], id=start) for start, lines in blocks
            if lines and lines[0].startswith('$ ') and lines[0][2:].startswith(RUN_OUTPUT)]


@pytest.mark.parametrize('command, printed', _output_blocks())
def test_printed_output_is_what_the_command_prints(command, printed, tmp_path):
    words = shlex.split(command)
    if words[0] == 'python':
        argv = [sys.executable, *words[1:]]
    else:
        from video_helpers import media
        shutil.copy(media(words[1]), tmp_path / words[1])
        argv = [sys.executable, '-m', MODULES[words[0]], *words[1:]]
    proc = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == printed


def test_module_commands_are_imported_once():
    # `python -m logoformer_timm.X` warns (runpy) when importing the package already imported X
    mains = sorted('.'.join(p.relative_to(REPO).with_suffix('').parts) for p in (REPO / 'logoformer_timm').rglob('*.py')
                   if "__name__ == '__main__'" in p.read_text())
    assert 'logoformer_timm.dfer.lists' in mains
    check = ('import importlib, sys\n'
             'for name in sys.argv[1:]:\n'
             '    importlib.import_module(name.rpartition(".")[0])\n'
             '    assert name not in sys.modules, name + " is imported by its own package"\n')
    proc = subprocess.run([sys.executable, '-c', check, *mains], env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
