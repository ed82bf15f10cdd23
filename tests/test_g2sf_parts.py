"""G2SF's pieces on hand-made tensors: the LSPN, the five losses (against their formulas in
float64), min aggregation with background w = 1, and the fused native kernel against the
float64 reference (xmodal.reference.g2sf_metric)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xmodal import reference  # noqa: E402
from xmodal.memory_bank import MemoryBank  # noqa: E402
from xmodal.methods.g2sf import losses  # noqa: E402
from xmodal.methods.g2sf.lspn import LSPN  # noqa: E402
from xmodal.methods.g2sf.patches import PatchNeighbours, upsample_index  # noqa: E402
from xmodal.methods.g2sf.scoring import FusedHead, fused_scores_native, fused_scores_torch  # noqa: E402
from xmodal.ops import anisotropic_min  # noqa: E402

E = math.e


# --- float64 formulas, written from the paper / reference notes -------------------------------
def separation64(q, normal, big_m):
    out = []
    for qi, n in zip(q, normal, strict=True):
        if n:
            out.append(qi * min(max(qi * qi, 0.33), 3.0))
        else:
            qe = qi + 1e-5
            out.append(max(1 / qe - 1 / big_m, 0.0) * min(max(qe**-2, 0.33), 3.0))
    return float(np.mean(out))


def margin64(q, normal):
    qn = q / q[normal].max()
    n, a = qn[normal], qn[~normal]
    return float((np.maximum(n - a.min(), 0).sum() + np.maximum(1 - a, 0).sum()) / len(q))


def consistency64(lj, s, k=5, eta=1.2):
    prox = sum(np.mean(np.maximum(lj[:, j] - eta * (s[:, j] / s[:, 0]) * lj[:, 0], 0)) for j in range(1, k + 1)) / k
    dist = sum(np.mean(np.maximum(lj[:, 0] - lj[:, j], 0)) for j in range(k + 1, 2 * k + 1)) / k
    return float(prox + dist)


def scaling64(w, normal):
    return float(np.mean(E - w[~normal]) + np.mean(np.maximum(w[normal] - 1, 0)))


@pytest.fixture
def hand_made():
    g = np.random.default_rng(0)
    q = np.array([0.05, 0.4, 1.3, 2.0, 0.01, 0.7, 3.5, 0.2])
    normal = np.array([True, True, True, False, False, True, False, True])
    lj = g.uniform(0.2, 2.0, (8, 11))
    s = g.uniform(0.2, 2.0, (8, 11))
    w = g.uniform(1 / E, E, (8, 2))
    return q, normal, lj, s, w


def t(x):
    return torch.as_tensor(x, dtype=torch.float64)


def test_each_loss_equals_its_formula(hand_made):
    q, normal, lj, s, w = hand_made
    n = torch.as_tensor(normal)
    assert losses.separation_loss(t(q), n, 4.5).item() == pytest.approx(separation64(q, normal, 4.5), rel=1e-12)
    assert losses.margin_loss(t(q), n).item() == pytest.approx(margin64(q, normal), rel=1e-12)
    assert losses.consistency_loss(t(lj), t(s)).item() == pytest.approx(consistency64(lj, s), rel=1e-12)
    assert losses.scaling_loss(t(w), n).item() == pytest.approx(scaling64(w, normal), rel=1e-12)
    assert losses.crossmodal_loss(t(w)).item() == pytest.approx(float(np.mean(E - w)), rel=1e-12)
    # edge cases: a batch with one class has no margin; the clamps bite at both ends
    assert losses.margin_loss(t(q), torch.ones(8, dtype=torch.bool)).item() == 0.0
    tiny = np.array([1e-4, 5.0])
    assert losses.separation_loss(t(tiny), torch.tensor([True, True]), 4.5).item() == pytest.approx(
        (1e-4 * 0.33 + 5.0 * 3.0) / 2)


@pytest.mark.parametrize("preset", ["paper", "code"])
def test_total_is_the_weighted_sum_of_both_weight_sets(preset):
    torch.manual_seed(0)
    net = LSPN(6, 10).double().eval()  # dropout off: the terms are recomputable
    g = torch.Generator().manual_seed(1)
    f = torch.randn(16, 16, dtype=torch.float64)
    protos = f[:, None, :] + 0.3 * torch.randn(16, 11, 16, dtype=torch.float64)
    normal = torch.arange(16) % 3 != 0
    mu = torch.tensor([1.0, 1.5], dtype=torch.float64)
    weights = losses.LOSS_WEIGHTS[preset]
    terms = losses.lspn_losses(net, f, protos, normal, mu, 6.0, weights, g, noise=False)
    expected = sum(weights[k] * terms[k] for k in losses.TERMS)
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-12)
    assert terms["l1"].item() == pytest.approx(sum(float(m.weight.detach().abs().sum()) for m in net.linear_layers()))
    # the terms recomputed from the network's outputs with the float64 formulas
    with torch.no_grad():
        from xmodal.methods.g2sf.lspn import normalised_distances

        fj = f[:, None, :].expand(-1, 11, -1)
        s = normalised_distances(fj, protos, 6, mu)
        wj = net.scales(fj, protos)
        lj = net.metric(wj, s).numpy()
    terms = losses.lspn_losses(net, f, protos, normal, mu, 6.0, weights, g, noise=False)
    q, nn = lj[:, 0] ** 2, normal.numpy()
    assert terms["separation"].item() == pytest.approx(separation64(q, nn, 6.0), rel=1e-10)
    assert terms["margin"].item() == pytest.approx(margin64(q, nn), rel=1e-10)
    assert terms["consistency"].item() == pytest.approx(consistency64(lj, s.mean(-1).numpy()), rel=1e-10)
    assert terms["scaling"].item() == pytest.approx(scaling64(wj[:, 0].numpy(), nn), rel=1e-10)
    assert set(losses.LOSS_WEIGHTS) == {"paper", "code"}
    assert losses.LOSS_WEIGHTS["paper"]["consistency"] == 60 and losses.LOSS_WEIGHTS["code"]["consistency"] == 40


def test_noise_and_permutations():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 10)
    mu = torch.tensor([1.0, 2.0])
    noisy = losses.add_noise(x, 4, mu, g)
    norms = torch.stack([noisy[:, :4].norm(dim=1), noisy[:, 4:].norm(dim=1)], 1)
    assert (norms[:, 0] < 0.1 * 1.0 + 1e-6).all() and (norms[:, 1] < 0.1 * 2.0 + 1e-6).all()
    assert (noisy >= 0).all()  # u ~ U[0, 1): the offsets point into the positive orthant
    f = torch.arange(8 * 4, dtype=torch.float32).reshape(8, 4)
    m = -f
    fp, mp = losses.permuted_pairs(f, m, 2, g)
    assert torch.equal(mp[:4], m[:4]) and torch.equal(fp[4:], f[4:])
    assert sorted(fp[:4, 0].tolist()) == sorted(f[:4, 0].tolist())  # the halves are shuffled within
    assert sorted(mp[4:, 3].tolist()) == sorted(m[4:, 3].tolist())


def test_lspn_at_initialisation():
    torch.manual_seed(0)
    for direction in ("per_modality", "joint"):
        net = LSPN(768, 1152, direction).eval()
        assert torch.equal(net.sigma(), torch.tensor([0.5, 0.5]))
        f, m = torch.randn(256, 1920), torch.randn(256, 1920)
        with torch.no_grad():
            w = net.scales(f, m)
        assert w.shape == (256, 2)
        assert (w - 1).abs().max() < 0.25 and abs(float(w.mean()) - 1) < 0.1
    assert sum(p.numel() for p in LSPN(768, 1152).parameters()) == pytest.approx(2.16e6, rel=0.01)
    with pytest.raises(ValueError, match="direction"):
        LSPN(4, 4, "both")


# --- the fused kernel --------------------------------------------------------------------------
def _random_case(direction, seed=0, queries=40, k=6, d_img=12, d_pcd=20, bg_index=-1):
    torch.manual_seed(seed)
    g = np.random.default_rng(seed)
    net = LSPN(d_img, d_pcd, direction).eval()
    with torch.no_grad():  # scales away from 1 so that the network matters
        for layer in net.linear_layers():
            layer.weight.mul_(3.0)
        net.g.copy_(torch.tensor([0.4, -0.3]))
    banks = {"img": MemoryBank(torch.randn(30, d_img)), "pcd": MemoryBank(torch.randn(50, d_pcd))}
    f_img, f_pcd = torch.randn(queries, d_img), torch.randn(queries, d_pcd)
    fg = torch.from_numpy(g.random(queries) < 0.75)
    ii = torch.from_numpy(g.integers(0, 30, (queries, k)))
    ip = torch.from_numpy(g.integers(0, 50, (queries, k)))
    ip[~fg] = bg_index
    di = (f_img[:, None] - banks["img"].features[ii]).norm(dim=-1)
    dp = (f_pcd[:, None] - banks["pcd"].features[ip.clamp_min(0)]).norm(dim=-1)
    dp[~fg] = 0.0  # background cells: PCD distance 0 (no background rows in the bank)
    p = PatchNeighbours(img=f_img, pcd=f_pcd, foreground=fg, dist_img=di, idx_img=ii, dist_pcd=dp, idx_pcd=ip)
    return net, banks, p


def _reference(net, banks, p, mu):
    layers = {"a1": net.branch_direction[0], "a2": net.branch_direction[3], "b1": net.branch_prototype[0],
              "b2": net.branch_prototype[3], "h1": net.head[0], "h2": net.head[3]}
    layers = {k: (v.weight.detach().numpy(), v.bias.detach().numpy()) for k, v in layers.items()}
    f_pcd = p.pcd.numpy().copy()
    ref = reference.g2sf_metric(p.img.numpy(), f_pcd, banks["img"].features.numpy(), banks["pcd"].features.numpy(),
                                p.idx_img.numpy(), p.idx_pcd.numpy(), p.foreground.numpy(), layers,
                                net.sigma().detach().numpy(), mu, joint=net.direction == "joint")
    # the reference measures background PCD distances against a zero row, the kernel takes 0
    bg = ~p.foreground.numpy()
    sig = net.sigma().detach().numpy().astype(np.float64)
    ref[bg] = (sig[0] * p.dist_img.numpy()[bg] / mu[0] + sig[1] * p.dist_pcd.numpy()[bg] / mu[1])
    return ref


@pytest.mark.parametrize("direction", ["per_modality", "joint"])
def test_fused_kernel_equals_float64_reference(direction):
    net, banks, p = _random_case(direction)
    mu = np.array([1.7, 2.3])
    ref = _reference(net, banks, p, mu)
    head = FusedHead(net, banks)
    fused = fused_scores_native(p, head, mu, 6, all_l=True).numpy()
    unfused = fused_scores_torch(p, net, mu, banks, 6, all_l=True).numpy()
    np.testing.assert_allclose(fused, ref, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(unfused, ref, rtol=2e-5, atol=1e-6)
    minima = fused_scores_native(p, head, mu, 6).numpy()
    np.testing.assert_array_equal(minima, fused.min(axis=1))  # Eq. 11: min over the k + 1 spaces
    np.testing.assert_allclose(fused_scores_torch(p, net, mu, banks, 6).numpy(), ref.min(axis=1), rtol=2e-5)
    # background patches: w = 1, the plain sum of the weighted normalised distances
    bg = ~p.foreground.numpy()
    sig = net.sigma().detach().numpy()
    plain = sig[0] * p.dist_img.numpy() / mu[0] + sig[1] * p.dist_pcd.numpy() / mu[1]
    np.testing.assert_allclose(fused[bg], plain[bg], rtol=1e-6)
    assert not np.allclose(fused[~bg], plain[~bg], rtol=1e-3)  # the network does change the metric
    # fewer neighbours: a prefix of the pairs
    np.testing.assert_allclose(fused_scores_native(p, head, mu, 2).numpy(), fused[:, :2].min(1), rtol=1e-6)


def test_fused_kernel_numpy_and_bad_input():
    net, banks, p = _random_case("joint", seed=3, queries=9, k=3)
    head = FusedHead(net, banks)
    args = [p.img @ head.wa_img.T, p.pcd @ head.wa_pcd.T, head.bank_img, head.bank_pcd, p.idx_img, p.idx_pcd,
            p.dist_img, p.dist_pcd, p.foreground, head.b_a, head.b_b, head.w1, head.b1, head.w2, head.b2,
            torch.tensor([0.3, 0.2])]
    args = [a.detach() for a in args]
    out_t = anisotropic_min(*args, joint=True)
    out_n = anisotropic_min(*[a.numpy() for a in args], joint=True)
    assert isinstance(out_n, np.ndarray) and out_n.dtype == np.float32
    np.testing.assert_array_equal(out_n, out_t.numpy())
    empty = anisotropic_min(*[a[:0] if i in (0, 1, 4, 5, 6, 7, 8) else a for i, a in enumerate(args)])
    assert empty.shape == (0,)
    bad = list(args)
    bad[4] = args[4].clone()
    bad[4][int(torch.nonzero(p.foreground)[0, 0]), 0] = 30  # one past the IMG bank
    with pytest.raises(ValueError, match="idx_img"):
        anisotropic_min(*bad)
    bad = list(args)
    bad[7] = args[7].double()[:, :2]
    with pytest.raises(ValueError, match="dist_pcd"):
        anisotropic_min(*bad)
    bad = list(args)
    bad[4] = args[4].float()
    with pytest.raises(TypeError, match="idx_img"):
        anisotropic_min(*bad)
    bad = list(args)
    bad[0] = args[0].clone()
    bad[0][0, 0] = float("nan")
    with pytest.raises(ValueError, match="qa_img"):
        anisotropic_min(*bad)
    bad = list(args)
    bad[11] = args[11][:, :-1]
    with pytest.raises(ValueError, match="w1"):
        anisotropic_min(*bad)


def test_upsample_index_is_nearest():
    idx = upsample_index(28, 56).reshape(56, 56)
    assert idx[0, 0] == 0 and idx[1, 1] == 0 and idx[2, 3] == 1 * 28 + 1 and idx[55, 55] == 28 * 28 - 1
    assert np.bincount(idx.reshape(-1).numpy(), minlength=784).tolist() == [4] * 784
