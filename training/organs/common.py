"""Pieces the organ training commands share: input scaling, initialisation, the sparse-label
loss, crops, whole-volume prediction, Dice, run records and curves.

Input scaling. The published network takes clipped HU with no other scaling (REFERENCE.md 1.B),
and the shipped weights must keep that contract. A normalisation-free network trains badly on
raw HU (values up to 500) and, at width 4, on uncentred input (most of a chest CT is -500 after
clipping, which leaves most first-layer ReLUs dead at initialisation), so training feeds
(HU - INPUT_CENTRE) * INPUT_SCALE and `export_state` folds both into the first convolution
(valid convolutions, so exactly: conv((x - c) s; W) + b = conv(x; s W) + b - c s sum(W));
`import_state` undoes it.

The loss (`sparse_label_loss`), per sample with annotated structure set A:

* marginal cross-entropy (Shi et al., "Marginal loss and exclusion loss for partially supervised
  multi-organ segmentation", MedIA 2021): a voxel labelled with structure c in A contributes
  -log p_c; a voxel that the sample calls background says only "none of A", so it contributes
  -log(p_background + sum of p_k over the channels k not in A) = -log(1 - sum_{c in A} p_c).
  Channels outside A are never pushed up or down by that sample;
* plus the soft Dice loss 1 - mean_c 2 sum(p_c g_c) / (sum p_c + sum g_c + 1) over the channels
  c in A whose structure has voxels in the crop (g_c its mask).

Voxels outside the scanned volume (label 255) are ignored. Structures that occur in no phantom
(kidneys, bladder, pancreas ... 12 of the 22 channels) are counted as annotated, i.e. absent,
in every sample: the phantoms' world has none of them, and leaving them free would let their
channels drift and win the argmax on real CT.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.labels import UNET_CHANNELS, Label
from models.organs.unet import CONTEXT_MARGIN, HU_CLIP, UNet3D, valid_input_side
from training.organs.data import PAD_HU, SPARSE_STRUCTURES

INPUT_CENTRE = -100.0  # HU; fat ~ 0, air and lung -1.33, soft tissue ~ 0.5, bone ~ 1.7
INPUT_SCALE = 1.0 / 300.0
IGNORE = 255
N_CLASSES = len(UNET_CHANNELS) + 1
BACKGROUND = N_CLASSES - 1
NEVER_PRESENT: tuple[Label, ...] = tuple(c for c in UNET_CHANNELS if c not in SPARSE_STRUCTURES)
"""Channels no phantom contains: annotated as absent in every sample (see module docstring)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def one_thread() -> None:
    """The CPU is shared: every organ training run uses one thread."""
    torch.set_num_threads(1)


def init_weights(net: UNet3D) -> None:
    """He-normal 3x3x3 convolutions (the network has no normalisation, and PyTorch's default
    initialisation shrinks the signal over 14 ReLU layers), zero biases, a small head."""
    for conv in net.conv_layers():
        if conv is net.head:
            nn.init.normal_(conv.weight, std=0.01)
        else:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        nn.init.zeros_(conv.bias)


@torch.no_grad()
def data_dependent_init(net: UNet3D, x: torch.Tensor) -> None:
    """Rescale every 3x3x3 convolution, in forward order, so that its output on `x` has zero
    mean and unit variance per channel (LSUV-style, Mishkin & Matas 2016). Without
    normalisation, the positive mean of ReLU outputs otherwise dominates every deeper layer:
    channels come out nearly constant over space and training sits for hundreds of steps on
    the class prior."""
    captured: dict[str, torch.Tensor] = {}
    for conv in net.conv_layers()[:-1]:
        handle = conv.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o))
        net.logits(x)
        handle.remove()
        out = captured["out"]
        mean = out.mean(dim=(0, 2, 3, 4))
        std = out.std(dim=(0, 2, 3, 4)).clamp(min=1e-3)
        conv.weight /= std[:, None, None, None, None]
        conv.bias.copy_((conv.bias - mean) / std)


def to_input(hu: np.ndarray) -> np.ndarray:
    """HU -> what the network trains on: clipped to the published window, centred, scaled."""
    return ((np.clip(hu, *HU_CLIP) - INPUT_CENTRE) * INPUT_SCALE).astype(np.float32)


def export_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """float16 state_dict that takes clipped HU (the input centring and scale folded into
    enc1a)."""
    state = {k: v.detach().clone().float() for k, v in net.state_dict().items()}
    w = state["enc1a.weight"]
    state["enc1a.bias"] = state["enc1a.bias"] - INPUT_CENTRE * INPUT_SCALE * w.sum(dim=(1, 2, 3, 4))
    state["enc1a.weight"] = w * INPUT_SCALE
    return {k: v.half() for k, v in state.items()}


def import_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `export_state`: float32 weights that take scaled input."""
    out = {k: v.float().clone() for k, v in state.items()}
    w = out["enc1a.weight"]
    out["enc1a.bias"] = out["enc1a.bias"] + INPUT_CENTRE * w.sum(dim=(1, 2, 3, 4))
    out["enc1a.weight"] = w / INPUT_SCALE
    return out


def load_training_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights in the training convention (float32, scaled input) from any file a run or
    `training.organs.ship` writes: a run's `final.pt` or `checkpoint.pt`, a shipped float16 `.pt`
    (input scaling folded in, unfolded here) or its spec `.json`."""
    path = Path(path)
    if path.suffix == ".json":
        path = path.parent / json.loads(path.read_text())["weights"]
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "net" in state:  # checkpoint.pt: {"step", "net", "optimiser"}
        state = state["net"]
    if any(value.dtype == torch.float16 for value in state.values()):
        return import_state(state)
    return {key: value.float() for key, value in state.items()}


def channel_lut(annotated: tuple[Label, ...]) -> np.ndarray:
    """Label value -> training target: the channel of an annotated structure, else background;
    255 (outside the volume) stays ignored."""
    lut = np.full(256, BACKGROUND, dtype=np.int64)
    for label in annotated:
        lut[int(label)] = int(label) - 1
    lut[IGNORE] = IGNORE
    return lut


def annotated_mask(annotated: tuple[Label, ...], n_classes: int = N_CLASSES) -> torch.Tensor:
    """Bool (n_classes,) of the channels a sample's labels speak for (background included)."""
    mask = torch.zeros(n_classes, dtype=torch.bool)
    for label in set(annotated) | set(NEVER_PRESENT):
        mask[int(label) - 1] = True
    mask[n_classes - 1] = True
    return mask


def sparse_label_loss(
    logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, dice_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Marginal cross-entropy + soft Dice (module docstring). logits (B, C, z, y, x); target
    (B, z, y, x) channel indices, background = C - 1, 255 ignored; annotated (B, C) bool."""
    n_classes = logits.shape[1]
    background = n_classes - 1
    valid = target != IGNORE
    safe = torch.where(valid, target, torch.full_like(target, background))
    lse_all = torch.logsumexp(logits, dim=1)
    merged = ~annotated
    merged[:, background] = True
    lse_merged = torch.logsumexp(
        logits.masked_fill(~merged[:, :, None, None, None], float("-inf")), dim=1
    )
    own = logits.gather(1, safe.unsqueeze(1)).squeeze(1)
    log_p = torch.where(safe == background, lse_merged, own) - lse_all
    ce = -(log_p * valid).sum() / valid.sum().clamp(min=1)

    probs = torch.softmax(logits, dim=1)
    dices = []
    for b in range(logits.shape[0]):
        v = valid[b]
        for c in torch.nonzero(annotated[b, :background]).flatten().tolist():
            g = (safe[b] == c) & v
            if g.any():
                p = probs[b, c] * v
                dices.append(2 * (p * g).sum() / (p.sum() + g.sum() + 1.0))
    dice = torch.stack(dices).mean() if dices else logits.new_tensor(1.0)
    loss = ce + dice_weight * (1 - dice)
    return loss, {"ce": float(ce.detach()), "dice": float(dice.detach())}


def _paste(volume: np.ndarray, start, shape, fill) -> np.ndarray:
    """The box of `shape` at `start` (may reach outside the volume), outside filled with `fill`."""
    out = np.full(tuple(shape), fill, dtype=volume.dtype)
    src, dst = [], []
    for s, n, size in zip(start, shape, volume.shape, strict=True):
        lo, hi = max(0, s), min(size, s + n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def crop_at(
    image: np.ndarray, labels: np.ndarray, centre, in_shape
) -> tuple[np.ndarray, np.ndarray]:
    """Input crop of `in_shape` and the label crop of its output region, centred at `centre`;
    outside the volume the image is air and the labels IGNORE."""
    in_shape = np.asarray(in_shape)
    out_shape = in_shape - 2 * CONTEXT_MARGIN
    start_out = np.asarray(centre) - out_shape // 2
    start_in = start_out - CONTEXT_MARGIN
    return (
        _paste(image, start_in, in_shape, PAD_HU),
        _paste(labels, start_out, out_shape, IGNORE),
    )


def sample_centre(
    labels: np.ndarray, focus: tuple[Label, ...], rng: np.random.Generator, p_focus: float = 0.8
) -> tuple[int, int, int]:
    """A voxel of a random focus structure present in the volume (probability p_focus, each
    present structure equally likely, so small structures are seen as often as lungs), else
    a uniformly random voxel."""
    present = [f for f in focus if (labels == f).any()]
    if present and rng.random() < p_focus:
        where = np.argwhere(labels == present[rng.integers(len(present))])
        return tuple(int(v) for v in where[rng.integers(len(where))])
    return tuple(int(rng.integers(n)) for n in labels.shape)


def _tiles(length: int, max_out: int) -> tuple[int, list[int]]:
    """Output tile length (input = tile + 88 is valid) and tile starts covering `length`."""
    n = max(1, math.ceil(length / max_out))
    tile = valid_input_side(math.ceil(length / n) + 2 * CONTEXT_MARGIN) - 2 * CONTEXT_MARGIN
    starts = [min(i * tile, max(0, length - tile)) for i in range(n)]
    return tile, starts


@torch.no_grad()
def predict_probs(
    net: UNet3D, image_hu: np.ndarray, max_input: int = 180, scaled_input: bool = True
) -> np.ndarray:
    """Softmax probabilities (C, z, y, x) of a whole volume by windows of at most `max_input`
    voxels per axis (each window's input carries the 44-voxel context; outside is air)."""
    net.eval()
    max_out = max_input - 2 * CONTEXT_MARGIN
    plans = [_tiles(n, max_out) for n in image_hu.shape]
    tiles = [p[0] for p in plans]
    pad_hi = [max(0, t - n) for t, n in zip(tiles, image_hu.shape, strict=True)]
    m = CONTEXT_MARGIN
    img = np.pad(image_hu, [(m, m + extra) for extra in pad_hi], constant_values=PAD_HU).astype(
        np.float32
    )
    img = to_input(img) if scaled_input else np.clip(img, *HU_CLIP)
    shape = [n + extra for n, extra in zip(image_hu.shape, pad_hi, strict=True)]
    out = np.zeros((net.n_classes, *shape), dtype=np.float32)
    for z in plans[0][1]:
        for y in plans[1][1]:
            for x in plans[2][1]:
                window = img[
                    z : z + tiles[0] + 2 * m, y : y + tiles[1] + 2 * m, x : x + tiles[2] + 2 * m
                ]
                probs = net(torch.from_numpy(np.ascontiguousarray(window))[None, None])[0]
                out[:, z : z + tiles[0], y : y + tiles[1], x : x + tiles[2]] = probs.numpy()
    nz, ny, nx = image_hu.shape
    return out[:, :nz, :ny, :nx]


def postprocess(probs: np.ndarray, label_values: list[int]) -> np.ndarray:
    """The published post-processing: a voxel gets the structure whose probability exceeds 0.5
    (background prepended, argmax), else background. Returns Label values (uint8)."""
    fg = probs[:-1]
    keep = fg > 0.5
    winner = np.argmax(np.where(keep, fg, -1.0), axis=0)
    lut = np.asarray(label_values, dtype=np.uint8)
    return np.where(keep.any(axis=0), lut[winner], 0).astype(np.uint8)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two masks (1.0 when both are empty)."""
    inter = np.logical_and(pred, truth).sum()
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * inter / total)


def make_net(n_classes: int, width: int, seed: int) -> UNet3D:
    torch.manual_seed(seed)
    net = UNet3D(n_classes=n_classes, width=width)
    init_weights(net)
    return net


def save_curve(series: dict[str, list[tuple[int, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, points in series.items():
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=name, alpha=0.9)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (marginal CE + 1 - soft Dice)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def smooth(points: list[tuple[int, float]], window: int = 10) -> list[tuple[int, float]]:
    """Running mean over the last `window` points (for a readable curve)."""
    out = []
    for i in range(len(points)):
        chunk = [v for _, v in points[max(0, i - window + 1) : i + 1]]
        out.append((points[i][0], float(np.mean(chunk))))
    return out


def write_json(path: Path, data) -> None:
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def logits_to_loss_inputs(labels_crop: np.ndarray, lut: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(lut[labels_crop])


def cross_entropy_check(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy (for the test that the marginal loss equals it when all is annotated)."""
    return F.cross_entropy(logits, target, ignore_index=IGNORE)
