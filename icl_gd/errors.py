"""Errors the runner turns into a clear message (and a `failed` status) instead of a traceback."""

EXIT_CONFIG = 2  # the exit code of a configuration, data or model error: a clear message, no traceback
EXIT_FAILED = 1  # the exit code of any other failure of a job


class ConfigError(ValueError):
    """A config value is wrong: the message names the key, the allowed values and the fix."""


class DataError(ValueError):
    """A data file is missing or malformed: the message names the path (and line) and the fix."""


class ModelNotFoundError(FileNotFoundError):
    """Model weights cannot be found: the message says where they were looked for and how to point at them."""


class DivergedError(RuntimeError):
    """Fine-tuning produced a NaN or exploding loss; the job is recorded as failed and the sweep goes on."""
