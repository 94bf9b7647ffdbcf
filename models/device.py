"""The torch device a model runs on, from the configuration's `device` value."""

from __future__ import annotations

import torch


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """ "auto" is the first CUDA GPU when there is one, else the CPU; anything else ("cpu",
    "cuda:1", a torch.device) is taken as it is."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
