"""moto's S3 server, with its writes made atomic the way S3's are.

moto 5.2.1 answers a create-only put (``If-None-Match: *``) by checking that the key is
absent and then writing it, without a lock, in a threaded server: two such puts of one key
at the same moment can both succeed, which real S3, GCS and Azure never allow (and Catena's
lock generations rely on). This runs the same application as ``moto_server`` with the
requests that change one key (PUT, POST, DELETE of the same path) handled one at a time,
as S3 makes each key's writes atomic; other keys, reads and the parts of a multipart upload
(which change nothing visible) stay concurrent, so throughput is moto's own. Same
arguments as ``moto_server``: ``-H HOST -p PORT``.
"""

import argparse
import os
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


class OneWritePerKey:
    """WSGI middleware: the writes of one key run under that key's lock, start to finish."""

    def __init__(self, app):
        self.app = app
        self.locks = {}
        self.locks_lock = threading.Lock()

    def lock_for(self, environ):
        if environ.get("REQUEST_METHOD") in ("GET", "HEAD", "OPTIONS"):
            return None
        if "partNumber=" in environ.get("QUERY_STRING", ""):
            return None
        key = (environ.get("HTTP_HOST", ""), environ.get("PATH_INFO", ""))
        with self.locks_lock:
            return self.locks.setdefault(key, threading.Lock())

    def __call__(self, environ, start_response):
        lock = self.lock_for(environ)
        if lock is None:
            return self.app(environ, start_response)
        with lock:
            # The whole response is produced under the lock: moto writes while it answers.
            return list(self.app(environ, start_response))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, OneWritePerKey(app), threaded=True)


if __name__ == "__main__":
    main()
