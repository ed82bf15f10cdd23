"""Damaged files against every reader, for the fuzz table (group "files" of tests/_fuzz.py).

Each case writes a good file, damages it, reads it and records the outcome: it passes when the
reader raises one line (ValueError, its DatasetError, or FileNotFoundError for a missing file)
that names the file.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from ._fuzz import Outcome


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes() if path.is_file() else b""
    if how == "zero-byte":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes())
    elif how == "text":
        path.write_text("not an image\n")
    elif how == "a directory":
        path.unlink()
        path.mkdir()
    elif how == "missing":
        path.unlink()


def _writers(folder: Path) -> dict:
    import tifffile
    from PIL import Image

    from xmodal.data._files import write_gt, write_rgb, write_xyz

    def png(path):
        write_rgb(path, np.full((16, 16, 3), 90, np.uint8))

    def gt(path):
        write_gt(path, np.eye(16, dtype=bool))

    def tiff(path):
        write_xyz(path, np.ones((16, 16, 3), np.float32))

    def tiff_as(array, photometric="minisblack"):
        return lambda path: tifffile.imwrite(path, array, photometric=photometric)

    def png16(path):
        Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(path)

    return {"png": png, "gt": gt, "tiff": tiff, "tiff_as": tiff_as, "png16": png16, "folder": folder}


def _run(reader_name: str, read, path: Path, mistake: str) -> Outcome:
    try:
        read(path)
    except (ValueError, FileNotFoundError) as exc:
        text = str(exc)
        one_line = "\n" not in text.strip()
        named = str(path) in text or path.name in text
        defect = "" if one_line and named else ("error names no file" if not named else "error of several lines")
        return Outcome(reader_name, path.name, mistake, "error", f"{type(exc).__name__}: {text}", defect)
    except Exception as exc:  # every other exception is the defect looked for
        return Outcome(reader_name, path.name, mistake, "error", f"{type(exc).__name__}: {exc}",
                       "not a ValueError/FileNotFoundError")
    expected_ok = mistake.startswith("(ok)")
    return Outcome(reader_name, path.name, mistake, "result", "result", "" if expected_ok else "accepted a bad file")


def file_rows() -> list[Outcome]:
    """Every damaged-file case (the readers, MemoryBank.load and xmodal.load of a toy model)."""
    from xmodal import MemoryBank
    from xmodal.data._files import read_gt, read_rgb, read_sample_files, read_xyz

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        w = _writers(folder)
        readers = [("read_rgb", read_rgb, "rgb.png", w["png"]), ("read_gt", read_gt, "gt.png", w["gt"]),
                   ("read_xyz", read_xyz, "xyz.tiff", w["tiff"])]
        for name, read, file, write in readers:
            for how in ("zero-byte", "truncated", "garbage", "text", "a directory", "missing"):
                path = folder / f"{how}-{file}"
                write(path)
                _damage(path, how)
                rows.append(_run(name, read, path, how))
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        for mistake, array, photometric in [
            ("int32 coordinates", np.ones((16, 16, 3), np.int32), "rgb"),
            ("(H, W) instead of (H, W, 3)", np.ones((16, 16), np.float32), "minisblack"),
            ("4 channels", np.ones((16, 16, 4), np.float32), "minisblack"),
            ("an inf coordinate", np.full((16, 16, 3), np.inf, np.float32), "rgb"),
            ("every point missing (all zero)", np.zeros((16, 16, 3), np.float32), "rgb"),
        ]:
            path = folder / "kind.tiff"
            w["tiff_as"](array, photometric)(path)
            rows.append(_run("read_xyz", read_xyz, path, mistake))
        for name, read in (("read_rgb", read_rgb), ("read_gt", read_gt)):
            path = folder / "g16.png"
            w["png16"](path)
            rows.append(_run(name, read, path, "(ok) 16-bit gray PNG: scaled to 8 bits"))
            path = folder / "float.tiff"
            w["tiff_as"](np.ones((16, 16), np.float32))(path)
            rows.append(_run(name, read, path, "a float32 image"))
        rgb, xyz, gt = folder / "a.png", folder / "a.tiff", folder / "a_gt.png"
        w["png"](rgb)
        w["tiff_as"](np.ones((12, 16, 3), np.float32), "rgb")(xyz)
        rows.append(_run("read_sample_files", lambda p: read_sample_files(rgb, p), xyz,
                         "point cloud of another size than the image"))
        w["tiff"](xyz)
        from xmodal.data._files import write_gt

        write_gt(gt, np.zeros((8, 8), bool))
        rows.append(_run("read_sample_files", lambda p: read_sample_files(rgb, xyz, p), gt,
                         "ground truth of another size than the image"))
        rows += _bank_rows(folder, MemoryBank)
        rows += _model_rows(folder)
    return rows


def _bank_rows(folder: Path, bank_class) -> list[Outcome]:
    rows = []
    for how in ("zero-byte", "truncated", "garbage", "a directory"):
        path = folder / f"{how}-bank.safetensors"
        bank_class(np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)).save(path)
        _damage(path, how)
        rows.append(_run("MemoryBank.load", bank_class.load, path, how))
    return rows


def _model_rows(folder: Path) -> list[Outcome]:
    import json

    from safetensors.numpy import load_file, save_file

    from xmodal import load

    from . import _toy

    model = _toy.Toy(calibration=0.25).fit([_toy.sample(i) for i in range(8)]).save(folder / "model")
    cases = {
        "config.json zero-byte": lambda p: _damage(p / "config.json", "zero-byte"),
        "config.json truncated": lambda p: _damage(p / "config.json", "truncated"),
        "config.json a list": lambda p: (p / "config.json").write_text("[1]"),
        "config.json of another format": lambda p: _edit(p, lambda d: d.update(format="other/1")),
        "config.json unknown option": lambda p: _edit(p, lambda d: d["config"].update(colour="red")),
        "config.json unknown method": lambda p: _edit(p, lambda d: d.update(method="nope")),
        "model.safetensors zero-byte": lambda p: _damage(p / "model.safetensors", "zero-byte"),
        "model.safetensors truncated": lambda p: _damage(p / "model.safetensors", "truncated"),
        "model.safetensors garbage": lambda p: _damage(p / "model.safetensors", "garbage"),
        "model.safetensors missing": lambda p: _damage(p / "model.safetensors", "missing"),
        "model.safetensors NaN array": lambda p: save_file({**load_file(str(p / "model.safetensors")),
                                                            "mean": np.array([np.nan])}, str(p / "model.safetensors")),
        "model.safetensors wrong shape": lambda p: save_file({**load_file(str(p / "model.safetensors")),
                                                              "mean": np.zeros(3)}, str(p / "model.safetensors")),
    }

    def _edit(path, change):
        doc = json.loads((path / "config.json").read_text())
        change(doc)
        (path / "config.json").write_text(json.dumps(doc))

    rows = []
    with _toy.loadable():
        for mistake, damage in cases.items():
            path = folder / f"m-{len(rows)}"
            shutil.copytree(model, path)
            damage(path)
            rows.append(_run("xmodal.load", load, path, mistake))
    return rows


__all__ = ["file_rows"]
