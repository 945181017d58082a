"""Credential checkers shared by every netplugins service and by Twisted's own."""
