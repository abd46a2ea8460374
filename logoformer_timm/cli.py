"""The one wrapper of the project's commands: a user error prints ONE ``error: ...`` line on stderr and exits 2.

    def main(argv=None) -> int:
        args = build_parser().parse_args(argv)
        return run_cli(lambda: _run(args))

A user error is bad input or an environment the command cannot work in (a missing or unreadable file, a
checkpoint of another class count, a tampered weight file, a locked output folder, no disk space, a diverging
loss). It is reported without a traceback; anything else is a bug and keeps its traceback.
"""
import sys
from typing import Callable, Optional, Tuple, Type

__all__ = ['UsageError', 'user_errors', 'error_line', 'run_cli']


class UsageError(ValueError):
    """A command-line argument with a value the command cannot use; the message names the flag and the fix."""


def user_errors() -> Tuple[Type[BaseException], ...]:
    """The exception types every command reports as one line (imported here, so no module imports the CLI's)."""
    from .data import AnnotationError, ClipLoadError
    from .hub import HubFolderError, MetricsFileError
    from .manifest import WeightsChecksumError, WeightsFileError
    from .models import PretrainedWeightsError, PretrainedWeightsUnavailableError
    from .train import OutputLockedError
    from .video import VideoError
    return (
        AnnotationError, ClipLoadError, HubFolderError, MetricsFileError, WeightsChecksumError, WeightsFileError,
        PretrainedWeightsError, PretrainedWeightsUnavailableError, OutputLockedError, VideoError, ValueError, OSError,
        FloatingPointError)


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


def run_cli(main: Callable[[], Optional[int]]) -> int:
    """Run a command body; return its exit code (0 for None), or print ``error: ...`` and return 2 on a user error."""
    try:
        code = main()
    except user_errors() as e:
        print(f'error: {error_line(e)}', file=sys.stderr)
        return 2
    return 0 if code is None else code
