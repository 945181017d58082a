"""
np-ftp: an FTP and FTPS server (RFC 959, 1123, 2228, 2428, 2577, 2640, 3659,
4217) on the shared user store (L{netplugins.homes}).

L{netplugins.ftp.server} holds the control connection, L{netplugins.ftp.data}
the data connections and transfers, L{netplugins.ftp.listing} the directory
formats and L{netplugins.ftp.tls} the FTPS contexts.
"""
