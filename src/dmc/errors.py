"""Errors that the CLI turns into one clear line and exit code 2."""


class UserError(Exception):
    """A problem with the user's input (config, data, weights): fixable without touching code."""


class DataError(UserError):
    """Missing, malformed or unreadable dataset files."""


def at_least_one(**flags: int) -> None:
    """Counts given on the command line are >= 1 (one line, exit 2, like a config value)."""
    for name, value in flags.items():
        if value < 1:
            raise UserError(f"bad value for --{name}: {value}; must be >= 1")
