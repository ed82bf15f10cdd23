import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from xmodal.data import synthetic
from xmodal.data.synthesis import (
    APPEARANCE_CORRUPTIONS,
    TEXTURE_AUGMENTATIONS,
    G2SFSynthesizer,
    GeometryPool,
    TargetAugmentation,
    TextureAnomalyGenerator,
    TextureBank,
    _util,
    augment_texture,
    blend_texture,
    corrupt_appearance,
    cut_paste,
    draw_beta,
    g2sf_mask,
    max_pool_mask,
    perlin_mask,
    perlin_noise,
    utag_mask,
)

ndi = pytest.importorskip("scipy.ndimage")


# --- Perlin noise -------------------------------------------------------------------------------


def perlin_reference(shape, scale, seed):
    """Plain float64 Perlin noise, pixel by pixel: the same gradients (the first draw of the
    generator), the four corner dot products, quintic fade, rows then columns, times sqrt 2."""
    h, w = shape
    sy, sx = scale
    theta = np.random.default_rng(seed).uniform(0, 2 * np.pi, size=(sy + 1, sx + 1))
    def fade(t):
        return 6 * t**5 - 15 * t**4 + 10 * t**3
    out = np.zeros(shape)
    for i in range(h):
        for j in range(w):
            y, x = i * sy / h, j * sx / w
            r, c = math.floor(y), math.floor(x)
            v, u = y - r, x - c
            dots = {}
            for dr in (0, 1):
                for dc in (0, 1):
                    a = theta[r + dr, c + dc]
                    dots[dr, dc] = math.cos(a) * (v - dr) + math.sin(a) * (u - dc)
            left = dots[0, 0] + fade(v) * (dots[1, 0] - dots[0, 0])
            right = dots[0, 1] + fade(v) * (dots[1, 1] - dots[0, 1])
            out[i, j] = math.sqrt(2) * (left + fade(u) * (right - left))
    return out


@pytest.mark.parametrize(("shape", "scale"), [((32, 32), (4, 4)), ((37, 53), (16, 2)), ((20, 9), (1, 8))])
def test_perlin_noise_equals_float64_reference(shape, scale):
    noise = perlin_noise(shape, scale, 7)
    assert noise.dtype == np.float32 and noise.shape == shape
    np.testing.assert_allclose(noise, perlin_reference(shape, scale, 7), atol=2e-6)


def test_perlin_noise_statistics():
    fields = np.stack([perlin_noise(128, s, seed) for seed in range(20) for s in (1, 4, 16)])
    assert fields.min() >= -1 and fields.max() <= 1
    assert abs(fields.mean()) < 0.05
    assert 0.15 < fields.std() < 0.45
    # Gradient noise vanishes on the lattice points: rows and columns 0, 32, 64, 96 at 4 cells.
    noise = perlin_noise(128, 4, 3)
    np.testing.assert_allclose(noise[::32, ::32], 0, atol=1e-6)
    assert np.abs(noise).max() > 0.3


def test_perlin_seeds_and_rotation():
    a = perlin_noise(64, (2, 8), 11)
    np.testing.assert_array_equal(a, perlin_noise(64, (2, 8), np.random.default_rng(11)))
    assert not np.array_equal(a, perlin_noise(64, (2, 8), 12))
    # 90 degrees counter-clockwise about the centre is np.rot90 on a square image.
    np.testing.assert_allclose(perlin_noise(64, (2, 8), 11, angle=90), np.rot90(a), atol=1e-6)
    rotated = perlin_noise(64, (2, 8), 11, angle=45)
    assert rotated[0, 0] == 0 and rotated[-1, -1] == 0  # uncovered corners are 0
    assert np.abs(rotated[16:48, 16:48]).max() > 0.2


def test_perlin_mask_threshold_and_seed():
    for seed in range(5):
        low = perlin_mask(96, seed, threshold=0.3)
        high = perlin_mask(96, seed, threshold=0.5)
        assert low.dtype == bool and low.shape == (96, 96)
        assert (high <= low).all()  # the same noise, a higher threshold: a subset
        np.testing.assert_array_equal(low, perlin_mask(96, seed, threshold=0.3))
    fractions = [perlin_mask(128, seed).mean() for seed in range(30)]
    assert 0.02 < np.mean(fractions) < 0.3


def test_perlin_bad_input():
    with pytest.raises(ValueError, match="shape"):
        perlin_noise((0, 5), 2)
    with pytest.raises(TypeError, match="scale"):
        perlin_noise(8, 2.5)
    with pytest.raises(TypeError, match="rng"):
        perlin_noise(8, 2, rng="seed")
    with pytest.raises(ValueError, match="max_scale_exp"):
        perlin_mask(8, 0, min_scale_exp=3, max_scale_exp=1)
    with pytest.raises(ValueError, match="threshold"):
        perlin_mask(8, 0, threshold=float("nan"))


# --- masks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("connectivity", [4, 8])
def test_label_matches_scipy(connectivity):
    g = np.random.default_rng(0)
    structure = None if connectivity == 4 else np.ones((3, 3))
    for density in (0.3, 0.5, 0.6):
        mask = g.random((45, 61)) < density
        labels, count = _util.label(mask, connectivity)
        expected, n = ndi.label(mask, structure=structure)
        assert count == n
        np.testing.assert_array_equal(labels, expected)  # the same numbering as scipy


def test_box_sum_matches_scipy():
    a = np.random.default_rng(1).random((40, 57))
    for size in (3, 5, 50):
        expected = ndi.uniform_filter(a, size=size, mode="mirror") * size * size
        np.testing.assert_allclose(_util.box_sum(a, size), expected, atol=1e-9)


def blob_foreground(h=512, w=512):
    rows, cols = np.mgrid[0:h, 0:w]
    return ((rows - h / 2) / (0.35 * h)) ** 2 + ((cols - w / 2) / (0.3 * w)) ** 2 < 1


@pytest.mark.parametrize("skip_last", [False, True])
def test_g2sf_mask_is_the_reference_recipe(skip_last):
    """The first Perlin draw is reproduced and filtered here with scipy; g2sf_mask must give the
    same mask whenever that draw already passes the 300 px test."""
    fg = blob_foreground()
    checked = 0
    for seed in range(12):
        candidate = perlin_mask(512, np.random.default_rng(seed)) & fg
        labels, n = ndi.label(candidate)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        ok = (sizes >= 100) & (sizes <= 1600)
        ok[0] = False
        if skip_last and n:
            ok[n] = False
        expected = ok[labels]
        if expected.sum() < 300:
            continue
        got = g2sf_mask(fg, seed, dilation=0, skip_last_component=skip_last)
        np.testing.assert_array_equal(got, expected)
        dilated = g2sf_mask(fg, seed, skip_last_component=skip_last)
        np.testing.assert_array_equal(dilated, ndi.binary_dilation(expected, structure=np.ones((3, 3))))
        checked += 1
    assert checked >= 3


def test_g2sf_mask_component_rules_and_foreground():
    fg_a = blob_foreground(300, 260)
    fg_b = np.zeros_like(fg_a)
    fg_b[:, 100:] = True
    for seed in range(6):
        mask = g2sf_mask([fg_a, fg_b], seed, work_size=None, dilation=0)
        assert mask.shape == fg_a.shape
        assert not (mask & ~(fg_a & fg_b)).any()
        sizes = np.bincount(ndi.label(mask)[0].ravel())[1:]
        assert sizes.sum() >= 300 and sizes.min() >= 100 and sizes.max() <= 1600
        dilated = g2sf_mask([fg_a, fg_b], seed, work_size=None)
        assert not (dilated & ~ndi.binary_dilation(fg_a & fg_b, structure=np.ones((3, 3)))).any()
    # At another image size the rules hold at the 512^2 working size, then the mask is resized.
    small = g2sf_mask(blob_foreground(200, 200), 3, dilation=0)
    assert small.shape == (200, 200) and small.any()


def test_g2sf_mask_errors():
    with pytest.raises(ValueError, match=r"foregrounds.*empty"):
        g2sf_mask(np.zeros((64, 64), bool), 0)
    tiny = np.zeros((512, 512), bool)
    tiny[:10, :10] = True
    with pytest.raises(ValueError, match="min_total"):
        g2sf_mask(tiny, 0)
    thin = np.zeros((512, 512), bool)
    thin[:, 200:202] = True  # 1024 px, but never a 300 px mask in 100-1600 px pieces of a 2 px line
    with pytest.raises(ValueError, match="after 5 tries"):
        g2sf_mask(thin, 0, max_tries=5)
    with pytest.raises(ValueError, match="foregrounds\\[1\\]"):
        g2sf_mask([np.ones((8, 8)), np.ones((9, 8))], 0)
    with pytest.raises(TypeError, match="foregrounds"):
        g2sf_mask("mask", 0)
    with pytest.raises(ValueError, match="foregrounds must be a non-empty \\(H, W\\) array"):
        g2sf_mask(np.ones((4, 4, 3)), 0)
    with pytest.raises(ValueError, match="connectivity"):
        g2sf_mask(blob_foreground(), 0, connectivity=6)


def test_utag_mask_combinations():
    fg = blob_foreground(128, 128)
    checked = 0
    for seed in range(8):
        g = np.random.default_rng(seed)
        first = perlin_mask(128, g, 0, 5, 0.5) & fg
        second = perlin_mask(128, g, 0, 5, 0.5) & fg
        if not max_pool_mask(first).any():
            continue  # the first draw would be rejected; the retries are not reproduced here
        np.testing.assert_array_equal(utag_mask(fg, seed, combine="first"), first)
        np.testing.assert_array_equal(utag_mask(fg, seed, combine="union"), first | second)
        if max_pool_mask(first & second).any():
            np.testing.assert_array_equal(utag_mask(fg, seed, combine="intersection"), first & second)
        checked += 1
    assert checked >= 4
    for seed in range(10):
        mask = utag_mask(fg, seed)
        assert not (mask & ~fg).any() and max_pool_mask(mask).any()


def test_utag_mask_errors():
    with pytest.raises(ValueError, match="foreground is empty"):
        utag_mask(np.zeros((64, 64), bool), 0)
    speck = np.zeros((64, 64), bool)
    speck[0, 0] = True  # the rotation leaves the corner uncovered: no mask ever reaches it
    with pytest.raises(ValueError, match="in 3 tries"):
        utag_mask(speck, 0, max_tries=3)
    with pytest.raises(ValueError, match="combine"):
        utag_mask(np.ones((64, 64), bool), 0, combine="xor")


def test_max_pool_mask_equals_torch():
    torch = pytest.importorskip("torch")
    mask = np.random.default_rng(0).random((75, 83)) < 0.02
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], 8)[0, 0]
    np.testing.assert_array_equal(max_pool_mask(mask, 8), expected.numpy() > 0)
    assert max_pool_mask(np.ones((576, 576)), 8).shape == (72, 72)
    with pytest.raises(ValueError, match="pool"):
        max_pool_mask(mask, 100)


# --- G2SF cut-paste -------------------------------------------------------------------------------


def plane_scene(h=64, w=64, z=0.5, seed=0):
    """A textured RGB image and an organized cloud of a tilted plane with a valid square."""
    g = np.random.default_rng(seed)
    rgb = g.integers(0, 256, (h, w, 3)).astype(np.uint8)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    xyz = np.stack([cols * 1e-3 + 0.01, rows * 1e-3 + 0.01, z + 1e-4 * rows], axis=-1).astype(np.float32)
    return rgb, xyz


def test_cut_paste_in_place_formulas():
    rgb, raw = plane_scene()
    xyz = raw.copy()
    xyz[:, :8] = 0  # background removed on the left: x, y of pasted points come from raw
    source_rgb, source_xyz = plane_scene(seed=1, z=0.6)
    source_xyz[..., 2] += 0.002 * np.sin(np.arange(64) / 5)[None, :]  # relief
    mask = np.zeros((64, 64), bool)
    mask[10:25, 10:25] = True  # 225 px, inside the target
    mask[40:50, 30:45] = True  # 150 px
    mask[55:60, 55:60] = True  # 25 px: too small, skipped
    out_rgb, out_xyz, written, pieces = cut_paste(rgb, xyz, source_rgb, source_xyz, mask, 3, raw_xyz=raw)
    assert len(pieces) == 2
    assert written.sum() == 375 and not (written & ~mask).any()
    np.testing.assert_array_equal(out_rgb[~written], rgb[~written])
    np.testing.assert_array_equal(out_xyz[~written], xyz[~written])
    for piece in pieces:
        m = piece.mask
        assert piece.shift == (0, 0) and 0 <= piece.ratio < 0.5 and 2e-4 <= abs(piece.offset) <= 2e-3
        blend = rgb[m] * piece.ratio + source_rgb[m].astype(np.float64) * (1 - piece.ratio)
        assert np.abs(out_rgb[m] - blend).max() <= 0.5 + 1e-9
        np.testing.assert_allclose(piece.target_centroid, xyz[m].astype(np.float64).mean(0))
        np.testing.assert_allclose(piece.source_centroid, source_xyz[m].astype(np.float64).mean(0))
        z = source_xyz[m][:, 2] - piece.source_centroid[2] + piece.target_centroid[2] + piece.offset
        np.testing.assert_allclose(out_xyz[m][:, 2], z, atol=1e-7)
        np.testing.assert_array_equal(out_xyz[m][:, :2], raw[m][:, :2])
        # The relief is the source's, around the target's mean height plus the offset.
        assert abs(out_xyz[m][:, 2].mean() - piece.target_centroid[2] - piece.offset) < 1e-6


def test_cut_paste_moves_pieces_off_the_foreground():
    rgb, xyz = plane_scene()
    xyz[:, 32:] = 0  # the target's right half has no points
    source_rgb, source_xyz = plane_scene(seed=2)
    mask = np.zeros((64, 64), bool)
    mask[20:32, 44:56] = True  # 144 px, all off the target's foreground
    for opaque in (False, True):
        out_rgb, out_xyz, written, (piece,) = cut_paste(rgb, xyz, source_rgb, source_xyz, mask, 5,
                                                        opaque_shifted=opaque)
        dr, dc = piece.shift
        assert (dr, dc) != (0, 0)
        moved = np.zeros_like(mask)
        moved[20 + dr:32 + dr, 44 + dc:56 + dc] = True
        np.testing.assert_array_equal(written, moved)
        centre = (25 + dr, 49 + dc)  # the integer centroid lands on the target's foreground
        assert xyz[centre].all()
        has_raw = moved & xyz.all(-1)  # raw_xyz defaults to xyz: no x, y off its foreground
        assert (out_xyz[moved & ~has_raw] == 0).all()
        np.testing.assert_array_equal(out_xyz[has_raw][:, :2], xyz[has_raw][:, :2])
        expected = rgb[moved] * piece.ratio + source_rgb[mask].astype(np.float64) * (1 - piece.ratio)
        assert np.abs(out_rgb[moved] - expected).max() <= 0.5 + 1e-9
        if opaque:
            assert piece.ratio == 0
            np.testing.assert_array_equal(out_rgb[moved], source_rgb[mask])


def test_cut_paste_missing_points_and_clipping():
    rgb, xyz = plane_scene()
    source_rgb, source_xyz = plane_scene(seed=4)
    source_xyz[12:14, 12:30] = 0  # holes in the geometry source
    mask = np.zeros((64, 64), bool)
    mask[10:20, 10:30] = True
    _, out_xyz, written, _ = cut_paste(rgb, xyz, source_rgb, source_xyz, mask, 0)
    assert (out_xyz[12:14, 12:30] == 0).all()  # no source point: a missing point
    assert written[12:14, 12:30].all()
    xyz[:, 26:] = 0
    mask[:] = False
    mask[10:25, 15:30] = True  # 11 of 15 columns on the foreground: more than 2/3, pasted in place
    out_rgb, out_xyz, written, (piece,) = cut_paste(rgb, xyz, source_rgb, source_xyz, mask, 0, clip_to_foreground=True)
    assert piece.shift == (0, 0)
    assert not written[:, 26:].any() and written[10:25, 15:26].all()
    assert (out_rgb[:, 26:] == 0).all() and (out_xyz[:, 26:] == 0).all()
    xyz[:, 25:] = 0  # exactly 2/3 is not more than 2/3: the piece moves onto the foreground
    assert cut_paste(rgb, xyz, source_rgb, source_xyz, mask, 0)[3][0].shift != (0, 0)


def test_cut_paste_bad_input():
    rgb, xyz = plane_scene()
    mask = np.zeros((64, 64), bool)
    with pytest.raises(TypeError, match="rgb must be a uint8"):
        cut_paste(rgb.astype(np.float32), xyz, rgb, xyz, mask)
    with pytest.raises(ValueError, match="source_xyz must have the target's height"):
        cut_paste(rgb, xyz, rgb, xyz[:32], mask)
    with pytest.raises(ValueError, match="mask must have shape"):
        cut_paste(rgb, xyz, rgb, xyz, mask[:10])
    with pytest.raises(TypeError, match="xyz must be a floating-point"):
        cut_paste(rgb, xyz.astype(np.int32), rgb, xyz, mask)
    with pytest.raises(ValueError, match="ratio_range must be \\(low, high\\) with low <= high"):
        cut_paste(rgb, xyz, rgb, xyz, mask, ratio_range=(0.5, 0.1))
    with pytest.raises(ValueError, match="offset_range"):
        cut_paste(rgb, xyz, rgb, xyz, mask, offset_range=(-1.0, 0.1))
    with pytest.raises(ValueError, match="scale"):
        TargetAugmentation(scale=(0.0, 1.0))
    bad = xyz.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="raw_xyz contains NaN"):
        cut_paste(rgb, xyz, rgb, xyz, mask, raw_xyz=bad)


def test_target_augmentation_presets_and_identity():
    assert TargetAugmentation.for_category("dowel") == TargetAugmentation(10.0, 0.05, (0.9, 1.1), False)
    assert TargetAugmentation.for_category("bagel") == TargetAugmentation(45.0, 0.1, (0.8, 1.25), True)
    assert TargetAugmentation.for_category("CandyCane", "eyecandies").rotation == 90
    rgb, xyz = plane_scene(31, 47)
    same = TargetAugmentation(0.0, 0.0, (1.0, 1.0), False).apply([rgb, xyz], 0)
    np.testing.assert_array_equal(same[0], rgb)
    np.testing.assert_array_equal(same[1], xyz)
    # Nearest and 0 outside: every output pixel is an input pixel or empty, jointly for all arrays.
    warped_rgb, warped_xyz = TargetAugmentation().apply([rgb, xyz], 5)
    valid = warped_xyz.any(-1)
    assert 0 < valid.sum() < valid.size
    points = {tuple(p) for p in xyz.reshape(-1, 3)}
    assert all(tuple(p) in points for p in warped_xyz[valid])
    index = {tuple(p): i for i, p in enumerate(xyz.reshape(-1, 3))}
    np.testing.assert_array_equal(warped_rgb[valid], rgb.reshape(-1, 3)[[index[tuple(p)] for p in warped_xyz[valid]]])


def appearance_image(seed=0, size=96):
    sample, _ = synthetic.make_sample("puck", image_size=size, seed=seed)
    return sample.rgb


def test_appearance_corruptions():
    img = appearance_image()
    g = np.random.default_rng(0)
    for name, fn in APPEARANCE_CORRUPTIONS.items():
        out = fn(img, np.random.default_rng(1))
        assert out.dtype == np.uint8 and out.shape == img.shape, name
        np.testing.assert_array_equal(out, fn(img, np.random.default_rng(1)))
    # Exact semantics where they are simple.
    gammas = np.random.default_rng(2).uniform(0.5, 2.0, size=3)
    expected = np.stack([np.clip((np.linspace(0, 1, 256, dtype=np.float32) ** np.float32(gm)) * 255, 0, 255)
                         .astype(np.uint8)[img[..., c]] for c, gm in enumerate(gammas)], axis=-1)
    np.testing.assert_array_equal(APPEARANCE_CORRUPTIONS["gamma_contrast"](img, np.random.default_rng(2)), expected)
    np.testing.assert_array_equal(APPEARANCE_CORRUPTIONS["invert"](img, g, p=1.0), 255 - img)
    np.testing.assert_array_equal(APPEARANCE_CORRUPTIONS["elastic"](img, g, alpha=(0.0, 0.0)), img)
    blurred = APPEARANCE_CORRUPTIONS["average_blur"](img, g)
    reference = np.stack([ndi.uniform_filter(img[..., c].astype(np.float64), 50, mode="mirror") for c in range(3)], -1)
    assert np.abs(blurred - reference).max() <= 0.5 + 1e-6
    changed = [name for name, fn in APPEARANCE_CORRUPTIONS.items() if name != "invert"
               and np.abs(fn(img, np.random.default_rng(3)).astype(int) - img).mean() > 0.3]
    assert len(changed) == 7, changed
    out, names = corrupt_appearance(img, np.random.default_rng(4))
    assert len(set(names)) == 3 and set(names) <= set(APPEARANCE_CORRUPTIONS)
    np.testing.assert_array_equal(out, corrupt_appearance(img, np.random.default_rng(4))[0])


# --- G2SF synthesizer on the synthetic generator's data ---------------------------------------------


@pytest.fixture(scope="module")
def domes():
    """Background-removed dome samples (points off the object zeroed) and their raw clouds."""
    raw, pre = [], []
    for i in range(5):
        sample, truth = synthetic.make_sample("dome", image_size=160, seed=0, split="train", index=i)
        xyz = sample.xyz.copy()
        xyz[truth.height <= 0] = 0
        raw.append(sample)
        pre.append(sample.replace(xyz=xyz))
    return pre, raw


def test_synthesizer_outputs_are_geometrically_sensible(domes):
    pre, raw = domes
    synth = G2SFSynthesizer(pre, raw=raw, n=6, seed=1)
    assert len(synth) == 6 and synth.augmentation == TargetAugmentation()
    for i in range(len(synth)):
        item = synth[i]
        assert item.rgb.dtype == np.uint8 and item.xyz.dtype == np.float32 and item.mask.dtype == bool
        assert item.mask.any() and item.modalities == ("rgb", "xyz")
        assert item.target_index != item.appearance_index
        changed = (item.rgb != item.target.rgb).any(-1) | (item.xyz != item.target.xyz).any(-1)
        assert not (changed & ~item.mask).any()
        target_z = item.target.xyz[..., 2]
        geometry = synth.geometry_sources[item.geometry_index]
        claimed = np.zeros_like(item.mask)  # pixels a later piece wrote over
        for piece in item.components[::-1]:
            assert 2e-4 <= abs(piece.offset) <= 2e-3 and 0 <= piece.ratio < 0.5
            all_rows, all_cols = np.nonzero(piece.mask)
            whole = geometry[all_rows - piece.shift[0], all_cols - piece.shift[1]]
            np.testing.assert_allclose(piece.source_centroid, whole[whole.all(-1)].astype(np.float64).mean(0))
            rows, cols = np.nonzero(piece.mask & ~claimed)
            claimed |= piece.mask
            source = geometry[rows - piece.shift[0], cols - piece.shift[1]]
            has_source = source.all(-1)
            written = item.xyz[rows, cols]
            ok = has_source & item.raw_xyz[rows, cols, :2].all(-1)
            assert (written[~ok] == 0).all()
            z = source[ok, 2] - piece.source_centroid[2] + piece.target_centroid[2] + piece.offset
            np.testing.assert_allclose(written[ok, 2], z, atol=1e-6)
            np.testing.assert_array_equal(written[ok, :2], item.raw_xyz[rows, cols][ok, :2])
            on_object = ok & (target_z[rows, cols] != 0)
            # The dome is at most 16 mm high: pasted points stay within that of the old surface.
            assert np.abs(written[on_object, 2] - target_z[rows, cols][on_object]).max() < 0.02
        # Points appear only where the raw cloud has one (pieces may reach past the object).
        assert not (item.xyz.any(-1) & ~item.raw_xyz.any(-1)).any()
        sample = item.sample()
        assert sample.label == 1 and sample.defect == "synthetic" and sample.category == "dome"


def test_synthesizer_is_reproducible_item_by_item(domes):
    pre, raw = domes
    a = G2SFSynthesizer(pre, raw=raw, n=4, seed=5)
    b = G2SFSynthesizer(pre, raw=raw, n=4, seed=5)
    last = a[3]
    np.testing.assert_array_equal(b[3].rgb, last.rgb)  # b draws item 3 first
    np.testing.assert_array_equal(b[3].xyz, last.xyz)
    np.testing.assert_array_equal(a[3].mask, last.mask)
    other = G2SFSynthesizer(pre, raw=raw, n=4, seed=6)[3]
    assert not np.array_equal(other.mask, last.mask)
    normal = a.normal(2)
    assert normal.label == 0 and not normal.gt.any()
    np.testing.assert_array_equal(normal.xyz, a.normal(2).xyz)
    points = {tuple(p) for p in pre[2].xyz.reshape(-1, 3)}
    assert all(tuple(p) in points for p in normal.xyz[normal.foreground()])  # no invented point


def test_synthesizer_on_a_background_removed_dataset(tmp_path):
    """The documented pipeline on the synthetic generator's files: background-removed clouds
    (padded from 150 to 200 px) as samples, the generated clouds as raw."""
    from xmodal.data import MVTec3D
    from xmodal.data.preprocess import BackgroundRemoved

    root = synthetic.make_dataset(tmp_path / "data", categories=["puck"], n_train=3, n_test=0, n_validation=0,
                                  n_test_good=0, image_size=150, defects=())
    raw = MVTec3D(root, "puck", "train")
    train = BackgroundRemoved(raw, tmp_path / "cache")
    item = G2SFSynthesizer(train, raw=raw, n=2, seed=0)[1]
    assert item.rgb.shape == (200, 200, 3) and item.mask.any()
    assert not (item.xyz.any(-1) & ~item.raw_xyz.any(-1)).any()
    plain = G2SFSynthesizer(train, raw=raw, n=2, augmentation=None, seed=0)[1]
    np.testing.assert_array_equal(plain.raw_xyz[25:175, 25:175], raw[plain.target_index].xyz)
    assert not plain.raw_xyz[:25].any() and not plain.raw_xyz[:, 175:].any()
    np.testing.assert_array_equal(plain.target.xyz, train[plain.target_index].xyz)


def test_synthesizer_options(domes):
    pre, _ = domes
    pool = GeometryPool({"dome": pre, "puck": [synthetic.make_sample("puck", image_size=160, split="train",
                                                                     index=i)[0] for i in range(3)]}, per_class=2)
    assert len(pool) == 4 and pool[0].shape == (160, 160, 3)
    eye = G2SFSynthesizer(pre, n=2, dataset="eyecandies", geometry_sources=pool, augmentation=None, seed=2)
    assert eye.mask_options["relax_every"] == 10
    item = eye[0]
    fg = item.target.xyz.any(-1)
    assert not (item.mask & ~fg).any() and (item.rgb[~fg] == 0).all()  # clipped to the target
    assert G2SFSynthesizer(pre, dataset="eyecandies").n == 1000 and G2SFSynthesizer(pre).n == 800
    mild = G2SFSynthesizer(pre, n=1, category="dowel", opaque_shifted=True, skip_last_component=True)
    assert mild.augmentation.flips is False and mild.mask_options["skip_last_component"]
    assert mild[0].mask.any()


def test_synthesizer_bad_input(domes):
    pre, raw = domes
    with pytest.raises(ValueError, match="at least 2"):
        G2SFSynthesizer(pre[:1])
    with pytest.raises(ValueError, match="raw must hold one cloud per sample"):
        G2SFSynthesizer(pre, raw=raw[:2])
    with pytest.raises(ValueError, match="dataset must be one of"):
        G2SFSynthesizer(pre, dataset="kitti")
    with pytest.raises(TypeError, match="augmentation"):
        G2SFSynthesizer(pre, augmentation=45)
    with pytest.raises(TypeError, match="samples must be a sequence"):
        G2SFSynthesizer(iter(pre))
    with pytest.raises(ValueError, match="mask_options has keys g2sf_mask does not take: \\['size'\\]"):
        G2SFSynthesizer(pre, mask_options={"size": 3})
    with pytest.raises(IndexError):
        G2SFSynthesizer(pre, n=2)[2]
    big = [np.ones((200, 200, 3), np.float32)] * len(pre)
    with pytest.raises(ValueError, match=r"raw\[.*larger"):
        G2SFSynthesizer(pre, raw=big, n=1)[0]


# --- BridgeNet UTAG ---------------------------------------------------------------------------------


def test_blend_texture_formula():
    x = np.array([[[10, 200, 30], [40, 50, 60]]], dtype=np.uint8)
    t = np.array([[[250, 0, 100], [0, 0, 0]]], dtype=np.uint8)
    m = np.array([[True, False]])
    out = blend_texture(x, t, m, 0.25)
    np.testing.assert_array_equal(out, [[[round(0.75 * 250 + 0.25 * 10), 50, round(0.75 * 100 + 0.25 * 30)],
                                         [40, 50, 60]]])
    xf = np.random.default_rng(0).random((5, 6)).astype(np.float32)
    tf = np.random.default_rng(1).random((5, 6)).astype(np.float32)
    mf = np.random.default_rng(2).random((5, 6))
    got = blend_texture(xf, tf, mf, 0.6)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, xf * (1 - mf) + 0.4 * tf * mf + 0.6 * xf * mf, rtol=1e-6)
    # Normalising after blending equals blending normalised images (BridgeNet blends tensors).
    mean, std = 0.45, 0.22
    np.testing.assert_allclose((got - mean) / std, blend_texture((xf - mean) / std, (tf - mean) / std, mf, 0.6),
                               atol=1e-5)
    with pytest.raises(ValueError, match="beta"):
        blend_texture(xf, tf, mf, 1.5)
    with pytest.raises(ValueError, match="texture must have the image's shape"):
        blend_texture(xf, tf[:2], mf, 0.5)


def test_beta_distribution():
    g = np.random.default_rng(0)
    betas = np.array([draw_beta(g) for _ in range(20000)])
    assert betas.min() == 0.2 and betas.max() == 0.8
    clipped = 0.5 * math.erfc(1 / math.sqrt(2))  # P(N(0.5, 0.3) < 0.2) = Phi(-1)
    assert abs((betas == 0.2).mean() - clipped) < 0.012
    assert abs((betas == 0.8).mean() - clipped) < 0.012
    assert abs(betas.mean() - 0.5) < 0.01
    truncated = np.array([draw_beta(g, truncated=True) for _ in range(20000)])
    assert truncated.min() > 0.2 and truncated.max() < 0.8
    # A N(0.5, 0.3) truncated to [0.2, 0.8] (+-1 sigma) has standard deviation 0.3 * 0.5396.
    assert abs(truncated.std() - 0.3 * 0.5396) < 0.004


def utag_inputs(size=96):
    sample, truth = synthetic.make_sample("block", image_size=size, seed=0)
    depth = np.repeat((truth.height / truth.height.max()).astype(np.float32)[..., None], 3, axis=2)
    return sample.rgb, depth, truth.height > 0


def test_texture_anomaly_generator():
    rgb, depth, fg = utag_inputs()
    gen = TextureAnomalyGenerator(seed=0)
    modalities = set()
    for _ in range(12):
        out = gen(rgb, depth, fg)
        modalities.add(out.modality)
        assert not (out.mask & ~fg).any() and out.label.any()
        np.testing.assert_array_equal(out.label, max_pool_mask(out.mask, 8))
        assert 0.2 <= out.beta <= 0.8 and len(set(out.augmentations)) == 3
        assert out.rgb.dtype == np.uint8 and out.depth.dtype == np.float32
        np.testing.assert_array_equal(out.rgb[~out.mask], rgb[~out.mask])
        np.testing.assert_array_equal(out.depth[~out.mask], depth[~out.mask])
        if out.modality == "rgb":
            assert out.depth is depth
        if out.modality in ("both", "depth"):
            inside = out.depth[out.mask]
            np.testing.assert_array_equal(inside[:, 0], inside[:, 1])  # the grayscale copy
            texture = (inside - out.beta * depth[out.mask]) / (1 - out.beta)
            assert texture.min() > -1e-5 and texture.max() < 1 + 1e-5  # a [0, 1] texture was blended
        if out.modality == "depth":
            assert out.rgb is rgb
    assert modalities == {"both", "rgb", "depth"}
    a = TextureAnomalyGenerator(seed=3)(rgb, depth, fg)
    b = TextureAnomalyGenerator(seed=0)(rgb, depth, fg, rng=3)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert gen(rgb, depth, fg, modality="rgb").depth is depth  # a per-call choice
    only_depth = TextureAnomalyGenerator(modality="depth", seed=1)(None, depth[..., 0], fg)
    assert only_depth.rgb is None and only_depth.depth.shape == fg.shape and only_depth.modality == "depth"


def test_texture_anomaly_generator_bad_input():
    rgb, depth, fg = utag_inputs()
    gen = TextureAnomalyGenerator()
    with pytest.raises(ValueError, match="foreground is required"):
        gen(rgb, depth)
    with pytest.raises(ValueError, match="foreground is empty"):
        gen(rgb, depth, np.zeros_like(fg))
    with pytest.raises(ValueError, match="foreground must have shape"):
        gen(rgb, depth, fg[:10])
    with pytest.raises(TypeError, match="rgb must be a uint8 or float"):
        gen(rgb.astype(np.int32), depth, fg)
    with pytest.raises(ValueError, match="rgb must have shape"):
        gen(rgb[..., 0], depth, fg)
    with pytest.raises(ValueError, match="modality"):
        TextureAnomalyGenerator(modality="ir")
    with pytest.raises(ValueError, match="beta_range"):
        TextureAnomalyGenerator(beta_range=(0.8, 0.2))


def test_texture_augmentations():
    texture = np.random.default_rng(0).integers(0, 256, (50, 70, 3)).astype(np.uint8)
    plain = augment_texture(texture, (40, 90), np.random.default_rng(0), ())
    assert plain.shape == (40, 90, 3)
    np.testing.assert_array_equal(augment_texture(texture, (40, 90), np.random.default_rng(0), ("hflip",)),
                                  plain[:, ::-1])
    gray = augment_texture(texture, (40, 90), np.random.default_rng(0), ("grayscale",))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    for name in TEXTURE_AUGMENTATIONS:
        out = augment_texture(texture, (64, 64), np.random.default_rng(1), (name,))
        assert out.dtype == np.uint8 and out.shape == (64, 64, 3), name


def test_texture_bank_builtin():
    pytest.importorskip("skimage")
    bank = TextureBank()
    assert bank.names == ["value_noise", "fractal_noise", "stripes", "checkerboard", "brick", "grass", "gravel"]
    g = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        texture, name = bank.draw(g)
        seen.add(name)
        assert texture.dtype == np.uint8 and texture.ndim == 3 and texture.shape[2] == 3
        assert texture.std() > 1, name
    assert seen == set(bank.names)


def test_texture_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "textures"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(folder / "a.png")
    Image.fromarray(np.full((25, 25), 60, np.uint8)).save(folder / "sub" / "b.jpg")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    with pytest.warns(UserWarning, match="broken.png"):
        bank = TextureBank(folder, builtin=False)
    assert [p.rsplit("/", 1)[-1] for p in bank.names] == ["a.png", "b.jpg"]
    names = {bank.draw(np.random.default_rng(s))[1].rsplit("/", 1)[-1] for s in range(10)}
    assert names == {"a.png", "b.jpg"}
    rgb, depth, fg = utag_inputs()
    out = TextureAnomalyGenerator(bank, modality="rgb", seed=0)(rgb, depth, fg)
    assert out.texture.endswith((".png", ".jpg"))

    # A file whose header reads but whose pixels do not decode is dropped when drawn.
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "t.png")
    truncated = tmp_path / "cut"
    truncated.mkdir()
    (truncated / "t.png").write_bytes((tmp_path / "t.png").read_bytes()[:60])
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(truncated / "z.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bank = TextureBank(truncated, builtin=False)  # the PNG header (size) is intact
    assert len(bank) == 2
    with pytest.warns(UserWarning, match="cannot be decoded"):
        drawn = {bank.draw(np.random.default_rng(s))[1] for s in range(20)}
    assert drawn == {str(truncated / "z.png")}
    assert len(bank) == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no readable image"):
        TextureBank(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextureBank(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a directory"):
        TextureBank(folder / "a.png")
    with pytest.raises(ValueError, match="texture bank is empty"):
        TextureBank(None, builtin=False)
    with pytest.raises(TypeError, match="textures\\[0\\] must be a uint8"):
        TextureBank([np.zeros((4, 4), np.float32)])


def test_no_torch_or_scipy_import():
    code = ("import sys, numpy as np; from xmodal.data import synthesis as s; "
            "t = [np.full((9, 9, 3), 7, np.uint8)]; "
            "gen = s.TextureAnomalyGenerator(t, builtin=False); "
            "gen(np.zeros((64, 64, 3), np.uint8), None, np.ones((64, 64), bool)); "
            "s.g2sf_mask(np.ones((64, 64), bool), 0); "
            "assert 'torch' not in sys.modules and 'scipy' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
