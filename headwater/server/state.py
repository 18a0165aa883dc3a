"""What every endpoint of one server shares: the cluster, tokens, metrics and limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.requests import HTTPConnection

from headwater.client.cluster import Cluster
from headwater.server.auth import Auth, Token
from headwater.server.metrics import Metrics

__all__ = ["ServerState", "authorize", "state_of"]


@dataclass
class ServerState:
    cluster: Cluster
    auth: Auth
    metrics: Metrics
    max_body_bytes: int
    tail_sockets: int = 0  # depot tail sockets open (server/tail.py), bounded by TAIL_SOCKETS_MAX
    _decoders: dict[tuple[str, str, int], msgspec.json.Decoder] = field(default_factory=dict)

    def event_decoder(self, module: str, depot: str, event_type: Any) -> msgspec.json.Decoder:
        """A JSON decoder into the depot's event type (cached; a module update brings a new type)."""
        key = (module, depot, id(event_type))
        decoder = self._decoders.get(key)
        if decoder is None:
            decoder = self._decoders[key] = msgspec.json.Decoder(event_type)
        return decoder


def state_of(request: HTTPConnection) -> ServerState:
    return request.app.state.headwater


def authorize(request: Any, action: str, module: str | None = None) -> Token | None:
    """The caller's token if it may do `action` on `module`; raises 401/403 otherwise."""
    return state_of(request).auth.authorize(request, action, module)
