"""G2SF's cut-paste anomalies for RGB + organized point clouds (the fuser's training set)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ... import _arrays
from ..sample import Sample
from ._util import (
    child,
    cloud,
    generator,
    interval,
    label,
    mask2d,
    resize_nearest,
    rgb_image,
    valid_points,
)
from .corruptions import corrupt_appearance
from .perlin import g2sf_mask

__all__ = [
    "DATASETS",
    "MVTEC_MILD_CATEGORIES",
    "G2SFSynthesizer",
    "GeometryPool",
    "PastedComponent",
    "SyntheticAnomaly",
    "TargetAugmentation",
    "cut_paste",
]

MVTEC_MILD_CATEGORIES = ("dowel", "tire", "foam", "rope", "cable_gland")
DATASETS = ("mvtec", "eyecandies")


@dataclass(frozen=True)
class TargetAugmentation:
    """A random rigid-ish warp applied jointly to a target's RGB image and clouds.

    G2SF (reference ``normal_augmentation``) augments the 9-channel stack (RGB, cloud, raw
    cloud) with torchvision's RandomRotation(+-rotation), RandomHorizontalFlip and
    RandomVerticalFlip (p = 0.5 each, when ``flips``) and RandomAffine(translate, scale): all
    with nearest interpolation and 0 outside, so no point is invented and uncovered pixels are
    missing points and black pixels. Here the steps are composed into one warp (one nearest
    resampling instead of two). Presets (:meth:`for_category`):

    - MVTec 3D-AD dowel, tire, foam, rope, cable_gland: +-10 degrees, translate 0.05, scale
      0.9-1.1, no flips;
    - the other MVTec 3D-AD classes (and xmodal's synthetic ones): +-45 degrees, both flips,
      translate 0.1, scale 0.8-1.25;
    - Eyecandies: +-90 degrees, both flips, translate 0.025, scale 0.9-1.1.

    Attributes:
        rotation: degrees; the angle is uniform in [-rotation, rotation].
        translate: fraction of the width (height) the image may shift horizontally (vertically),
            rounded to whole pixels.
        scale: (low, high) of a uniform zoom factor.
        flips: random horizontal and vertical flips.
    """

    rotation: float = 45.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.8, 1.25)
    flips: bool = True

    def __post_init__(self) -> None:
        _arrays.number(self.rotation, "rotation", minimum=0.0, maximum=180.0)
        _arrays.number(self.translate, "translate", minimum=0.0, maximum=1.0)
        interval(self.scale, "scale", 0.0, None, low_open=True)

    @classmethod
    def for_category(cls, category: str, dataset: str = "mvtec") -> TargetAugmentation:
        _arrays.one_of(dataset, "dataset", DATASETS)
        if dataset == "eyecandies":
            return cls(90.0, 0.025, (0.9, 1.1), True)
        if category in MVTEC_MILD_CATEGORIES:
            return cls(10.0, 0.05, (0.9, 1.1), False)
        return cls()

    def apply(self, arrays, rng) -> list[np.ndarray]:
        """The same random warp of each (H, W[, C]) array (nearest, 0 outside)."""
        g = generator(rng)
        h, w = arrays[0].shape[:2]
        angle = math.radians(g.uniform(-self.rotation, self.rotation)) if self.rotation else 0.0
        hflip = self.flips and g.uniform() < 0.5
        vflip = self.flips and g.uniform() < 0.5
        shift_c = round(g.uniform(-self.translate * w, self.translate * w)) if self.translate else 0
        shift_r = round(g.uniform(-self.translate * h, self.translate * h)) if self.translate else 0
        zoom = g.uniform(*self.scale) if self.scale[0] != self.scale[1] else float(self.scale[0])
        # Output pixel -> input pixel, undoing the steps in reverse: translate + zoom, flips,
        # rotation (all about the image centre).
        cr, cc = (h - 1) / 2, (w - 1) / 2
        rows = (np.arange(h)[:, None] - cr - shift_r) / zoom
        cols = (np.arange(w)[None, :] - cc - shift_c) / zoom
        rows, cols = (-rows if vflip else rows), (-cols if hflip else cols)
        cos, sin = math.cos(angle), math.sin(angle)
        src_r = np.rint(cr + cos * rows - sin * cols).astype(np.intp)
        src_c = np.rint(cc + sin * rows + cos * cols).astype(np.intp)
        inside = (src_r >= 0) & (src_r < h) & (src_c >= 0) & (src_c < w)
        index = np.where(inside, src_r * w + src_c, 0).ravel()
        out = []
        for a in arrays:
            warped = a.reshape(h * w, -1)[index].reshape(a.shape)
            warped[~inside] = 0
            out.append(warped)
        return out


@dataclass
class PastedComponent:
    """One connected piece of a cut-paste anomaly.

    Attributes:
        mask: (H, W) bool target pixels it wrote.
        shift: (rows, cols) from source to target pixels; (0, 0) when pasted in place.
        ratio: r, the weight of the target's own colour (target r + source (1 - r)); 0 for an
            opaque paste.
        offset: signed z offset in metres added after centroid alignment.
        target_centroid, source_centroid: (3,) float64 mean valid point under the component in
            the target (before pasting) and in the geometry source.
    """

    mask: np.ndarray
    shift: tuple[int, int]
    ratio: float
    offset: float
    target_centroid: np.ndarray
    source_centroid: np.ndarray


def _components(mask: np.ndarray, connectivity: int) -> list[np.ndarray]:
    """Flat pixel indices (raster order) of each connected component, in label order."""
    labels, count = label(mask, connectivity)
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.cumsum(np.bincount(flat, minlength=count + 1))
    return [order[bounds[k - 1]:bounds[k]] for k in range(1, count + 1)]


def _shift_onto(source: np.ndarray, shape, target_fg: np.ndarray, rng):
    """Moves a component so its centroid lands on a random target-foreground pixel whose
    surroundings fit the component's bounding box (G2SF's ``shift_mask``). Returns (target
    indices, source indices, shift) or None when no such pixel exists."""
    h, w = shape
    rows, cols = np.divmod(source, w)
    centre_r, centre_c = int(rows.mean()), int(cols.mean())
    half_r, half_c = int(rows.max() - rows.min()) // 2, int(cols.max() - cols.min()) // 2
    allowed = np.zeros(shape, dtype=bool)
    allowed[half_r:h - half_r, half_c:w - half_c] = True
    candidates = np.flatnonzero(allowed & target_fg)
    if len(candidates) == 0:
        return None
    land_r, land_c = np.divmod(candidates[int(rng.integers(len(candidates)))], w)
    dr, dc = int(land_r - centre_r), int(land_c - centre_c)
    new_r, new_c = rows + dr, cols + dc
    keep = (new_r >= 0) & (new_r < h) & (new_c >= 0) & (new_c < w)
    return new_r[keep] * w + new_c[keep], source[keep], (dr, dc)


def cut_paste(rgb, xyz, source_rgb, source_xyz, mask, rng=None, *, raw_xyz=None, min_component: int = 100,
              connectivity: int = 4, inside_fraction: float = 2 / 3, ratio_range=(0.0, 0.5),
              offset_range=(2e-4, 2e-3), opaque_shifted: bool = False, clip_to_foreground: bool = False):
    """Pastes the masked regions of a source image and cloud onto a target (G2SF Sec. 3.7).

    ``mask`` is in the source's pixel frame. Each of its connected components larger than
    ``min_component`` pixels (strictly) is pasted in turn:

    - where: in place when more than ``inside_fraction`` (2/3) of it lies on the target's
      foreground (valid points of ``xyz``); otherwise moved so its centroid lands on a random
      target-foreground pixel around which its bounding box fits (pixels pushed off the image
      are dropped; kept in place when no such pixel exists);
    - colour: target r + source (1 - r) with r ~ U(0, 0.5), rounded;
    - geometry: z = z_src - c_src + c_tgt + s U(2e-4, 2e-3) m, a random sign s, where c_src and
      c_tgt are the mean valid points under the component in the source and the target, so
      the source's relief replaces the target's around the target's mean height; x and y come
      from the target's raw cloud (``raw_xyz``; G2SF reads the un-preprocessed MVTec cloud,
      whose x, y exist on the background too). Pixels without a source point, or without a
      raw point, become missing points (0, 0, 0).

    Values are the reference's (``cut_paste.py``; the paper gives none). ``opaque_shifted=True``
    reproduces the reference's moved components, which it copies before blending them with
    themselves, so they end up opaque (r = 0). ``clip_to_foreground=True`` is the reference's
    Eyecandies step: afterwards everything off the target's foreground (RGB, cloud and mask)
    is zeroed. A component with no valid target or source point under it is skipped (the
    reference would write NaN).

    Args:
        rgb, xyz: the target, (H, W, 3) uint8 and (H, W, 3) float organized cloud.
        source_rgb, source_xyz: appearance and geometry sources, the same shapes.
        mask: (H, W) bool, in the sources' frame.
        rng: numpy Generator, int seed or None.
        raw_xyz: (H, W, 3) raw target cloud for x and y (default: ``xyz``).

    Returns:
        (rgb uint8, xyz float32, mask bool of the target pixels written, list of
        :class:`PastedComponent`); the inputs are not modified.
    """
    rgb = rgb_image(rgb, "rgb")
    shape = rgb.shape[:2]
    xyz = _same_shape(cloud(xyz, "xyz"), "xyz", shape)
    raw = xyz if raw_xyz is None else _same_shape(cloud(raw_xyz, "raw_xyz"), "raw_xyz", shape)
    source_rgb = _same_shape(rgb_image(source_rgb, "source_rgb"), "source_rgb", shape)
    source_xyz = _same_shape(cloud(source_xyz, "source_xyz"), "source_xyz", shape)
    mask = mask2d(mask, "mask", shape)
    min_component = _arrays.integer(min_component, "min_component", minimum=0)
    _arrays.one_of(connectivity, "connectivity", (4, 8))
    inside_fraction = _arrays.number(inside_fraction, "inside_fraction", minimum=0.0, maximum=1.0)
    ratio_range = interval(ratio_range, "ratio_range", 0.0, 1.0)
    offset_range = interval(offset_range, "offset_range", 0.0, None)
    g = generator(rng)
    target_fg = valid_points(xyz)
    out_rgb = rgb.reshape(-1, 3).copy()
    out_xyz = xyz.reshape(-1, 3).copy()
    src_rgb, src_xyz, raw_flat = source_rgb.reshape(-1, 3), source_xyz.reshape(-1, 3), raw.reshape(-1, 3)
    fg_flat = target_fg.ravel()
    written = np.zeros(out_rgb.shape[0], dtype=bool)
    pasted = []
    for source in _components(mask, connectivity):
        if len(source) <= min_component:
            continue
        target, shift, moved = source, (0, 0), None
        if np.count_nonzero(fg_flat[source]) <= int(inside_fraction * len(source)):
            moved = _shift_onto(source, shape, target_fg, g)
            if moved is not None:
                target, source, shift = moved
        t_valid, s_valid = valid_points(out_xyz[target]), valid_points(src_xyz[source])
        if not t_valid.any() or not s_valid.any():
            continue
        ratio = g.uniform(*ratio_range)
        if opaque_shifted and moved is not None:
            ratio = 0.0
        out_rgb[target] = np.clip(np.rint(out_rgb[target] * ratio + src_rgb[source] * (1 - ratio)), 0, 255)
        c_tgt = out_xyz[target][t_valid].astype(np.float64).mean(axis=0)
        c_src = src_xyz[source][s_valid].astype(np.float64).mean(axis=0)
        offset = g.uniform(*offset_range) * (1.0 if g.integers(2) else -1.0)
        raw_pts = raw_flat[target]
        ok = s_valid & (raw_pts[:, 0] != 0) & (raw_pts[:, 1] != 0)
        new = np.zeros((len(target), 3), dtype=np.float32)
        new[ok, :2] = raw_pts[ok, :2]
        new[ok, 2] = src_xyz[source][ok, 2] - c_src[2] + c_tgt[2] + offset
        out_xyz[target] = new
        written[target] = True
        component = np.zeros(shape, dtype=bool)
        component.flat[target] = True
        pasted.append(PastedComponent(component, shift, float(ratio), float(offset), c_tgt, c_src))
    if clip_to_foreground:
        out_rgb[~fg_flat] = 0
        out_xyz[~fg_flat] = 0
        written &= fg_flat
    return out_rgb.reshape(rgb.shape), out_xyz.reshape(xyz.shape), written.reshape(shape), pasted


def _same_shape(a: np.ndarray, name: str, shape) -> np.ndarray:
    if a.shape[:2] != tuple(shape):
        msg = f"{name} must have the target's height and width {tuple(shape)}; got {a.shape[:2]}"
        raise ValueError(msg)
    return a


def _xyz_of(item, name: str) -> np.ndarray:
    return cloud(item.xyz if isinstance(item, Sample) else item, name)


class GeometryPool(Sequence):
    """G2SF's geometry sources: ``per_class`` random training clouds of each dataset, loaded
    when indexed.

    The reference shuffles each class's training clouds once (seed 0) and keeps 8 per class of
    MVTec 3D-AD (24 of Eyecandies), pooling all classes: a source may come from another class
    (the paper: "the source point clouds can be other classes or more general 3D models").

    Args:
        datasets: a list of datasets (one per class), or a dict {category: dataset} (taken in
            sorted key order); items are :class:`Sample` or (H, W, 3) clouds.
        per_class: clouds per dataset (all of them when a dataset holds fewer).
        seed: the selection seed.
    """

    def __init__(self, datasets, per_class: int = 8, seed: int = 0):
        if isinstance(datasets, dict):
            datasets = [datasets[k] for k in sorted(datasets)]
        if not isinstance(datasets, (list, tuple)) or not datasets:
            msg = f"datasets must be a non-empty list or dict of datasets; got {type(datasets).__name__}"
            raise TypeError(msg)
        per_class = _arrays.integer(per_class, "per_class", minimum=1)
        g = generator(seed, "seed")
        self._refs = [(d, int(i)) for d in datasets for i in g.permutation(len(d))[:per_class]]
        if not self._refs:
            msg = "datasets: every dataset is empty; the geometry pool needs at least one cloud"
            raise ValueError(msg)

    def __len__(self) -> int:
        return len(self._refs)

    def __getitem__(self, index: int) -> np.ndarray:
        dataset, i = self._refs[index]
        return _xyz_of(dataset[i], f"geometry source {index}")


@dataclass
class SyntheticAnomaly:
    """One G2SF synthetic anomaly and where it came from.

    Attributes:
        rgb: (H, W, 3) uint8 image with the anomaly.
        xyz: (H, W, 3) float32 organized cloud with the anomaly ((0, 0, 0) = missing).
        mask: (H, W) bool pixels changed (the ground truth; G2SF dilates it again when it
            makes patch labels).
        target: the augmented, defect-free target as a :class:`Sample` (what the part looked
            like before the paste).
        raw_xyz: the augmented raw target cloud the pasted x and y come from.
        target_index, appearance_index, geometry_index: indices of the target and appearance
            source in the training samples and of the geometry source in the pool.
        corruptions: the appearance corruptions applied to the appearance source, in order.
        components: one :class:`PastedComponent` per pasted piece.
        category: the target's category.
        modalities: which modalities the anomaly changed; G2SF always changes both.
    """

    rgb: np.ndarray
    xyz: np.ndarray
    mask: np.ndarray
    target: Sample
    raw_xyz: np.ndarray
    target_index: int
    appearance_index: int
    geometry_index: int
    corruptions: tuple[str, ...]
    components: list[PastedComponent]
    category: str = ""
    modalities: tuple[str, ...] = field(default=("rgb", "xyz"))

    def sample(self) -> Sample:
        """The anomaly as a :class:`Sample` (label 1, defect "synthetic", gt = mask)."""
        return Sample(rgb=self.rgb, xyz=self.xyz, gt=self.mask, label=1, defect="synthetic", category=self.category)


def _match_raw(raw: np.ndarray, shape, index: int) -> np.ndarray:
    """The raw cloud on the preprocessed cloud's pixel grid: equal, or zero-padded centred (the
    MVTec preprocessing pads to a square side that is a multiple of 100; the reference pads the
    raw cloud the same way)."""
    h, w = raw.shape[:2]
    if (h, w) == tuple(shape):
        return raw
    if h > shape[0] or w > shape[1]:
        msg = (f"raw[{index}] is {h}x{w}, larger than the sample's {shape[0]}x{shape[1]}; it must be the same "
               "size or smaller (then it is zero-padded)")
        raise ValueError(msg)
    top, left = (shape[0] - h) // 2, (shape[1] - w) // 2
    return np.pad(raw, [(top, shape[0] - h - top), (left, shape[1] - w - left), (0, 0)])


class G2SFSynthesizer(Sequence):
    """G2SF's synthetic anomalies of one class, reproducible item by item.

    Item ``i`` (a :class:`SyntheticAnomaly`) depends only on ``(seed, i)``, so a dataset of
    ``n`` items can be built in any order or in parallel. Each item:

    1. target: a random training sample, jointly warped (RGB, cloud, raw cloud) by the class's
       :class:`TargetAugmentation`;
    2. appearance source: another random training sample, its RGB corrupted by 3 of the 8
       :data:`~xmodal.data.synthesis.APPEARANCE_CORRUPTIONS`;
    3. geometry source: a random cloud of the :class:`GeometryPool`, resized (nearest) to the
       image size;
    4. mask: :func:`~xmodal.data.synthesis.g2sf_mask` on the appearance source's and the
       geometry source's foregrounds (Eyecandies: the geometry source's only, with the
       threshold relaxed every 10 tries);
    5. :func:`cut_paste` onto the target (Eyecandies: clipped to the target's foreground).

    :meth:`normal` gives the augmented defect-free samples G2SF mixes in.

    Args:
        samples: the class's training samples (a sequence of :class:`Sample`, e.g. an
            :class:`~xmodal.data.MVTec3D` after background removal), at least 2, all of one size.
        n: number of anomalies (default: 800 for MVTec 3D-AD, 1000 for Eyecandies, the paper's).
        raw: the un-preprocessed clouds of the same samples in the same order (Samples or
            arrays; the same size or smaller, then zero-padded centred), where the pasted x and
            y come from. None: each sample's own cloud; then a piece pasted past the object
            finds no x, y there and leaves missing points. xmodal's synthetic data has no
            separate raw cloud: pass its background-removed samples as ``samples`` and the
            generated ones as ``raw`` (samples that keep their background plane would make
            the whole plane foreground).
        geometry_sources: a sequence of Samples or clouds (e.g. a :class:`GeometryPool` over
            every class); None: a GeometryPool of this class's samples.
        n_geometry_sources: clouds per class for that default pool (8; Eyecandies 24).
        dataset: "mvtec" or "eyecandies": the reference's per-dataset recipe.
        category: selects the augmentation preset (default: the samples' category).
        augmentation: "auto" (the preset), None (no warp) or a :class:`TargetAugmentation`.
        corruptions: appearance corruptions per item (3).
        opaque_shifted: paste moved components opaque, as the reference (see :func:`cut_paste`).
        skip_last_component: the reference's off-by-one in the component filter (see
            :func:`~xmodal.data.synthesis.g2sf_mask`).
        mask_options: further keyword arguments of g2sf_mask (work_size, threshold, ...).
        min_component: pieces of at most this many pixels are not pasted (100, the reference's
            rule on MVTec 3D-AD's ~800 px images; scale it down for small images).
        seed: the dataset seed.
    """

    def __init__(self, samples, *, n: int | None = None, raw=None, geometry_sources=None,
                 n_geometry_sources: int | None = None, dataset: str = "mvtec", category: str | None = None,
                 augmentation="auto", corruptions: int = 3, opaque_shifted: bool = False,
                 skip_last_component: bool = False, mask_options: dict | None = None, seed: int = 0,
                 min_component: int = 100):
        if not isinstance(samples, Sequence) or isinstance(samples, (str, bytes)):
            msg = f"samples must be a sequence of Samples (a dataset or a list); got {type(samples).__name__}"
            raise TypeError(msg)
        if len(samples) < 2:
            msg = (f"samples must hold at least 2 training samples (the target and the appearance source differ); "
                   f"got {len(samples)}")
            raise ValueError(msg)
        if raw is not None and len(raw) != len(samples):
            msg = f"raw must hold one cloud per sample ({len(samples)}); got {len(raw)}"
            raise ValueError(msg)
        self.dataset = _arrays.one_of(dataset, "dataset", DATASETS)
        eyecandies = dataset == "eyecandies"
        self.samples, self.raw = samples, raw
        self.n = _arrays.integer((1000 if eyecandies else 800) if n is None else n, "n", minimum=0)
        self.seed = _arrays.integer(seed, "seed", minimum=0)
        if category is None:
            category = getattr(samples, "category", None) or samples[0].category
        self.category = str(category)
        if isinstance(augmentation, str):
            _arrays.one_of(augmentation, "augmentation", ("auto",))
            augmentation = TargetAugmentation.for_category(self.category, dataset)
        elif augmentation is not None and not isinstance(augmentation, TargetAugmentation):
            msg = f"augmentation must be 'auto', None or a TargetAugmentation; got {type(augmentation).__name__}"
            raise TypeError(msg)
        self.augmentation = augmentation
        if geometry_sources is None:
            per_class = 24 if eyecandies else 8
            per_class = per_class if n_geometry_sources is None else n_geometry_sources
            geometry_sources = GeometryPool([samples], per_class, self.seed)
        if len(geometry_sources) == 0:
            msg = "geometry_sources is empty; pass clouds or None for a pool of this class's samples"
            raise ValueError(msg)
        self.geometry_sources = geometry_sources
        self.corruptions = _arrays.integer(corruptions, "corruptions", minimum=0, maximum=8)
        self.opaque_shifted = bool(opaque_shifted)
        self.min_component = _arrays.integer(min_component, "min_component", minimum=0)
        options = dict(mask_options or {})
        accepted = set(inspect.signature(g2sf_mask).parameters) - {"foregrounds", "rng"}
        unknown = sorted(set(options) - accepted)
        if unknown:
            msg = f"mask_options has keys g2sf_mask does not take: {unknown} (it takes {sorted(accepted)})"
            raise ValueError(msg)
        self.mask_options = {"skip_last_component": bool(skip_last_component),
                             **({"relax_every": 10} if eyecandies else {}), **options}

    def __len__(self) -> int:
        return self.n

    def _target(self, index: int, g):
        sample = self.samples[index]
        raw = sample.xyz if self.raw is None else _xyz_of(self.raw[index], f"raw[{index}]")
        raw = _match_raw(raw, sample.shape, index)
        arrays = [sample.rgb, sample.xyz, raw]
        if self.augmentation is not None:
            arrays = self.augmentation.apply(arrays, g)
        return sample, arrays

    def normal(self, index: int) -> Sample:
        """Defect-free training sample ``index % len(samples)``, warped as the targets are
        (label 0, an all-False gt), reproducible from ``(seed, index)``."""
        index = _arrays.integer(index, "index", minimum=0)
        sample, (rgb, xyz, _) = self._target(index % len(self.samples), child(self.seed, 1, index))
        return Sample(rgb=rgb, xyz=xyz, gt=np.zeros(sample.shape, dtype=bool), category=self.category)

    def __getitem__(self, index: int) -> SyntheticAnomaly:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            msg = f"index must be an int; got {type(index).__name__}"
            raise TypeError(msg)
        if not -self.n <= index < self.n:
            msg = f"index {index} out of range for {self.n} synthetic anomalies"
            raise IndexError(msg)
        index = int(index) % self.n
        g = child(self.seed, 0, index)
        for _ in range(10):  # an empty result (every piece skipped or clipped) is drawn again
            item = self._draw(g)
            if item.mask.any():
                return item
        msg = f"synthetic anomaly {index}: 10 draws pasted nothing; the targets' foregrounds are too small"
        raise ValueError(msg)

    def _draw(self, g) -> SyntheticAnomaly:
        count = len(self.samples)
        t = int(g.integers(count))
        a = int(g.integers(count - 1))
        a += a >= t  # any other sample, uniformly
        gi = int(g.integers(len(self.geometry_sources)))
        target, (rgb, xyz, raw) = self._target(t, g)
        appearance = self.samples[a]
        if appearance.shape != target.shape:
            msg = (f"training samples must all have one size; sample {a} is {appearance.shape}, "
                   f"sample {t} is {target.shape}")
            raise ValueError(msg)
        corrupted, names = corrupt_appearance(appearance.rgb, g, self.corruptions)
        geometry = resize_nearest(_xyz_of(self.geometry_sources[gi], f"geometry source {gi}"), target.shape)
        foregrounds = [valid_points(geometry)]
        if self.dataset == "mvtec":
            foregrounds.insert(0, valid_points(appearance.xyz))
        mask = g2sf_mask(foregrounds, g, **self.mask_options)
        out_rgb, out_xyz, written, pieces = cut_paste(
            rgb, xyz, corrupted, geometry, mask, g, raw_xyz=raw, opaque_shifted=self.opaque_shifted,
            min_component=self.min_component,
            clip_to_foreground=self.dataset == "eyecandies")
        clean = Sample(rgb=rgb, xyz=xyz, gt=np.zeros(target.shape, dtype=bool), category=self.category)
        return SyntheticAnomaly(rgb=out_rgb, xyz=out_xyz, mask=written, target=clean, raw_xyz=raw, target_index=t,
                                appearance_index=a, geometry_index=gi, corruptions=names, components=pieces,
                                category=self.category)
