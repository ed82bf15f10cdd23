"""The fusion dataset (foreground patches of synthetic anomalies) and the LSPN trainer.

The dataset holds, per foreground patch, the 1920-d feature [IMG, PCD] (in a
:class:`~xmodal.methods._store.FeatureStore`: RAM up to ``max_memory``, then memory-mapped
temporary files; the reference's is ~7.7 GB for MVTec), its label, its nearest distance in each
bank and its top-``stored`` neighbour rows in each bank (the prototypes).

Training as the reference: 50/50 split of the patches into training and validation; mu = the
mean nearest distance of the normal training patches per modality; M = 2 x the largest
normalised unimodal distance of an anomalous training patch; class-balanced sampling with
replacement; batch min(int(0.7 N) // 20, 8192); Adam (LSPN lr 1.5e-4, g lr 5e-3, weight decay
of the preset); the checkpoint with the lowest validation separation + 10 x margin is kept
(every epoch is eligible; the reference's Lightning ordering skips epoch 0).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from .._store import FeatureStore
from .losses import LOSS_WEIGHTS, lspn_losses, margin_loss, separation_loss
from .lspn import LSPN, normalised_distances


class FusionDataset:
    """Foreground patches of the synthetic images, appended image by image."""

    def __init__(self, max_memory: int, tmp_dir=None):
        self.store = FeatureStore(max_memory, tmp_dir)
        self._labels, self._dist, self._idx_img, self._idx_pcd = [], [], [], []
        self.images = 0

    def add(self, patches, labels: np.ndarray, stored: int) -> None:
        """One image: ``patches`` a PatchNeighbours (k >= stored), ``labels`` (G3*G3,) bool."""
        fg = patches.foreground.cpu().numpy().astype(bool)
        self.images += 1
        if not fg.any():
            return
        rows = torch.from_numpy(np.flatnonzero(fg)).to(patches.img.device)
        self.store.append(patches.features[rows].cpu().numpy())
        self._labels.append(labels[fg])
        dist = torch.stack([patches.dist_img[rows, 0], patches.dist_pcd[rows, 0]], dim=1)
        self._dist.append(dist.cpu().numpy())
        self._idx_img.append(patches.idx_img[rows, :stored].cpu().numpy().astype(np.int32))
        self._idx_pcd.append(patches.idx_pcd[rows, :stored].cpu().numpy().astype(np.int32))

    def finish(self) -> None:
        if not self._labels:
            msg = "the synthetic anomalies have no foreground patch (empty point clouds?)"
            raise ValueError(msg)
        self.labels = np.concatenate(self._labels)
        self.dist = np.concatenate(self._dist).astype(np.float64)
        self.idx_img = np.concatenate(self._idx_img)
        self.idx_pcd = np.concatenate(self._idx_pcd)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def features(self, rows) -> np.ndarray:
        return self.store.gather(rows)

    def close(self) -> None:
        self.store.close()


def default_batch_size(n: int) -> int:
    """The reference's min(int(0.7 N) // 20, 8192), at least 2."""
    return max(2, min(int(0.7 * n) // 20, 8192))


class Trainer:
    """Trains an LSPN on a :class:`FusionDataset` with the banks' rows as prototypes.

    Args:
        data: the fusion dataset; bank_img, bank_pcd: (n, D) float32 tensors (IMG standardised).
        loss_weights: "paper" or "code" (see :mod:`.losses`).
        direction: "per_modality" or "joint".
        epochs, batch_size (None: the reference's rule), lr, lr_scale (g's), seed, device.
        k, eta: the consistency loss's k and eta.
        max_patches: train and validate on at most this many patches (a seeded uniform share;
            None: all, as the reference).
    """

    def __init__(self, data: FusionDataset, bank_img: torch.Tensor, bank_pcd: torch.Tensor, *, loss_weights: str,
                 direction: str, epochs: int, batch_size: int | None, lr: float, lr_scale: float, seed: int,
                 device, k: int = 5, eta: float = 1.2, max_patches: int | None = None):
        self.data, self.bank_img, self.bank_pcd = data, bank_img, bank_pcd
        self.weights = LOSS_WEIGHTS[loss_weights]
        self.direction, self.epochs, self.lr, self.lr_scale = direction, epochs, lr, lr_scale
        self.seed, self.device, self.k, self.eta = seed, torch.device(device), k, eta
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(data))
        if max_patches is not None:
            order = order[:max_patches]  # a seeded uniform share of the patches (CPU budgets)
        half = len(order) // 2 if len(order) > 1 else 1
        self.train_rows, self.val_rows = np.sort(order[:half]), np.sort(order[half:])
        self.batch_size = batch_size or default_batch_size(len(data))
        normal = ~data.labels[self.train_rows]
        dist = data.dist[self.train_rows]
        if not normal.any():
            msg = "the fusion training split holds no normal patch"
            raise ValueError(msg)
        self.mu = np.maximum(dist[normal].mean(axis=0), 1e-12)
        anomalous = dist[~normal] / self.mu
        self.big_m = float(2 * anomalous.max()) if anomalous.size else 1.0
        self.prototypes = 2 * k + 1

    def batch(self, rows: np.ndarray, count: int):
        """(f (B, D), prototypes (B, count, D), normal (B,) bool) tensors on the device."""
        f = torch.from_numpy(self.data.features(rows)).to(self.device)
        ii = torch.from_numpy(self.data.idx_img[rows, :count].astype(np.int64)).to(self.device)
        ip = torch.from_numpy(self.data.idx_pcd[rows, :count].astype(np.int64)).to(self.device)
        protos = torch.cat([self.bank_img[ii], self.bank_pcd[ip]], dim=-1)
        normal = torch.from_numpy(~self.data.labels[rows]).to(self.device)
        return f, protos, normal

    def validation_loss(self, net: LSPN) -> float:
        """separation + 10 x margin over the whole validation split (eval mode, no noise)."""
        if self.val_rows.size == 0:
            return float("nan")
        mu = torch.as_tensor(self.mu, dtype=torch.float32, device=self.device)
        qs, normals = [], []
        net.eval()
        with torch.no_grad():
            for first in range(0, len(self.val_rows), 8192):
                f, protos, normal = self.batch(self.val_rows[first : first + 8192], 1)
                m0 = protos[:, 0]
                l0 = net.metric(net.scales(f, m0), normalised_distances(f, m0, net.dim_img, mu))
                qs.append(l0**2)
                normals.append(normal)
        q, normal = torch.cat(qs), torch.cat(normals)
        return float(separation_loss(q, normal, self.big_m) + 10.0 * margin_loss(q, normal))

    def run(self, progress_bar=None) -> tuple[LSPN, dict]:
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        net = LSPN(self.bank_img.shape[1], self.bank_pcd.shape[1], self.direction).to(self.device)
        others = [p for name, p in net.named_parameters() if name != "g"]
        wd = self.weights["weight_decay"]
        optimizers = [torch.optim.Adam(others, lr=self.lr, weight_decay=wd),
                      torch.optim.Adam([net.g], lr=self.lr_scale, weight_decay=wd)]
        mu = torch.as_tensor(self.mu, dtype=torch.float32, device=self.device)
        labels = self.data.labels[self.train_rows]
        # class-balanced sampling with replacement (WeightedRandomSampler)
        counts = np.bincount(labels.astype(np.int64), minlength=2).astype(np.float64)
        p = np.where(labels, 1.0 / max(counts[1], 1), 1.0 / counts[0])
        p /= p.sum()
        rng = np.random.default_rng(self.seed + 1)
        history, best, best_state = [], float("inf"), None
        started = time.perf_counter()
        epochs = range(self.epochs) if progress_bar is None else progress_bar(range(self.epochs))
        for epoch in epochs:
            net.train()
            draws = self.train_rows[rng.choice(len(self.train_rows), len(self.train_rows), p=p)]
            sums = dict.fromkeys(("total", "separation", "margin", "consistency", "scaling", "crossmodal"), 0.0)
            steps = 0
            for first in range(0, len(draws), self.batch_size):
                rows = draws[first : first + self.batch_size]
                if len(rows) < 2:
                    continue
                f, protos, normal = self.batch(rows, self.prototypes)
                terms = lspn_losses(net, f, protos, normal, mu, self.big_m, self.weights, generator, self.k, self.eta)
                if not torch.isfinite(terms["total"]):
                    msg = f"G2SF fuser training diverged at epoch {epoch} (non-finite loss)"
                    raise RuntimeError(msg)
                for opt in optimizers:
                    opt.zero_grad()
                terms["total"].backward()
                for opt in optimizers:
                    opt.step()
                for name in sums:
                    sums[name] += float(terms[name].detach())
                steps += 1
            val = self.validation_loss(net)
            record = {k: round(v / max(steps, 1), 6) for k, v in sums.items()}
            record["validation"] = round(val, 6)
            history.append(record)
            if best_state is None or val < best:
                best, best_state = val, copy.deepcopy(net.state_dict())
                best_epoch = epoch
        elapsed = time.perf_counter() - started
        net.load_state_dict(best_state)
        net.eval()
        info = {"fuser_patches": len(self.data), "fuser_used_patches": len(self.train_rows) + len(self.val_rows),
                "fuser_train_patches": len(self.train_rows),
                "fuser_anomalous_patches": int(self.data.labels.sum()), "fuser_batch_size": self.batch_size,
                "fuser_best_epoch": best_epoch, "fuser_best_validation": round(best, 6),
                "fuser_seconds": round(elapsed, 3), "fuser_history": history,
                "patches_per_second": round(len(self.train_rows) * self.epochs / max(elapsed, 1e-9), 1)}
        return net, info
