"""Errors the runner turns into a clear message (and a `failed` status) instead of a traceback."""


class ConfigError(ValueError):
    """A config value is wrong: the message names the key, the allowed values and the fix."""


class DataError(ValueError):
    """A data file is missing or malformed: the message names the path (and line) and the fix."""


class ModelNotFoundError(FileNotFoundError):
    """Model weights cannot be found: the message says where they were looked for and how to point at them."""


class DivergedError(RuntimeError):
    """Fine-tuning produced a NaN or exploding loss; the job is recorded as failed and the sweep goes on."""
