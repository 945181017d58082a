"""
The C{htpasswd:PATH} strcred checker, for netplugins services and Twisted's own
(C{twistd ftp --auth htpasswd:users}).  Scanning this dropin imports nothing heavy:
bcrypt and argon2 load only when a checker is made.
"""

from __future__ import annotations

from netplugins.cred.factories import HtpasswdCheckerFactory

theHtpasswdCheckerFactory = HtpasswdCheckerFactory()
