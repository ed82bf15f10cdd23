"""Cross-check of xmodal's backbones against the implementations the reference code uses.

Same random weights (or the shipped EfficientNet-Lite0 weights) go into the peer and into
xmodal, the same inputs through both, in one process; prints the largest absolute difference
and the forward-time ratio. Peers: torchvision ``wide_resnet50_2``, timm
``vit_base_patch8_224.dino`` and ``tf_efficientnet_lite0``, anomalib 2.7's CFM Point-MAE
(``PointTransformer``). Needs an environment where those import (torchvision does not with the
CPU torch of the test environment), e.g. a separate venv:

    PYTHONPATH=<xmodal install dir> <peer venv>/bin/python benchmarks/crosscheck_backbones.py

Not part of the test suite.
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import fmt_seconds, interleaved_best, machine_line, markdown_table
from xmodal import backbones


def race(peer_fn, ours_fn, rounds: int = 4) -> tuple[float, float]:
    """Best-of-`rounds` seconds of each, the two interleaved so load changes on a shared
    machine hit both alike (after one warm-up call each)."""
    best = interleaved_best({"peer": peer_fn, "ours": ours_fn}, rounds)
    return best["peer"][1], best["ours"][1]


def maxdiff(a, b) -> float:
    return float((a.double() - b.double()).abs().max())


def row(name, what, diff, scale, t_peer, t_ours):
    return [name, what, f"{diff:.2e}", f"{scale:.2e}", fmt_seconds(t_peer), fmt_seconds(t_ours),
            f"{t_peer / t_ours:.2f}×"]


def save_vit_checkpoint(peer, folder: str) -> str:
    """Writes a timm ViT's weights where xmodal's ``dino_vitb8`` looks for them; returns the path."""
    from safetensors.torch import save_file

    path = os.path.join(folder, "vit_base_patch8_224.dino.safetensors")
    save_file({k: v.contiguous() for k, v in peer.state_dict().items()}, path)
    return path


def save_pointmae_checkpoint(peer, folder: str) -> str:
    """Gives the Point-MAE encoder ``peer`` (anomalib CFM's ``PointTransformer``) non-trivial
    BatchNorm statistics (so a BN mix-up would show) and writes its weights in the official
    ``pretrain.pth`` layout (``base_model``, ``module.MAE_encoder.`` prefix, plus decoder keys
    both loaders must ignore) where xmodal looks for them; returns the path."""
    with torch.no_grad():
        for m in peer.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    enc = {f"module.MAE_encoder.{k}": v for k, v in peer.state_dict().items()}
    enc["module.mask_token"] = torch.zeros(1, 1, 384)
    enc["module.MAE_decoder.norm.weight"] = torch.ones(384)
    enc["module.increase_dim.0.weight"] = torch.zeros(96, 384, 1)
    path = os.path.join(folder, "pointmae_pretrain.pth")
    torch.save({"base_model": enc, "epoch": 300}, path)
    return path


def wide_resnet(tmp, rows):
    import torchvision

    torch.manual_seed(0)
    peer = torchvision.models.wide_resnet50_2(weights=None).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a BN mix-up would show
        for m in peer.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    path = os.path.join(tmp, "wide_resnet50_2-95faca4d.pth")
    torch.save(peer.state_dict(), path)
    ours = backbones.create("wide_resnet50_2", weights_dir=tmp)
    feats = {}
    peer.layer2.register_forward_hook(lambda m, i, o: feats.__setitem__("layer2", o))
    peer.layer3.register_forward_hook(lambda m, i, o: feats.__setitem__("layer3", o))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        t_peer, t_ours = race(lambda: peer(x), lambda: ours(x))
        out = ours(x)
        peer(x)
    for name in ("layer2", "layer3"):
        rows.append(row("WideResNet-50-2 vs torchvision", f"{name} {tuple(out[name].shape[1:])}",
                        maxdiff(out[name], feats[name]), float(feats[name].abs().max()), t_peer, t_ours))


def vit(tmp, rows):
    import timm

    torch.manual_seed(0)
    peer = timm.create_model("vit_base_patch8_224.dino", pretrained=False).eval()
    path = save_vit_checkpoint(peer, tmp)
    x = torch.randn(1, 3, 224, 224)
    for impl in ("builtin", "timm"):
        for depth in (12, 4):
            ours = backbones.create("dino_vitb8", weights=path, depth=depth, implementation=impl)
            ref = timm.create_model("vit_base_patch8_224.dino", pretrained=False, checkpoint_path=path).eval()
            ref.blocks = ref.blocks[:depth]

            def run_ref():
                tokens = ref.norm(ref.blocks(ref.norm_pre(ref._pos_embed(ref.patch_embed(x)))))
                return tokens[:, 1:].permute(0, 2, 1).reshape(1, 768, 28, 28)

            with torch.no_grad():
                t_peer, t_ours = race(run_ref, lambda: ours(x))
                a, b = ours(x), run_ref()
            rows.append(row(f"DINO ViT-B/8 ({ours.implementation}) vs timm", f"depth {depth} {tuple(a.shape[1:])}",
                            maxdiff(a, b), float(b.abs().max()), t_peer, t_ours))


def efficientnet(rows):
    import skimage.data
    import timm

    ours = backbones.create("efficientnet_lite0")
    peer = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    # lukemelas-style names → timm names: the key order of the two state dicts is the same
    # (stem, blocks in order with the same tensors per block, head, classifier)
    src = ours.state_dict()
    dst_keys = list(peer.state_dict().keys())
    assert len(src) == len(dst_keys), (len(src), len(dst_keys))
    mapped = {}
    for (k_src, v), k_dst in zip(src.items(), dst_keys, strict=False):
        assert k_src.rsplit(".", 1)[1] == k_dst.rsplit(".", 1)[1], (k_src, k_dst)
        mapped[k_dst] = v
    peer.load_state_dict(mapped, strict=True)
    img = torch.from_numpy(skimage.data.coffee()).permute(2, 0, 1)[None].float() / 255
    img = torch.nn.functional.interpolate(img, size=(224, 224), mode="bicubic", antialias=True)
    x = backbones.normalize(img, ours)
    with torch.no_grad():
        t_peer, t_ours = race(lambda: peer(x), lambda: ours.logits(x))
        a, b = ours.logits(x), peer(x)
    rows.append(row("EfficientNet-Lite0 vs timm tf_efficientnet_lite0", "logits (shipped weights)",
                    maxdiff(a, b), float(b.abs().max()), t_peer, t_ours))
    top = a.softmax(1)[0].topk(3)
    print("EfficientNet-Lite0 on skimage coffee, top-3:", top.indices.tolist(),
          [round(p, 3) for p in top.values.tolist()], "(967 espresso, 968 cup, 504 coffee mug)")


def pointmae(tmp, rows):
    from anomalib.models.image.cfm.components import PointTransformer

    torch.manual_seed(0)
    peer = PointTransformer(group_size=128, num_group=1024)
    path = save_pointmae_checkpoint(peer, tmp)
    peer.load_model_from_ckpt(path)
    ours = backbones.create("pointmae", weights_dir=tmp)
    print("Point-MAE ignored keys:", ours.load_report.ignored)
    cloud = torch.rand(1, 3, 20000)
    with torch.no_grad():
        peer.eval()
        _, center, _, _ = peer(cloud)
        neighborhood, center, _, _ = peer.group_divider(cloud.transpose(1, 2))

        def run_peer():
            feats = peer.blocks(peer.encoder(neighborhood), peer.pos_embed(center))
            feats = [peer.norm(f).transpose(-1, -2) for f in feats]
            return torch.cat((feats[3], feats[7], feats[11]), dim=1)

        t_peer, t_ours = race(run_peer, lambda: ours(neighborhood, center))
        a, b = ours(neighborhood, center), run_peer()
        rows.append(row("Point-MAE vs anomalib CFM (eval)", f"{tuple(a.shape[1:])}", maxdiff(a, b),
                        float(b.abs().max()), t_peer, t_ours))
        # The reference repositories' train mode: batch-statistics BN, DropPath on; same seed,
        # same random draws.
        peer.train()
        ours.reference_train_mode = True
        torch.manual_seed(7)
        b = run_peer()
        torch.manual_seed(7)
        a = ours(neighborhood, center)
        rows.append(row("Point-MAE vs anomalib CFM (train mode)", f"{tuple(a.shape[1:])}", maxdiff(a, b),
                        float(b.abs().max()), float("nan"), float("nan")))


def main():
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wide_resnet(tmp, rows)
        vit(tmp, rows)
        efficientnet(rows)
        pointmae(tmp, rows)
    print(machine_line(), f"; torch {torch.__version__}")
    print(markdown_table(["backbone", "output", "max |Δ|", "max |peer|", "peer", "xmodal", "peer / xmodal"], rows))


if __name__ == "__main__":
    main()
