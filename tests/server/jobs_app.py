"""An app file for `headwater serve` in tests: the jobs module (its handler can be made slow)."""

from tests.server.support import jobs_module

jobs = jobs_module()
