"""Errors that the CLI turns into one clear line and exit code 2."""


class UserError(Exception):
    """A problem with the user's input (config, data, weights): fixable without touching code."""


class DataError(UserError):
    """Missing, malformed or unreadable dataset files."""
