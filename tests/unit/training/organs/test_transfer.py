"""The sparse-label loss and the transfer modes of training/organs (issue 6)."""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.nn import functional as F

from models.organs.unet import UNet3D
from training.organs.common import IGNORE, export_state, import_state, sparse_label_loss
from training.organs.transfer import fit, frozen_features, head_logits, transferred


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


def test_finetune_trains_only_the_last_convolution_and_head():
    torch.manual_seed(0)
    base_net = UNet3D(23, 2)
    base = {k: v.clone() for k, v in base_net.state_dict().items()}
    x = torch.rand(1, 1, 92, 92, 92)
    target = torch.from_numpy(np.random.default_rng(0).integers(0, 2, (1, 4, 4, 4)))
    crops = [(x[0, 0].numpy(), target[0].numpy())]
    start = transferred(base, 2)
    with torch.no_grad():
        feats = [frozen_features(start, x)]
        assert torch.allclose(head_logits(start, feats[0]), start.logits(x), atol=1e-5)
    args = argparse.Namespace(width=2, lr=1e-3, lr_finetune=1e-2, steps=2)
    net, losses, _ = fit("finetune", base, crops, feats, args, seed=0)
    assert len(losses) == 2
    tuned = {id(p) for layer in net.fine_tune_layers() for p in layer.parameters()}
    for (name, p), q in zip(net.named_parameters(), start.parameters(), strict=True):
        changed = not torch.equal(p, q)
        assert changed == (id(p) in tuned), name
    # The head keeps the base's last channels (background last).
    assert torch.equal(start.head.weight, base["head.weight"][-2:])
