"""
The Flask application both WSGI contenders host: C{np-wsgi --app
bench.peers.flask_hello:app} and gunicorn (C{bench.peers.flask_hello:app}).
One route, a short text answer, so the figures measure the hosting.
"""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello() -> str:
    """
    The smallest useful answer.
    """
    return "Hello, World!\n"
