"""
The C{ldap:} checker for C{--auth} in netplugins and in Twisted's own plugins.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import ICheckerFactory
from twisted.plugin import IPlugin
from zope.interface import implementer

from netplugins.cred.ldap.config import HELP


@implementer(ICheckerFactory, IPlugin)
class LDAPCheckerFactory:
    """
    Makes L{netplugins.cred.ldap.checker.LDAPChecker}s; ldap3 is imported only then.
    """

    authType = "ldap"
    authHelp = HELP
    argStringFormat = (
        "ldap://HOST[:PORT]/BASEDN[?ATTR[?SCOPE[?FILTER]]], ldaps://..., or config=PATH"
    )
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring: str = "") -> Any:
        from netplugins.cred.ldap.checker import LDAPChecker

        return LDAPChecker.fromArgument(argstring)


ldapCheckerFactory = LDAPCheckerFactory()
