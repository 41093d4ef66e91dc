"""Errors the command-line entries turn into one clear line and a non-zero exit, and the
exit statuses (the rule is :mod:`tinycvae.outcome`'s). Imports nothing: a refusal on the
command line is answered before torch and Lightning are loaded."""

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class TinyCVAEError(Exception):
    """Base for every error that names a bad value and what is allowed."""


class ConfigError(TinyCVAEError, ValueError):
    """A configuration value is invalid; raised before any data is rendered or trained."""


class NonFiniteLossError(TinyCVAEError, FloatingPointError):
    """Training produced a NaN or infinite loss."""


class ConfigWarning(UserWarning):
    """A configuration value is accepted but probably not what the user meant."""


class DiskFullError(OSError):
    """No space left on the device a run writes to (its message names the folder and what
    was kept); the job fails (exit 1), not bad input."""
