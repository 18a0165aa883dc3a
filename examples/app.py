"""The example modules, for `headwater serve examples/app.py` (what `make run` does), and the
leaderboard's live page at /examples/leaderboard/.

    make run                                   # http://127.0.0.1:8000/ui/, data under ./data
    headwater serve examples/app.py --data /tmp/hw --port 8080

The shop's three services mirror each other; `serve` deploys each after the ones it mirrors.
"""

from examples.bank import bank
from examples.leaderboard import leaderboard
from examples.orders import orders_module
from examples.registration import registration
from examples.shop import accounts, checkout, notifications

__all__ = ["accounts", "bank", "checkout", "leaderboard", "notifications", "orders_module", "registration"]

# Static pages served beside the API and the web UI: URL prefix -> directory (beside this file).
pages = {"/examples/leaderboard": "leaderboard_page"}
