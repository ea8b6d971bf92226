"""Synthetic scenes of saturated coloured shapes on a textured grey background, with exact masks.

Used with the scripted test doubles (reasonvos_ros.backends.scripted), which segment and track by colour.
"""

from __future__ import annotations

import numpy as np

RGB = {"red": (230, 20, 20), "green": (20, 210, 20), "blue": (20, 20, 230)}


def background(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(90, 140, size=(height, width, 1), dtype=np.int16)
    return np.repeat(base, 3, axis=2).astype(np.uint8)


def square_scene(
    n_frames: int,
    height: int = 120,
    width: int = 160,
    objects: dict[str, tuple[int, int, int, int, int]] | None = None,
    visible: dict[str, range] | None = None,
) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]]]:
    """Frames with coloured squares moving linearly.

    ``objects``: colour -> (x0, y0, dx, dy, size) in pixels / pixels per frame.
    ``visible``: colour -> frame indices where it is drawn (default: all).
    Returns (frames RGB uint8, {colour: [bool mask per frame]}).
    """
    objects = objects or {"red": (10, 20, 3, 1, 24)}
    frames, masks = [], {c: [] for c in objects}
    for t in range(n_frames):
        image = background(height, width, seed=t)
        for colour, (x0, y0, dx, dy, size) in objects.items():
            mask = np.zeros((height, width), bool)
            if visible is None or colour not in visible or t in visible[colour]:
                x, y = x0 + dx * t, y0 + dy * t
                mask[max(0, y) : max(0, y + size), max(0, x) : max(0, x + size)] = True
                image[mask] = RGB[colour]
            masks[colour].append(mask)
        frames.append(image)
    return frames, masks
