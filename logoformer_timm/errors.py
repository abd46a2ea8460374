"""The project's user errors: the floor every module may import (it imports nothing of the package).

A user error is bad input or an environment a command cannot work in; every command reports it as one
``error: ...`` line (``cli.run_cli``). An error type that is not a ``ValueError`` or ``OSError`` says it is one by
deriving from ``UserError`` too.
"""

__all__ = ['UserError', 'UsageError']


class UserError(Exception):
    """Marks an error type as the user's to fix: commands print its message as one line, without a traceback."""


class UsageError(UserError, ValueError):
    """A command-line argument with a value the command cannot use; the message names the flag and the fix."""
