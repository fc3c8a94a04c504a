"""The one exception type that the command line turns into a one-line message."""


class BrainMRIError(Exception):
    """An error caused by the user's input or environment, not by a bug.

    The CLI prints ``str(err)`` on one line and exits non-zero, so the message must say
    what went wrong and, where possible, what to do instead.
    """
