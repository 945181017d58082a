"""
The errors of the Maildir store (L{netplugins.mail.maildir.store}): every one
is a L{MaildirError}, which the protocols answer as a refusal of the command,
not as a server bug.
"""

from __future__ import annotations


class MaildirError(Exception):
    """
    The store could not do what was asked.
    """


class DiskFullError(MaildirError):
    """
    No space (or quota) left: nothing was stored.
    """


class BadNameError(MaildirError, ValueError):
    """
    A user or folder name the store refuses.
    """


class NoSuchFolderError(MaildirError):
    """
    The folder does not exist.
    """


class FolderExistsError(MaildirError):
    """
    The folder to create (or rename to) exists already.
    """


class MailboxLockedError(MaildirError):
    """
    Another session holds the mailbox's lock.
    """


class KeywordLimitError(MaildirError):
    """
    A folder's keywords are all taken (26: one letter each): no new one.
    """
