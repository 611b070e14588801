"""Exceptions that mean "the user can fix this": printed as one line, exit code 2."""


class UserError(Exception):
    """A mistake the user can fix (bad argument, unreadable input); the message names it."""
