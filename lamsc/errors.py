"""The one error type a user can cause and fix; the command line prints it as a single line."""


class UserError(Exception):
    """A problem the user can fix (missing file, wrong checkpoint, bad input).

    The message names the problem and the fix in one line; ``lamsc`` prints it without a traceback
    and exits non-zero.
    """
