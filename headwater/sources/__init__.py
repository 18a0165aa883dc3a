"""Adapters that feed external depots (`module.external_depot(name, source, event_type)`).

- `RedisStream`: the entries of one or more Redis streams (`XADD`), one source partition per stream.
- `PostgresChanges`: the rows inserted, updated and deleted in PostgreSQL tables, through logical
  decoding (a replication slot with the built-in `pgoutput` plugin and a publication).

Each needs its client library, in the `sources` extra: `pip install 'headwater[sources]'`. They
are imported only when a source is opened. `Source` and `SourceReader` are the interface to
write another one.
"""

from headwater.engine.sources import Source, SourceReader
from headwater.sources.postgres import Change, PostgresChanges
from headwater.sources.redis_stream import RedisStream

__all__ = ["Change", "PostgresChanges", "RedisStream", "Source", "SourceReader"]
