"""
The C{hmac:} server endpoint: C{hmac:keyfile=PATH:tcp:PORT} runs the Python
Cookbook 11.9 handshake before the wrapped endpoint's service sees a byte.
Scanning this dropin imports only what Twisted's own endpoint dropins import.
"""

from __future__ import annotations

from netplugins.hmacwrap import HMACServerParser

theHMACServerParser = HMACServerParser()
