"""Issue 10 part 4: corrupt files give one-line errors that name the file, for every reader
(read_rgb, read_gt, read_xyz, read_sample_files and through them the dataset splits and
`xmodal predict`), MemoryBank.load and xmodal.load."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from xmodal import MemoryBank
from xmodal.data._files import DatasetError, read_gt, read_rgb, read_sample_files, read_xyz, write_gt, write_rgb

torch = pytest.importorskip("torch")

from tests import _toy  # noqa: E402
from xmodal.cli import main  # noqa: E402


def _png(path, rgb=None):
    write_rgb(path, np.full((16, 16, 3), 90, np.uint8) if rgb is None else rgb)
    return path


def _tiff(path, xyz=None):
    tifffile.imwrite(path, np.ones((16, 16, 3), np.float32) if xyz is None else xyz, photometric="rgb")
    return path


def _damage(path, how: str):
    data = path.read_bytes()
    if how == "zero-byte":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "garbage":
        path.write_bytes(os.urandom(400))
    elif how == "directory":
        path.unlink()
        path.mkdir()
    elif how == "text":
        path.write_text("not an image\n")
    return path


DAMAGES = ("zero-byte", "truncated", "garbage", "directory", "text")


def _one_line_naming(exc_info, path):
    text = str(exc_info.value)
    assert "\n" not in text, text
    assert str(path) in text, text


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize(("reader", "writer", "what"), [
    (read_rgb, _png, "RGB image"), (read_gt, _png, "ground-truth mask"), (read_xyz, _tiff, "point cloud"),
])
def test_damaged_files_name_the_file(tmp_path, reader, writer, what, how):
    path = _damage(writer(tmp_path / ("f.png" if writer is _png else "f.tiff")), how)
    with pytest.raises(DatasetError, match=what) as exc:
        reader(path)
    _one_line_naming(exc, path)


def test_missing_files_say_so(tmp_path):
    for reader in (read_rgb, read_gt, read_xyz):
        with pytest.raises(FileNotFoundError, match="nothing"):
            reader(tmp_path / "nothing")


@pytest.mark.parametrize(("xyz", "match"), [
    (np.ones((16, 16, 3), np.int32), "point coordinates must be float32 .*got int32"),
    (np.ones((16, 16, 3), np.uint16), "point coordinates must be float32 .*got uint16"),
    (np.ones((16, 16), np.float32), r"must have shape \(H, W, 3\); got \(16, 16\)"),
    (np.ones((16, 16, 4), np.float32), r"must have shape \(H, W, 3\); got \(16, 16, 4\)"),
    (np.full((16, 16, 3), np.inf, np.float32), "contains NaN or infinite values"),
    (np.zeros((16, 16, 3), np.float32), "has no valid point"),
])
def test_point_clouds_of_the_wrong_kind(tmp_path, xyz, match):
    path = tmp_path / "c.tiff"
    tifffile.imwrite(path, xyz, photometric="rgb" if xyz.shape[-1] == 3 else "minisblack")
    with pytest.raises(DatasetError, match=match) as exc:
        read_xyz(path)
    _one_line_naming(exc, path)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    """Found by the fuzz: PIL's convert() clips 16-bit gray PNGs at 255, so a 16-bit image read
    as white and a 16-bit mask as all defective."""
    values = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    rgb = read_rgb(tmp_path / "g16.png")
    np.testing.assert_array_equal(rgb, np.repeat(np.round(values / 257).astype(np.uint8)[..., None], 3, -1))
    np.testing.assert_array_equal(read_gt(tmp_path / "g16.png"), values >= 32768)
    mask = np.where(np.arange(16)[:, None] < 5, 65535, 0).repeat(16, 1).astype(np.uint16)
    Image.fromarray(mask).save(tmp_path / "m16.png")
    np.testing.assert_array_equal(read_gt(tmp_path / "m16.png"), mask > 0)


def test_floating_point_images_are_refused(tmp_path):
    path = tmp_path / "f.tiff"
    Image.fromarray(np.ones((8, 8), np.float32)).save(path)
    for reader, what in ((read_rgb, "RGB image"), (read_gt, "ground-truth mask")):
        with pytest.raises(DatasetError, match=f"the {what} is a floating-point image") as exc:
            reader(path)
        _one_line_naming(exc, path)


def test_read_sample_files_checks_sizes_and_names_the_files(tmp_path):
    rgb, xyz = _png(tmp_path / "a.png"), _tiff(tmp_path / "a.tiff", np.ones((12, 16, 3), np.float32))
    with pytest.raises(DatasetError, match=r"point cloud is \(12, 16\) but the image .*a\.png is \(16, 16\)") as exc:
        read_sample_files(rgb, xyz)
    _one_line_naming(exc, xyz)
    xyz = _tiff(tmp_path / "b.tiff")
    gt = tmp_path / "g.png"
    write_gt(gt, np.zeros((8, 8), bool))
    with pytest.raises(DatasetError, match=r"mask is \(8, 8\) but the image") as exc:
        read_sample_files(rgb, xyz, gt)
    _one_line_naming(exc, gt)
    write_gt(gt, np.eye(16, dtype=bool))
    sample = read_sample_files(rgb, xyz, gt, label=1, defect="cut")
    assert sample.paths == {"rgb": str(rgb), "xyz": str(xyz), "gt": str(gt)}
    np.testing.assert_array_equal(sample.gt, np.eye(16, dtype=bool))
    assert (sample.label, sample.defect) == (1, "cut")


# --- xmodal predict: the same reader, the same message ------------------------------------------


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    det = _toy.Toy(calibration=0.25).fit([_toy.sample(i) for i in range(8)])
    return det.save(tmp_path_factory.mktemp("toy") / "model")


@pytest.mark.parametrize("damage", ["zero-byte rgb", "truncated xyz", "int xyz", "size mismatch", "missing rgb"])
def test_predict_reports_a_damaged_input_file_in_one_line(toy_model, tmp_path, capsys, damage):
    s = _toy.sample(0)
    rgb, xyz = _png(tmp_path / "p.png", s.rgb), _tiff(tmp_path / "p.tiff", s.xyz)
    bad = rgb if "rgb" in damage else xyz
    if damage == "zero-byte rgb":
        _damage(rgb, "zero-byte")
    elif damage == "truncated xyz":
        _damage(xyz, "truncated")
    elif damage == "int xyz":
        tifffile.imwrite(xyz, np.ones((32, 32, 3), np.int32), photometric="rgb")
    elif damage == "size mismatch":
        _tiff(xyz, np.ones((30, 32, 3), np.float32))
    else:
        rgb.unlink()
    with _toy.loadable():
        code = main(["predict", "--model", str(toy_model), str(rgb), str(xyz), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and str(bad) in err, err


def test_predict_reads_a_good_pair(toy_model, tmp_path, capsys):
    s = _toy.sample(3, anomalous=True)
    rgb, xyz = _png(tmp_path / "p.png", s.rgb), _tiff(tmp_path / "p.tiff", s.xyz)
    with _toy.loadable():
        assert main(["predict", "--model", str(toy_model), str(rgb), str(xyz), "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["verdict"] == "anomalous" and line["rgb"] == str(rgb)


# --- MemoryBank.load and xmodal.load --------------------------------------------------------------


def _bank_file(tmp_path, **tensors):
    from safetensors.numpy import save_file

    path = tmp_path / "bank.safetensors"
    MemoryBank(np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32), coreset_ratio=0.5).save(path)
    if tensors:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata()
            state = {k: f.get_tensor(k) for k in f.keys()}
        state.update({k: v for k, v in tensors.items() if v is not None})
        for k in [k for k, v in tensors.items() if v is None]:
            state.pop(k)
        meta = {k: v for k, v in tensors.items() if isinstance(v, str)}
        state = {k: v for k, v in state.items() if not isinstance(v, str)}
        save_file(state, str(path), metadata={**metadata, **meta})
    return path


@pytest.mark.parametrize(("damage", "match"), [
    ("zero-byte", "corrupt memory bank"),
    ("truncated", "corrupt memory bank"),
    ("garbage", "corrupt memory bank"),
    ("nan", "features hold NaN or infinity"),
    ("float64", "features of dtype float64"),
    ("1-d", r"non-empty \(N, D\) matrix"),
    ("indices", r"indices must be \(10,\) integers"),
    ("no features", "the array 'features' is missing"),
    ("bad json", "metadata is not valid JSON"),
    ("not a bank", "is not an xmodal memory bank"),
])
def test_damaged_memory_banks_give_one_line_errors(tmp_path, damage, match):
    features = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    if damage in ("zero-byte", "truncated", "garbage"):
        path = _damage(_bank_file(tmp_path), damage)
    elif damage == "nan":
        features[3, 1] = np.nan
        path = _bank_file(tmp_path, features=features)
    elif damage == "float64":
        path = _bank_file(tmp_path, features=features.astype(np.float64))
    elif damage == "1-d":
        path = _bank_file(tmp_path, features=features[:, 0].copy())
    elif damage == "indices":
        path = _bank_file(tmp_path, indices=np.zeros(3, np.int64))
    elif damage == "no features":
        path = _bank_file(tmp_path, features=None)
    elif damage == "bad json":
        path = _bank_file(tmp_path, config="{oops")
    else:
        path = _bank_file(tmp_path, format="something/else")
    with pytest.raises(ValueError, match=match) as exc:
        MemoryBank.load(path)
    _one_line_naming(exc, path)


def test_a_saved_bank_still_loads(tmp_path):
    path = _bank_file(tmp_path)
    bank = MemoryBank.load(path)
    assert len(bank) == 10 and bank.indices.shape == (10,)
    with pytest.raises(FileNotFoundError, match="memory bank not found"):
        MemoryBank.load(tmp_path / "nothing.safetensors")


@pytest.mark.parametrize("how", ["zero-byte", "garbage", "directory"])
def test_xmodal_load_with_a_damaged_config_names_it(toy_model, tmp_path, how):
    import shutil

    from xmodal import load

    path = tmp_path / "m"
    shutil.copytree(toy_model, path)
    _damage(path / "config.json", how)
    with _toy.loadable(), pytest.raises(ValueError, match=r"config\.json") as exc:
        load(path)
    _one_line_naming(exc, path)
