"""Image corruptions of the anomaly generators, re-implemented with numpy and PIL.

* :data:`APPEARANCE_CORRUPTIONS`: the 8 imgaug augmenters G2SF draws 3 of (without
  replacement, applied in the order drawn) to corrupt the appearance source of a cut-paste
  anomaly (``MVTecPseudoDataset.augmenters``, DRAEM's recipe with G2SF's list). imgaug 0.4.0
  does not import under numpy 2, so each is rewritten here from imgaug's documented behaviour.
* :data:`TEXTURE_AUGMENTATIONS`: the 9 torchvision transforms GLASS and BridgeNet draw 3 of to
  vary a texture (``rand_augmenter``), with the PIL operations torchvision uses for PIL images.

Every function takes and returns an (H, W, 3) uint8 image and draws its parameters from the
numpy Generator it is given.
"""

from __future__ import annotations

import numpy as np

from ._util import box_sum, sample_bilinear, smooth_noise

__all__ = ["APPEARANCE_CORRUPTIONS", "TEXTURE_AUGMENTATIONS", "augment_texture", "corrupt_appearance"]


def _pil(img):
    from PIL import Image

    return Image.fromarray(img)


def _hsv(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 HSV with PIL's ranges (hue 0..255 for a full turn)."""
    return np.array(_pil(img).convert("HSV"))


def _from_hsv(hsv: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.array(Image.fromarray(hsv, mode="HSV").convert("RGB"))


# --- G2SF's appearance corruptions (imgaug 0.4.0 semantics) ---------------------------------


def average_blur(img, rng, k: int = 50):
    """``iaa.AverageBlur(k=(50, 50))``: a k x k mean filter (OpenCV's blur: anchor at the centre,
    borders reflected without repeating the edge)."""
    return np.clip(np.rint(box_sum(img, k) / (k * k)), 0, 255).astype(np.uint8)


def gamma_contrast(img, rng, gamma=(0.5, 2.0)):
    """``iaa.GammaContrast((0.5, 2.0), per_channel=True)``: 255 (x / 255)^gamma with one gamma
    per channel, through imgaug's truncating lookup table."""
    levels = np.linspace(0, 1, 256, dtype=np.float32)
    out = np.empty_like(img)
    for c in range(3):
        table = np.clip(levels ** np.float32(rng.uniform(*gamma)) * 255, 0, 255).astype(np.uint8)
        out[..., c] = table[img[..., c]]
    return out


def multiply_add_brightness(img, rng, mul=(0.75, 1.7), add=(-50, 50)):
    """``iaa.MultiplyAndAddToBrightness(mul=(0.75, 1.7), add=(-50, 50))``: the brightness channel
    is multiplied and shifted (in random order, clipped to 0..255 after each step) in a colour
    space drawn per image. imgaug draws among six spaces (YCrCb, HSV, HLS, Lab, Luv, YUV); here
    among the two PIL converts exactly: YCbCr (Y) and HSV (V)."""
    space, channel = ("YCbCr", 0) if rng.integers(2) == 0 else ("HSV", 2)
    conv = np.array(_pil(img).convert(space)).astype(np.float64)
    factor, offset = rng.uniform(*mul), rng.uniform(*add)
    value = conv[..., channel]
    steps = (lambda v: v * factor, lambda v: v + offset)
    for step in (steps if rng.integers(2) == 0 else steps[::-1]):
        value = np.clip(np.rint(step(value)), 0, 255)
    conv[..., channel] = value
    from PIL import Image

    return np.array(Image.fromarray(conv.astype(np.uint8), mode=space).convert("RGB"))


def hue_saturation(img, rng, value=(-50, 50)):
    """``iaa.AddToHueAndSaturation((-50, 50), per_channel=True)``: independent integer shifts
    of hue (v / 255 of a full turn, wrapping) and saturation (clipped)."""
    hsv = _hsv(img).astype(np.int16)
    dh, ds = rng.integers(value[0], value[1], endpoint=True, size=2)
    hsv[..., 0] = np.mod(hsv[..., 0] + dh, 256)
    hsv[..., 1] = np.clip(hsv[..., 1] + ds, 0, 255)
    return _from_hsv(hsv.astype(np.uint8))


def autocontrast(img, rng, cutoff=(0, 20)):
    """``iaa.pillike.Autocontrast()``: PIL's autocontrast with a cutoff of 0..20 % drawn per image."""
    from PIL import ImageOps

    return np.array(ImageOps.autocontrast(_pil(img), cutoff=int(rng.integers(cutoff[0], cutoff[1], endpoint=True))))


def elastic(img, rng, alpha=(2.5, 7.5), sigma: float = 5.0):
    """``iaa.ElasticTransformation(alpha=(2.5, 7.5), sigma=5)``: pixels move by a displacement
    field of uniform(-1, 1) noise smoothed by a Gaussian of ``sigma`` and scaled by alpha;
    0 outside the image. Resampled bilinearly (imgaug 0.4.0: cubic)."""
    h, w = img.shape[:2]
    strength = rng.uniform(*alpha)
    d_rows = smooth_noise((h, w), sigma, rng) * strength
    d_cols = smooth_noise((h, w), sigma, rng) * strength
    rows, cols = np.mgrid[0:h, 0:w]
    out = sample_bilinear(img, rows + d_rows, cols + d_cols)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def invert(img, rng, p: float = 0.05):
    """``iaa.Invert(0.05, per_channel=True)``: each channel is inverted with probability p."""
    flip = rng.uniform(size=3) < p
    return np.where(flip, 255 - img, img).astype(np.uint8)


def cartoon(img, rng, saturation: float = 2.0, colours: int = 32):
    """``iaa.Cartoon(blur_ksize=3, segmentation_size=1.0, saturation=2.0, edge_prevalence=0.01)``:
    3x3 median, flat colour regions, dark edges, saturation x 2.

    imgaug flattens the colours with OpenCV's mean-shift filtering; here an adaptive palette of
    ``colours`` colours (PIL's median cut, no dithering) stands in for it. Edges follow imgaug's large-image
    rule: squared Laplacian of the gray image clipped at its 99th percentile (edge_prevalence
    0.01), median 3x3, kept above 100/255, dense 3x3 blobs and sparse 5x5 specks suppressed,
    drawn black.
    """
    from PIL import Image, ImageFilter

    smooth = _pil(img).filter(ImageFilter.MedianFilter(3))
    # The palette comes from a 4x reduced copy (median cut on all pixels is 10x slower and
    # picks much the same colours); mapping without dithering leaves flat regions.
    palette = smooth.reduce(4) if min(smooth.size) >= 16 else smooth
    palette = palette.quantize(colours, method=Image.MEDIANCUT)
    flat = np.array(smooth.quantize(palette=palette, dither=Image.NONE).convert("RGB"))
    gray = np.array(_pil(flat).convert("L")).astype(np.float64) / 255
    padded = np.pad(gray, 1, mode="reflect")
    lap = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4 * gray) ** 2
    top = np.percentile(lap, 99)
    strength = np.clip(lap, 0, top) / top if top > 0 else np.zeros_like(lap)
    level = np.array(_pil(np.rint(strength * 255).astype(np.uint8)).filter(ImageFilter.MedianFilter(3)))
    edges = (level > 100).astype(np.float64)
    edges[box_sum(edges, 3) >= 8] = 0
    edges[box_sum(edges, 5) < 3] = 0
    out = np.rint(flat * (1 - edges)[..., None]).astype(np.uint8)
    hsv = _hsv(out)
    hsv[..., 1] = np.clip(hsv[..., 1].astype(np.float64) * saturation, 0, 255).astype(np.uint8)
    return _from_hsv(hsv)


APPEARANCE_CORRUPTIONS = {
    "average_blur": average_blur,
    "gamma_contrast": gamma_contrast,
    "multiply_add_brightness": multiply_add_brightness,
    "hue_saturation": hue_saturation,
    "autocontrast": autocontrast,
    "elastic": elastic,
    "invert": invert,
    "cartoon": cartoon,
}


def corrupt_appearance(img: np.ndarray, rng: np.random.Generator, count: int = 3,
                       names=None) -> tuple[np.ndarray, tuple[str, ...]]:
    """``count`` distinct corruptions of :data:`APPEARANCE_CORRUPTIONS` drawn uniformly, applied
    in the order drawn (G2SF's ``randAugmenter``: 3 of 8). ``names`` applies a given sequence
    instead. Returns (image, names applied)."""
    if names is None:
        keys = list(APPEARANCE_CORRUPTIONS)
        names = tuple(keys[i] for i in rng.choice(len(keys), size=count, replace=False))
    for name in names:
        img = APPEARANCE_CORRUPTIONS[name](img, rng)
    return img, tuple(names)


# --- GLASS / BridgeNet texture augmentations (torchvision on PIL images) -----------------------


def _contrast(img, rng):
    from PIL import ImageEnhance

    return ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))


def _brightness(img, rng):
    from PIL import ImageEnhance

    return ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))


def _saturation_hue(img, rng):
    """ColorJitter(saturation=(0.8, 1.2), hue=(-0.2, 0.2)): both, in random order; the hue
    shift adds uint8(hue * 255) to PIL's hue channel, wrapping (torchvision's adjust_hue)."""
    from PIL import ImageEnhance

    factor, hue = rng.uniform(0.8, 1.2), rng.uniform(-0.2, 0.2)

    def shift_hue(im):
        hsv = np.array(im.convert("HSV"))
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(np.int64(hue * 255))) % 256
        return _pil(_from_hsv(hsv))

    steps = (lambda im: ImageEnhance.Color(im).enhance(factor), shift_hue)
    for step in (steps if rng.integers(2) == 0 else steps[::-1]):
        img = step(img)
    return img


def _hflip(img, rng):
    from PIL import Image

    return img.transpose(Image.FLIP_LEFT_RIGHT)


def _vflip(img, rng):
    from PIL import Image

    return img.transpose(Image.FLIP_TOP_BOTTOM)


def _grayscale(img, rng):
    return img.convert("L").convert("RGB")


def _autocontrast(img, rng):
    from PIL import ImageOps

    return ImageOps.autocontrast(img)


def _equalize(img, rng):
    from PIL import ImageOps

    return ImageOps.equalize(img)


def _rotate(img, rng):
    """RandomAffine(degrees=(-45, 45)): nearest, 0 outside."""
    from PIL import Image

    return img.rotate(rng.uniform(-45, 45), resample=Image.NEAREST, fillcolor=(0, 0, 0))


TEXTURE_AUGMENTATIONS = {
    "contrast": _contrast,
    "brightness": _brightness,
    "saturation_hue": _saturation_hue,
    "hflip": _hflip,
    "vflip": _vflip,
    "grayscale": _grayscale,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "rotate": _rotate,
}


def augment_texture(texture: np.ndarray, size: tuple[int, int], rng: np.random.Generator,
                    names: tuple[str, ...]) -> np.ndarray:
    """BridgeNet's texture pipeline: resize (bilinear) so the shorter side covers ``size``, the
    named augmentations of :data:`TEXTURE_AUGMENTATIONS` in order (parameters drawn now),
    centre crop to ``size`` (height, width). Returns (height, width, 3) uint8."""
    from PIL import Image

    img = _pil(texture)
    h, w = size
    factor = max(h / img.height, w / img.width)
    img = img.resize((max(w, round(img.width * factor)), max(h, round(img.height * factor))), Image.BILINEAR)
    for name in names:
        img = TEXTURE_AUGMENTATIONS[name](img, rng)
    top, left = (img.height - h) // 2, (img.width - w) // 2
    return np.array(img.crop((left, top, left + w, top + h)))
