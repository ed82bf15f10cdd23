"""DifferNet (Rudolph et al., WACV 2021): a normalising flow on image-level CNN descriptors.

A frozen AlexNet (torchvision's, weights ``alexnet-owt-7be5be79.pth`` from a local folder;
offline: EfficientNet-Lite0 stage 7) reads the image at three sizes (the study's [448, 224,
112]); each ``features`` map is averaged globally and the three vectors are concatenated (3 x
256 = 768 values). A flow of 8 Glow couplings (:class:`xmodal.methods._flows.coupling.
TwoSidedCoupling`, log-scales soft-clamped at 3, fully connected subnets with 2048 hidden
units, a fixed random permutation after each block) maps them to a standard normal. Training
(the paper's code): every epoch sees each good image under a fresh random rotation, loss =
(0.5 |z|^2 - log|det J|) / dims, Adam lr 2e-4, betas (0.8, 0.8), eps 1e-4, weight decay 1e-5,
192 epochs (24 x 8), batch 24. Image score = mean of z^2, averaged over ``test_transforms``
random rotations of the image (64 in the paper: the study's slow 395 ms per image).

DifferNet localises nothing by itself (the paper's gradient maps are an add-on): ``map`` is
the image score everywhere, so pixel metrics of this method carry no information. Rotations are
applied to the normalised image with zero fill (the mean colour); colour jitter is off (the
paper's code's default).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from ._flows.detector import FlowDetector, check_positive, check_sizes
from .base import AnomalyResult, register


def rotate(images, angles):
    """(B, 3, H, W) images rotated about their centres by ``angles`` (B,) radians, zero fill."""
    import torch
    import torch.nn.functional as F

    cos, sin = torch.cos(angles), torch.sin(angles)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _latent(flow, descriptors):
    """The flow's latent vectors (the log-determinant is for training)."""
    return flow([descriptors])[0][0]


@register
class DifferNet(FlowDetector):
    """DifferNet detector on RGB images.

    Args:
        backbones: "auto" (AlexNet when ``alexnet-owt-7be5be79.pth`` is found, else
            EfficientNet-Lite0 stage 7), "paper" or "offline".
        input_sizes: image sides (paper: [448, 224, 112]).
        coupling_blocks: 8; hidden: 2048 subnet units; clamp: 3.
        rotations: random rotations as training augmentation and for the test-time transforms.
        test_transforms: rotated copies averaged per test image (paper 64; 1 = the image only).
        epochs, batch_size, lr, weight_decay: 192, 24, 2e-4, 1e-5.
        weights_dir, device, seed, calibration, progress, random_weights: see
            :class:`xmodal.methods.Detector`.
    """

    method = "differnet"
    # what an exported DifferNet runs (Detector.export's manifest): graphs in braces, xmodal ops between
    pipeline = ("rgb: PIL bicubic resize to the largest input size, backbone normalisation; test_transforms seeded "
                "rotations; bilinear resize to each input size",
                "{backbone} at each size (one graph per size, backbone_<side>): feature maps, global average, "
                "concatenated into descriptors",
                "{flow}: coupling flow on the descriptors -> z",
                "score = mean of z^2 over the rotations; map = the score everywhere; calibration")
    PAPER: ClassVar[dict] = {"rgb": "alexnet", "stages": ["features"]}
    OFFLINE: ClassVar[dict] = {"rgb": "efficientnet_lite0", "stages": [7]}
    ADAM: ClassVar[dict] = {"betas": (0.8, 0.8), "eps": 1e-4}

    def __init__(self, backbones: str = "auto", weights_dir=None, device: str = "cpu",
                 input_sizes=(448, 224, 112), coupling_blocks: int = 8, hidden: int = 2048, clamp: float = 3.0,
                 rotations: bool = True, test_transforms: int = 64, epochs: int = 192, batch_size: int = 24,
                 lr: float = 2e-4, weight_decay: float = 1e-5, seed: int = 0, calibration: float = 0.1,
                 progress: bool = True, random_weights: bool = False, **legacy):
        sizes = check_sizes("input_sizes", list(input_sizes) if isinstance(input_sizes, tuple) else input_sizes)
        common = self._flow_options(legacy, backbones=backbones, weights_dir=weights_dir, device=device, seed=seed,
                                    batch_size=batch_size, epochs=epochs, lr=lr, weight_decay=weight_decay,
                                    max_memory=4 << 30, calibration=calibration, progress=progress,
                                    random_weights=random_weights)
        del common["max_memory"]
        super().__init__(input_sizes=sizes,
                         coupling_blocks=check_positive("coupling_blocks", coupling_blocks, integer_only=True),
                         hidden=check_positive("hidden", hidden, integer_only=True),
                         clamp=check_positive("clamp", clamp),
                         rotations=bool(rotations),
                         test_transforms=check_positive("test_transforms", test_transforms, integer_only=True),
                         **common)
        self.flow = None

    def _input_sizes(self) -> list[int]:
        return list(self.config["input_sizes"])

    @property
    def dims(self) -> int:
        return len(self.config["input_sizes"]) * self.info["features"]["channels"][0]

    def _make_flow(self):
        from ._flows.coupling import Flow, PerScale, TwoSidedCoupling, fc_subnet

        c = self.config
        make = fc_subnet(c["hidden"])
        return Flow([TwoSidedCoupling(self.dims, lambda a, b: PerScale(make(a, b)), clamp=c["clamp"],
                                      seed=c["seed"] * 1009 + i) for i in range(c["coupling_blocks"])])

    def _descriptor(self, images):
        """(B, dims) descriptors of normalised images at the largest input size."""
        import torch
        import torch.nn.functional as F

        parts = []
        for size in self.config["input_sizes"]:
            scaled = images if images.shape[-1] == size else F.interpolate(images, size=(size, size),
                                                                           mode="bilinear", align_corners=False)
            parts += [m.mean(dim=(2, 3)) for m in self.extractor.maps(scaled)]
        return torch.cat(parts, 1)

    def _images(self, batch):
        return self.extractor.images(batch, max(self.config["input_sizes"]))

    def _augments(self) -> bool:
        return self.config["rotations"]

    def _angles(self, n: int, generator):
        import torch

        return torch.rand(n, generator=generator, dtype=torch.float64) * (2 * math.pi) - math.pi

    def _training_features(self, batch, generator):
        import torch

        with torch.no_grad():
            images = self._images(batch)
            if self.config["rotations"]:
                images = rotate(images, self._angles(len(batch), generator).to(images.device))
            return [self._descriptor(images)]

    def _features(self, batch):
        """[(B, T, dims)]: the descriptors of T = test_transforms rotated copies of each image."""
        import torch

        images = self._images(batch)
        t = self.config["test_transforms"] if self.config["rotations"] else 1
        if t == 1:
            return [self._descriptor(images)[:, None]]
        generator = torch.Generator().manual_seed(self.config["seed"])  # the same transforms for every image
        angles = self._angles(t, generator).to(images.device)
        out = [self._descriptor(rotate(img[None].expand(t, -1, -1, -1), angles)) for img in images]
        return [torch.stack(out)]

    def _heads(self) -> dict:
        """The flow as a graph: descriptors (rows = rotated copies) -> z."""
        from ..engines.graphs import Head

        if self.flow is None:
            return {"flow": None}
        c = self.config
        rows = c["test_transforms"] if c["rotations"] else 1
        return {"flow": Head(self.flow, {"descriptors": ["rows", self.dims]}, ("z",), call=_latent, max_rows=rows)}

    def _loss(self, feats):
        (z,), logdet = self.flow([feats[0]])
        return (0.5 * z.pow(2).sum(1) - logdet).mean() / z.shape[1]

    def _cache(self, samples):
        import torch

        from ._store import FeatureStore

        store = FeatureStore(4 << 30)
        with torch.no_grad():
            for batch in self._batches(samples, "extracting training features"):
                for row in self._descriptor(self._images(batch)):
                    store.append(row[None].cpu().numpy())
        return store

    def _result(self, feats, i: int) -> AnomalyResult:
        runners = self._head_runners()
        (z,) = self.flow([feats[0][i]])[0] if runners is None else runners["flow"](feats[0][i])
        score = float(z.pow(2).mean())
        return AnomalyResult(score=score, map=np.full((self.map_size, self.map_size), score, dtype=np.float32))
