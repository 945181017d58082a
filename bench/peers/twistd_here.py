"""
C{twistd} with the repository root on C{sys.path}, so a contender can host
an application from C{bench/peers} (C{np-wsgi --app
bench.peers.flask_hello:app}) exactly as a user's twistd hosts theirs:

    python -m bench.peers.twistd_here --nodaemon --pidfile= np-wsgi ...
"""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.scripts.twistd import run

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
    sys.argv[0] = "twistd"
    run()
