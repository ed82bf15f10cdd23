"""BridgeNet's training loop: MGAG + UTAG anomalies, BCE + focal loss, epoch selection.

One optimisation step on a batch of B good images (as the reference, six backbone passes
when both modalities are used, batched into one forward):

1. UTAG: a texture anomaly inside a Perlin mask on the foreground, on the RGB and/or depth
   image (modality drawn per image); its 8x8 max-pooled mask labels the patches.
2. MGAG level 1: N(0, 6 sigma) noise on the normalised clean images of the chosen modalities.
3. The backbone + patch embedding of the noisy, the textured and the clean images.
4. MGAG level 2: N(0, 2 sigma) on the clean per-modality patch features (modality drawn anew).
5. The adaptor on the noisy, textured, clean and feature-noisy joint features; MGAG level 3:
   N(0, sigma) on the adapted clean features.
6. Loss: for each noise level BCE(D([clean; noisy])) with labels 0 / 1 (clean and noisy in one
   batch, so they share BatchNorm statistics) + focal loss of D(textured) against the labels.
"""

from __future__ import annotations

import numpy as np

from . import NOISE_SCALES
from ._heads import MODALITY_CHOICES, focal_loss, gaussian_noise

__all__ = ["draw_modality", "train"]


def draw_modality(rng) -> str:
    """Which inputs get Gaussian noise: "both", "rgb" or "depth", 1/3 each (paper Eq. 5-6,
    alpha = 1/3; the reference's thresholds 0.33 / 0.66 on one uniform draw)."""
    return MODALITY_CHOICES[int(rng.integers(3))]


class _InputCache:
    """Prepared inputs of the training images, kept while they fit in ``budget`` bytes."""

    def __init__(self, detector, samples, budget: int):
        self.detector, self.samples, self.budget = detector, samples, budget
        self.kept: dict[int, object] = {}
        self.used = 0

    def __getitem__(self, index: int):
        if index in self.kept:
            return self.kept[index]
        from ..base import as_sample

        item = self.detector._inputs(as_sample(self.samples[index]))
        size = item.rgb.nbytes + item.depth.nbytes + item.foreground.nbytes
        if self.used + size <= self.budget:
            self.kept[index] = item
            self.used += size
        return item


def _epoch_order(n: int, shots: list[int] | None, repeats: int, limit: int, batch: int, rng) -> list[list[int]]:
    """Batches of sample indices for one epoch: a shuffled pass (few-shot: the chosen images
    replicated ``repeats`` times), stopped after the batch that brings the count above limit."""
    pool = np.repeat(np.asarray(shots), repeats) if shots is not None else np.arange(n)
    order = rng.permutation(pool)
    batches, seen = [], 0
    for first in range(0, len(order), batch):
        chunk = [int(i) for i in order[first : first + batch]]
        batches.append(chunk)
        seen += len(chunk)
        if seen > limit:
            break
    return batches


def train(detector, samples, validation) -> None:
    """Trains ``detector.heads`` on ``samples`` (good images); records losses in ``info``."""
    import torch

    from ...data.synthesis import TextureAnomalyGenerator
    from ...progress import progress

    c = detector.config
    device = torch.device(c["device"])
    extractor = detector.extractor
    rng = np.random.default_rng(c["seed"])
    gen = torch.Generator().manual_seed(c["seed"])
    torch.manual_seed(c["seed"])
    heads = detector._new_heads().to(device)
    detector.heads = heads
    adaptor_opt = torch.optim.Adam(heads.adaptor.parameters(), lr=c["lr"], weight_decay=1e-5)
    disc_opt = torch.optim.AdamW(heads.discriminator.parameters(), lr=2 * c["lr"])
    modalities = detector.modalities
    utag = TextureAnomalyGenerator(c["textures"], pool=extractor.pool, seed=int(rng.integers(2**31)),
                                   modality="random" if len(modalities) == 2 else modalities[0])
    shots = None
    if c["shots"] is not None:
        if c["shots"] > len(samples):
            msg = f"shots={c['shots']} but only {len(samples)} training images are available"
            raise ValueError(msg)
        shots = sorted(int(i) for i in rng.choice(len(samples), size=c["shots"], replace=False))
        detector.info["shots"] = shots
    cache = _InputCache(detector, samples, c["max_memory"])
    scales = [c["noise"] * s for s in NOISE_SCALES]
    losses, selection, best = [], [], None
    epochs = progress(range(c["epochs"]), "training BridgeNet", enabled=c["progress"], unit="epoch")
    for _ in epochs:
        heads.train()
        epoch_modality = draw_modality(rng)
        total, steps = 0.0, 0
        for chunk in _epoch_order(len(samples), shots, c["repeats"], c["limit"], c["batch_size"], rng):
            inputs = [cache[i] for i in chunk]
            loss = _step(detector, inputs, utag, rng, gen, scales, epoch_modality)
            adaptor_opt.zero_grad()
            disc_opt.zero_grad()
            loss.backward()
            adaptor_opt.step()
            disc_opt.step()
            value = float(loss.detach())
            if not np.isfinite(value):
                msg = "BridgeNet training diverged (non-finite loss)"
                raise RuntimeError(msg)
            total, steps = total + value, steps + 1
        losses.append(total / max(steps, 1))
        if validation is not None:
            value = _validation_score(detector, validation)
            selection.append(value)
            if best is None or value > best[0]:
                best = (value, len(losses) - 1, {k: v.detach().clone() for k, v in heads.state_dict().items()})
        if hasattr(epochs, "set_postfix"):
            epochs.set_postfix(loss=f"{losses[-1]:.4f}")
    if best is not None:
        heads.load_state_dict(best[2])
        detector.info["selected_epoch"] = best[1] + 1
        detector.info["validation_per_epoch"] = [round(v, 6) for v in selection]
    else:
        detector.info["selected_epoch"] = len(losses)
    heads.eval()
    detector.info["loss_per_epoch"] = [round(v, 6) for v in losses]


def _step(detector, inputs, utag, rng, gen, scales, epoch_modality: str):
    """The loss of one batch (see the module docstring)."""
    import torch

    def choose() -> str:
        return epoch_modality if detector.config["noise_modality"] == "epoch" else draw_modality(rng)

    ext = detector.extractor
    heads = detector.heads
    modalities = detector.modalities
    textured = [utag(rgb=x.rgb if "rgb" in modalities else None, depth=x.depth if "depth" in modalities else None,
                     foreground=x.foreground, rng=rng) for x in inputs]
    labels = torch.from_numpy(np.stack([t.label for t in textured]).astype(np.float32)).reshape(-1).to(ext.device)
    clean = {m: ext.images(inputs, m) for m in modalities}
    aug = {"rgb": ext.images(inputs, "rgb", rgb=[t.rgb for t in textured]) if "rgb" in modalities else None,
           "depth": ext.images(inputs, "depth", depth=[t.depth for t in textured]) if "depth" in modalities else None}
    rgb, depth = clean.get("rgb"), clean.get("depth")
    noisy_rgb, noisy_depth = gaussian_noise(rgb, depth, scales[0], _allowed(choose(), modalities), gen)
    noisy = {"rgb": noisy_rgb, "depth": noisy_depth}
    b = len(inputs)
    with torch.no_grad():
        stacked = torch.cat([t for m in modalities for t in (noisy[m], aug[m], clean[m])])
        feats = ext.embed(stacked).reshape(len(modalities), 3, b * ext.grid * ext.grid, -1)
    per = {m: feats[i] for i, m in enumerate(modalities)}  # m -> (3, N, E): noisy, textured, clean
    f_rgb, f_depth = per.get("rgb", [None] * 3)[2], per.get("depth", [None] * 3)[2]
    f_rgb, f_depth = gaussian_noise(f_rgb, f_depth, scales[1], _allowed(choose(), modalities), gen)
    noisy_features = {"rgb": f_rgb, "depth": f_depth}

    def joint(j):
        return torch.cat([per[m][j] for m in modalities], dim=1)

    clean_proj = heads.adaptor(joint(2))
    high = heads.adaptor(joint(0))
    medium = heads.adaptor(torch.cat([noisy_features[m] for m in modalities], dim=1))
    low = clean_proj + scales[2] * torch.randn(clean_proj.shape, generator=gen).to(clean_proj.device)
    bce = torch.nn.functional.binary_cross_entropy
    loss = 0.0
    n = clean_proj.shape[0]
    target = torch.cat([torch.zeros(n), torch.ones(n)]).to(clean_proj.device)
    for noisy_proj in (high, medium, low):
        scores = heads.discriminator(torch.cat([clean_proj, noisy_proj]))[:, 0]
        loss = loss + bce(scores[:n], target[:n]) + bce(scores[n:], target[n:])
    textured_scores = heads.discriminator(heads.adaptor(joint(1)))[:, 0]
    return loss + focal_loss(textured_scores, labels)


def _allowed(choice: str, modalities: tuple[str, ...]) -> str:
    """The drawn modality choice restricted to the modalities in use."""
    return choice if len(modalities) == 2 else modalities[0]


def _validation_score(detector, validation) -> float:
    """Patch AUROC of synthetic texture anomalies (labelled patches) against the clean patches
    of the same good images, the same anomalies every epoch (seeded)."""
    import torch

    from ...data.synthesis import TextureAnomalyGenerator
    from ...ops import auroc
    from ..base import as_sample

    ext = detector.extractor
    modalities = detector.modalities
    detector.heads.eval()
    utag = TextureAnomalyGenerator(detector.config["textures"], pool=ext.pool, seed=detector.config["seed"] + 1,
                                   modality="random" if len(modalities) == 2 else modalities[0])
    scores, labels = [], []
    with torch.no_grad():
        for i in range(len(validation)):
            x = detector._inputs(as_sample(validation[i]))
            t = utag(rgb=x.rgb if "rgb" in modalities else None, depth=x.depth if "depth" in modalities else None,
                     foreground=x.foreground, rng=detector.config["seed"] + i)
            for variant in ({}, {"rgb": [t.rgb], "depth": [t.depth]}):
                images = {m: ext.images([x], m, **({m: variant[m]} if variant else {})) for m in modalities}
                s = detector.heads(ext.joint(images)).cpu().numpy()
                scores.append(s)
                labels.append(t.label.reshape(-1) if variant else np.zeros(s.shape, dtype=bool))
    return float(auroc(np.concatenate(scores), np.concatenate(labels).astype(np.int64)))
