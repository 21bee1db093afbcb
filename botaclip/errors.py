"""The one exception type users see.

Library code raises :class:`BotaclipError` for bad input it can explain (what is wrong, with which file or
value, what to do). The CLI prints its message as one line and exits non-zero, without a traceback.
"""


class BotaclipError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2

    def __str__(self) -> str:
        # One line, always: messages may embed values that contain newlines.
        return " ".join(super().__str__().split())
