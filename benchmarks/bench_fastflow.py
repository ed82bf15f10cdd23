"""FastFlow: xmodal vs anomalib 2.7's ``FastflowModel`` on the same weights and the same inputs.

xmodal's FastFlow flow (WideResNet-50-2 sizes: 256 x 56², 512 x 28², 1024 x 14², 8 steps,
hidden ratio 1.0) is copied parameter by parameter into anomalib's FrEIA ``AllInOneBlock``
flows (the architecture is the same; ``bench_flows.copy_fastflow_weights``), then both score
the same feature maps: inference of one image (flow + map + score, xmodal with
``map_mode="probability"``, anomalib's map) and one training step on 8 images' features. The
agreement column compares the two maps and scores. Everything else (peer environment, frozen
backbones left out) as in ``bench_flows.py``::

    python benchmarks/bench_fastflow.py [--quick]
"""

from __future__ import annotations

import argparse
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import machine_line, markdown_table
from bench_flows import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = run(["fastflow"], args.quick)
    print(markdown_table(["method", "peer", "infer xmodal", "infer peer", "infer ratio", "train step xmodal",
                          "train step peer", "step ratio", "extra MB (xmodal / peer)", "study Table 3",
                          "agreement"], rows))
    print(machine_line())


if __name__ == "__main__":
    main()
