"""The packing pipeline: leases, pack_shard, the nightly run, recovery."""
