"""The library's exceptions: each message says what went wrong and what to do."""


class DnnKnnError(Exception):
    """Base class; the command line prints these as one line and exits with status 2."""


class ConfigError(DnnKnnError, ValueError):
    """An unknown name, a value of the wrong type or out of range."""


class DataNotFoundError(DnnKnnError, FileNotFoundError):
    """A dataset that is neither on disk nor downloadable."""


class TrainingDiverged(DnnKnnError, FloatingPointError):
    """The loss became NaN or infinite."""


class UnsafeCheckpoint(DnnKnnError, PermissionError):
    """A checkpoint in a folder that another user owns or can write to: never resumed from."""


class PageFailed(DnnKnnError):
    """A book page whose notebook raised: the page, the failing cell's error and its log file."""
    exit_code = 1
