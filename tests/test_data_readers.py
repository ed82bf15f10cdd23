import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from xmodal.data import DatasetError, Eyecandies, MVTec3D, Sample, categories, synthetic
from xmodal.data.preprocess import BackgroundRemoved


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.make_dataset(root, categories=["puck", "ring"], n_train=3, n_test=1, n_test_good=2, n_validation=1,
                           image_size=96, seed=5, defects=("dent", "stain", "crack"))
    return root


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def copy_category(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_round_trip_of_generated_files(dataset_root):
    test = MVTec3D(dataset_root, "puck", "test")
    assert len(test) == 2 + 3
    assert [e.defect for e in test.entries] == ["crack", "dent", "good", "good", "stain"]
    np.testing.assert_array_equal(test.labels, [1, 1, 0, 0, 1])
    for sample, entry in zip(test, test.entries, strict=False):
        expected, _ = synthetic.make_sample("puck", entry.defect, image_size=96, seed=5, split="test",
                                            index=int(entry.stem))
        assert isinstance(sample, Sample)
        assert sample.rgb.dtype == np.uint8 and sample.rgb.shape == (96, 96, 3)
        assert sample.xyz.dtype == np.float32 and sample.xyz.shape == (96, 96, 3)
        np.testing.assert_array_equal(sample.rgb, expected.rgb)
        np.testing.assert_array_equal(sample.xyz, expected.xyz)
        np.testing.assert_array_equal(sample.gt, expected.gt)
        assert sample.label == expected.label and sample.category == "puck" and sample.defect == entry.defect
        assert Path(sample.paths["xyz"]).name == f"{entry.stem}.tiff"
        assert sample.gt.any() == (entry.defect != "good")


def test_splits_indexing_and_listing(dataset_root):
    assert categories(dataset_root) == ["puck", "ring"]
    train = MVTec3D(dataset_root, "ring", "train")
    assert len(train) == 3 and train.defects == ["good"]
    assert len(MVTec3D(dataset_root, "ring", "validation")) == 1
    np.testing.assert_array_equal(train[-1].xyz, train[2].xyz)
    assert [s.name for s in train[0:2]] == ["ring/good/000", "ring/good/001"]
    assert not train[0].gt.any()  # good samples without a mask file get an all-False mask
    with pytest.raises(IndexError):
        train[3]
    with pytest.raises(TypeError, match="index must be an int"):
        train["0"]
    only = MVTec3D(dataset_root, "puck", "test", defects=["stain"])
    assert only.defects == ["stain"] and len(only) == 1
    assert "MVTec3D(" in repr(train)
    eyecandies = Eyecandies(dataset_root, "ring", "test")  # same layout, same reader
    assert len(eyecandies) == len(MVTec3D(dataset_root, "ring", "test"))


def test_sample_helpers():
    xyz = np.zeros((4, 5, 3), np.float32)
    xyz[1, 2] = (0.1, 0.2, 0.5)
    xyz[2, 2] = (0.0, 0.2, 0.5)  # one zero coordinate: not foreground (the Eyecandies background rule)
    s = Sample(rgb=np.zeros((4, 5, 3), np.uint8), xyz=xyz)
    assert s.foreground().sum() == 1 and s.points().shape == (1, 3) and s.shape == (4, 5)
    assert not s.mask().any() and s.gt is None
    with pytest.raises(TypeError, match=r"Sample.xyz must have dtype float32"):
        Sample(rgb=np.zeros((4, 5, 3), np.uint8), xyz=xyz.astype(np.float64))
    with pytest.raises(ValueError, match="same height and width"):
        Sample(rgb=np.zeros((4, 4, 3), np.uint8), xyz=xyz)
    with pytest.raises(ValueError, match=r"Sample.gt must have shape"):
        Sample(rgb=np.zeros((4, 5, 3), np.uint8), xyz=xyz, gt=np.zeros((5, 4), bool))
    with pytest.raises(ValueError, match="label must be 0"):
        Sample(rgb=np.zeros((4, 5, 3), np.uint8), xyz=xyz, label=2)


def test_missing_folders(dataset_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset root"):
        MVTec3D(tmp_path / "nope", "puck", "train")
    with pytest.raises(FileNotFoundError, match=r"category folder .*bagel"):
        MVTec3D(dataset_root, "bagel", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        MVTec3D(dataset_root, "puck", "val")
    root = copy_category(dataset_root / "puck", tmp_path / "d" / "puck").parent
    import shutil

    shutil.rmtree(root / "puck" / "validation")
    with pytest.raises(FileNotFoundError, match="validation split folder"):
        MVTec3D(root, "puck", "validation")
    shutil.rmtree(root / "puck" / "train" / "good" / "xyz")
    with pytest.raises(FileNotFoundError, match=r"train/good: missing the xyz/ folder"):
        MVTec3D(root, "puck", "train")
    with pytest.raises(FileNotFoundError, match="defect folders"):
        MVTec3D(root, "puck", "test", defects=["scratch"])


def test_unpaired_files_and_missing_masks(dataset_root, tmp_path):
    root = copy_category(dataset_root / "puck", tmp_path / "d" / "puck").parent
    (root / "puck" / "train" / "good" / "xyz" / "001.tiff").unlink()
    with pytest.raises(DatasetError, match=r"3 rgb/\*\.png and 2 xyz/\*\.tiff files do not pair up.*'001'"):
        MVTec3D(root, "puck", "train")
    (root / "puck" / "test" / "dent" / "gt" / "000.png").unlink()
    with pytest.raises(DatasetError, match=r"dent/gt/000\.png: missing ground-truth mask"):
        MVTec3D(root, "puck", "test")


@pytest.mark.parametrize(("damage", "match"), [
    ("truncate_png", r"rgb/000\.png: cannot read the RGB image"),
    ("truncate_tiff", r"xyz/000\.tiff: cannot read the point cloud"),
    ("wrong_shape", r"xyz/000\.tiff: an organized point cloud must have shape \(H, W, 3\); got \(96, 96\)"),
    ("wrong_dtype", r"xyz/000\.tiff: point coordinates must be float32 .*got int16"),
    ("all_zero", r"xyz/000\.tiff: the point cloud has no valid point"),
    ("nan", r"xyz/000\.tiff: the point cloud contains NaN"),
    ("size_mismatch", r"xyz/000\.tiff: point cloud is \(48, 48\) but the image .*rgb/000\.png is \(96, 96\)"),
    ("bad_gt", r"gt/000\.png: cannot read the ground-truth mask"),
])
def test_corrupt_files_name_the_file(dataset_root, tmp_path, damage, match):
    root = copy_category(dataset_root / "puck", tmp_path / "d" / "puck").parent
    folder = root / "puck" / "test" / "dent"
    rgb, xyz, gt = folder / "rgb" / "000.png", folder / "xyz" / "000.tiff", folder / "gt" / "000.png"
    if damage == "truncate_png":
        rgb.write_bytes(rgb.read_bytes()[:200])
    elif damage == "truncate_tiff":
        xyz.write_bytes(xyz.read_bytes()[:300])
    elif damage == "wrong_shape":
        tifffile.imwrite(xyz, np.ones((96, 96), np.float32))
    elif damage == "wrong_dtype":
        tifffile.imwrite(xyz, np.ones((96, 96, 3), np.int16), photometric="rgb")
    elif damage == "all_zero":
        tifffile.imwrite(xyz, np.zeros((96, 96, 3), np.float32), photometric="rgb")
    elif damage == "nan":
        cloud = tifffile.imread(xyz)
        cloud[5, 5, 0] = np.nan
        tifffile.imwrite(xyz, cloud, photometric="rgb")
    elif damage == "size_mismatch":
        tifffile.imwrite(xyz, np.ones((48, 48, 3), np.float32), photometric="rgb")
    elif damage == "bad_gt":
        gt.write_bytes(b"not a png")
    dataset = MVTec3D(root, "puck", "test", defects=["dent"])
    with pytest.raises(DatasetError, match=match):
        dataset[0]


def test_reading_and_preprocessing_never_modify_the_dataset(dataset_root, tmp_path):
    before = tree_digest(dataset_root)
    for category in categories(dataset_root):
        for split in ("train", "validation", "test"):
            for _ in MVTec3D(dataset_root, category, split):
                pass
    cached = BackgroundRemoved(MVTec3D(dataset_root, "puck", "test"), tmp_path / "cache")
    cached.prepare()
    assert tree_digest(dataset_root) == before
    with pytest.raises(ValueError, match="lies inside the dataset root"):
        BackgroundRemoved(MVTec3D(dataset_root, "puck", "test"), dataset_root / "cache")
    assert not (dataset_root / "cache").exists()
