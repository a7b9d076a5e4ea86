"""User-facing errors.

Anything a user can cause (a wrong path, a broken dataset, an unknown preset) raises
:class:`RsccError` with a message that names the file, the field and what was expected.
The CLI prints such errors as one line and exits with status 2, without a traceback.
"""


class RsccError(Exception):
    """An error caused by the user's input, with a message meant to be read by them."""


class DatasetError(RsccError):
    """A dataset that does not follow the LEVIR-CC layout or schema."""


class ConfigError(RsccError):
    """A preset, option or configuration value that does not exist or does not fit."""


class CheckpointError(RsccError):
    """A checkpoint or run directory that cannot be loaded."""
