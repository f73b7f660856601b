"""User-facing errors: one line, naming the file or field and what was expected."""


class TrimpiError(Exception):
    """An error caused by the user's input or environment, reported as one line by the CLI."""


class DataError(TrimpiError):
    """A dataset file or directory is missing, malformed or incomplete."""


class ConfigError(TrimpiError):
    """A recipe or option has an invalid value."""


class ModelError(TrimpiError):
    """A model or processor cannot be loaded or used."""
