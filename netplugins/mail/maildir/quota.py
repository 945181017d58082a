"""
A storage quota on each user's Maildir (IMAP QUOTA, RFC 9208; SMTP's 452
4.2.2): what the user's messages take, in every folder, against the store's
C{quotaStorage} bytes, or the user's own limit when the user directory sets
one (L{MaildirStore.limitFor}: an C{ldap:} checker's C{quota_attribute},
looked up before each write; 0 there is no limit).

The usage is counted afresh at each check from the folders' C{new/} and
C{cur/} listings: a message's size comes from its name (C{S=}, which this
store and Dovecot write), only a message without one is stat'ed; nothing is
cached that another program could make wrong.  A check runs in the store's
thread pool, with the write it guards.  Two writes checked at the same time
may together go past the limit by one message each, as with Dovecot's
Maildir++ quota.
"""

from __future__ import annotations

import os
from typing import Any

from netplugins.mail.maildir.errors import MaildirError
from netplugins.mail.maildir.names import sizeFromKey, splitName


class OverQuotaError(MaildirError):
    """
    The write would take the user past the storage quota: nothing was
    written.
    """


def _folderUsage(path: str) -> int:
    total = 0
    for sub in ("new", "cur"):
        try:
            entries = os.scandir(os.path.join(path, sub))
        except (FileNotFoundError, NotADirectoryError):
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                size = sizeFromKey(splitName(entry.name)[0])
                if size is None:
                    try:
                        size = entry.stat().st_size
                    except FileNotFoundError:
                        continue  # expunged meanwhile
                total += size
    return total


def blockingUsage(base: str) -> int:
    """
    The bytes the messages of the Maildir at C{base} take, its INBOX and
    every folder (C{.Name} directories) together; 0 when it does not exist.
    Blocking.
    """
    total = _folderUsage(base)
    try:
        entries = os.scandir(base)
    except FileNotFoundError:
        return total
    with entries:
        for entry in entries:
            if entry.name.startswith(".") and entry.name not in (".", ".."):
                if entry.is_dir(follow_symlinks=False):
                    total += _folderUsage(entry.path)
    return total


def blockingCheckStorage(store: Any, user: str, adding: int) -> None:
    """
    Refuse to add C{adding} bytes to C{user}'s Maildir past the user's
    limit, C{store.limitFor(user)} (no quota when it is C{None}).  Blocking.

    @raise OverQuotaError: when it would.
    """
    limit = store.limitFor(user)
    if limit is None:
        return
    used = blockingUsage(store.userPath(user))
    if used + adding > limit:
        raise OverQuotaError(
            f"quota exceeded: {used} + {adding} bytes over {limit} for {user!r}"
        )
