"""The one wrapper of the project's commands: a user error prints ONE ``error: ...`` line on stderr and exits 2.

    def main(argv=None) -> int:
        args = build_parser().parse_args(argv)
        return run_cli(lambda: _run(args))

A user error is bad input or an environment the command cannot work in (a missing or unreadable file, a
checkpoint of another class count, a tampered weight file, a locked output folder, no disk space, a diverging
loss). It is reported without a traceback; anything else is a bug and keeps its traceback.
"""
import argparse
import logging
import math
import os
import sys
from typing import Any, Callable, Dict, NoReturn, Optional, Sequence, Tuple, Type

from .errors import UsageError, UserError

__all__ = [
    'UsageError', 'ArgumentParser', 'positive_int', 'non_negative_int', 'positive_float', 'check_output_dir',
    'check_output_file', 'log_to_stderr', 'progress', 'user_errors', 'error_line', 'run_cli']


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends '(default: X)' once: not where the help already states its default, nor for None (those helps say
    in words what None means) or an on/off flag."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action.default, bool) or '(default' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one ``error: ...`` line (exit 2), like every other user error, and whose
    help states each non-None default once."""

    def __init__(self, *args: Any, formatter_class: type = HelpFormatter, **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print one line naming the problem and exit 2."""
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be an integer >= 1, got {text}')
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be an integer >= 0, got {text}')
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (not NaN, not inf)."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f'must be a finite number > 0, got {text}')
    return value


def check_output_dir(
        path: str, flag: str, results: Optional[Sequence[str]] = (), overwrite: bool = False, hint: str = '') -> None:
    """Check, before any work is done, that an output folder exists writable or can be created (it is not made),
    and that it holds no earlier results unless ``overwrite`` (the command's ``--overwrite`` flag).

    ``results`` names the entries a command writes there (``None``: any entry, hidden ones such as ``.lock``
    aside); ``hint`` is another way out, e.g. ``'--resume DIR to continue the run, '``.
    """
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f'{flag} {path}: cannot create the folder, {existing} is a file; pass another {flag}.')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f'{flag} {path}: {existing} is not writable; pass another {flag}.')
    if overwrite or existing != os.path.abspath(path):
        return
    found = sorted(name for name in os.listdir(path)
                   if (name in results if results is not None else not name.startswith('.')))
    if found:
        listing = ', '.join(found[:6]) + (f', ... ({len(found)} in all)' if len(found) > 6 else '')
        raise UsageError(
            f'{flag} {path} already holds {listing}; nothing is replaced without --overwrite: pass {hint}a new '
            f'{flag}, or --overwrite to replace what is there.')


def check_output_file(path: str, flag: str, overwrite: bool = False) -> None:
    """Check, before any work is done, that the file ``path`` can be written: its folder exists (it is not made)
    and is writable, and unless ``overwrite`` the file does not exist yet."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f'{flag} {path}: the folder {folder!r} does not exist; create it first.')
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f'{flag} {path}: {folder} is not writable; pass another {flag}.')
    if not overwrite and os.path.exists(path):
        raise UsageError(f'{flag} {path}: {path} already exists; pass a new path (nothing is ever overwritten).')


# The second weights files a zoo model may be built from beside --checkpoint, by pretrained_cfg_overlay key (a model
# class declares the ones it takes in ``extra_weight_files``); each is one flag of every command that loads weights.
EXTRA_WEIGHT_FILES = {
    'landmark_file': "S2D's landmark network, landmark/mobilefacenet_model_best.pth.tar of github.com/MSA-LMC/S2D",
}


def extra_file_flag(key: str) -> str:
    """The flag of an extra weights file's overlay key: ``landmark_file`` is ``--landmark-checkpoint``."""
    return '--' + key.removesuffix('_file').replace('_', '-') + '-checkpoint'


def add_extra_weight_args(parser: argparse.ArgumentParser) -> None:
    """One flag per :data:`EXTRA_WEIGHT_FILES` key (``--landmark-checkpoint FILE``)."""
    for key, what in EXTRA_WEIGHT_FILES.items():
        parser.add_argument(extra_file_flag(key), dest=key, metavar='FILE',
                            help=f'with --checkpoint FILE, the second file the model is built from: {what}')


def extra_weight_files(args: argparse.Namespace) -> Dict[str, str]:
    """The extra weights files given on the command line, ``{overlay key: path}``."""
    return {key: getattr(args, key) for key in EXTRA_WEIGHT_FILES if getattr(args, key, None) is not None}


def log_to_stderr() -> None:
    """Log this package's messages from INFO up to stderr, bare; other libraries' only from WARNING up (timm's
    "Loading pretrained weights ..." is not the command's to say)."""
    logging.basicConfig(level=logging.WARNING, format='%(message)s')
    logging.getLogger(__name__.split('.')[0]).setLevel(logging.INFO)


PROGRESS_EVERY_S = 30.  # a redirected log's progress line, at most this often


def progress(iterable: Any, desc: str, enabled: bool = True, unit: str = 'batches') -> Any:
    """A tqdm progress bar over ``iterable`` when stderr is a terminal; a redirected log gets no carriage returns
    but, every :data:`PROGRESS_EVERY_S` seconds, one line with the count and the rate
    (``eval: 40/120 batches, 2.10 batches/s``)."""
    if enabled and not sys.stderr.isatty():
        return _ProgressLines(iterable, desc, unit)
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, leave=False, disable=not enabled)


class _ProgressLines:
    """The progress of a redirected log: a line now and then, not a bar (``set_postfix`` as tqdm's)."""

    def __init__(self, iterable: Any, desc: str, unit: str) -> None:
        self.iterable, self.desc, self.unit, self.postfix = iterable, desc, unit, ''

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the rate (tqdm's ``set_postfix``)."""
        self.postfix = ''.join(f', {k}={v}' for k, v in values.items())

    def __iter__(self) -> Any:
        import time
        total = f'/{len(self.iterable)}' if hasattr(self.iterable, '__len__') else ''
        start = last = time.monotonic()
        for count, item in enumerate(self.iterable, 1):
            yield item
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S:
                last = now
                rate = count / max(now - start, 1e-9)
                print(f'{self.desc}: {count}{total} {self.unit}, {rate:.2f} {self.unit}/s{self.postfix}',
                      file=sys.stderr, flush=True)


def user_errors() -> Tuple[Type[BaseException], ...]:
    """The exception types every command reports as one line: the project's ``UserError`` types and bad values,
    files, numbers or missing extras."""
    return UserError, ValueError, OSError, FloatingPointError, ImportError


_WORKER = 'in DataLoader worker process'


def error_line(error: BaseException) -> str:
    """One line for a user error; an error re-raised from a DataLoader worker gives the worker's own message."""
    message = str(error).strip() or type(error).__name__
    if _WORKER in message.split('\n', 1)[0]:
        # torch re-raises "Caught X in DataLoader worker process N.\nOriginal Traceback ...\nmodule.X: message"
        last = message.rstrip().rsplit('\n', 1)[-1]
        name = f'{type(error).__name__}: '
        message = last.split(name, 1)[1] if name in last else last
    return ' '.join(line.strip() for line in message.splitlines() if line.strip())


def run_cli(main: Callable[[], Optional[int]], prog: Optional[str] = None, code: int = 2) -> int:
    """Run a command body; return its exit code (0 for None), or print ``error: ...`` and return ``code`` on a user error.

    ``prog`` prefixes the line (``PROG: error: ...``) for commands that document that form (logoformer-predict).
    """
    try:
        result = main()
    except user_errors() as e:
        print(f'{prog + ": " if prog else ""}error: {error_line(e)}', file=sys.stderr)
        return code
    return 0 if result is None else result
