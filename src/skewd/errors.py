"""skewd's exceptions: one root, subclasses by what the user must fix."""


class SkewdError(Exception):
    """Root of every error skewd raises on purpose."""


class UsageError(SkewdError):
    """A bad argument or value given on the command line or to the API."""


class ConfigError(SkewdError):
    """A mistake in a configuration file."""


class InputFileError(SkewdError):
    """A file skewd reads (span log, page, trace, keys) is unreadable or malformed."""


class HostError(SkewdError):
    """Something this host lacks or refuses: a device, a permission, a CPU feature."""


class PeerError(SkewdError):
    """A peer did not answer or answered wrongly."""
