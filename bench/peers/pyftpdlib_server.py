"""
pyftpdlib, the peer of C{np-ftp}: one user with a password held in memory
(its C{DummyAuthorizer}, as C{np-ftp --auth memory:...}) and full rights in
one directory, on 127.0.0.1 only, in the clear or with its
C{TLS_FTPHandler} (control and data connections both required to be
protected, the certificate every TLS contender uses):

    VENV/bin/python -m bench.peers.pyftpdlib_server --port P --root DIR \\
        --user U --password W [--cert cert.pem --key key.pem]

It runs in its own virtualenv (C{bench/out/venvs/pyftpdlib}, made by
C{python -m bench.prepare venv pyftpdlib}); pyftpdlib's defaults otherwise
(sendfile for plain downloads, its INFO log of logins and transfers).
"""

from __future__ import annotations

import argparse
import os

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    options = parser.parse_args()
    os.makedirs(options.root, exist_ok=True)
    authorizer = DummyAuthorizer()
    authorizer.add_user(options.user, options.password, options.root, perm="elradfmwMT")
    handler: type[FTPHandler] = FTPHandler
    if options.cert:
        handler = TLS_FTPHandler
        handler.certfile = options.cert
        handler.keyfile = options.key
        handler.tls_control_required = True
        handler.tls_data_required = True
    handler.authorizer = authorizer
    server = FTPServer(("127.0.0.1", options.port), handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
