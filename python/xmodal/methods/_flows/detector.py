"""What FastFlow, CFlow, CS-Flow and DifferNet share on top of :class:`xmodal.methods.Detector`.

- The backbone choice ("paper" / "offline" / "auto", recorded in ``info``) and a frozen
  :class:`.features.ImageFeatures` extractor.
- Training: Adam on the flow's parameters for ``epochs`` passes over the good images, in
  shuffled batches drawn from ``seed``. Backbone features are computed once and cached in a
  :class:`xmodal.methods._store.FeatureStore` (RAM up to ``max_memory``, then temporary
  memory-mapped files) unless the method augments its training images. The mean training loss
  of every epoch is kept in ``info["train_loss"]`` (it is the negative log-likelihood the
  method minimises, so it falls as the likelihood of the training data rises).
- Persistence: the flow's ``state_dict`` as float32 arrays ``flow.<name>``; shapes are checked
  against a freshly built flow before loading.

A method subclass sets ``PAPER`` / ``OFFLINE`` (backbone, stages, input sizes), implements
``_make_flow()``, ``_loss(features)`` and ``_result(features, i)``, and may override
``_train_batch`` (CFlow trains on fibre batches) or ``_training_features`` (DifferNet augments).
"""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np

from ..._arrays import integer, number
from ..base import Detector

ADAM_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8}


def check_positive(name: str, value, *, integer_only: bool = False):
    """A positive option: :func:`xmodal._arrays.integer` (``integer_only``) or
    :func:`xmodal._arrays.number` with the lower bound 0 excluded (TypeError for the wrong kind,
    ValueError out of range, as every other option check)."""
    if integer_only:
        return integer(value, name, minimum=1, expected="an int > 0")
    return number(value, name, minimum=0, low_open=True, expected="a finite number > 0")


def check_sizes(name: str, sizes, count: int | None = None) -> list[int]:
    if isinstance(sizes, (int, np.integer)) and not isinstance(sizes, bool):
        sizes = [sizes]
    if not isinstance(sizes, (list, tuple)) or not sizes or (count is not None and len(sizes) != count):
        what = f"{count} image sides" if count is not None else "image sides"
        msg = f"{name} must be a list of {what} (ints >= 32); got {sizes!r}"
        raise ValueError(msg)
    return [integer(s, name, minimum=32, expected="image sides >= 32") for s in sizes]


class FlowDetector(Detector):
    """Base of the flow methods (see the module docstring)."""

    PAPER: ClassVar[dict] = {}  # {"rgb": backbone, "stages": [...]} of the paper setting
    OFFLINE: ClassVar[dict] = {}
    ADAM: ClassVar[dict] = ADAM_DEFAULTS  # the paper's Adam betas / eps

    def _flow_options(self, legacy: dict, *, backbones, weights_dir, device, seed, batch_size, epochs, lr,
                      weight_decay, max_memory, calibration, progress, random_weights) -> dict:
        common = self.common_options(legacy, backbones=backbones, weights_dir=weights_dir, device=device, seed=seed,
                                     batch_size=check_positive("batch_size", batch_size, integer_only=True),
                                     max_memory=max_memory, max_memory_default=4 << 30, calibration=calibration,
                                     progress=progress, random_weights=random_weights, pointmae=None)
        del common["pointmae"]
        common["max_memory"] = check_positive("max_memory", max_memory, integer_only=True)
        common.update(epochs=check_positive("epochs", epochs, integer_only=True), lr=check_positive("lr", lr),
                      weight_decay=number(weight_decay, "weight_decay", minimum=0, expected="a finite number >= 0"))
        return common

    # --- backbones --------------------------------------------------------------------------
    def _paper_available(self) -> bool:
        return bool(self.PAPER)

    def _choose_backbones(self) -> dict:
        from .._backbones import resolve

        c = self.config
        if not self._paper_available():
            if c["backbones"] == "paper":
                msg = (f"{type(self).__name__} has no paper backbone in xmodal ({self.PAPER_NOTE}); "
                       "use backbones='offline'")
                raise ValueError(msg)
            choice, reason = "offline", f"{self.PAPER_NOTE}, so the offline EfficientNet-Lite0 is used"
        elif c["random_weights"] and c["backbones"] == "paper":
            choice, reason = "paper", "backbones='paper' with random weights (no file read)"
        else:
            choice, reason = resolve(c["backbones"], (self.PAPER["rgb"],), c["weights_dir"])
        spec = dict(self.PAPER if choice == "paper" else self.OFFLINE)
        spec["input_sizes"] = list(self._input_sizes())
        return {"choice": choice, "reason": reason, **spec}

    PAPER_NOTE = ""

    def _input_sizes(self) -> list[int]:
        return [self.config.get("input_size", 224)]

    def _build_extractor(self):
        from .features import ImageFeatures

        spec = self.info["backbone_spec"]
        c = self.config
        return ImageFeatures(spec["rgb"], spec["stages"], spec["input_sizes"], device=c["device"],
                             weights_dir=c["weights_dir"], random_weights=c["random_weights"])

    def _features(self, batch):
        return self.extractor(batch)

    # --- the flow ---------------------------------------------------------------------------
    def _make_flow(self):
        raise NotImplementedError

    def _loss(self, features):
        """Mean training loss of a batch of features (a scalar tensor with gradients)."""
        raise NotImplementedError

    def _build_flow(self):
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config["seed"])
            return self._make_flow().to(self.config["device"])

    @property
    def extra_parameters(self) -> int:
        """Trainable parameters beyond the backbone (the study's Table 3 "extra parameters")."""
        return int(sum(p.numel() for p in self.flow.parameters()))

    # --- fit --------------------------------------------------------------------------------
    def _fit(self, samples) -> None:
        import torch

        c = self.config
        spec = self._choose_backbones()
        self._record_backbones(spec["choice"], spec["reason"], spec, detail=f": {spec['rgb']} {spec['stages']}")
        self.flow = self._build_flow()
        self.info["extra_parameters"] = self.extra_parameters
        self._before_training(samples)
        optimizer = torch.optim.Adam(self.flow.parameters(), lr=c["lr"], weight_decay=c["weight_decay"],
                                     betas=tuple(self.ADAM["betas"]), eps=self.ADAM["eps"])
        generator = torch.Generator().manual_seed(c["seed"])
        started = time.perf_counter()
        store = None if self._augments() else self._cache(samples)
        losses = []
        try:
            self.flow.train()
            for epoch in range(c["epochs"]):
                order = torch.randperm(len(samples), generator=generator).tolist()
                total, count = 0.0, 0
                for first in range(0, len(order), c["batch_size"]):
                    indices = order[first : first + c["batch_size"]]
                    feats = self._cached(store, indices) if store is not None else \
                        self._training_features([samples[i] for i in indices], generator)
                    total += self._train_batch(feats, optimizer, generator) * len(indices)
                    count += len(indices)
                losses.append(total / count)
                if c["progress"] and (epoch + 1) % max(1, c["epochs"] // 10) == 0:
                    self._log(f"epoch {epoch + 1}/{c['epochs']}: training loss {losses[-1]:.5g}")
        finally:
            self.flow.eval()
            if store is not None:
                store.close()
        self.info["train_loss"] = [round(x, 6) for x in losses]
        self.info["training_seconds"] = round(time.perf_counter() - started, 3)
        self._after_training(samples)

    def _before_training(self, samples) -> None:
        """Hook: statistics the flow needs before training (none by default)."""

    def _after_training(self, samples) -> None:
        """Hook: statistics of the trained model on its training images (CFlow's normaliser)."""

    def _augments(self) -> bool:
        return False

    def _training_features(self, batch, generator):
        import torch

        with torch.no_grad():
            return self._features(batch)

    def _cache(self, samples):
        import torch

        from .._store import FeatureStore

        store = FeatureStore(self.config["max_memory"])
        with torch.no_grad():
            for batch in self._batches(samples, "extracting training features"):
                feats = self._features(batch)
                for i in range(len(batch)):
                    store.append(*(f[i : i + 1].cpu().numpy() for f in feats))
        return store

    def _cached(self, store, indices):
        import torch

        return [torch.from_numpy(np.ascontiguousarray(a)).to(self.config["device"]) for a in store.rows(indices)]

    def _train_batch(self, feats, optimizer, generator) -> float:
        """One optimiser step on a batch; returns its mean loss."""
        optimizer.zero_grad(set_to_none=True)
        loss = self._loss(feats)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    # --- persistence ------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {f"flow.{k}": v.detach().cpu().numpy() for k, v in self.flow.state_dict().items()}

    def _state_spec(self) -> dict[str, tuple]:
        return {f"flow.{k}": tuple(v.shape) for k, v in self._make_flow().state_dict().items()}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        import torch

        flow = self._make_flow()
        flow.load_state_dict({k[len("flow."):]: torch.from_numpy(np.array(v)) for k, v in state.items()
                              if k.startswith("flow.")}, strict=True)
        self.flow = flow.to(self.config["device"]).eval()
        self._extractor = None
