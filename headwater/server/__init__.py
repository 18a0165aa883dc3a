"""The network face of headwater: an HTTP/JSON API, Prometheus metrics and a web UI.

- `create_app(cluster)`: the ASGI app (Starlette) for the modules deployed on a cluster.
- `ConnectionLimits`: how large a request head may be, and how long its head and body may take.
- `ServerThread`: that app on uvicorn in a background thread (tests, benchmarks, notebooks).
- `serve(app_file, ...)`: what `headwater serve` runs: load modules, deploy, serve until Ctrl-C.
"""

from headwater.server.app import create_app
from headwater.server.auth import Auth, AuthConfigError, Token, load_auth
from headwater.server.protocol import ConnectionLimits
from headwater.server.run import ServerThread, load_modules, serve

__all__ = ["Auth", "AuthConfigError", "ConnectionLimits", "ServerThread", "Token", "create_app", "load_auth",
           "load_modules", "serve"]
