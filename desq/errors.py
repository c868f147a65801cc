"""The base of every error desq reports to a user as one line."""


class DesqError(Exception):
    """An error with a message fit for one line on stderr or one JSON error body."""


class LayoutError(ValueError):
    """A name, uid, shard, date or created_at that the layout cannot place."""
