"""The base of every error desq reports to a user as one line."""


class DesqError(Exception):
    """An error with a message fit for one line on stderr or one JSON error body."""


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines too) as one space."""
    return " ".join(str(text).split())


class ContainerError(DesqError):
    """Base of every container error."""


class CorruptContainer(ContainerError):
    """Not a container, or a damaged one: wrong magic, truncated, bad offsets or checksums.

    Defined here rather than in ``desq.container`` because storage's RangeError is one too (an
    object shorter than a container's offsets say), and storage does not import the container code.
    """


class LayoutError(ValueError):
    """A name, uid, shard, date or created_at that the layout cannot place."""
