"""Calibrated verdicts: a threshold and a fit-time scale from good images the model never saw.

At the end of ``fit`` every detector scores good images it did not train on (the dataset's
validation split, else a held-out share of the training images) and keeps what it needs to
say "good" or "anomalous" and to draw heat maps that compare from one part to the next:

- **Threshold rule** (image scores; the same rule on the per-image map maxima gives the pixel
  threshold), for n calibration images (at least 2)::

      threshold = median + k(n) * scale
      scale = max(1.4826 * MAD, standard deviation (ddof=1), 1 % of |median|, 1e-12)
      k(n) = (z_p + sqrt(z_p**2 - a * b)) / a,  a = 1 - z_g**2 / (2 (n - 1)),  b = z_p**2 - z_g**2 / n
      z_p = 3.090 (p = 99.9 %),  z_g = 1.282 (g = 90 %)

  k(n) is the one-sided tolerance factor of a normal distribution in Natrella's closed form
  (within 5 % of the exact noncentral-t value from n = 6 on, 7-10 % below it for n = 3-4,
  above it for n = 2): were good scores normal with this location and scale, the threshold
  would lie above 99.9 % of them with 90 % confidence. It shrinks as calibration images
  accumulate: k(4) = 6.6, k(8) = 4.8, k(20) = 4.0, k(40) = 3.7, k(inf) = 3.09 (the textbook
  one-in-a-thousand false-alarm point). A fixed k would make the
  false-alarm rate depend on how many good images happened to be available: a scale estimated
  from 4 images (the synthetic demo's validation split; MVTec 3D-AD has 22-42 per category)
  is often far too small, and a too-small scale is what causes false alarms. The median and
  the MAD (times 1.4826, a normal standard deviation) are robust location and spread; the
  standard deviation is also taken because a handful of images can give a MAD near zero by
  chance; the 1 % floor covers identical scores. The rule uses good images only: no defective
  sample is needed, and nothing is tuned on the test set.

- **Normalised score** (0.5 exactly at the threshold, strictly increasing, in (0, 1))::

      normalized = 1 / (1 + exp(-(score - threshold) / scale))
                 = (1 + tanh((score - threshold) / (2 * scale))) / 2

  A typical good part (its score at the median) maps to 1 / (1 + e^k(n)), at most 0.04; a
  score one scale above the threshold to 0.73, two scales above to 0.88. Maps use the pixel threshold
  and pixel scale in the same formula (``AnomalyResult.normalized_map``), so a good part's
  map stays below 0.5 (cool colours) and a defect rises above it (hot).

How anomalib (2.x) does it, for comparison: its post-processor
picks the F1-optimal ("adaptive") thresholds on a validation set that must contain anomalous
images (by default the test set itself, ``val_split_mode=same_as_test``) and normalises with
``clamp((x - threshold) / (max - min) + 0.5, 0, 1)`` using that set's min and max. That needs
labelled defects, tunes the threshold on the data it is then judged on, and the clamp makes
every score beyond the range a tie. The rule here needs good images only and the logistic never
clamps, so normalised scores keep the order of the raw ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z_COVERAGE = 3.090232306167813  # normal quantile of 99.9 %
Z_CONFIDENCE = 1.2815515655446004  # normal quantile of 90 %
RULE = ("median + k(n) * max(1.4826 * MAD, std, 1% of |median|) of the calibration scores, k(n) the one-sided "
        "normal tolerance factor for 99.9 % coverage at 90 % confidence")
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)  # stored pixel-score quantiles: 0 %, 1 %, ..., 100 %
PIXEL_STRIDE = 7  # every 7th pixel of each calibration map feeds the quantiles (7168 of 224 x 224)


def tolerance_factor(n: int) -> float:
    """k(n) of the module docstring (n >= 2 calibration images)."""
    if n < 2:
        msg = f"the threshold needs at least 2 calibration scores; got {n}"
        raise ValueError(msg)
    a = 1.0 - Z_CONFIDENCE**2 / (2.0 * (n - 1))
    b = Z_COVERAGE**2 - Z_CONFIDENCE**2 / n
    return (Z_COVERAGE + math.sqrt(Z_COVERAGE**2 - a * b)) / a


def robust_threshold(values) -> tuple[float, float]:
    """(threshold, scale) of the rule above for 1-D ``values`` (at least two)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)):
        msg = f"calibration scores must be finite and at least two; got {x.size} values"
        raise ValueError(msg)
    median = float(np.median(x))
    mad = 1.4826 * float(np.median(np.abs(x - median)))
    std = float(np.std(x, ddof=1))
    scale = max(mad, std, 0.01 * abs(median), 1e-12)
    return median + tolerance_factor(x.size) * scale, scale


def normalize(values, threshold: float, scale: float):
    """The logistic map of the module docstring: float for a scalar, float32 for an array."""
    if np.ndim(values) == 0:
        return 0.5 * (1.0 + math.tanh((float(values) - threshold) / (2.0 * scale)))
    v = np.asarray(values, dtype=np.float32)
    return (0.5 * (1.0 + np.tanh((v - np.float32(threshold)) / np.float32(2.0 * scale)))).astype(np.float32)


@dataclass
class Calibration:
    """The fit-time statistics of a detector's scores on good images it did not train on.

    Attributes:
        image_scores: (n,) float64 image scores of the calibration images.
        map_maxima: (n,) float64 maximum of each calibration image's map.
        pixel_quantiles: (101,) float64 quantiles 0 %, 1 %, ..., 100 % of the calibration
            maps' pixels.
        threshold, scale: image threshold and scale (``threshold`` may be changed later).
        pixel_threshold, pixel_scale: the same for map pixels.
        source: where the images came from, e.g. "validation split (4 good images)".
    """

    image_scores: np.ndarray
    map_maxima: np.ndarray
    pixel_quantiles: np.ndarray
    threshold: float
    scale: float
    pixel_threshold: float
    pixel_scale: float
    source: str

    @classmethod
    def fit(cls, image_scores, map_maxima, pixels, source: str) -> Calibration:
        """The statistics of good calibration images: their image scores, the maximum of each
        map, and a sample of their map pixels."""
        scores = np.asarray(image_scores, dtype=np.float64).ravel()
        maxima = np.asarray(map_maxima, dtype=np.float64).ravel()
        pixels = np.asarray(pixels, dtype=np.float64).ravel()
        threshold, scale = robust_threshold(scores)
        pixel_threshold, pixel_scale = robust_threshold(maxima)
        return cls(scores, maxima, np.quantile(pixels, QUANTILE_LEVELS), threshold, scale, pixel_threshold,
                   pixel_scale, source)

    def summary(self) -> dict:
        """What goes into the model's config.json (``info["calibration"]``) and reports."""
        return {"threshold": self.threshold, "scale": self.scale, "pixel_threshold": self.pixel_threshold,
                "pixel_scale": self.pixel_scale, "source": self.source, "images": int(self.image_scores.size),
                "rule": RULE, "calibration_images_above_threshold": int(np.sum(self.image_scores > self.threshold))}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"calibration.image_scores": self.image_scores, "calibration.map_maxima": self.map_maxima,
                "calibration.pixel_quantiles": self.pixel_quantiles}

    @classmethod
    def restore(cls, summary: dict, state: dict[str, np.ndarray]) -> Calibration:
        """The reverse of :meth:`summary` + :meth:`arrays` (raises KeyError / TypeError /
        ValueError on a tampered model, which ``xmodal.load`` reports)."""
        numbers = {k: float(summary[k]) for k in ("threshold", "scale", "pixel_threshold", "pixel_scale")}
        if not all(math.isfinite(v) for v in numbers.values()) or numbers["scale"] <= 0 or numbers["pixel_scale"] <= 0:
            msg = f"calibration numbers must be finite with positive scales; got {numbers}"
            raise ValueError(msg)
        arrays = {k: np.asarray(state[f"calibration.{k}"], dtype=np.float64)
                  for k in ("image_scores", "map_maxima", "pixel_quantiles")}
        shapes = {k: v.shape for k, v in arrays.items()}
        if shapes["pixel_quantiles"] != QUANTILE_LEVELS.shape or shapes["image_scores"] != shapes["map_maxima"]:
            msg = "calibration arrays have the wrong shapes"
            raise ValueError(msg)
        return cls(**arrays, **numbers, source=str(summary.get("source", "")))
