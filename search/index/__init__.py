"""Opening an index for search: one directory or every shard of a sharded one, behind one Protocol."""
