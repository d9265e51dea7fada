"""Images at one size for models to read: from a memory-mapped cache or decoded on the fly (training, embedding,
evaluation all use it, so it lives in the data layer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from crossview.data.cache import ImageCache, build_cache, cache_key, load_resized


class ImageSource:
    """Images at one size, from a memory-mapped cache or decoded on the fly."""

    def __init__(self, paths: list[str], size: tuple[int, int], cache_dir: Path | list[Path] | None):
        """``cache_dir`` may be a list: a complete cache in any of them is reused (e.g. the one
        ``crossview prepare --cache`` wrote beside the data); otherwise it is built in the last one."""
        self.paths, self.size = paths, tuple(size)
        self.cache = None
        if cache_dir:
            dirs = [Path(d) for d in (cache_dir if isinstance(cache_dir, list | tuple) else [cache_dir])]
            found = next((d for d in dirs[:-1] if (d / f"cache-{cache_key(paths, self.size)}.u8").exists()), None)
            self.cache = ImageCache(build_cache(paths, self.size, found or dirs[-1]))

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, i: int) -> torch.Tensor:
        arr = self.cache[i] if self.cache is not None else load_resized(self.paths[i], self.size)
        return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).contiguous()
