"""Organ models for node tests: the shipped base model when it is installed and finds a heart on
a phantom, else a stand-in.

The stand-in is a real `UNet3D` spec and weight file written to a temporary models directory
(as `ctnode models import` would lay it out), so the node loads it through the registry and the
configuration ([organs] models_dir, model) exactly like an imported model. Its weights are
random except the head, whose weights are zero and whose bias favours the heart channel: every
voxel comes out "heart", so the flow (segment, SEG, send) is exercised with a predictable,
non-empty result. Nothing of it is meaningful anatomy, and nothing of it goes to models/weights.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import pytest

STANDIN_NAME = "ctnode-organs-standin"


def write_standin(models_dir: Path, name: str = STANDIN_NAME) -> Path:
    """A stand-in model in `models_dir/<name>/`; its spec path."""
    import torch

    from models.labels import UNET_CHANNELS, Label
    from models.organs.registry import ARCHITECTURE, ModelSpec, save_model
    from models.organs.unet import UNet3D

    torch.manual_seed(0)
    net = UNet3D(n_classes=23, width=2)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
        net.head.bias[UNET_CHANNELS.index(Label.HEART)] = 5.0
    channels = [label.name.lower() for label in UNET_CHANNELS] + ["background"]
    spec = ModelSpec(
        name=name,
        version="0-test",
        architecture=ARCHITECTURE,
        width=2,
        n_classes=23,
        channels=channels,
        label_values=[int(label) for label in UNET_CHANNELS],
        trained_channels=channels[:-1],
        spacing_mm=[5.0, 5.0, 5.0],
        input_side=132,
        weights=f"{name}.pt",
        sha256="",
        source="random-weight stand-in written by the ctnode tests",
        card="",
    )
    return save_model(net, spec, models_dir / name / f"{name}.json")


@functools.cache
def shipped_finds_the_heart() -> tuple[bool, str]:
    """Whether the shipped base model is installed and finds a heart on a small phantom chest
    CT (the flow tests check that the SEG has a heart segment), and why not. Run once per test
    session: about 10 s on one CPU thread."""
    import torch

    from models.organs.inference import OrganSegmenter
    from models.organs.registry import SHIPPED_BASE
    from models.phantoms.case import CaseOptions, generate_case

    if not SHIPPED_BASE.is_file():
        return False, f"{SHIPPED_BASE.name} is not installed"
    torch.set_num_threads(1)
    case = generate_case(8, 2, CaseOptions(matrix=128, n_slices=40))
    result = OrganSegmenter(SHIPPED_BASE, device="cpu").segment(case.grid.to_image(case.image))
    heart_ml = result.volumes_ml.get("heart", 0.0)
    if heart_ml <= 0:
        found = sum(1 for ml in result.volumes_ml.values() if ml > 0)
        return False, f"the shipped model finds no heart on a phantom ({found} organs found)"
    return True, f"the shipped model finds a {heart_ml:.0f} ml heart on a phantom"


def organ_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """([organs] models_dir, [organs] model) for a node under test: the shipped base model
    (models_dir empty, model "") when it is installed and finds the heart on a phantom
    (shipped_finds_the_heart), else the stand-in, with a warning that says why."""
    models_dir = tmp_path_factory.mktemp("organ_models")
    usable, why = shipped_finds_the_heart()
    if usable:
        return models_dir, ""
    warnings.warn(f"organ flow tests use the random-weight stand-in: {why}", stacklevel=2)
    write_standin(models_dir)
    return models_dir, STANDIN_NAME
