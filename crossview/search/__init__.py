"""Search at scale: descriptor shards (resumable, order-preserving), sharded embedding, faiss tile indexes."""

from crossview.search.index import Index, build_index, load_index, save_index
from crossview.search.shards import ShardPlan, load_shards, shard_ranges

__all__ = ["Index", "ShardPlan", "build_index", "load_index", "load_shards", "save_index", "shard_ranges"]
