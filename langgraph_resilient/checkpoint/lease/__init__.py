"""The single-writer thread lease: ``Lease`` (what a holder sees), ``ThreadLock`` (taking,
renewing, releasing it), the in-process holders, the Redis scripts, and ``ExclusiveGraph``
(the lease around every call of a graph)."""
