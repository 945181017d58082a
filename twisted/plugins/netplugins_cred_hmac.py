"""
The C{hmac:KEYFILE} strcred checker (Python Cookbook 11.9 challenge/response).
Scanning this dropin imports only the standard library and C{twisted.cred}.
"""

from __future__ import annotations

from netplugins.cred.hmac import HMACCheckerFactory

theHMACCheckerFactory = HMACCheckerFactory()
