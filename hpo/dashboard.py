"""`hpo dashboard`: optuna-dashboard in a browser, on the storage every other command uses.

Served by the standard library's threaded WSGI server (what `optuna-dashboard` itself uses by
default), so it prints the real URL once the port is bound and stops cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
from pathlib import Path
from typing import Optional
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from hpo.errors import UserError
from hpo.storage import Storage


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True     # a browser's open request must not hold up Ctrl-C
    block_on_close = False


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass  # the browser polls every few seconds: a line per request would bury the URL


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


WILDCARDS = ("0.0.0.0", "::", "")


def browser_url(host: str, port: int) -> str:
    """What to type into a browser; a wildcard bind is reached on this machine through loopback."""
    if host in WILDCARDS:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/dashboard"


def serve(*, storage: Storage, host: str, port: int, artifacts: Optional[Path] = None, out=sys.stdout,
          err=sys.stderr) -> int:
    """Serve optuna-dashboard on `storage` until Ctrl-C or SIGTERM; 0 when stopped that way."""
    import optuna_dashboard  # noqa: PLC0415 - heavy; only this command needs it

    from optuna.artifacts import FileSystemArtifactStore  # noqa: PLC0415

    # a folder that is not there means no study wrote artifacts yet; a command that reads creates nothing
    store = FileSystemArtifactStore(str(artifacts)) if artifacts and artifacts.is_dir() else None
    app = optuna_dashboard.wsgi(storage.open_existing(), artifact_store=store)
    server_class = _Server6 if ":" in host else _Server
    try:
        httpd = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}; "
                        "pick another --port or --host") from None
    bound_port = httpd.server_address[1]

    def stop(signum, frame):
        raise KeyboardInterrupt

    # installed before the URL is printed: whoever reads it may stop the server at once
    previous = signal.signal(signal.SIGTERM, stop)  # `docker stop` and process managers send SIGTERM
    try:
        if not is_loopback(host):
            print(f"warning: the dashboard listens on {host}:{bound_port} with no login: anyone who can reach "
                  f"this machine can read, edit and delete the studies in {storage.masked}", file=err)
        print(f"optuna-dashboard {optuna_dashboard.__version__} on {storage.masked}"
              + (f", artifacts in {artifacts}" if store else ""), file=out)
        print(f"open {browser_url(host, bound_port)}  (Ctrl-C stops it)", file=out, flush=True)
        if host in WILDCARDS:
            print(f"from other machines: {browser_url(socket.gethostname(), bound_port)}", file=out, flush=True)
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("dashboard stopped", file=out, flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        httpd.server_close()
    return 0
