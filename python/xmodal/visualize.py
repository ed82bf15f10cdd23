"""Heat-map pictures of anomaly maps, and the raw maps beside them (numpy + Pillow + tifffile).

A picture shows the input on the left and the colour-coded map over it on the right, with a
colour bar along the right edge. For a calibrated model the colours are the fit-time
``normalized_map``: 0.5 (the pixel threshold, marked on the bar) is the same colour on every
picture, so a good part looks cool (blue) and a defect hot (orange to red) wherever it comes
from. Without calibration the caller gives the value range (e.g. shared by a test set).

Every file carries an "xmodal" mark (PNG text chunk, TIFF software tag): a later run may
replace what xmodal wrote, never a file of the user's (see :func:`written_by_xmodal`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SOFTWARE = "xmodal heat map"


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> (..., 3) uint8 colours, blue (normal) to red (anomalous), jet-like:
    0 dark blue, 0.25 blue-cyan, 0.5 green, 0.75 orange, 1 dark red."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def _scaled(score_map: np.ndarray, vmin, vmax) -> tuple[np.ndarray, float, float]:
    lo = float(score_map.min()) if vmin is None else float(vmin)
    hi = float(score_map.max()) if vmax is None else float(vmax)
    scaled = (score_map - lo) / (hi - lo) if hi > lo else np.zeros_like(score_map)
    return scaled, lo, hi


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
    scaled, _, _ = _scaled(score_map, vmin, vmax)
    colours = colormap(scaled).astype(np.float32)
    return np.clip((1 - alpha) * rgb.astype(np.float32) + alpha * colours, 0, 255).astype(np.uint8)


def _draw_colour_bar(image: np.ndarray, ticks: list[tuple[float, str]]) -> np.ndarray:
    """Draws a vertical colour bar (0 at the bottom, 1 at the top) along the right edge of
    ``image`` (H, W, 3), with a white tick and label at each (position in [0, 1], text)."""
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    bar_w = max(4, w // 24)
    out = image.copy()
    levels = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None].repeat(bar_w, axis=1)
    out[:, w - bar_w :] = colormap(levels)
    picture = Image.fromarray(out)
    draw = ImageDraw.Draw(picture)
    line_height = 11  # Pillow's default bitmap font
    for position, label in ticks:
        y = round((1.0 - position) * (h - 1))
        draw.line([(w - bar_w - 3, y), (w - 1, y)], fill=(255, 255, 255), width=1)
        if h >= 4 * line_height and label:
            width = int(draw.textlength(label))
            top = min(max(y - line_height // 2, 0), h - line_height)
            left = max(w - bar_w - 5 - width, 0)
            draw.rectangle([left - 1, top - 1, left + width + 1, top + line_height], fill=(0, 0, 0))
            draw.text((left, top), label, fill=(255, 255, 255))
    return np.asarray(picture)


def heat_map_picture(rgb: np.ndarray, score_map: np.ndarray, *, normalized: np.ndarray | None = None,
                     threshold: float | None = None, vmin: float | None = None, vmax: float | None = None,
                     alpha: float = 0.5) -> np.ndarray:
    """(H, 2W, 3) uint8: the input, then the map over it with a colour bar.

    With ``normalized`` (the map on the fit-time scale, 0.5 at the pixel ``threshold``) the
    colours span [0, 1] and the bar marks the threshold; otherwise ``score_map`` is drawn
    between ``vmin`` and ``vmax`` (default: its own range) and the bar is labelled with them.
    """
    rgb = np.asarray(rgb, dtype=np.uint8)
    if normalized is not None:
        right = overlay(rgb, normalized, vmin=0.0, vmax=1.0, alpha=alpha)
        mark = "threshold" if threshold is None else f"thr {threshold:.3g}"
        ticks = [(1.0, "1"), (0.5, mark), (0.0, "0")]
    else:
        score_map = np.asarray(score_map, dtype=np.float32)
        _, lo, hi = _scaled(score_map, vmin, vmax)
        right = overlay(rgb, score_map, vmin=lo, vmax=hi, alpha=alpha)
        ticks = [(1.0, f"{hi:.3g}"), (0.0, f"{lo:.3g}")]
    return np.concatenate([rgb, _draw_colour_bar(right, ticks)], axis=1)


def save_heat_map(path: str | os.PathLike, picture: np.ndarray) -> None:
    """Writes a :func:`heat_map_picture` as a PNG marked as xmodal's, atomically."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from .io import atomic_path

    info = PngInfo()
    info.add_text("Software", SOFTWARE)
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG", pnginfo=info)


def save_raw_map(path: str | os.PathLike, score_map: np.ndarray) -> None:
    """Writes an (H, W) float32 map as a TIFF marked as xmodal's, atomically (for pipelines:
    the raw scores, not the colours)."""
    import tifffile

    from .io import atomic_path

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(score_map, dtype=np.float32), software=SOFTWARE,
                         description="raw anomaly scores, same geometry as the input image")


def written_by_xmodal(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a heat-map PNG or raw-map TIFF that xmodal wrote (by its mark)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as image:
                return getattr(image, "text", {}).get("Software") == SOFTWARE
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return tif.pages[0].software == SOFTWARE
    except Exception:  # unreadable or not an image: not ours
        return False
    return False


def save_overlay(path: str | os.PathLike, rgb: np.ndarray, score_map: np.ndarray, **kwargs) -> None:
    """Writes :func:`heat_map_picture` (``kwargs`` as there) as a PNG (kept for callers of
    earlier versions: left the input, right the map)."""
    save_heat_map(path, heat_map_picture(rgb, score_map, **kwargs))
