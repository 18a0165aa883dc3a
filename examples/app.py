"""The example modules, for `headwater serve examples/app.py` (what `make run` does).

    make run                                   # http://127.0.0.1:8000/ui/, data under ./data
    headwater serve examples/app.py --data /tmp/hw --port 8080

The shop's three services mirror each other; `serve` deploys each after the ones it mirrors.
"""

from examples.bank import bank
from examples.orders import orders_module
from examples.registration import registration
from examples.shop import accounts, checkout, notifications

__all__ = ["accounts", "bank", "checkout", "notifications", "orders_module", "registration"]
