"""The app's own exceptions: what the CLI turns into one line and an exit code."""


class UserError(Exception):
    """A mistake the user can fix (bad argument, unreadable input); the message names it. Exit code 2."""


class PipelineError(RuntimeError):
    """A pipeline stage failed; the message names the stage and ``__cause__`` is the original exception.

    When the cause is a ``UserError`` the CLI prints the cause alone (exit 2), else this (exit 1).
    """

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{stage} stage failed: {type(error).__name__}: {error}")
