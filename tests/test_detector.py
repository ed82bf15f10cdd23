"""The Detector plumbing with a backbone-free toy method: calibration and verdicts, streaming,
options, logging, and model directories (save rules, crashes, corrupt files)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import xmodal
from xmodal.methods import PointMAEOptions, _model_dir, load
from xmodal.methods.calibration import normalize, robust_threshold, tolerance_factor
from xmodal.methods.samples import SampleView, head, plan_calibration

from . import _toy
from ._toy import Toy, sample

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def toy_is_loadable():
    with _toy.loadable():
        yield


def goods(n, first=0):
    return [sample(first + i) for i in range(n)]


@pytest.fixture(scope="module")
def fitted():
    return Toy().fit(goods(10), validation=goods(6, first=100))


# --- calibration and verdicts -----------------------------------------------------------------


def by_hand(values):
    x = np.asarray(values, dtype=np.float64)
    median = np.median(x)
    scale = max(1.4826 * np.median(np.abs(x - median)), np.std(x, ddof=1), 0.01 * abs(median), 1e-12)
    n, zp, zg = x.size, 3.090232306167813, 1.2815515655446004  # 99.9 % coverage, 90 % confidence
    a, b = 1 - zg**2 / (2 * (n - 1)), zp**2 - zg**2 / n
    return median + (zp + math.sqrt(zp**2 - a * b)) / a * scale, scale


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0, 10.0], [5.0, 5.5], [2.0, 2.0, 2.0], [0.1, 0.12, 0.09, 0.11, 0.5],
                                    [-3.0, -2.5, -2.9], list(np.linspace(1, 2, 40))])
def test_threshold_rule(values):
    threshold, scale = robust_threshold(values)
    want_threshold, want_scale = by_hand(values)
    assert threshold == pytest.approx(want_threshold, rel=1e-12)
    assert scale == pytest.approx(want_scale, rel=1e-12)


def test_tolerance_factor_against_the_exact_noncentral_t():
    """Natrella's closed form against scipy's exact one-sided normal tolerance factor, within
    the bounds the docstring states."""
    stats = pytest.importorskip("scipy.stats")
    for n in (3, 4, 6, 8, 20, 40, 100, 1000):
        exact = stats.nct.ppf(0.9, n - 1, stats.norm.ppf(0.999) * math.sqrt(n)) / math.sqrt(n)
        error = tolerance_factor(n) / exact - 1
        assert (-0.10 <= error <= 0.0) if n < 6 else abs(error) <= 0.05, (n, error)
    assert tolerance_factor(10**6) == pytest.approx(3.0902, abs=5e-3)  # z_p + O(1 / sqrt(n))
    assert all(tolerance_factor(n) > tolerance_factor(n + 1) for n in range(2, 200))


def test_threshold_rule_rejects_bad_scores():
    for bad in ([], [1.0], [1.0, math.nan]):
        with pytest.raises(ValueError, match="calibration scores must be finite and at least two"):
            robust_threshold(bad)


def test_normalize_is_the_documented_logistic():
    t, s = 3.0, 0.5
    xs = np.linspace(-2, 9, 101)
    want = 1 / (1 + np.exp(-(xs - t) / s))
    got = np.array([normalize(x, t, s) for x in xs])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert normalize(t, t, s) == 0.5
    assert np.all(np.diff(got) > 0)  # strictly increasing where float64 resolves it
    arr = normalize(xs.astype(np.float32), t, s)
    assert arr.dtype == np.float32
    np.testing.assert_allclose(arr, want, rtol=0, atol=1e-6)
    assert normalize(1e9, t, s) == 1.0 and normalize(-1e9, t, s) == 0.0  # no overflow


def test_fit_calibrates_on_the_given_validation_images(fitted):
    raw = [fitted._score_batch([s])[0] for s in goods(6, first=100)]
    scores = [r.score for r in raw]
    maxima = [float(r.map.max()) for r in raw]
    c = fitted.calibration
    np.testing.assert_array_equal(c.image_scores, scores)
    np.testing.assert_array_equal(c.map_maxima, maxima)
    assert (c.threshold, c.scale) == pytest.approx(by_hand(scores), rel=1e-12)
    assert (c.pixel_threshold, c.pixel_scale) == pytest.approx(by_hand(maxima), rel=1e-12)
    pixels = np.concatenate([r.map.astype(np.float64).ravel()[::7] for r in raw])
    np.testing.assert_allclose(c.pixel_quantiles, np.quantile(pixels, np.linspace(0, 1, 101)), rtol=1e-12)
    assert len(fitted.seen) == 10  # every training image trained
    assert fitted.info["calibration"]["source"] == "6 good validation images given to fit"
    assert fitted.info["calibration"]["threshold"] == c.threshold


def test_results_carry_verdicts_on_the_fit_time_scale(fitted):
    good, bad = fitted.predict(sample(500)), fitted.predict(sample(501, anomalous=True))
    c = fitted.calibration
    for r in (good, bad):
        assert r.threshold == c.threshold
        assert r.is_anomalous == (r.score > c.threshold)
        assert r.normalized_score == pytest.approx(1 / (1 + math.exp(-(r.score - c.threshold) / c.scale)), rel=1e-12)
        want = 1 / (1 + np.exp(-(r.map.astype(np.float64) - c.pixel_threshold) / c.pixel_scale))
        np.testing.assert_allclose(r.normalized_map, want, rtol=0, atol=1e-6)
    assert good.verdict == "good" and good.normalized_score < 0.5 and good.normalized_map.max() < 0.5
    assert bad.verdict == "anomalous" and bad.normalized_score > 0.5 and bad.normalized_map.max() > 0.5


def test_threshold_can_be_set_and_is_saved(fitted, tmp_path):
    det = Toy().fit(goods(6), validation=goods(4, first=100))
    r = det.predict(sample(7))
    det.threshold = r.score
    again = det.predict(sample(7))
    assert again.normalized_score == 0.5 and again.is_anomalous is False
    det.threshold = r.score - 1e-3
    assert det.predict(sample(7)).is_anomalous is True
    det.pixel_threshold = 1.0
    assert det.predict(sample(7)).pixel_threshold == 1.0
    loaded = load(det.save(tmp_path / "m"))
    assert loaded.threshold == det.threshold and loaded.pixel_threshold == 1.0
    assert loaded.calibration.scale == det.calibration.scale
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        det.threshold = math.nan
    with pytest.raises(TypeError, match="threshold must be a number"):
        det.threshold = "high"


def test_held_out_share_when_there_is_no_validation_split():
    data = goods(20)
    det = Toy(calibration=0.25, seed=3).fit(data)
    assert len(det.seen) == 15 and det.calibration.image_scores.size == 5
    held = set(range(20)) - {[float(s.rgb.mean()) for s in data].index(m) for m in det.seen}
    assert len(held) == 5
    assert "5 training images held out (calibration=0.25 of 20)" == det.info["calibration"]["source"]
    again = Toy(calibration=0.25, seed=3).fit(data)
    assert again.seen == det.seen  # seeded
    small = Toy().fit(goods(10))  # 10 % of 10 rounds to 1: at least 2 are held out
    assert len(small.seen) == 8


def test_no_calibration_means_no_verdict():
    for det, reason in ((Toy(calibration=0).fit(goods(5)), "calibration=0"), (Toy().fit(goods(2)), "too few")):
        assert det.threshold is None and det.calibration is None
        assert reason in det.info["calibration"]["source"]
        r = det.predict(sample(9))
        assert r.threshold is None and r.is_anomalous is None and r.normalized_score is None
        assert r.normalized_map is None and r.verdict.startswith("unavailable")
        det.threshold = 1.5  # a user threshold still gives verdicts (no normalisation without a scale)
        r = det.predict(sample(9))
        assert r.is_anomalous == (r.score > 1.5) and r.normalized_score is None
        with pytest.raises(ValueError, match="pixel_threshold needs a calibrated model"):
            det.pixel_threshold = 1.0


def test_calibration_option_is_validated():
    with pytest.raises(ValueError, match=r"calibration must be a finite number in \[0.0, 1.0\)"):
        Toy(calibration=1.0)
    with pytest.raises(TypeError, match="calibration must be a number"):
        Toy(calibration="10%")
    with pytest.raises(ValueError, match=r"at least 2 good Samples \(a location and a scale\); got 1"):
        Toy().fit(goods(3), validation=goods(1))


def test_validation_split_of_a_dataset_is_found(tmp_path):
    from xmodal.data import MVTec3D, synthetic

    synthetic.make_dataset(tmp_path, categories=["puck"], n_train=3, n_test=0, n_test_good=0, image_size=32,
                           n_validation=2, defects=())
    train = MVTec3D(tmp_path, "puck", "train")
    kept, calibration, source = plan_calibration(head(train, 2), None, 0.1, 0)
    assert len(kept) == 2 and len(calibration) == 2 and calibration.split == "validation"
    assert source.startswith("2 good images of the validation split")
    _, none, reason = plan_calibration(train, None, 0.0, 0)
    assert none is None and reason.startswith("calibration=0")


# --- streaming ---------------------------------------------------------------------------------


class Lazy(Sequence):
    """A dataset reader stand-in: makes a sample when indexed, refuses to be iterated whole,
    and records how many of its samples were alive at once."""

    def __init__(self, n, anomalous_every=0):
        self.n, self.every = n, anomalous_every
        self.gets = 0
        self.made = []  # weak references to every sample handed out
        self.peak = 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            raise AssertionError("sliced: a lazy view was expected")
        if not -self.n <= i < self.n:
            raise IndexError(i)
        self.gets += 1
        import weakref

        s = sample(1000 + i, anomalous=bool(self.every) and i % self.every == 0)
        self.made.append(weakref.ref(s))
        self.peak = max(self.peak, sum(ref() is not None for ref in self.made))
        return s

    def __iter__(self):
        raise AssertionError("iterated whole: the reader must be indexed batch by batch")


def test_views_select_without_loading():
    data = Lazy(10)
    view = head(data, 4)
    sub = SampleView(view, [3, 1])[::-1]
    assert data.gets == 0 and len(view) == 4 and len(sub) == 2
    assert sub.base is data and sub.indices == [1, 3]
    assert float(sub[0].rgb.mean()) == float(data[1].rgb.mean())
    assert [float(s.rgb.mean()) for s in sub] == [float(data[1].rgb.mean()), float(data[3].rgb.mean())]


def test_fit_and_evaluate_stream_a_dataset():
    data = Lazy(12)
    det = Toy(batch_size=3).fit(data, validation=Lazy(4))
    assert data.gets == 12 and data.peak <= 2 * 3  # the batch being read, the one being replaced
    test = Lazy(16, anomalous_every=2)
    report = xmodal.evaluate(det, test, batch_size=4, progress_bar=False)
    assert test.gets == 16 + 1  # one warm-up sample, then every sample once
    assert test.peak <= 2 * 4 + 1
    assert report["samples"] == 16 and report["I-AUROC"] == 1.0
    # a plain generator works too (read once)
    report = xmodal.evaluate(det, (sample(1000 + i, anomalous=i % 2 == 0) for i in range(6)), progress_bar=False)
    assert report["samples"] == 6


def test_predict_batch_equals_predict(fitted):
    items = [sample(40), sample(41, anomalous=True), sample(42)]
    batched = fitted.predict_batch(iter(items), batch_size=2)
    for s, r in zip(items, batched, strict=False):
        one = fitted.predict(s)
        assert r.score == one.score and r.is_anomalous == one.is_anomalous
        np.testing.assert_array_equal(r.map, one.map)


def test_verdict_metrics_against_sklearn(fitted):
    metrics = pytest.importorskip("sklearn.metrics")
    from xmodal.evaluation import best_f1, classification_at

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 60)
    scores = rng.normal(labels * 1.2, 1.0).round(1)  # ties on purpose
    for t in (-0.35, 0.55, 1.05, 9.0):
        got = classification_at(scores, labels, t)
        p, r, f, _ = metrics.precision_recall_fscore_support(labels, scores > t, average="binary", zero_division=0)
        assert (got["precision"], got["recall"], got["F1"]) == pytest.approx((p, r, f), abs=1e-12)
        assert got["TP"] + got["FP"] + got["FN"] + got["TN"] == 60
    precision, recall, _ = metrics.precision_recall_curve(labels, scores)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0)
    best = best_f1(scores, labels)
    assert best["F1"] == pytest.approx(f1.max(), abs=1e-12)
    assert classification_at(scores, labels, best["threshold"])["F1"] == best["F1"]
    report = xmodal.evaluate(fitted, Lazy(10, anomalous_every=3), progress_bar=False)
    assert report["at_threshold"]["threshold"] == fitted.threshold
    assert report["at_threshold"]["F1"] == 1.0 and report["at_best_f1"]["F1"] == 1.0


# --- options and logging -----------------------------------------------------------------------


def test_pointmae_options_and_old_keywords():
    from xmodal.methods import CFM, PatchCore

    assert CFM(progress=False).pointmae == PointMAEOptions()
    old = PatchCore(progress=False, num_group=256, reference_fps=True)
    new = PatchCore(progress=False, pointmae=PointMAEOptions(num_group=256, reference_fps=True))
    assert old.config == new.config and old.pointmae.num_group == 256
    mixed = CFM(progress=False, pointmae={"group_size": 64}, reference_train_mode=True)
    assert mixed.pointmae == PointMAEOptions(group_size=64, reference_train_mode=True)
    with pytest.raises(ValueError, match=r"pointmae.num_group must be in \[1, inf\]"):
        PointMAEOptions(num_group=0)
    with pytest.raises(ValueError, match="pointmae has unknown keys"):
        CFM(pointmae={"groups": 3})
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_groups'"):
        PatchCore(num_groups=3)
    with pytest.raises(TypeError, match=r"pointmae.reference_fps must be True or False"):
        PointMAEOptions(reference_fps=1)


def test_max_cache_bytes_is_a_deprecated_alias_of_max_memory():
    from xmodal.methods import CFM

    with pytest.warns(DeprecationWarning, match="max_cache_bytes= is deprecated; use max_memory="):
        det = CFM(progress=False, max_cache_bytes=1234)
    assert det.config["max_memory"] == 1234 and "max_cache_bytes" not in det.config
    with pytest.raises(ValueError, match="not both"), pytest.warns(DeprecationWarning, match="max_cache_bytes"):
        CFM(progress=False, max_cache_bytes=1, max_memory=2)


def test_messages_go_to_the_xmodal_logger_or_stderr(capsys, caplog):
    Toy(progress=True).fit(goods(4), validation=goods(2, 50))
    err = capsys.readouterr().err
    assert "[xmodal toy] calibrated on 2 good validation images given to fit: threshold" in err
    Toy(progress=False).fit(goods(4))
    assert "[xmodal" not in capsys.readouterr().err
    with caplog.at_level(logging.INFO, logger="xmodal"):
        Toy(progress=False).fit(goods(4), validation=goods(2, 50))
    assert any(r.name == "xmodal" and "toy: calibrated on" in r.getMessage() for r in caplog.records)
    assert "[xmodal" not in capsys.readouterr().err  # the application's logging shows it instead


def test_device_is_validated():
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'; got 'gpu'"):
        Toy.common_options({}, backbones="auto", weights_dir=None, device="gpu", seed=0, batch_size=1,
                           max_memory=None, max_memory_default=None, calibration=0.1, progress=False,
                           random_weights=False, pointmae=None)


# --- model directories: the save rules ---------------------------------------------------------


def listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_save_new_empty_and_replace(fitted, tmp_path):
    path = fitted.save(tmp_path / "a" / "b" / "model")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    empty = tmp_path / "empty"
    empty.mkdir()
    fitted.save(empty)
    (path / "report.md").write_text("written by xmodal test")  # what `xmodal test` adds: replaceable
    other = Toy().fit(goods(4), validation=goods(2, 60))
    other.save(path)
    assert load(path).threshold == other.threshold and not (path / "report.md").exists()
    assert [p.name for p in path.parent.iterdir()] == ["model"]  # no temporary sibling left


def test_save_follows_the_umask(fitted, tmp_path):
    for mask, dir_mode, file_mode in ((0o022, 0o755, 0o644), (0o077, 0o700, 0o600), (0o002, 0o775, 0o664)):
        previous = os.umask(mask)
        try:
            path = fitted.save(tmp_path / f"m{mask:o}" / "model")
        finally:
            os.umask(previous)
        assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (dir_mode, dir_mode)
        assert {p.name: p.stat().st_mode & 0o777 for p in path.iterdir()} == {
            "config.json": file_mode, "model.safetensors": file_mode}


@pytest.mark.parametrize("kind", ["file", "folder", "model_with_notes", "symlink"])
def test_save_refuses_what_xmodal_did_not_write(fitted, tmp_path, kind):
    target, outside = tmp_path / "target", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    (tmp_path / "sibling.txt").write_text("sibling")
    if kind == "file":
        target.write_text("my notes")
    elif kind == "folder":
        target.mkdir()
        (target / "notes.txt").write_text("my notes")
        (target / "model2").mkdir()
    elif kind == "model_with_notes":
        fitted.save(target)
        (target / "notes.txt").write_text("my notes")
    else:
        target.symlink_to(outside, target_is_directory=True)
    before = listing(tmp_path)
    with pytest.raises(ValueError, match=r"target.*(xmodal did not write|symbolic link|existing file)") as exc:
        fitted.save(target)
    assert "\n" not in str(exc.value)
    assert listing(tmp_path) == before  # nothing touched
    fitted.save(target, overwrite=True)
    assert target.is_dir() and not target.is_symlink() and _model_dir.is_model_dir(target)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    assert (outside / "keep.txt").read_text() == "precious" and (tmp_path / "sibling.txt").read_text() == "sibling"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "sibling.txt", "target"]


def test_save_refuses_the_current_folder_and_its_parents(fitted, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("x")
    monkeypatch.chdir(work)
    for bad in (".", "..", str(work), str(tmp_path), "/", ""):
        with pytest.raises(ValueError, match=r"current folder or one of its parents|empty path"):
            fitted.save(bad, overwrite=True)
    assert (work / "notes.txt").read_text() == "x"


def test_save_without_renameat2_uses_two_renames(fitted, tmp_path, monkeypatch):
    path = fitted.save(tmp_path / "m")
    monkeypatch.setattr(_model_dir, "_RENAME_EXCHANGE", 1 << 30)  # an unknown flag: EINVAL, as old kernels
    other = Toy().fit(goods(4), validation=goods(2, 70))
    other.save(path)
    assert load(path).threshold == other.threshold
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_interrupted_save_keeps_the_previous_model(fitted, tmp_path, monkeypatch):
    import safetensors.numpy

    path = fitted.save(tmp_path / "m")
    before = listing(path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Toy().fit(goods(4), validation=goods(2, 80)).save(path)
    assert listing(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_a_killed_save_are_cleaned_and_a_parked_model_restored(fitted, tmp_path):
    path = fitted.save(tmp_path / "m")
    pid = dead_pid()
    stale = tmp_path / f".m.xmodal-tmp-{pid}-abcd"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    foreign = tmp_path / f".m.xmodal-tmp-{pid}-beef"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("not a model file: left alone")
    fitted.save(path)
    assert not stale.exists() and foreign.exists()
    # the two-rename fallback killed between its renames: the model is parked, the path missing
    parked = tmp_path / f".m.xmodal-old-{pid}-cafe"
    os.rename(path, parked)
    assert load(path).threshold == fitted.threshold and path.is_dir() and not parked.exists()


def run_script(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # A child of a background job inherits SIGINT ignored; restore the default so that Python
    # turns it into KeyboardInterrupt as in a terminal.
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


SLOW_SAVE = """
import sys, time, pathlib, safetensors.numpy
from tests import _toy
real = safetensors.numpy.save_file
def slow(state, path, *a, **k):
    real(state, path, *a, **k)
    pathlib.Path(sys.argv[2]).write_text("writing")
    time.sleep(60)
safetensors.numpy.save_file = slow
with _toy.loadable():
    det = _toy.Toy().fit([_toy.sample(i) for i in range(4)], validation=[_toy.sample(90), _toy.sample(91)])
    det.save(sys.argv[1])
"""


def wait_for(marker: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the subprocess never reached the save"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_killed_during_save(fitted, tmp_path, sig):
    path = fitted.save(tmp_path / "m")
    before = listing(path)
    marker = tmp_path / "marker"
    with run_script(SLOW_SAVE, str(path), str(marker)) as process:  # closes the stderr pipe
        wait_for(marker, process)
        process.send_signal(sig)
        process.wait(timeout=60)
    assert listing(path) == before  # the previous model, complete
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.")]
    if sig != signal.SIGINT:  # nothing of the library runs after these (the CLI turns SIGTERM into an
        assert len(leftovers) == 1  # exception); the next save to the same path cleans up
        fitted.save(path)
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.")]
    assert leftovers == []


# --- model directories: corrupt files ----------------------------------------------------------


def tamper_config(path: Path, change) -> None:
    document = json.loads((path / "config.json").read_text())
    change(document)
    (path / "config.json").write_text(json.dumps(document))


def squeeze_quantiles(state) -> None:
    state["calibration.pixel_quantiles"] = np.zeros(3)


def tamper_weights(path: Path, change) -> None:
    from safetensors.numpy import load_file, save_file

    state = load_file(str(path / "model.safetensors"))
    change(state)
    save_file(state, str(path / "model.safetensors"))


CORRUPTIONS = {
    "bad JSON": (lambda p: (p / "config.json").write_text('{"format": '), "corrupt model config .*config.json"),
    "not an object": (lambda p: (p / "config.json").write_text("[1, 2]"), "config.json is not an xmodal model config"),
    "wrong format": (lambda p: tamper_config(p, lambda d: d.update(format="other/2")), "is not an xmodal model config"),
    "config not an object": (lambda p: tamper_config(p, lambda d: d.update(config=[1])),
                             "config.json: 'config' must be a JSON object; got list"),
    "method not a string": (lambda p: tamper_config(p, lambda d: d.update(method=3)), "'method' must be a JSON string"),
    "missing info": (lambda p: tamper_config(p, lambda d: d.pop("info")), "config.json: the key 'info' is missing"),
    "unknown method": (lambda p: tamper_config(p, lambda d: d.update(method="nope")),
                       "config.json: unknown method 'nope'"),
    "unknown option": (lambda p: tamper_config(p, lambda d: d["config"].update(colour="red")),
                       "corrupt model config .*unexpected keyword argument 'colour'"),
    "bad option value": (lambda p: tamper_config(p, lambda d: d["config"].update(calibration=7)),
                         "corrupt model config .*calibration must be"),
    "calibration summary": (lambda p: tamper_config(p, lambda d: d["info"]["calibration"].pop("scale")),
                            "corrupt model .*calibration.*'scale'"),
    "wrong shape": (lambda p: tamper_weights(p, lambda s: s.update(mean=np.zeros(3))),
                    r"model.safetensors: array 'mean' is float64 \(3,\), expected a numeric \(1\)"),
    "missing array": (lambda p: tamper_weights(p, lambda s: s.pop("mean")), "the array 'mean' is missing"),
    "NaN": (lambda p: tamper_weights(p, lambda s: s.update(mean=np.array([np.nan]))), "'mean' holds NaN"),
    "calibration arrays": (lambda p: tamper_weights(p, squeeze_quantiles),
                           "calibration arrays have the wrong shapes"),
    "truncated weights": (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:-20]),
                          "corrupt model weights .*model.safetensors"),
    "zero-byte weights": (lambda p: (p / "model.safetensors").write_bytes(b""), "corrupt model weights"),
    "garbage weights": (lambda p: (p / "model.safetensors").write_bytes(os.urandom(300)), "corrupt model weights"),
    "missing weights": (lambda p: (p / "model.safetensors").unlink(), "model.safetensors is missing"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_model_directories_give_one_line_errors(fitted, tmp_path, name):
    corrupt, message = CORRUPTIONS[name]
    path = fitted.save(tmp_path / "m")
    corrupt(path)
    with pytest.raises(ValueError, match=message) as exc:
        load(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_a_file_or_a_missing_folder_is_no_model(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a model directory"):
        load(tmp_path / "f")
    with pytest.raises(ValueError, match="model directory not found"):
        load(tmp_path / "nothing")


def test_models_saved_before_calibration_still_load(fitted, tmp_path):
    path = fitted.save(tmp_path / "m")
    tamper_config(path, lambda d: d["info"].pop("calibration"))
    tamper_weights(path, lambda s: [s.pop(k) for k in list(s) if k.startswith("calibration.")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old = load(path)
    r = old.predict(sample(3))
    assert old.threshold is None and r.is_anomalous is None and r.verdict.startswith("unavailable")
    assert r.score == fitted.predict(sample(3)).score


def test_feature_store_spills_to_unlinked_memory_maps(rng, tmp_path):
    from xmodal.methods._store import FeatureStore

    parts = [(rng.random((n, 4)).astype(np.float32), rng.random((n, 2)).astype(np.float32)) for n in (3, 5, 2)]
    store = FeatureStore(max_bytes=parts[0][0].nbytes + parts[0][1].nbytes, directory=tmp_path)
    for part in parts:
        store.append(*part)
    assert store.memory_bytes > 0 and store.disk_bytes > 0 and store.row_count() == 10
    for order in ([2, 0, 1], [1]):
        got = store.rows(order)
        for slot in range(2):
            np.testing.assert_array_equal(got[slot], np.concatenate([parts[i][slot] for i in order]))
    (folder,) = tmp_path.iterdir()
    assert list(folder.iterdir()) == []  # mapped, then unlinked: a killed process leaves no data
    store.close()
    assert list(tmp_path.iterdir()) == []
