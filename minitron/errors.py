"""The one exception type that the command line turns into a single clear line."""


class MinitronError(Exception):
    """Bad input or an impossible request: the message names the problem and what to do."""


class Interrupted(MinitronError):
    """A run stopped by a signal (SIGINT, SIGTERM) after saving what it needs to resume; the command exits with
    128 + the signal's number, as a shell reports a process that a signal stopped."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
