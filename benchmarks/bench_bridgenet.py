"""BridgeNet per-sample inference and training step: xmodal vs the reference's formulation in torch.

Both sides use the same random weights (WideResNet-50-2 with torchvision's initialisation, heads
of the reference's shapes: adaptor Linear(3072, 3072) with bias, discriminator 2 x [Linear(3072,
3072) + BatchNorm1d + LeakyReLU(0.3)] -> Linear(3072, 1) -> Sigmoid) and the same prepared inputs
(normalised RGB and depth tensors: the data loader is not timed on either side).

Reference formulation (what the reference code runs per batch, in torch eager):
two full WideResNet-50-2 forwards (layer4 and fc included: its early-exit hook never fires),
unfold 3x3 + bilinear resize of layer3's unfolded maps + adaptive average pooling
(:func:`xmodal.reference.patch_embedding_unfold`), adaptor, discriminator, bilinear upsampling
and ``scipy.ndimage.gaussian_filter(sigma=4)``.

xmodal: ``BridgeNet._score_batch`` minus the input path: one backbone forward on the RGB and
depth images together stopping after layer3, the patch embedding without the unfold, the
adaptor and BatchNorms folded into two Linear layers run by ``xmodal.ops.mlp``, the upsampling
and the scipy-reflect Gaussian in torch.

Training step: one optimisation step on a batch (6 backbone passes, 4 discriminator calls,
BCE + focal) in each formulation, the same loss code (xmodal's, without the texture synthesis:
a fixed random texture mask stands in for UTAG on both sides).

    python benchmarks/bench_bridgenet.py [--size 576] [--train-size 288] [--train-batch 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

import xmodal
from _common import fmt_bytes, fmt_seconds, interleaved_best, machine_line, markdown_table, peak_extra_memory


def detector(size: int):
    """A BridgeNet with the reference's head shapes and random weights, ready to predict."""
    from xmodal.methods import BridgeNet

    det = BridgeNet(backbones="paper", random_weights=True, image_size=size, hidden=3072, adaptor_bias=True,
                    progress=False, calibration=0)
    det.info = {"backbones": "paper"}
    torch.manual_seed(0)
    det.heads = det._new_heads().eval()
    with torch.no_grad():
        for m in det.heads.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.2, 3.0)
    det.fitted = True
    return det


def reference_predict(backbone, heads, rgb, depth, size: int):
    """The reference's inference on normalised (B, 3, S, S) tensors: (scores (B,), maps (B, S, S))."""
    from scipy import ndimage

    from xmodal.reference import patch_embedding_unfold

    backbone.early_exit = False
    try:
        with torch.no_grad():
            feats = []
            for images in (rgb, depth):  # two backbone copies in the reference: two forwards
                maps = backbone(images)
                feats.append(patch_embedding_unfold([maps["layer2"], maps["layer3"]]))
            patch = heads(torch.cat(feats, dim=1))
            grid = size // 8  # layer2's stride
            scores = patch.reshape(rgb.shape[0], 1, grid, grid)
            up = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()
    finally:
        backbone.early_exit = True
    maps = np.stack([ndimage.gaussian_filter(m, sigma=4) for m in up])
    return scores.reshape(rgb.shape[0], -1).max(dim=1).values.numpy(), maps


def xmodal_predict(det, rgb, depth):
    """BridgeNet's scoring after the input path (what ``_score_batch`` does after ``_inputs``)."""
    from xmodal.methods.postprocess import gaussian_blur, upsample_bilinear

    ext = det.extractor
    with torch.no_grad():
        joint = ext.joint({"rgb": rgb, "depth": depth})
        scores = det._scores(joint).reshape(rgb.shape[0], 1, ext.grid, ext.grid)
        maps = gaussian_blur(upsample_bilinear(scores, det.map_size), 4.0, mode="reflect")
    return scores.reshape(rgb.shape[0], -1).max(dim=1).values.numpy(), maps[:, 0].numpy()


def train_step(det, embed, rgb, depth, mask, optimizers):
    """One BridgeNet optimisation step with ``embed(images) -> (N, 1536)`` as the feature path."""
    from xmodal.methods.bridgenet._heads import focal_loss

    heads = det.heads.train()
    with torch.no_grad():
        noisy = [x + 0.12 * torch.randn_like(x) for x in (rgb, depth)]
        textured = [x * (1 - mask) + torch.randn_like(x) * mask for x in (rgb, depth)]
        per = [[embed(v) for v in group] for group in zip(noisy, textured, (rgb, depth), strict=True)]
    joint = [torch.cat(pair, dim=1) for pair in per]  # noisy, textured, clean
    clean = heads.adaptor(joint[2])
    medium = heads.adaptor(joint[2] + 0.04 * torch.randn_like(joint[2]))
    low = clean + 0.02 * torch.randn_like(clean)
    n = clean.shape[0]
    loss = 0.0
    for other in (heads.adaptor(joint[0]), medium, low):
        s = heads.discriminator(torch.cat([clean, other]))[:, 0]
        loss = loss + F.binary_cross_entropy(s[:n], torch.zeros(n)) + F.binary_cross_entropy(s[n:], torch.ones(n))
    labels = F.max_pool2d(mask[:, :1], 8).reshape(-1)
    loss = loss + focal_loss(heads.discriminator(heads.adaptor(joint[1]))[:, 0], labels)
    for opt in optimizers:
        opt.zero_grad()
    loss.backward()
    for opt in optimizers:
        opt.step()
    return float(loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=576)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=288)
    parser.add_argument("--train-batch", type=int, default=2)
    args = parser.parse_args()
    if torch.get_num_threads() != xmodal.get_num_threads():
        torch.set_num_threads(xmodal.get_num_threads())
    det = detector(args.size)
    ext = det.extractor
    g = torch.Generator().manual_seed(0)
    rgb = torch.randn(1, 3, args.size, args.size, generator=g)
    depth = torch.randn(1, 3, args.size, args.size, generator=g)

    ref_scores, ref_maps = reference_predict(ext.backbone, det.heads, rgb, depth, args.size)
    our_scores, our_maps = xmodal_predict(det, rgb, depth)
    score_diff = float(np.abs(ref_scores - our_scores).max())
    map_diff = float(np.abs(ref_maps - our_maps).max())

    _, ref_peak = peak_extra_memory(lambda: reference_predict(ext.backbone, det.heads, rgb, depth, args.size))
    _, our_peak = peak_extra_memory(lambda: xmodal_predict(det, rgb, depth))
    best = interleaved_best({"reference": lambda: reference_predict(ext.backbone, det.heads, rgb, depth, args.size),
                             "xmodal": lambda: xmodal_predict(det, rgb, depth)}, rounds=args.rounds)
    ref_s, our_s = best["reference"][1], best["xmodal"][1]

    print("## bench_bridgenet\n")
    print(machine_line() + f"; torch {torch.__version__}, {torch.get_num_threads()} threads for both; "
          "the machine was shared with other jobs (fastest of interleaved rounds)\n")
    print(f"Inference, batch 1 at {args.size}^2 (WideResNet-50-2 random weights, reference head shapes); "
          f"max |score diff| {score_diff:.1e}, max |map diff| {map_diff:.1e}\n")
    print(markdown_table(["implementation", "time / sample", "ratio", "peak extra memory", "memory ratio"], [
        ["reference formulation (torch eager)", fmt_seconds(ref_s), "1.00", fmt_bytes(ref_peak), "1.00"],
        ["**xmodal BridgeNet**", fmt_seconds(our_s), f"{ref_s / our_s:.2f}x faster", fmt_bytes(our_peak),
         f"{our_peak / max(ref_peak, 1):.2f}"],
    ]))

    # --- training step ----------------------------------------------------------------------
    from xmodal.reference import patch_embedding_unfold

    size, b = args.train_size, args.train_batch
    tdet = detector(size)
    text = tdet.extractor
    rgb = torch.randn(b, 3, size, size, generator=g)
    depth = torch.randn(b, 3, size, size, generator=g)
    mask = (torch.rand(b, 1, size, size, generator=g) > 0.9).float().expand(-1, 3, -1, -1)

    def reference_embed(images):
        text.backbone.early_exit = False
        try:
            maps = text.backbone(images)
        finally:
            text.backbone.early_exit = True
        return patch_embedding_unfold([maps["layer2"], maps["layer3"]])

    def optimizers():
        return [torch.optim.Adam(tdet.heads.adaptor.parameters(), lr=5e-5, weight_decay=1e-5),
                torch.optim.AdamW(tdet.heads.discriminator.parameters(), lr=1e-4)]

    opts = optimizers()
    steps = interleaved_best({
        "reference": lambda: train_step(tdet, reference_embed, rgb, depth, mask, opts),
        "xmodal": lambda: train_step(tdet, text.embed, rgb, depth, mask, opts)}, rounds=max(1, args.rounds - 1))
    ref_t, our_t = steps["reference"][1], steps["xmodal"][1]
    print(f"\nTraining step, batch {b} at {size}^2 (6 backbone passes, adaptor + discriminator forward/backward, "
          "Adam/AdamW steps)\n")
    print(markdown_table(["implementation", "time / step", "images / s", "ratio"], [
        ["reference formulation (torch eager)", fmt_seconds(ref_t), f"{b / ref_t:.2f}", "1.00"],
        ["**xmodal BridgeNet**", fmt_seconds(our_t), f"{b / our_t:.2f}", f"{ref_t / our_t:.2f}x faster"],
    ]))


if __name__ == "__main__":
    main()
