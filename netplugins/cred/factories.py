"""
Light C{ICheckerFactory} plugins for strcred: this module imports nothing heavy
(no bcrypt, argon2 or ldap3), so scanning the dropins that expose them stays
cheap; the checker modules load only when C{generateChecker} makes a checker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import ICheckerFactory
from twisted.plugin import IPlugin
from zope.interface import implementer

if TYPE_CHECKING:
    from netplugins.cred.htpasswd import HtpasswdChecker

htpasswdHelp = """
Checks user names and passwords against an Apache-style password file: one
"user:hash" line per user; blank lines and lines starting with "#" are ignored.

Accepted hashes: bcrypt ($2a$, $2b$, $2y$: what "htpasswd -B" writes) and
argon2id ($argon2id$...).  Anything weaker (DES crypt, MD5 $apr1$, SHA-1 {SHA},
plain text, argon2i, argon2d) or malformed, and duplicate users, are refused when
the file is loaded, with the file name and line number.

Add or update a user (prompts twice for the password):
    np-htpasswd FILE USER             bcrypt, cost 12 (--cost N to change)
    np-htpasswd --argon2 FILE USER    argon2id
    np-htpasswd -D FILE USER          delete the user
    np-htpasswd --stdin FILE USER     read the password from standard input
Apache's "htpasswd -B FILE USER" writes compatible lines.

The file is re-read when it changes, and on SIGHUP in netplugins services; a file
that no longer loads is logged and the previous users stay in force.  Passwords
are verified in a thread pool; bcrypt passwords longer than 72 bytes are refused.
"""


@implementer(ICheckerFactory, IPlugin)
class HtpasswdCheckerFactory:
    """
    Make L{netplugins.cred.htpasswd.HtpasswdChecker}s from C{htpasswd:PATH}.
    """

    authType = "htpasswd"
    authHelp = htpasswdHelp
    argStringFormat = "Path to a password file of bcrypt or argon2id hashes."
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring: str) -> HtpasswdChecker:
        """
        Load the password file C{argstring}.

        @raise ValueError: for a missing argument, or a file that cannot be read
            or holds a refused line (strcred reports it as a usage error).
        """
        from netplugins.cred.htpasswd import HtpasswdChecker

        if not argstring.strip():
            raise ValueError("htpasswd needs the path of a password file")
        return HtpasswdChecker(argstring)
