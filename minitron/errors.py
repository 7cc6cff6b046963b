"""The one exception type that the command line turns into a single clear line."""


class MinitronError(Exception):
    """Bad input or an impossible request: the message names the problem and what to do."""
