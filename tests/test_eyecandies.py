import hashlib
import math

import numpy as np
import pytest
from PIL import Image

from xmodal.data import DatasetError, Eyecandies, convert_eyecandies
from xmodal.data.eyecandies import FOCAL_LENGTH, depth_to_points, read_depth, remove_eyecandies_background

SIZE = 64


def look_at(centre, target):
    """World->camera pose (4x4) of a camera at `centre` looking at `target`, image rows going
    towards world +y (the table's "down")."""
    z = (target - centre) / np.linalg.norm(target - centre)
    down = np.array([0.0, 1.0, 0.0])
    y = down - (down @ z) * z
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    rotation = np.stack([x, y, z])  # rows: camera axes in world coordinates
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = -rotation @ centre
    return pose


def render(pose):
    """Depth (camera z) and world points of a table y = 0 with a ball of radius 1.5 cm on it."""
    rotation, centre = pose[:3, :3], -pose[:3, :3].T @ pose[:3, 3]
    v, u = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    rays_cam = np.stack([(u - SIZE / 2) / FOCAL_LENGTH, (v - SIZE / 2) / FOCAL_LENGTH, np.ones_like(u)], -1)
    rays = rays_cam @ rotation  # world directions, camera z component = 1
    t_table = -centre[1] / rays[..., 1]
    ball, radius = np.array([0.0, -0.015, 0.4]), 0.015
    oc = centre - ball
    b = rays @ oc
    a = np.sum(rays * rays, -1)
    disc = b * b - a * (oc @ oc - radius**2)
    t_ball = np.where(disc > 0, (-b - np.sqrt(np.clip(disc, 0, None))) / a, np.inf)
    t = np.minimum(t_table, t_ball)
    return t, centre + rays * t[..., None]


def write_raw_sample(folder, sample_id, pose, mask=None, seed=0):
    depth, world = render(pose)
    low, high = depth.min() - 0.01, depth.max() + 0.01
    png = np.round((depth - low) / (high - low) * 65535).astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(png).save(folder / f"{sample_id}_depth.png")
    info = f"normalization:\n  min: {float(low)!r}\n  max: {float(high)!r}\n"
    (folder / f"{sample_id}_info_depth.yaml").write_text(info)
    np.savetxt(folder / f"{sample_id}_pose.txt", pose)
    rgb = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / f"{sample_id}_image_4.png")
    Image.fromarray(rgb[..., ::-1].copy()).save(folder / f"{sample_id}_image_0.png")  # ignored
    if mask is not None:
        Image.fromarray(np.repeat(np.where(mask, 255, 0).astype(np.uint8)[..., None], 3, -1)).save(
            folder / f"{sample_id}_mask.png")
    return world


def reference_background_loop(pc):
    """The background rule transcribed pixel by pixel (the reference converter's shape)."""
    pc = pc.reshape(-1, 3)
    dz = pc[SIZE // 2, 1] - pc[-(SIZE - SIZE // 2), 1]
    dy = pc[SIZE // 2, 2] - pc[-(SIZE - SIZE // 2), 2]
    norm = math.sqrt(dz**2 + dy**2)
    start = np.array([0, pc[-(SIZE - SIZE // 2), 1], pc[-(SIZE - SIZE // 2), 2]])
    c, s = dy / norm, dz / norm
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    out = np.empty_like(pc)
    for i in range(pc.shape[0]):
        p = rot @ (pc[i] - start)
        if p[1] > -0.02:
            p = -start
        if p[2] > 1.8:
            p = -start
        elif p[0] > 1 or p[0] < -1:
            p = -start
        q = rot.T @ p + start
        out[i] = np.array([q[0], q[2], q[1]]) * [0.1, -0.1, 0.1]
    return out.reshape(SIZE, SIZE, 3)


POSES = [look_at(np.array([0.01, -0.45, -0.25]), np.array([0.0, -0.01, 0.4])),
         look_at(np.array([-0.02, -0.5, -0.2]), np.array([0.01, 0.0, 0.42]))]


def digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_back_projection_inverts_the_projection(tmp_path):
    world = write_raw_sample(tmp_path, "000", POSES[0])
    depth = read_depth(tmp_path / "000_depth.png", tmp_path / "000_info_depth.yaml")
    points = depth_to_points(depth, np.loadtxt(tmp_path / "000_pose.txt"))
    np.testing.assert_allclose(points, world, atol=1e-4, rtol=0)


def test_conversion_matches_the_reference_rule_and_layout(tmp_path):
    src, dst = tmp_path / "raw", tmp_path / "converted"
    train = src / "CandyCane" / "train" / "data"
    test = src / "CandyCane" / "test_public" / "data"
    worlds = {"train/000": write_raw_sample(train, "000", POSES[0], seed=1),
              "train/001": write_raw_sample(train, "001", POSES[1], seed=2)}
    mask = np.zeros((SIZE, SIZE), bool)
    mask[20:30, 25:40] = True
    worlds["test/00"] = write_raw_sample(test, "00", POSES[1], mask=np.zeros_like(mask), seed=3)
    worlds["test/01"] = write_raw_sample(test, "01", POSES[0], mask=mask, seed=4)
    before = digest(src)
    convert_eyecandies(src, dst)
    assert digest(src) == before  # the raw dataset is only read

    train_set = Eyecandies(dst, "CandyCane", "train")
    assert [e.stem for e in train_set.entries] == ["000", "001"] and train_set.defects == ["good"]
    test_set = Eyecandies(dst, "CandyCane", "test")
    assert [(e.defect, e.stem) for e in test_set.entries] == [("bad", "001"), ("good", "000")]
    bad, good = test_set[0], test_set[1]
    np.testing.assert_array_equal(bad.gt, mask)
    assert not good.gt.any() and bad.label == 1 and good.label == 0
    assert (dst / "CandyCane/test/bad/rgb/001.png").read_bytes() == (test / "01_image_4.png").read_bytes()

    for key, sample in (("train/000", train_set[0]), ("train/001", train_set[1]), ("test/01", bad), ("test/00", good)):
        world = worlds[key]
        expected = reference_background_loop(world)
        np.testing.assert_allclose(sample.xyz, expected, atol=1e-4, rtol=0)
        fg = sample.foreground()
        assert 0.05 < fg.mean() < 0.9  # both object and background present
        assert (sample.xyz[~fg][:, 0] == 0).all()  # background: x = 0 exactly
        # Foreground points are the scene's world points, reordered (x, z, y) and scaled.
        np.testing.assert_allclose(sample.xyz[fg], (world[..., [0, 2, 1]] * [0.1, -0.1, 0.1])[fg], atol=1e-5)
        assert (world[fg][:, 1] < -0.02 + 1e-3).all()  # the ball's part above 2 cm


def test_vectorised_rule_equals_the_loop(rng):
    pts = rng.normal(0, 0.5, (SIZE, SIZE, 3)) + np.array([0, 0, 1.0])
    np.testing.assert_allclose(remove_eyecandies_background(pts), reference_background_loop(pts), atol=1e-12)


def test_bad_raw_files(tmp_path):
    data = tmp_path / "raw" / "Lollipop" / "train" / "data"
    write_raw_sample(data, "000", POSES[0])
    (data / "000_info_depth.yaml").unlink()
    with pytest.raises(DatasetError, match=r"000_info_depth\.yaml: missing file of Eyecandies sample 000"):
        convert_eyecandies(tmp_path / "raw", tmp_path / "out")
    (data / "000_info_depth.yaml").write_text("something: else\n")
    with pytest.raises(DatasetError, match=r"000_info_depth\.yaml: expected 'normalization"):
        convert_eyecandies(tmp_path / "raw", tmp_path / "out")
    (data / "000_info_depth.yaml").write_text("normalization:\n  min: 0.5\n  max: 1.5\n")
    (data / "000_pose.txt").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(DatasetError, match=r"000_pose\.txt: the camera pose must be a finite 4x4"):
        convert_eyecandies(tmp_path / "raw", tmp_path / "out")
    (data / "000_depth.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match=r"000_depth\.png: cannot read the 16-bit depth PNG"):
        convert_eyecandies(tmp_path / "raw", tmp_path / "out")
    with pytest.raises(ValueError, match="lies inside the source dataset"):
        convert_eyecandies(tmp_path / "raw", tmp_path / "raw" / "converted")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        convert_eyecandies(tmp_path / "missing", tmp_path / "out")
