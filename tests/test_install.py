"""What a wheel install (`pip install .`) gets: every command of the repository's scripts is a console command."""
import configparser
import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / 'setup.cfg')
    lines = [line.strip() for line in cfg['options.entry_points']['console_scripts'].splitlines() if line.strip()]
    return dict(tuple(part.strip() for part in line.split('=')) for line in lines)


def test_every_repository_script_has_a_console_command():
    # hub/ and benchmarks/ are not in the wheel: their commands must be
    assert {'logoformer-train', 'logoformer-eval', 'logoformer-predict', 'logoformer-bench',
            'logoformer-hub'} <= set(_console_scripts())


@pytest.mark.parametrize('name, target', sorted(_console_scripts().items()))
def test_console_commands_resolve_and_print_help(name, target, capsys, monkeypatch):
    module, _, attr = target.partition(':')
    entry = getattr(importlib.import_module(module), attr)
    monkeypatch.setattr(sys, 'argv', [name, '--help'])  # what the installed script passes
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == 0
    assert f'usage: {name}' in capsys.readouterr().out
