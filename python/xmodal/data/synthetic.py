"""A synthetic dataset in the MVTec 3D-AD layout, for tests, the demo and machines without data.

Each sample is an object of its category's shape lying on a slightly tilted plane about half a
metre in front of a pinhole camera, seen through a fixed field of view of 16 cm (so pixel
spacing is 0.8 mm at the default 200 px and 0.2 mm at 800 px, as in MVTec 3D-AD). The cloud is
organized and metric (metres, z away from the camera), with depth noise and missing points
(steep walls, small clumps); the RGB image is the object's and the plane's textured albedo,
Lambert-shaded from the *defect-free* geometry, so geometric defects leave it untouched.

Defects, placed well inside the object's top surface:

=============  ========  ===================================================================
defect         visible   what changes
=============  ========  ===================================================================
dent           3D only   smooth depression, 2.5-4 mm deep, 7-9 mm radius
bump           3D only   smooth bulge, 2.5-4 mm high, 7-9 mm radius
hole           3D only   steep pit, 5-8 mm deep, 3.5-5 mm radius (walls lose points)
stain          RGB only  dark brown blotch, 6-9 mm radius
discoloration  RGB only  hue shift (channels rotated), 8-11 mm radius
crack          both      dark jagged line, 16-24 mm long, with a 2-3 mm deep groove
contamination  both      a foreign white or green blob, 3-5 mm high, 4-6 mm radius
=============  ========  ===================================================================

Everything is a function of ``(seed, category, split, defect, index)``: the same call writes
the same files, and a sample does not depend on how many others are generated.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._arrays import integer, one_of
from ._files import write_gt, write_rgb, write_xyz
from .sample import Sample

__all__ = ["CATEGORIES", "DEFECTS", "SceneTruth", "make_dataset", "make_sample"]

CATEGORIES = ("puck", "dome", "ring", "block")
DEFECTS = {
    "dent": "3d",
    "bump": "3d",
    "hole": "3d",
    "stain": "rgb",
    "discoloration": "rgb",
    "crack": "both",
    "contamination": "both",
}
FIELD_OF_VIEW = 0.16  # metres across the image at the nominal distance
DISTANCE = 0.5  # metres from the camera to the plane along the optical axis
DEPTH_NOISE = 0.00015  # metres, along the ray
_MAX_EXTENT = 0.12  # metres: noise lattices cover [-extent, extent] in plane coordinates


@dataclass
class SceneTruth:
    """What the generator knows and a real sensor does not.

    Attributes:
        height: (H, W) float32 height of the (defective) surface above the plane in metres,
            before noise; 0 on the plane.
        plane: (4,) float64 plane (a, b, c, d) in the cloud's frame, unit normal, d > 0 (the
            convention of :func:`xmodal.ops.ransac_plane`).
        missing: (H, W) bool pixels whose point was dropped (set to (0, 0, 0)).
        outliers: (H, W) bool pixels of floating debris points added above the plane.
    """

    height: np.ndarray
    plane: np.ndarray
    missing: np.ndarray
    outliers: np.ndarray


# --- object shapes: height (m) over object-frame coordinates (m) ------------------------------


def _puck(s, t):
    radius, height, round_ = 0.030, 0.012, 0.003
    r = np.hypot(s, t)
    inner = radius - round_
    edge = (height - round_) + np.sqrt(np.clip(round_**2 - (r - inner) ** 2, 0, None))
    return np.where(r <= inner, height, np.where(r <= radius, edge, 0.0))


def _dome(s, t):
    radius, height = 0.032, 0.016
    rho = (radius**2 + height**2) / (2 * height)
    return np.clip(np.sqrt(np.clip(rho**2 - s**2 - t**2, 0, None)) - (rho - height), 0, None)


def _ring(s, t):
    major, minor, squash = 0.023, 0.011, 0.85
    r = np.hypot(s, t)
    return squash * np.sqrt(np.clip(minor**2 - (r - major) ** 2, 0, None))


def _block(s, t):
    half_s, half_t, height, bevel = 0.032, 0.021, 0.014, 0.004
    inside = np.minimum(half_s - np.abs(s), half_t - np.abs(t))
    return np.where(inside >= bevel, height, np.where(inside >= 0, height - (bevel - inside), 0.0))


_SHAPES = {"puck": _puck, "dome": _dome, "ring": _ring, "block": _block}
_BASE_COLOUR = {
    "puck": (0.78, 0.55, 0.30),
    "dome": (0.85, 0.27, 0.22),
    "ring": (0.72, 0.50, 0.26),
    "block": (0.35, 0.55, 0.78),
}


def _defect_centre(category: str, margin: float, rng: np.random.Generator) -> tuple[float, float]:
    """A point of the object's top surface at least ``margin`` inside its flat/high part."""
    if category == "puck":
        r = math.sqrt(rng.uniform()) * max(0.030 - 0.003 - margin, 0.0)
        a = rng.uniform(0, 2 * math.pi)
        return r * math.cos(a), r * math.sin(a)
    if category == "dome":
        r = math.sqrt(rng.uniform()) * max(0.016 - 0.5 * margin, 0.0)
        a = rng.uniform(0, 2 * math.pi)
        return r * math.cos(a), r * math.sin(a)
    if category == "ring":
        r = 0.023 + rng.uniform(-0.002, 0.002)
        a = rng.uniform(0, 2 * math.pi)
        return r * math.cos(a), r * math.sin(a)
    half_s, half_t = max(0.032 - 0.004 - margin, 0.0), max(0.021 - 0.004 - margin, 0.0)
    return rng.uniform(-half_s, half_s), rng.uniform(-half_t, half_t)


# --- procedural textures ----------------------------------------------------------------------


def _value_noise(rng: np.random.Generator, s, t, cell: float) -> np.ndarray:
    """Smooth zero-mean, unit-variance-ish noise of feature size ``cell`` metres at (s, t)."""
    n = int(2 * _MAX_EXTENT / cell) + 3
    lattice = rng.standard_normal((n, n))
    gx = np.clip((s + _MAX_EXTENT) / cell, 0, n - 1.001)
    gy = np.clip((t + _MAX_EXTENT) / cell, 0, n - 1.001)
    ix, iy = gx.astype(np.int64), gy.astype(np.int64)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)  # smoothstep: no lattice creases
    top = lattice[ix, iy] * (1 - fx) + lattice[ix + 1, iy] * fx
    bottom = lattice[ix, iy + 1] * (1 - fx) + lattice[ix + 1, iy + 1] * fx
    return top * (1 - fy) + bottom * fy


def _object_albedo(category: str, s, t, rng: np.random.Generator) -> np.ndarray:
    base = np.asarray(_BASE_COLOUR[category])
    shade = 1 + 0.08 * _value_noise(rng, s, t, 0.003) + 0.03 * rng.standard_normal(s.shape)
    if category == "puck":  # baked rings
        shade = shade + 0.05 * np.cos(2 * np.pi * np.hypot(s, t) / 0.006)
    elif category == "dome":  # light speckles
        spots = _value_noise(rng, s, t, 0.0015) > 1.3
        shade = shade + 0.25 * spots
    elif category == "ring":  # radial grain
        angle = np.arctan2(t, s)
        shade = shade + 0.05 * np.sin(angle * 40 + 2 * _value_noise(rng, s, t, 0.004))
    else:  # moulded stripes
        shade = shade + 0.06 * np.sin(2 * np.pi * s / 0.004)
    return np.clip(base * shade[..., None], 0, 1)


# --- defects ------------------------------------------------------------------------------------


def _polyline_distance(s, t, vertices) -> np.ndarray:
    best = np.full(s.shape, np.inf)
    for (x0, y0), (x1, y1) in itertools.pairwise(vertices):
        dx, dy = x1 - x0, y1 - y0
        u = np.clip(((s - x0) * dx + (t - y0) * dy) / (dx * dx + dy * dy), 0, 1)
        best = np.minimum(best, np.hypot(s - (x0 + u * dx), t - (y0 + u * dy)))
    return best


def _apply_defect(defect, category, s, t, albedo, rng):
    """Returns (height change (m), new albedo, gt mask, extra-missing probability)."""
    dh = np.zeros(s.shape)
    gt = np.zeros(s.shape, dtype=bool)
    if defect == "crack":
        length = rng.uniform(0.016, 0.024)
        for _ in range(100):
            cs, ct = _defect_centre(category, 0.004, rng)
            heading = rng.uniform(0, 2 * np.pi)
            vertices = [(cs, ct)]
            for _ in range(5):
                heading += rng.uniform(-0.5, 0.5)
                x, y = vertices[-1]
                vertices.append((x + length / 5 * math.cos(heading), y + length / 5 * math.sin(heading)))
            v = np.asarray(vertices)
            if (_SHAPES[category](v[:, 0], v[:, 1]) > 0.007).all():
                break
        dist = _polyline_distance(s, t, vertices)
        depth = rng.uniform(0.002, 0.003)
        dh = -depth * np.clip(1 - dist / 0.0015, 0, 1)
        dark = np.clip(1 - dist / 0.0012, 0, 1)[..., None]
        albedo = albedo * (1 - 0.75 * dark)
        return dh, albedo, dist < 0.0015, 0.0
    sizes = {"dent": (0.007, 0.009), "bump": (0.007, 0.009), "hole": (0.0035, 0.005), "stain": (0.006, 0.009),
             "discoloration": (0.008, 0.011), "contamination": (0.004, 0.006)}
    radius = rng.uniform(*sizes[defect])
    cs, ct = _defect_centre(category, radius + 0.001, rng)
    # An irregular outline: the radius wobbles with a smooth noise field.
    wobble = 1 + 0.18 * np.clip(_value_noise(rng, s, t, radius * 0.7), -2, 2)
    rel = np.hypot(s - cs, t - ct) / (radius * (wobble if defect in ("stain", "discoloration", "contamination") else 1))
    extra_missing = 0.0
    if defect in ("dent", "bump"):
        profile = np.where(rel < 1, np.cos(np.pi / 2 * np.clip(rel, 0, 1)) ** 2, 0.0)
        dh = (1 if defect == "bump" else -1) * rng.uniform(0.0025, 0.004) * profile
        gt = profile > 0.1
    elif defect == "hole":
        depth = rng.uniform(0.005, 0.008)
        dh = -depth * np.clip((1 - rel) * radius / 0.0008, 0, 1)
        gt = rel < 1
        extra_missing = 0.15
    elif defect == "stain":
        alpha = np.clip((1 - rel) * 3, 0, 1)[..., None]
        albedo = albedo * (1 - alpha * (1 - np.array([0.38, 0.28, 0.20])))
        gt = alpha[..., 0] > 0.5
    elif defect == "discoloration":
        alpha = 0.85 * np.clip((1 - rel) * 3, 0, 1)[..., None]
        tint = albedo[..., [1, 2, 0]]  # a hue rotation: a strong colour change for any coloured part
        albedo = np.clip((1 - alpha) * albedo + alpha * tint, 0, 1)
        gt = alpha[..., 0] > 0.425
    elif defect == "contamination":
        profile = np.sqrt(np.clip(1 - rel**2, 0, None))
        dh = rng.uniform(0.003, 0.005) * profile
        colour = np.array([0.92, 0.92, 0.86]) if rng.uniform() < 0.5 else np.array([0.22, 0.48, 0.16])
        alpha = np.clip((1 - rel) * 4, 0, 1)[..., None]
        albedo = (1 - alpha) * albedo + alpha * colour * (1 + 0.1 * rng.standard_normal(s.shape))[..., None]
        gt = rel < 1
    return dh, np.clip(albedo, 0, 1), gt, extra_missing


# --- rendering ----------------------------------------------------------------------------------


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *(zlib.crc32(k.encode()) for k in keys)])


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _plane_normal(category: str, rng: np.random.Generator) -> np.ndarray:
    """Unit normal pointing away from the camera: a category tilt of ~4 degrees plus jitter."""
    azimuth = (zlib.crc32(category.encode()) % 360) * math.pi / 180
    tilt = math.radians(4.0)
    jitter = np.radians(rng.uniform(-0.5, 0.5, size=2))
    nx = math.sin(tilt) * math.cos(azimuth) + jitter[0]
    ny = math.sin(tilt) * math.sin(azimuth) + jitter[1]
    return _unit(np.array([nx, ny, 1.0]))


def make_sample(category: str, defect: str = "good", *, image_size: int = 200, seed: int = 0, split: str = "test",
                index: int = 0, outliers: bool = False, nominal: bool = False) -> tuple[Sample, SceneTruth]:
    """Renders one synthetic sample and its ground truth (nothing is written).

    Args:
        category: one of :data:`CATEGORIES`.
        defect: "good" or one of :data:`DEFECTS`.
        image_size: side of the square image in pixels (the field of view stays 16 cm).
        seed, split, index: together with category and defect, they determine the sample.
        outliers: add one or two small clumps of floating points above the plane (sensor
            debris, which the largest-cluster cleaning of the preprocessing removes).
        nominal: render the same scene without its defect (the defect is drawn from its own
            random stream, so everything else is identical): what the part should look like.

    Returns:
        (Sample, SceneTruth).
    """
    one_of(category, "category", CATEGORIES)
    if defect != "good" and defect not in DEFECTS:
        msg = f"defect must be 'good' or one of {tuple(DEFECTS)}; got {defect!r}"
        raise ValueError(msg)
    size = integer(image_size, "image_size", minimum=32, expected=">= 32")
    rng = _rng(seed, category, split, defect, str(index))
    defect_rng = _rng(seed, category, split, defect, str(index), "defect")

    # Camera rays and the plane n.X = offset (n away from the camera).
    focal = size * DISTANCE / FIELD_OF_VIEW
    centre = (size - 1) / 2
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    rays = np.stack([(u - centre) / focal, (v - centre) / focal, np.ones_like(u)], axis=-1)
    normal = _plane_normal(category, rng)
    distance = DISTANCE + rng.uniform(-0.005, 0.005)
    offset = normal[2] * distance
    along = rays @ normal
    on_plane = rays * (offset / along)[..., None]

    # Object frame: in-plane axes, a jittered centre, rotation and scale.
    e1 = _unit(np.array([1.0, 0.0, 0.0]) - normal[0] * normal)
    e2 = np.cross(normal, e1)
    origin = np.array([0.0, 0.0, distance]) + rng.uniform(-0.006, 0.006) * e1 + rng.uniform(-0.006, 0.006) * e2
    rel = on_plane - origin
    ps, pt = rel @ e1, rel @ e2  # plane coordinates (background texture)
    angle = math.radians(rng.uniform(-20, 20))
    scale = rng.uniform(0.97, 1.03)
    s = (math.cos(angle) * ps + math.sin(angle) * pt) / scale
    t = (-math.sin(angle) * ps + math.cos(angle) * pt) / scale
    base_height = _SHAPES[category](s, t) * scale
    on_object = base_height > 0

    albedo = np.where(on_object[..., None], _object_albedo(category, s, t, rng),
                      np.array([0.32, 0.32, 0.34]) * (1 + 0.05 * _value_noise(rng, ps, pt, 0.003)
                                                      + 0.02 * rng.standard_normal(ps.shape))[..., None])
    height = base_height.copy()
    gt = np.zeros((size, size), dtype=bool)
    extra_missing = 0.0
    if defect != "good" and not nominal:
        dh, new_albedo, gt, extra_missing = _apply_defect(defect, category, s, t, albedo, defect_rng)
        gt &= on_object
        if DEFECTS[defect] in ("3d", "both"):
            height = np.where(on_object, np.clip(base_height + dh * scale, 0, None), 0.0)
        if DEFECTS[defect] in ("rgb", "both"):
            albedo = np.where(on_object[..., None], new_albedo, albedo)

    # RGB: Lambert shading of the defect-free surface, so 3D-only defects stay invisible.
    surface = rays * ((offset - base_height) / along)[..., None]
    du, dv = np.gradient(surface, axis=1), np.gradient(surface, axis=0)
    normals = _unit(np.cross(du, dv))
    normals = np.where((np.sum(normals * rays, axis=-1) > 0)[..., None], -normals, normals)
    light = _unit(np.array([-0.4, -0.5, -1.0]) + rng.uniform(-0.05, 0.05, size=3))
    diffuse = np.clip(normals @ light, 0, None)
    radiance = albedo * (0.35 + 0.75 * diffuse)[..., None]
    rgb = np.clip(radiance * 255 + rng.normal(0, 1.5, radiance.shape), 0, 255).round().astype(np.uint8)

    # Cloud: the ray meets the surface raised by `height`; noise along the ray.
    depth = (offset - height) / along + rng.normal(0, DEPTH_NOISE, along.shape)
    xyz = rays * depth[..., None]

    pixel = FIELD_OF_VIEW / size
    gy, gx = np.gradient(height, pixel)
    steep = np.hypot(gx, gy) > 3.0
    missing = steep & (rng.uniform(size=steep.shape) < 0.5 + extra_missing)
    clumps = _value_noise(rng, (u - centre) * pixel, (v - centre) * pixel, 4 * pixel) > 2.4
    missing |= clumps

    debris = np.zeros((size, size), dtype=bool)
    if outliers:
        for _ in range(int(rng.integers(1, 3))):
            for _ in range(100):
                cu, cv = rng.uniform(0.15 * size, 0.85 * size, size=2)
                blob = np.hypot(u - cu, v - cv) < max(2.0, 3.5 * size / 200)
                near = np.hypot(u - cu, v - cv) < 0.1 * size
                if not (on_object & near).any():
                    break
            lift = rng.uniform(0.02, 0.03)
            xyz[blob] = rays[blob] * ((offset - lift) / along[blob])[..., None]
            debris |= blob
        missing &= ~debris

    xyz[missing] = 0.0
    label = int(defect != "good" and not nominal)
    sample = Sample(rgb=rgb, xyz=xyz.astype(np.float32), gt=gt, label=label, defect="good" if nominal else defect,
                    category=category)
    truth = SceneTruth(height=height.astype(np.float32), plane=np.array([*(-normal), offset]), missing=missing,
                       outliers=debris)
    return sample, truth


def make_dataset(root: str | os.PathLike, categories=CATEGORIES, n_train: int = 20, n_test: int = 5,
                 image_size: int = 200, seed: int = 0, *, n_validation: int = 4, n_test_good: int | None = None,
                 defects=tuple(DEFECTS), outliers: bool = False) -> Path:
    """Writes a synthetic dataset in the MVTec 3D-AD layout.

    ``<root>/<category>/train/good``, ``validation/good`` and ``test/{good,<defect>...}``, each
    with ``rgb/NNN.png``, ``xyz/NNN.tiff`` (float32, metres) and, in test folders,
    ``gt/NNN.png``; plus ``<root>/xmodal_synthetic.json`` with the arguments. Deterministic:
    the same arguments write the same files. Existing files with the same names are
    overwritten; nothing else under ``root`` is touched.

    Args:
        root: output folder (created if needed).
        categories: names from :data:`CATEGORIES` ("puck", "dome", "ring", "block").
        n_train: good training samples per category.
        n_test: samples per defect folder in the test split.
        image_size: image side in pixels (default 200: a multiple of 100, so the reference
            preprocessing pads nothing).
        seed: the dataset seed.
        n_validation: good validation samples per category.
        n_test_good: good test samples per category (default ``2 * n_test``).
        defects: defect types to generate (default all of :data:`DEFECTS`).
        outliers: add floating debris points to every sample (see :func:`make_sample`).

    Returns:
        Path of ``root``.
    """
    root = Path(root)
    categories = [categories] if isinstance(categories, str) else list(categories)
    for name in categories:
        if name not in _SHAPES:
            msg = f"categories must be names from {CATEGORIES}; got {name!r}"
            raise ValueError(msg)
    for name in defects:
        if name not in DEFECTS:
            msg = f"defects must be names from {tuple(DEFECTS)}; got {name!r}"
            raise ValueError(msg)
    counts = {"n_train": n_train, "n_test": n_test, "n_validation": n_validation}
    n_test_good = 2 * n_test if n_test_good is None else n_test_good
    counts["n_test_good"] = n_test_good
    for name, value in counts.items():
        integer(value, name, minimum=0, expected="a non-negative int")
    plan = [("train", "good", n_train), ("validation", "good", n_validation), ("test", "good", n_test_good)]
    plan += [("test", d, n_test) for d in defects]
    for category in categories:
        for split, defect, count in plan:
            folder = root / category / split / defect
            for i in range(count):
                sample, _ = make_sample(category, defect, image_size=image_size, seed=seed, split=split, index=i,
                                        outliers=outliers)
                stem = f"{i:03d}"
                write_rgb(folder / "rgb" / f"{stem}.png", sample.rgb)
                write_xyz(folder / "xyz" / f"{stem}.tiff", sample.xyz)
                if split == "test":
                    write_gt(folder / "gt" / f"{stem}.png", sample.gt)
    manifest = {"generator": "xmodal.data.synthetic", "version": 1, "categories": categories, "defects": list(defects),
                "image_size": int(image_size), "seed": int(seed), "outliers": bool(outliers), **counts}
    root.mkdir(parents=True, exist_ok=True)
    (root / "xmodal_synthetic.json").write_text(json.dumps(manifest, indent=2))
    return root
