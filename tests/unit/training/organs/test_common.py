"""training/organs/common.py: the sparse-label loss (issue 6), the export of the input scale, and
training (`--init`) and the transfer study (`--base`) starting from a run's weights or a shipped
file."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.nn import functional as F

from models.organs.unet import UNet3D
from training.organs.common import (
    IGNORE,
    export_state,
    import_state,
    load_training_weights,
    make_net,
    sparse_label_loss,
    to_input,
)


def test_a_shipped_float16_file_is_converted_back_to_the_training_input(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = make_net(n_classes=23, width=2, seed=0).eval()
    shipped = tmp_path / "organs_base.pt"
    torch.save(export_state(net), shipped)  # what training.organs.ship writes
    spec = tmp_path / "organs_base.json"
    spec.write_text(json.dumps({"weights": shipped.name}))  # the spec's field that matters here
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"step": 25, "net": net.state_dict(), "optimiser": {}}, checkpoint)
    hu = torch.linspace(-1000, 1000, 92**3).reshape(1, 1, 92, 92, 92).numpy()
    x = torch.from_numpy(to_input(hu))
    with torch.no_grad():
        expected = net(x)
        for path, tolerance in ((shipped, 2e-2), (spec, 2e-2), (checkpoint, 0.0)):
            restarted = make_net(n_classes=23, width=2, seed=1).eval()
            restarted.load_state_dict(load_training_weights(path))
            torch.testing.assert_close(restarted(x), expected, atol=tolerance, rtol=tolerance)


def _batch(seed: int = 0, classes: int = 23):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 3, 4, 5, generator=g)
    target = torch.randint(0, classes, (2, 3, 4, 5), generator=g)
    return logits, target


def test_marginal_loss_is_cross_entropy_when_everything_is_annotated():
    logits, target = _batch()
    target[0, 0, 0, 0] = IGNORE
    annotated = torch.ones(2, 23, dtype=torch.bool)
    loss, _ = sparse_label_loss(logits, target, annotated, dice_weight=0.0)
    assert torch.allclose(loss, F.cross_entropy(logits, target, ignore_index=IGNORE), atol=1e-5)


def test_unannotated_channels_are_merged_into_background():
    """A sample annotating only channel 4 cannot tell background from channel 8: moving
    probability between them leaves the loss unchanged, moving it to channel 4 does not."""
    logits, _ = _batch(1)
    target = torch.where(torch.rand(2, 3, 4, 5) < 0.3, 4, 22)
    annotated = torch.zeros(2, 23, dtype=torch.bool)
    annotated[:, [4, 22]] = True
    loss, _ = sparse_label_loss(logits, target, annotated)
    swapped = logits.clone()
    swapped[:, [8, 22]] = logits[:, [22, 8]]
    assert torch.allclose(loss, sparse_label_loss(swapped, target, annotated)[0], atol=1e-5)
    moved = logits.clone()
    moved[:, [4, 22]] = logits[:, [22, 4]]
    assert not torch.allclose(loss, sparse_label_loss(moved, target, annotated)[0], atol=1e-3)


def test_export_folds_the_input_scale_into_the_first_convolution():
    net = UNet3D(23, 2)
    state = import_state(export_state(net))
    assert torch.allclose(state["enc1a.weight"], net.enc1a.weight, rtol=2e-3, atol=1e-4)
