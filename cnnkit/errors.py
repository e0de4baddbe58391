"""The library's error for a bad argument, worded in parameter names."""

from __future__ import annotations


class ParameterError(ValueError):
    """A bad argument value; the message names the parameters in ``params`` as written.

    A parameter is named alone (``lr must be a positive number``) or with its value
    (``combine=magnitude needs two or more kernels``). A front end shows the names in its own
    words: the command line turns them into ``--lr`` and ``--combine magnitude``
    (:func:`cnnkit.cli.common.flag_words`).
    """

    def __init__(self, message: str, *params: str) -> None:
        super().__init__(message)
        self.params = params
