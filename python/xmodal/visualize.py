"""Heat-map overlays of anomaly maps on their images (numpy + Pillow, no matplotlib)."""

from __future__ import annotations

import os

import numpy as np


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> (..., 3) uint8 colours, blue (normal) to red (anomalous), jet-like."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def overlay(rgb: np.ndarray, score_map: np.ndarray, vmin: float | None = None, vmax: float | None = None,
            alpha: float = 0.5) -> np.ndarray:
    """Blends a colour-coded ``score_map`` (H, W) over ``rgb`` (H, W, 3) uint8.

    ``vmin`` / ``vmax`` fix the colour scale (use the same values for every image of a test set
    so colours compare across images); by default the map's own minimum and maximum.
    """
    rgb = np.asarray(rgb)
    score_map = np.asarray(score_map, dtype=np.float32)
    if score_map.shape != rgb.shape[:2]:
        msg = f"score_map must have the image's shape {rgb.shape[:2]}; got {score_map.shape}"
        raise ValueError(msg)
    lo = float(score_map.min()) if vmin is None else float(vmin)
    hi = float(score_map.max()) if vmax is None else float(vmax)
    scaled = (score_map - lo) / (hi - lo) if hi > lo else np.zeros_like(score_map)
    colours = colormap(scaled).astype(np.float32)
    return np.clip((1 - alpha) * rgb.astype(np.float32) + alpha * colours, 0, 255).astype(np.uint8)


def save_overlay(path: str | os.PathLike, rgb: np.ndarray, score_map: np.ndarray, **kwargs) -> None:
    """Writes :func:`overlay` as a PNG (side by side with the image: left the input, right the map)."""
    from PIL import Image

    from .io import atomic_path

    image = np.concatenate([np.asarray(rgb, dtype=np.uint8), overlay(rgb, score_map, **kwargs)], axis=1)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
