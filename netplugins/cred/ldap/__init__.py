"""
The C{ldap:} credential checker: L{netplugins.cred.ldap.checker} (the checker,
its cache and pool), L{netplugins.cred.ldap.config} (the URL and the INI file),
L{netplugins.cred.ldap.directory} (finding and binding as a user) and
L{netplugins.cred.ldap.connection} (connections and TLS).

Nothing is imported here: the C{ldap:} dropin reads the help text from
C{config} while plugins are scanned, and ldap3 loads only with the checker.
"""
