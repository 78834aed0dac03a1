"""The one error type of mesh3d.

Every step raises :class:`Mesh3DError` with a message a user can act on; the CLI prints it as one
line and exits with status 1. Anything else escaping a step is a bug.
"""


class Mesh3DError(Exception):
    """A problem with the user's input or options, described for the user."""
