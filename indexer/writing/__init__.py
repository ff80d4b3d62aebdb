"""Writing an index: the writer of one directory, the sharded writer, and the pipelines that feed them."""
