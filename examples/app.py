"""The three example modules, for `headwater serve examples/app.py` (what `make run` does).

    make run                                   # http://127.0.0.1:8000/ui/, data under ./data
    headwater serve examples/app.py --data /tmp/hw --port 8080
"""

from examples.bank import bank
from examples.orders import orders_module
from examples.registration import registration

__all__ = ["bank", "orders_module", "registration"]
