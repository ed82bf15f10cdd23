"""BridgeNet's Unified Texture Anomaly Generator (UTAG) and its texture bank."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ... import _arrays
from ._util import generator, interval, mask2d
from .corruptions import TEXTURE_AUGMENTATIONS, augment_texture
from .perlin import max_pool_mask, perlin_noise, utag_mask

__all__ = [
    "IMAGE_SUFFIXES",
    "MODALITIES",
    "PROCEDURAL_TEXTURES",
    "SKIMAGE_TEXTURES",
    "TextureAnomaly",
    "TextureAnomalyGenerator",
    "TextureBank",
    "blend_texture",
    "draw_beta",
]

PROCEDURAL_TEXTURES = ("value_noise", "fractal_noise", "stripes", "checkerboard")
SKIMAGE_TEXTURES = ("brick", "grass", "gravel")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
MODALITIES = ("both", "rgb", "depth")
_SIDE = 512  # side of the built-in textures, about DTD's image size (300-640 px)


# --- the texture bank ---------------------------------------------------------------------------


def _value_noise(rng, side):
    from PIL import Image

    cells = int(rng.integers(4, 33))
    lattice = Image.fromarray(rng.uniform(0, 1, (cells, cells)).astype(np.float32), mode="F")
    return np.asarray(lattice.resize((side, side), Image.BICUBIC), dtype=np.float64)


def _fractal_noise(rng, side):
    """Octaves of Perlin noise (each twice the frequency and half the amplitude)."""
    cells, octaves = 2 ** int(rng.integers(1, 4)), int(rng.integers(3, 6))
    return sum(0.5 ** k * perlin_noise(side, cells * 2 ** k, rng) for k in range(octaves))


def _plane_coordinate(rng, side):
    theta = rng.uniform(0, np.pi)
    rows, cols = np.mgrid[0:side, 0:side]
    return rows * math.sin(theta) + cols * math.cos(theta), -rows * math.cos(theta) + cols * math.sin(theta)


def _stripes(rng, side):
    along, _ = _plane_coordinate(rng, side)
    wave = np.sin(2 * np.pi * along / rng.uniform(6, 40) + rng.uniform(0, 2 * np.pi))
    return wave > 0 if rng.integers(2) else wave


def _checkerboard(rng, side):
    a, b = _plane_coordinate(rng, side)
    cell = rng.uniform(8, 48)
    return (np.floor(a / cell) + np.floor(b / cell)) % 2


def _skimage(name):
    def make(rng, side):
        from skimage import data

        return getattr(data, name)().astype(np.float64)

    return make


_MAKERS = {"value_noise": _value_noise, "fractal_noise": _fractal_noise, "stripes": _stripes,
           "checkerboard": _checkerboard, **{n: _skimage(n) for n in SKIMAGE_TEXTURES}}


def _colourise(pattern, rng):
    """A gray pattern mapped onto a random two-colour ramp (DTD's textures are in colour)."""
    p = np.asarray(pattern, dtype=np.float64)
    span = p.max() - p.min()
    p = (p - p.min()) / span if span > 0 else np.zeros_like(p)
    low, high = rng.uniform(0, 255, size=(2, 3))
    return np.clip(np.rint(low + p[..., None] * (high - low)), 0, 255).astype(np.uint8)


def _skimage_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("skimage") is not None


class TextureBank:
    """The textures UTAG pastes: built-in procedural ones plus any images the user gives.

    BridgeNet draws its textures from DTD (5,640 photographs), which cannot be downloaded here.
    The built-in bank generates a new texture per draw, mapped onto a random two-colour ramp:
    value noise (bicubic random lattice), fractal Perlin noise, soft or hard stripes and
    checkerboards at random angles and periods, and scikit-image's brick, grass and gravel
    photographs when scikit-image is installed. A folder (DTD's ``images/``, say) adds its image
    files, read lazily; each entry of the bank is drawn with equal probability.

    Args:
        textures: None, a folder searched recursively for image files (:data:`IMAGE_SUFFIXES`),
            or a list of (H, W, 3) / (H, W) uint8 arrays.
        builtin: include the built-in textures (False: only ``textures``).

    Raises:
        FileNotFoundError: ``textures`` is a path that does not exist.
        ValueError: ``textures`` is not a folder, holds no readable image, or the bank is empty.
    """

    def __init__(self, textures=None, *, builtin: bool = True):
        self._entries: list[tuple[str, object]] = []
        if builtin:
            names = PROCEDURAL_TEXTURES + (SKIMAGE_TEXTURES if _skimage_available() else ())
            self._entries += [(name, _MAKERS[name]) for name in names]
        if isinstance(textures, (str, os.PathLike)):
            self._entries += [(str(p), p) for p in _image_files(Path(textures))]
        elif textures is not None:
            if not isinstance(textures, (list, tuple)):
                msg = f"textures must be None, a folder or a list of uint8 images; got {type(textures).__name__}"
                raise TypeError(msg)
            for i, t in enumerate(textures):
                self._entries.append((f"textures[{i}]", _texture_array(t, f"textures[{i}]")))
        if not self._entries:
            msg = "the texture bank is empty: pass textures=DIR or a list of images, or keep builtin=True"
            raise ValueError(msg)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> list[str]:
        """Built-in texture names and image paths (or ``textures[i]``), in draw order."""
        return [name for name, _ in self._entries]

    def draw(self, rng) -> tuple[np.ndarray, str]:
        """A random texture: ((h, w, 3) uint8, name). An image file that cannot be decoded
        is dropped from the bank with a warning and another one is drawn."""
        g = generator(rng)
        while self._entries:
            i = int(g.integers(len(self._entries)))
            name, source = self._entries[i]
            if isinstance(source, Path):
                image = _read_texture(source)
                if image is None:
                    del self._entries[i]
                    continue
                return image, name
            if isinstance(source, np.ndarray):
                return source, name
            return _colourise(source(g, _SIDE), g), name
        msg = "the texture bank is empty: none of its image files could be read"
        raise ValueError(msg)


def _texture_array(t, name: str) -> np.ndarray:
    if not isinstance(t, np.ndarray) or t.dtype != np.uint8:
        msg = f"{name} must be a uint8 numpy image; got {getattr(t, 'dtype', type(t).__name__)}"
        raise TypeError(msg)
    if t.ndim == 2:
        t = np.repeat(t[..., None], 3, axis=2)
    if t.ndim != 3 or t.shape[2] != 3 or 0 in t.shape:
        msg = f"{name} must have shape (H, W, 3) or (H, W); got {t.shape}"
        raise ValueError(msg)
    return t


def _image_files(folder: Path) -> list[Path]:
    if not folder.exists():
        msg = f"textures folder {folder} does not exist"
        raise FileNotFoundError(msg)
    if not folder.is_dir():
        msg = f"textures must be a folder of images; {folder} is not a directory"
        raise ValueError(msg)
    from PIL import Image

    readable = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with Image.open(path) as img:  # reads the header only
                img.size  # noqa: B018
            readable.append(path)
        except Exception as exc:
            warnings.warn(f"textures: skipping {path}, not a readable image ({type(exc).__name__}: {exc})",
                          stacklevel=4)
    if not readable:
        msg = f"textures folder {folder} holds no readable image (looked for {', '.join(IMAGE_SUFFIXES)})"
        raise ValueError(msg)
    return readable


def _read_texture(path: Path) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))
    except Exception as exc:
        warnings.warn(f"textures: dropping {path}, it cannot be decoded ({type(exc).__name__}: {exc})",
                      stacklevel=4)
        return None


# --- the blend ------------------------------------------------------------------------------------


def blend_texture(image, texture, mask, beta: float) -> np.ndarray:
    """BridgeNet's texture anomaly (paper Eqs. 7-8): x' = x (1 - M) + (1 - beta) t M + beta x M.

    Outside the mask the image is unchanged; inside, it keeps a share beta of itself and takes
    1 - beta of the texture. The weights sum to 1, so blending commutes with any per-channel
    affine normalisation (the reference blends ImageNet-normalised tensors; blending first and
    normalising after gives the same result).

    Args:
        image: (H, W, C) or (H, W), uint8 or float.
        texture: the same shape, in the image's value scale (0..255 for uint8 images).
        mask: (H, W) bool or float in [0, 1].
        beta: opacity of the original image inside the mask.

    Returns:
        The image's dtype; uint8 results are rounded to the nearest level.
    """
    x = np.asarray(image)
    t = np.asarray(texture)
    if x.dtype.kind not in "uf" or t.dtype.kind not in "uif":
        msg = f"image and texture must be uint8 or float arrays; got {x.dtype} and {t.dtype}"
        raise TypeError(msg)
    if t.shape != x.shape:
        msg = f"texture must have the image's shape {x.shape}; got {t.shape}"
        raise ValueError(msg)
    m = np.asarray(mask)
    if m.shape != x.shape[:2]:
        msg = f"mask must have shape {x.shape[:2]} like the image; got {m.shape}"
        raise ValueError(msg)
    beta = _arrays.number(beta, "beta", minimum=0.0, maximum=1.0)
    work = np.float64 if x.dtype == np.uint8 else np.result_type(x.dtype, np.float32)
    m = m.astype(work)[..., None] if x.ndim == 3 else m.astype(work)
    xf, tf = x.astype(work), t.astype(work)
    out = xf * (1 - m) + (1 - beta) * tf * m + beta * xf * m
    if x.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(x.dtype)


def draw_beta(rng, mean: float = 0.5, std: float = 0.3, low: float = 0.2, high: float = 0.8, *,
              truncated: bool = False) -> float:
    """beta ~ N(mean, std) clipped to [low, high] (BridgeNet: N(0.5, 0.3), [0.2, 0.8]).

    The reference clips, so about 16 % of the draws sit on each bound; the paper's words,
    "truncated at (0.2, 0.8)", also fit a truncated normal, which ``truncated=True`` draws by
    redrawing until the value falls inside (clipped after 1000 misses, for a far interval)."""
    g = generator(rng)
    value = g.normal(mean, std)
    for _ in range(1000 if truncated else 0):
        if low <= value <= high:
            break
        value = g.normal(mean, std)
    return float(np.clip(value, low, high))


# --- the generator --------------------------------------------------------------------------------


@dataclass
class TextureAnomaly:
    """One UTAG sample.

    Attributes:
        rgb, depth: the images after blending (the input's dtype and shape; an input that was
            not changed is returned as given, not copied).
        mask: (H, W) bool texture region (inside the foreground).
        label: (H // pool, W // pool) bool, ``mask`` max-pooled to the feature grid.
        beta: the opacity drawn.
        modality: "both", "rgb" or "depth": which images received the texture.
        texture: name of the bank entry used.
        augmentations: the texture augmentations applied (the same three to both copies).
    """

    rgb: np.ndarray | None
    depth: np.ndarray | None
    mask: np.ndarray
    label: np.ndarray
    beta: float
    modality: str
    texture: str
    augmentations: tuple[str, ...]


def _image_arg(x, name: str, shapes: str):
    if x is None:
        return None
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "uf" or (x.dtype.kind == "u" and x.dtype != np.uint8):
        msg = f"{name} must be a uint8 or float numpy image; got {getattr(x, 'dtype', type(x).__name__)}"
        raise TypeError(msg)
    channels = (None, 1, 3) if shapes != "(H, W, 3)" else (3,)
    if (x.shape[2] if x.ndim == 3 else None if x.ndim == 2 else -1) not in channels or 0 in x.shape:
        msg = f"{name} must have shape {shapes}; got {x.shape}"
        raise ValueError(msg)
    return x


def _in_scale(texture: np.ndarray, like: np.ndarray) -> np.ndarray:
    """The (H, W, 3) uint8 texture in ``like``'s shape and value scale (floats: [0, 1])."""
    t = texture[..., 0] if like.ndim == 2 else texture[..., :like.shape[2]]
    return t if like.dtype == np.uint8 else t.astype(like.dtype) / 255


class TextureAnomalyGenerator:
    """BridgeNet's UTAG: texture anomalies on the RGB image, the depth image, or both.

    Per call: a :func:`utag_mask` inside the foreground; a texture from the :class:`TextureBank`
    and its grayscale copy, each resized so its shorter side covers the image, put through the
    same 3 of the 9 :data:`TEXTURE_AUGMENTATIONS` (chosen once, parameters drawn per copy, as
    the reference's one ``rand_augmenter`` pipeline applied twice) and centre-cropped; beta
    from :func:`draw_beta`; the modality ("both", "rgb" or "depth", 1/3 each: paper Eq. 9 with
    alpha = 1/3); the RGB image gets the colour texture and the depth image the grayscale copy
    through :func:`blend_texture`, with one mask and one beta.

    Images may be uint8 (0..255) or float in [0, 1] (e.g. :func:`xmodal.data.preprocess.depth_image`);
    normalise after the blend. The label is the mask max-pooled by ``pool`` (8: 576^2 -> 72^2).

    Args:
        textures, builtin: see :class:`TextureBank` (or pass a TextureBank as ``textures``).
        beta_mean, beta_std, beta_range: BridgeNet's N(0.5, 0.3) clipped to [0.2, 0.8].
        beta_truncated: draw a truncated normal instead of clipping (see :func:`draw_beta`).
        modality: "random" (1/3 each), or always "both", "rgb" or "depth".
        min_scale_exp, max_scale_exp, threshold, rotate, combine, max_tries: :func:`utag_mask`.
        pool: label-grid pooling.
        augmentations: how many texture augmentations per copy (3).
        seed: seed of the generator's own stream (used when a call passes no rng).
    """

    def __init__(self, textures=None, *, builtin: bool = True, beta_mean: float = 0.5, beta_std: float = 0.3,
                 beta_range=(0.2, 0.8), beta_truncated: bool = False, modality: str = "random",
                 min_scale_exp: int = 0, max_scale_exp: int = 5, threshold: float = 0.5, rotate: float = 90,
                 combine: str = "random", pool: int = 8, max_tries: int = 100, augmentations: int = 3,
                 seed: int | None = 0):
        self.bank = textures if isinstance(textures, TextureBank) else TextureBank(textures, builtin=builtin)
        self.beta_mean = _arrays.number(beta_mean, "beta_mean", minimum=0.0, maximum=1.0)
        self.beta_std = _arrays.number(beta_std, "beta_std", minimum=0.0)
        self.beta_range = interval(beta_range, "beta_range", 0.0, 1.0)
        self.beta_truncated = bool(beta_truncated)
        self.modality = _arrays.one_of(modality, "modality", ("random", *MODALITIES))
        self.augmentations = _arrays.integer(augmentations, "augmentations", minimum=0,
                                             maximum=len(TEXTURE_AUGMENTATIONS))
        self.pool = _arrays.integer(pool, "pool", minimum=1)
        self.mask_options = {"min_scale_exp": min_scale_exp, "max_scale_exp": max_scale_exp, "threshold": threshold,
                             "rotate": rotate, "combine": combine, "pool": self.pool, "max_tries": max_tries}
        self.rng = generator(seed, "seed")

    def __call__(self, rgb=None, depth=None, foreground=None, rng=None, modality: str | None = None) -> TextureAnomaly:
        """Blends a texture anomaly into ``rgb`` and/or ``depth`` inside ``foreground``.

        Args:
            rgb: (H, W, 3) RGB image or None.
            depth: (H, W), (H, W, 1) or (H, W, 3) depth image or None.
            foreground: (H, W) mask where anomalies may appear (required).
            rng: numpy Generator or int seed (default: the generator's own stream).
            modality: overrides the generator's ``modality`` for this call (e.g. one choice
                per epoch, the paper's Selective Modality, instead of one per sample).

        With only one image given, the modality is that image's.
        """
        rgb = _image_arg(rgb, "rgb", "(H, W, 3)")
        depth = _image_arg(depth, "depth", "(H, W), (H, W, 1) or (H, W, 3)")
        if rgb is None and depth is None:
            msg = "rgb and depth are both None; pass at least one image"
            raise ValueError(msg)
        shape = (rgb if rgb is not None else depth).shape[:2]
        if rgb is not None and depth is not None and depth.shape[:2] != shape:
            msg = f"depth must have the RGB image's height and width {shape}; got {depth.shape[:2]}"
            raise ValueError(msg)
        if foreground is None:
            msg = "foreground is required: an (H, W) mask of where the object is"
            raise ValueError(msg)
        fg = mask2d(foreground, "foreground", shape)
        choice = self.modality if modality is None else _arrays.one_of(modality, "modality", ("random", *MODALITIES))
        g = self.rng if rng is None else generator(rng)

        mask = utag_mask(fg, g, **self.mask_options)
        texture, name = self.bank.draw(g)
        keys = list(TEXTURE_AUGMENTATIONS)
        ops = tuple(keys[i] for i in g.choice(len(keys), size=self.augmentations, replace=False))
        colour = augment_texture(texture, shape, g, ops)
        gray_source = np.repeat(np.asarray(_as_gray(texture))[..., None], 3, axis=2)
        gray = augment_texture(gray_source, shape, g, ops)
        beta = draw_beta(g, self.beta_mean, self.beta_std, *self.beta_range, truncated=self.beta_truncated)
        modality = MODALITIES[int(g.integers(3))] if choice == "random" else choice
        if rgb is None:
            modality = "depth"
        elif depth is None:
            modality = "rgb"
        out_rgb, out_depth = rgb, depth
        if modality in ("both", "rgb"):
            out_rgb = blend_texture(rgb, _in_scale(colour, rgb), mask, beta)
        if modality in ("both", "depth"):
            out_depth = blend_texture(depth, _in_scale(gray, depth), mask, beta)
        return TextureAnomaly(rgb=out_rgb, depth=out_depth, mask=mask, label=max_pool_mask(mask, self.pool),
                              beta=beta, modality=modality, texture=name, augmentations=ops)


def _as_gray(texture: np.ndarray):
    from PIL import Image

    return Image.fromarray(texture).convert("L")
