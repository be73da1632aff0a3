"""The one exception the model layer raises for a checkpoint it cannot use."""


class CheckpointError(ValueError):
    """A checkpoint directory is missing, unreadable or inconsistent.

    The message always names the file and, where there is one, the key at fault, so that a user can
    find the problem without reading a traceback.
    """
