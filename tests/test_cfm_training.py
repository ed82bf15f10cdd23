"""CFM's training options (issue 18 item 4): the paper setting is the plain loop, the fast ones
keep the number of optimisation steps, early stopping keeps the best networks."""

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xmodal.methods import CFM  # noqa: E402
from xmodal.methods._store import FeatureStore  # noqa: E402
from xmodal.methods.cfm import mapping_network  # noqa: E402

D2, D3 = 12, 7


def _store(rng, counts=(40, 25, 60, 33, 18, 51, 29)):
    store = FeatureStore()
    mix = rng.standard_normal((D2, D3)).astype(np.float32)
    for n in counts:
        f2d = rng.standard_normal((n, D2)).astype(np.float32)
        f3d = np.tanh(f2d @ mix) + 0.05 * rng.standard_normal((n, D3)).astype(np.float32)
        store.append(f2d, f3d.astype(np.float32))
    return store


def _train(store, **options):
    det = CFM(progress=False, **options)
    det._extractor = SimpleNamespace(rgb_channels=D2, xyz_channels=D3)
    det._train(store, torch.device("cpu"))
    return det


def _plain_loop(store, seed, epochs, batch_size, lr):
    """The training loop as CFM's paper describes it: every foreground row of 4 images per Adam
    step, cosine loss both ways, float32."""
    torch.manual_seed(seed)
    a, b = mapping_network(D2, D3), mapping_network(D3, D2)
    optimizer = torch.optim.Adam(list(a.parameters()) + list(b.parameters()), lr=lr)
    cosine = torch.nn.CosineSimilarity(dim=-1, eps=1e-6)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(store))
        for first in range(0, len(order), batch_size):
            f2d, f3d = (torch.from_numpy(x) for x in store.rows(order[first : first + batch_size]))
            loss = (1 - cosine(a(f2d), f3d).mean()) + (1 - cosine(b(f3d), f2d).mean())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return a, b


def test_paper_setting_is_the_plain_loop(rng):
    store = _store(rng)
    det = _train(store, epochs=3, seed=4, row_fraction=1.0, train_precision="fp32", patience=None)
    a, b = _plain_loop(store, seed=4, epochs=3, batch_size=4, lr=1e-3)
    for ours, plain in ((det.mlp_2d3d, a), (det.mlp_3d2d, b)):
        for (name, x), (_, y) in zip(ours.state_dict().items(), plain.state_dict().items(), strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    assert det.info["epochs_run"] == 3 and len(det.info["loss_per_epoch"]) == 3


def test_sample_rows_draws_a_share_of_each_image(rng):
    store = _store(rng)
    f2d, f3d = store.sample_rows([2, 0], 0.25, np.random.default_rng(0))
    assert len(f2d) == len(f3d) == round(60 * 0.25) + round(40 * 0.25)
    full2, _ = store.rows([2, 0])
    # every drawn row is a stored row of those images, none twice, in stored order per image
    hits = [int(np.flatnonzero((full2 == row).all(axis=1))[0]) for row in f2d]
    assert len(set(hits)) == len(hits)
    assert hits[:15] == sorted(hits[:15]) and all(h < 60 for h in hits[:15]) and all(h >= 60 for h in hits[15:])
    one, _ = store.sample_rows([4], 1e-6, np.random.default_rng(0))
    assert len(one) == 1  # at least one row per image
    assert store.image_rows(5) == 51


def test_row_fraction_keeps_the_steps_and_draws_fewer_rows(rng, monkeypatch):
    store = _store(rng)
    drawn = []
    original = FeatureStore.sample_rows

    def spy(self, indices, fraction, generator):
        out = original(self, indices, fraction, generator)
        drawn.append((len(indices), len(out[0])))
        return out

    monkeypatch.setattr(FeatureStore, "sample_rows", spy)
    det = _train(store, epochs=4, row_fraction=0.25, train_precision="fp32")
    assert len(drawn) == 4 * 2  # 7 images, 4 per step: 2 steps per epoch, as with every row
    assert sum(n for _, n in drawn) / 4 == pytest.approx(0.25 * store.row_count(), rel=0.05)
    losses = det.info["loss_per_epoch"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_bf16_autocast_trains_float32_networks(rng):
    store = _store(rng)
    det = _train(store, epochs=5, train_precision="bf16", lr=3e-3)
    assert all(p.dtype == torch.float32 for p in det.mlp_2d3d.parameters())
    losses = det.info["loss_per_epoch"]
    assert losses[-1] < losses[0]
    fp32 = _train(store, epochs=5, train_precision="fp32", lr=3e-3)
    # bfloat16 rounding changes the path a little, not where it goes
    assert losses[-1] == pytest.approx(fp32.info["loss_per_epoch"][-1], abs=0.05)


def test_patience_stops_and_keeps_the_best_networks(rng):
    store = _store(rng, counts=(30,) * 20)
    det = _train(store, epochs=30, lr=0.0, patience=3, row_fraction=1.0)  # lr 0: nothing ever improves
    assert det.info["epochs_run"] == 4
    assert len(det.info["validation_loss_per_epoch"]) == 4
    torch.manual_seed(115)
    initial = mapping_network(D2, D3)
    for x, y in zip(det.mlp_2d3d.state_dict().values(), initial.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    learning = _train(store, epochs=6, lr=3e-3, patience=2)
    val = learning.info["validation_loss_per_epoch"]
    assert learning.info["epochs_run"] <= 6 and min(val) < val[0]


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"row_fraction": 0}, ValueError, "row_fraction"),
    ({"row_fraction": 1.5}, ValueError, "row_fraction"),
    ({"row_fraction": "half"}, TypeError, "row_fraction"),
    ({"train_precision": "fp16"}, ValueError, "train_precision"),
    ({"patience": 0}, ValueError, "patience"),
    ({"patience": 2.5}, TypeError, "patience"),
])
def test_bad_training_options(options, error, match):
    with pytest.raises(error, match=match):
        CFM(**options)
