"""Errors raised for bad input. The CLI prints them without a traceback; each message says what to do."""


class CrossviewError(Exception):
    """Base class: a problem with the user's input, files or configuration."""


class DatasetError(CrossviewError):
    """A dataset tree is missing files or holds malformed ones. ``problems`` lists each one."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class ConfigError(CrossviewError):
    """A model or run configuration is inconsistent (wrong input size, unknown name, key mismatch)."""


class UnsafeCheckpointError(ConfigError):
    """A ``.pt`` / ``.pth`` file names a Python global that plain weights never need: unpickling it could run code.
    Raised instead of loading it (unless the caller trusts the file)."""
