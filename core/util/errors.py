"""The project's own exception for mistakes a user can cause.

Every message is one sentence a user understands: the page shows it with ``st.error``, the CLI prints it on
one line and exits with status 2. Anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (dataset, image, option, run folder), not with the program."""


class Cancelled(Exception):
    """A stop was requested before anything worth saving existed."""
