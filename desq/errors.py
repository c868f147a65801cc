"""The base of every error desq reports to a user as one line."""


class DesqError(Exception):
    """An error with a message fit for one line on stderr or one JSON error body."""
