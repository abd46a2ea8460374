"""The README's training demo learns as written: the three commands of its ```bash block reach the printed UAR,
and the same training on frozen (repeated first frame) clips stays near chance.

The generated plaid clips have identically distributed single frames in every class (uniform random phases);
the class is whether the plaid moves (static, or 4 pixels per frame), so only temporal modelling can solve it.
The frame-to-frame comparison has to be learned from scratch (no pretrained stem).
"""
import json
import shlex

from test_readme import bash_commands, readme_blocks

from logoformer_timm import eval as eval_cli
from logoformer_timm import train as train_cli
from logoformer_timm.data import synthetic

CHANCE = 0.5
ENTRY_POINTS = {  # the README's commands, called in-process
    ('python', '-m', 'logoformer_timm.data.synthetic'): synthetic.main,
    ('logoformer-train',): train_cli.main,
    ('logoformer-eval',): eval_cli.main,
}


def demo_commands():
    """The README demo's commands as (entry point, argv), in order."""
    commands = []
    for _, command in bash_commands():
        words = shlex.split(command)
        for prefix, main in ENTRY_POINTS.items():
            if tuple(words[:len(prefix)]) == prefix and ('demo' in words or 'demo_run/last' in words):
                commands.append((main, words[len(prefix):]))
    assert [m for m, _ in commands] == list(ENTRY_POINTS.values()), 'the README demo block has changed'
    return commands


def printed_demo_output():
    """The ```text block after the demo: what logoformer-eval prints."""
    blocks = readme_blocks()
    index = next(i for i, (lang, _, code) in enumerate(blocks) if lang == 'bash' and 'demo_eval' in code)
    lang, _, code = next(b for b in blocks[index + 1:] if b[0] == 'text')
    return code.splitlines()


def _run_demo(folder, monkeypatch, capsys, frozen=False):
    folder.mkdir()
    monkeypatch.chdir(folder)
    for main, argv in demo_commands():
        if main is synthetic.main and frozen:
            argv = argv + ['--frozen']
        capsys.readouterr()
        assert main(argv) == 0, argv
    printed = capsys.readouterr().out.splitlines()
    return json.loads((folder / 'demo_eval' / 'metrics.json').read_text()), printed


def test_readme_demo_learns_motion_and_frozen_frames_stay_at_chance(tmp_path, monkeypatch, capsys):
    moving, printed = _run_demo(tmp_path / 'moving', monkeypatch, capsys)
    assert moving['uar'] > 0.85, moving
    assert [line for line in printed if not line.startswith('metrics written')] == printed_demo_output()
    frozen, _ = _run_demo(tmp_path / 'frozen', monkeypatch, capsys, frozen=True)
    assert frozen['uar'] < CHANCE + 0.2, frozen
