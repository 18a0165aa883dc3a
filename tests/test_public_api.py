"""The public API is the documented names, re-exported from `headwater` with a sorted __all__."""

import headwater as hw

CONTRACT = [
    "ALL", "Ack", "AckTimeout", "AppendResult", "BackupError", "BackupInfo", "Cluster", "Context", "DefinitionError", "FIRST", "HandlerError",
    "HeadwaterError", "InProcessCluster", "LAST", "LocalCluster", "List", "MAP_KEYS", "MAP_VALS", "Map", "Module", "NotFound",
    "PathError", "PermissionDenied", "QueryContext", "REMOVE", "RayCluster", "ReadOnlyError", "Record", "Retry", "SIZE",
    "SchemaError", "Set", "Unavailable", "WrongPartitionError", "apply", "connect", "filter", "must", "nth",
    "range", "restore", "set_val", "view",
]


def test_every_contract_name_is_exported():
    missing = [name for name in CONTRACT if not hasattr(hw, name)]
    assert not missing
    assert set(CONTRACT) <= set(hw.__all__)


def test_all_is_sorted_and_complete():
    assert hw.__all__ == sorted(hw.__all__)
    assert all(hasattr(hw, name) for name in hw.__all__)


def test_every_error_has_one_root():
    for name in hw.__all__:
        value = getattr(hw, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, hw.HeadwaterError), name


def test_every_cluster_kind_is_a_cluster(tmp_path):
    with hw.InProcessCluster() as cluster:
        assert isinstance(cluster, hw.Cluster)
    assert issubclass(hw.LocalCluster, hw.InProcessCluster)  # and so a Cluster too (no workers started here)
    assert issubclass(hw.RayCluster, hw.LocalCluster)
