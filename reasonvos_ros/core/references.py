"""Reference-frame strategies of VISA (Yan et al., ECCV 2024, arXiv:2407.11325: global, local and global-local
reference frames around the target frame; its released code uses a uniform stride anchored on the target).

All functions return positions in a sequence of ``num_frames`` frames; the key (target) frame itself is passed to
the segmenter separately and goes last in its prompt. ``count`` is the number of references (11 in the release,
so that references + target = 12 images).
"""

from __future__ import annotations

import math

from .errors import ConfigError

STRATEGIES = ("global", "local", "global_local", "uniform_stride")


def global_references(num_frames: int, key: int, count: int) -> list[int]:
    """``count`` frames spread uniformly over the whole window (the key frame excluded)."""
    others = [i for i in range(num_frames) if i != key]
    if len(others) <= count:
        return others
    # Centre each pick in its slice of the window so the first and last frames are not over-represented.
    return sorted({others[int((j + 0.5) * len(others) / count)] for j in range(count)})


def local_references(num_frames: int, key: int, count: int) -> list[int]:
    """``count`` consecutive frames around the key frame (the key frame excluded), shifted inside the window."""
    count = min(count, num_frames - 1)
    if count <= 0:
        return []
    start = key - count // 2
    start = max(0, min(start, num_frames - 1 - count))
    picks = [i for i in range(start, start + count + 1) if i != key]
    return picks[:count]


def global_local_references(num_frames: int, key: int, count: int) -> list[int]:
    """Half local (around the key), the rest global; the paper's best setting (46.9 vs 44.3 J&F)."""
    local = local_references(num_frames, key, count // 2)
    remaining = [i for i in range(num_frames) if i != key and i not in local]
    wanted = count - len(local)
    if len(remaining) <= wanted:
        picks = remaining
    else:
        picks = [remaining[int((j + 0.5) * len(remaining) / wanted)] for j in range(wanted)]
    return sorted(set(local) | set(picks))


def uniform_stride_references(num_frames: int, key: int, count: int) -> list[int]:
    """The released code's rule: stride ``ceil(T / count)`` anchored on the key (``key mod stride``).

    As released, the key frame itself is among these references (and is also appended as the target image).
    """
    if num_frames <= 0:
        return []
    stride = max(1, math.ceil(num_frames / count))
    return list(range(key % stride, num_frames, stride))[:count]


def select_references(strategy: str, num_frames: int, key: int, count: int = 11) -> list[int]:
    if not 0 <= key < num_frames:
        raise ValueError(f"key frame {key} outside a window of {num_frames} frames")
    if count < 0:
        raise ConfigError(f"reference count must be >= 0, got {count}")
    functions = {
        "global": global_references,
        "local": local_references,
        "global_local": global_local_references,
        "uniform_stride": uniform_stride_references,
    }
    if strategy not in functions:
        raise ConfigError(f"unknown reference strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    return functions[strategy](num_frames, key, count) if count else []
