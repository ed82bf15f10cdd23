"""xmodal.metrics: the evaluation protocols against sklearn and the references, bootstrap
intervals and the report tables."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import xmodal
from xmodal import reference
from xmodal.metrics import METRICS, ResultsTable, evaluate_maps

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def make_class(rng, n=12, h=32, w=40, zeros=0.0):
    """A small test set: defects in about half of the images, maps lifted inside them."""
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(0, n, 2):
        cy, cx, r = rng.uniform(5, h - 5), rng.uniform(5, w - 5), rng.uniform(2, 6)
        masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    maps = (rng.random((n, h, w)) + masks * rng.uniform(0.2, 1.0, size=(n, 1, 1))).astype(np.float32)
    if zeros:
        maps[rng.random(maps.shape) < zeros] = 0.0
    labels = masks.reshape(n, -1).any(axis=1)
    scores = maps.reshape(n, -1).max(axis=1) + rng.normal(0, 0.1, n)
    return scores, labels, maps, masks


def test_exact_protocol_matches_sklearn_and_reference(rng):
    scores, labels, maps, masks = make_class(rng)
    got = evaluate_maps(scores, labels, maps, masks)
    assert list(got) == list(METRICS)
    assert got["I-AUROC"] == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)
    assert got["P-AUROC"] == pytest.approx(sklearn_metrics.roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    want = reference.aupro(maps, masks, limits=(0.3, 0.1, 0.05, 0.01))
    for name, limit in zip(METRICS[2:], (0.3, 0.1, 0.05, 0.01), strict=False):
        assert got[name] == pytest.approx(want[limit], abs=1e-9)


def test_m3dm_protocol_uses_100_thresholds(rng):
    scores, labels, maps, masks = make_class(rng)
    got = evaluate_maps(scores, labels, maps, masks, protocol="m3dm")
    want = reference.aupro(maps, masks, limits=(0.3, 0.01), num_thresholds=100)
    assert got["AUPRO@30%"] == pytest.approx(want[0.3], abs=1e-9)
    assert got["AUPRO@1%"] == pytest.approx(want[0.01], abs=1e-9)


def test_cfm_protocol_normalisations(rng):
    _, labels, maps, masks = make_class(rng, zeros=0.5)
    got = evaluate_maps(None, labels, maps, masks, protocol="cfm")
    pro_maps = np.stack([m / m[m != 0].mean() for m in maps])
    pixel_maps = np.stack([m / np.sqrt(m.mean()) for m in maps])
    image_scores = np.array([(m / np.sqrt(m[m != 0].mean())).max() for m in maps])
    assert got["I-AUROC"] == pytest.approx(sklearn_metrics.roc_auc_score(labels, image_scores), abs=1e-12)
    assert got["P-AUROC"] == pytest.approx(sklearn_metrics.roc_auc_score(masks.ravel(), pixel_maps.ravel()), abs=1e-12)
    want = reference.aupro(pro_maps, masks, limits=(0.3, 0.1, 0.05, 0.01), num_thresholds=99)
    assert got["AUPRO@5%"] == pytest.approx(want[0.05], abs=1e-9)
    assert got["AUPRO@1%"] == pytest.approx(want[0.01], abs=1e-9)
    with pytest.warns(UserWarning, match="image_scores"):
        again = evaluate_maps(np.zeros(len(maps)), labels, maps, masks, protocol="cfm")
    assert again == got


def test_defaults_lists_and_torch(rng):
    torch = pytest.importorskip("torch")
    _scores, labels, maps, masks = make_class(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = evaluate_maps(maps.reshape(len(maps), -1).max(axis=1), labels, maps, masks)
        assert evaluate_maps(None, None, maps, masks) == full  # labels from masks, scores = map max
        assert evaluate_maps(None, None, list(maps), list(masks)) == full
        assert evaluate_maps(None, None, torch.from_numpy(maps), torch.from_numpy(masks)) == full
    sizes = [(20, 30), (32, 32), (20, 30), (17, 41)]
    parts = [make_class(rng, n=2, h=h, w=w) for h, w in sizes]  # image 0 defective, image 1 not
    map_list = [c[2][k % 2] for k, c in enumerate(parts)]
    mask_list = [c[3][k % 2] for k, c in enumerate(parts)]
    mixed = evaluate_maps(None, None, map_list, mask_list)
    assert mixed["AUPRO@30%"] == pytest.approx(reference.aupro(map_list, mask_list, limits=(0.3,))[0.3], abs=1e-9)
    pixels = np.concatenate([m.ravel() for m in map_list])
    truth = np.concatenate([m.ravel() for m in mask_list])
    assert mixed["P-AUROC"] == pytest.approx(sklearn_metrics.roc_auc_score(truth, pixels), abs=1e-12)


def test_bootstrap_intervals(rng):
    scores, labels, maps, masks = make_class(rng, n=16)
    a = evaluate_maps(scores, labels, maps, masks, bootstrap=50, seed=3)
    b = evaluate_maps(scores, labels, maps, masks, bootstrap=50, seed=3)
    assert a == b
    assert a["bootstrap"] == 50
    assert set(a["ci"]) == {"I-AUROC"} | set(METRICS[2:])
    for name, (low, high) in a["ci"].items():
        assert 0.0 <= low <= high <= 1.0, name
    # A perfect detector has degenerate intervals at 1.
    perfect = masks.astype(np.float32) + 0.01 * rng.random(masks.shape, dtype=np.float32)
    c = evaluate_maps(labels.astype(float), labels, perfect, masks, bootstrap=20, protocol="m3dm")
    assert c["ci"]["I-AUROC"] == [1.0, 1.0]
    assert c["ci"]["AUPRO@30%"][0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"protocol": "mvtec"}, ValueError, "protocol"),
        ({"image_labels": np.array([0, 2] * 6)}, ValueError, "0 and 1"),
        ({"image_scores": np.zeros(5)}, ValueError, "image_scores"),
        ({"bootstrap": -1}, ValueError, "bootstrap"),
        ({"ci": 1.5}, ValueError, "ci"),
    ],
)
def test_bad_arguments(rng, kwargs, error, match):
    scores, labels, maps, masks = make_class(rng)
    args = {"image_scores": scores, "image_labels": labels, "maps": maps, "masks": masks}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        evaluate_maps(**args)


def test_bad_data(rng):
    scores, labels, maps, masks = make_class(rng)
    with pytest.raises(ValueError, match="same number"):
        evaluate_maps(scores, labels, maps, masks[:-1])
    zero = maps.copy()
    zero[3] = 0
    with pytest.raises(ValueError, match=r"maps\[3\] is all zeros"):
        evaluate_maps(None, labels, zero, masks, protocol="cfm")
    with pytest.raises(ValueError, match="both classes"):
        evaluate_maps(scores, np.ones(len(scores)), maps, masks)


def test_results_table(tmp_path, rng):
    table = ResultsTable(protocol="exact", title="MVTec 3D-AD")
    runs = {}
    for name in ("bagel", "cable_gland"):
        runs[name] = evaluate_maps(*make_class(rng), bootstrap=10)
        table.add(name, runs[name])
    assert table.categories == ["bagel", "cable_gland"]
    mean = table.mean()
    assert mean["P-AUROC"] == pytest.approx((runs["bagel"]["P-AUROC"] + runs["cable_gland"]["P-AUROC"]) / 2)
    md = table.to_markdown()
    lines = md.strip().splitlines()
    assert lines[2] == "| Metric | bagel | cable_gland | Mean |"
    assert len(lines) == 4 + len(METRICS)
    assert lines[4].startswith("| I-AUROC | ") and "[" in lines[4]
    assert "[" not in table.to_markdown(ci=False)
    again = ResultsTable.from_json(table.to_json())
    assert again.to_dict() == table.to_dict()
    md_path, json_path = table.save(tmp_path / "report")
    assert Path(md_path).read_text() == md
    saved = json.loads(Path(json_path).read_text())
    assert saved["classes"]["bagel"]["AUPRO@30%"] == pytest.approx(runs["bagel"]["AUPRO@30%"])
    with pytest.raises(ValueError, match="lack"):
        table.add("foam", {"I-AUROC": 0.5})
    assert xmodal.metrics.ResultsTable is ResultsTable
