"""Where modules run: the in-process cluster and the transport seam between tasks."""

from headwater.cluster.inprocess import InProcessCluster
from headwater.cluster.transport import InProcessTransport
from headwater.engine.transport import Transport

__all__ = ["InProcessCluster", "InProcessTransport", "Transport"]
