"""Scale-out: the torchrun job this process is in (dist), sweep shards, and collecting shards' rows."""
