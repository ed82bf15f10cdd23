"""Anomaly synthesis: Perlin masks, G2SF's cut-paste anomalies, BridgeNet's texture anomalies.

Methods that learn from synthetic defects build their training data here (numpy and PIL only:
no torch, scipy or OpenCV is needed). Everything random takes a numpy Generator or an int seed.

Building blocks
---------------
- :func:`perlin_noise`, :func:`perlin_mask`: DRAEM-style Perlin noise (quintic fade) and
  thresholded, rotated masks.
- :func:`g2sf_mask`: G2SF's mask recipe (Perlin at 512^2 inside the foregrounds, components of
  100-1600 px, >= 300 px in total, 3x3 dilation).
- :func:`cut_paste`: G2SF's paste of a source's colour and relief onto a target, piece by piece.
- :func:`corrupt_appearance` / :data:`APPEARANCE_CORRUPTIONS`: G2SF's 8 imgaug corruptions.
- :func:`utag_mask`, :func:`blend_texture`, :func:`draw_beta`, :func:`max_pool_mask`,
  :func:`augment_texture` / :data:`TEXTURE_AUGMENTATIONS`: BridgeNet's UTAG pieces.

Ready-made generators
---------------------
- :class:`G2SFSynthesizer` (G2SF's fuser training set): ``synth[i]`` is a
  :class:`SyntheticAnomaly` (RGB, cloud, mask, the clean target, per-piece parameters), the
  same for the same ``(seed, i)``; ``synth.normal(i)`` the augmented good samples::

      train = BackgroundRemoved(MVTec3D(root, "bagel", "train"), cache)   # preprocessed clouds
      synth = G2SFSynthesizer(train, raw=MVTec3D(root, "bagel", "train"),
                              geometry_sources=GeometryPool({c: MVTec3D(root, c, "train") for c in classes}))
      item = synth[0]          # item.rgb, item.xyz, item.mask, item.components, ...

- :class:`TextureAnomalyGenerator` (BridgeNet's UTAG)::

      utag = TextureAnomalyGenerator(textures="dtd/images", seed=0)   # or the built-in bank only
      out = utag(rgb, depth, foreground)   # out.rgb, out.depth, out.mask, out.label (72x72 at 576), out.beta

What is reproduced, and what differs
------------------------------------
G2SF (paper Sec. 3.7 and supplement A/B.2, which give the recipe but no values; values from
the reference code, ``Dataset/mvtec3d_pseudo.py``, ``cut_paste.py``, ``perlin.py``):

- Reproduced: Perlin at 512^2, scales 2^0..2^4 drawn per axis, +-90 degree rotation (bilinear,
  0 outside), threshold 0.4; the mask on the appearance source's and geometry source's
  foregrounds (Eyecandies: the geometry source's, threshold x 0.9 every 10 tries down to 0.2);
  components of 100-1600 px kept (4-connected, as scipy's default), >= 300 px in total, nearest
  back to the image size, 3x3 dilation; pieces > 100 px pasted in place when > 2/3 of them lie
  on the target foreground, else moved onto it; colour target r + source (1 - r), r ~ U(0, 0.5);
  z = z_src - c_src + c_tgt +- U(2e-4, 2e-3) m with x, y from the raw target cloud; the
  per-class target augmentations (nearest, so no point is invented); 3 of the 8 appearance
  corruptions; 8 (Eyecandies 24) geometry sources per class, seeded; 800 (1000) anomalies.
- Options reproducing reference quirks (off by default, as bugs): ``skip_last_component``
  (the component loop stops one label short) and ``opaque_shifted`` (moved pieces are copied,
  then blended with themselves: opaque).
- Differences: masks, components and retries are bounded (the reference loops forever on a
  small foreground) and sizes need not be multiples of the Perlin scale; the target warp is
  one composed nearest resampling (the reference resamples twice); a moved piece keeps its
  last row and column (the reference's bounding box drops them) and lands by its pixel
  centroid (the reference: its contour's); colours are rounded (the reference truncates);
  a pasted point whose raw x or y is missing becomes (0, 0, 0) (the reference keeps a
  half-zero point) and a piece with no valid point under it is skipped (the reference writes
  NaN); Eyecandies' lower threshold for CandyCane/Lollipop sources is not reproduced. The
  appearance corruptions are re-implemented from imgaug's documented behaviour (imgaug does
  not import under numpy 2): brightness uses YCbCr or HSV (imgaug: one of six colour spaces),
  the elastic warp resamples bilinearly (imgaug: cubic), and the cartoon filter flattens
  colours with a median-cut palette instead of OpenCV's mean-shift filtering.

BridgeNet's UTAG (paper Sec. 3.3, Eqs. 7-9, Sec. 4.1; reference ``datasets/mvtec3d.py``,
``perlin.py``):

- Reproduced: two Perlin masks (scales 2^0..2^5, +-90 degrees, threshold 0.5) combined by union,
  intersection or the first alone (1/3 each), times the foreground, redrawn until the 8x8
  max-pooled label is non-empty; a texture and its grayscale copy through 3 of the 9 GLASS
  augmentations (the same three for both copies, parameters drawn per copy, as the reference
  applies one pipeline twice), resized so the shorter side covers the image and centre-cropped;
  x' = x (1 - M) + (1 - beta) t M + beta x M with beta ~ N(0.5, 0.3) clipped to [0.2, 0.8] (the
  reference; the paper's "truncated at (0.2, 0.8)" also reads as a truncated normal:
  ``beta_truncated=True``), one mask and beta for both images; the modality (both, RGB only,
  depth only) 1/3 each per sample, as the reference (a call's ``modality`` argument fixes it,
  e.g. once per epoch as the paper's Selective Modality describes).
- Differences: the textures come from a built-in procedural bank (value and fractal noise,
  stripes, checkerboards, scikit-image's brick/grass/gravel when installed) plus any folder the
  user passes: DTD cannot be downloaded here. Retries are bounded, and an empty foreground is
  an error instead of an endless loop. Blending happens on uint8 or [0, 1] float images before
  normalisation (equal to the reference's blend of normalised tensors: the weights sum to 1).
"""

from .corruptions import (
    APPEARANCE_CORRUPTIONS,
    TEXTURE_AUGMENTATIONS,
    augment_texture,
    corrupt_appearance,
)
from .cutpaste import (
    DATASETS,
    MVTEC_MILD_CATEGORIES,
    G2SFSynthesizer,
    GeometryPool,
    PastedComponent,
    SyntheticAnomaly,
    TargetAugmentation,
    cut_paste,
)
from .perlin import (
    COMBINATIONS,
    g2sf_mask,
    max_pool_mask,
    perlin_mask,
    perlin_noise,
    utag_mask,
)
from .texture import (
    IMAGE_SUFFIXES,
    MODALITIES,
    PROCEDURAL_TEXTURES,
    SKIMAGE_TEXTURES,
    TextureAnomaly,
    TextureAnomalyGenerator,
    TextureBank,
    blend_texture,
    draw_beta,
)

__all__ = [
    "APPEARANCE_CORRUPTIONS",
    "COMBINATIONS",
    "DATASETS",
    "IMAGE_SUFFIXES",
    "MODALITIES",
    "MVTEC_MILD_CATEGORIES",
    "PROCEDURAL_TEXTURES",
    "SKIMAGE_TEXTURES",
    "TEXTURE_AUGMENTATIONS",
    "G2SFSynthesizer",
    "GeometryPool",
    "PastedComponent",
    "SyntheticAnomaly",
    "TargetAugmentation",
    "TextureAnomaly",
    "TextureAnomalyGenerator",
    "TextureBank",
    "augment_texture",
    "blend_texture",
    "corrupt_appearance",
    "cut_paste",
    "draw_beta",
    "g2sf_mask",
    "max_pool_mask",
    "perlin_mask",
    "perlin_noise",
    "utag_mask",
]
