"""The error of a bad configuration (its own module: the loader and the typed model both raise it)."""


class ConfigError(ValueError):
    """A configuration problem; the message names the key and what is allowed."""
