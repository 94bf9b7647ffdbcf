"""The transfer modes of training/organs (issue 6): fine-tuning trains only the last layers."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from models.organs.unet import UNet3D
from training.organs.transfer import fit, frozen_features, head_logits, transferred


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
