"""Exceptions with messages meant for the person running the robot."""


class ReasonVosError(RuntimeError):
    """Base class of the package's errors."""


class ConfigError(ReasonVosError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class BackendUnavailable(ReasonVosError):
    """A backend cannot be built: an optional dependency or a weights file is missing.

    The message must name the missing package (and how to install it) or the missing path.
    """


class BackendFailure(ReasonVosError):
    """A backend failed while running (e.g. out of memory, NaN output); the target reports status ERROR."""
