"""Register imported U-Net weights as a ctnode model: .pt + JSON spec + model card.

`ctnode models import FILE` calls `install_imported`. The weight file is converted once (Keras
.h5 or .onnx -> torch state_dict, float32 so outputs stay those of the source), written to
`<models_dir>/<name>/<name>.pt` with its spec and a model card that records what a user must
know to trust (or not) the model: the sha256 of the source file and of the .pt, where it came
from, the label table, and the preprocessing, including the voxel spacing, which the paper and
the release do not state and which is therefore an assumption here (see DEFAULT_SPACING_MM).
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from models.files import sha256
from models.labels import UNET_CHANNELS, Label
from models.organs import registry
from models.organs.importers import import_network
from models.organs.registry import ARCHITECTURE, ModelFileError, ModelSpec
from models.organs.unet import CONTEXT_MARGIN, PUBLISHED_CLASSES, count_parameters

# The release does not state its training voxel spacing. Its weight file is called
# `unet3d_Isomulti1v810`, which suggests isotropic resampling; 1.5 mm is our assumption (a
# 132-voxel window then sees a 198 mm cube of context and predicts a 66 mm cube).
DEFAULT_SPACING_MM = (1.5, 1.5, 1.5)
DEFAULT_INPUT_SIDE = 132  # the release's usual cube
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def default_name(source: Path) -> str:
    """A model name from a file name: letters, digits, '.', '_' and '-' only."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).stem).strip("-._")
    return name[:64] or "imported"


def channel_labels(n_classes: int, labels: list[str] | None) -> list[Label]:
    """The Label of each foreground channel: the published 22 for a 23-class network, else the
    names given (a fine-tuned network's head has other channels; the file does not say which)."""
    if labels is None:
        if n_classes != PUBLISHED_CLASSES:
            raise ModelFileError(
                f"the network has {n_classes} output channels, not the published {PUBLISHED_CLASSES}: "
                f"name its {n_classes - 1} foreground channels in order with --labels"
            )
        return list(UNET_CHANNELS)
    try:
        chosen = [Label[name.strip().upper()] for name in labels]
    except KeyError as error:
        raise ModelFileError(f"--labels: unknown structure {error.args[0]!r}") from error
    if len(chosen) != n_classes - 1:
        raise ModelFileError(
            f"--labels names {len(chosen)} structures; the network has {n_classes - 1} "
            "foreground channels (background is the last channel)"
        )
    return chosen


def install_imported(
    source: Path,
    models_dir: Path,
    name: str | None = None,
    spacing_mm: tuple[float, float, float] = DEFAULT_SPACING_MM,
    input_side: int = DEFAULT_INPUT_SIDE,
    labels: list[str] | None = None,
    replace: bool = False,
) -> ModelSpec:
    """Convert `source` (.h5 or .onnx) and install it as `<models_dir>/<name>/`; the spec."""
    source = Path(source)
    if not source.is_file():
        raise ModelFileError(f"{source} does not exist")
    name = name or default_name(source)
    if not NAME_PATTERN.match(name):
        raise ModelFileError(f"model name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
    if name in {spec.name for spec in registry.installed_models(None)}:
        raise ModelFileError(f"{name!r} is the name of a shipped model; choose another --name")
    folder = Path(models_dir) / name
    if folder.exists() and not replace:
        raise ModelFileError(f"a model named {name!r} is already installed in {folder}")
    net = import_network(source)
    channel_list = channel_labels(net.n_classes, labels)
    spec = ModelSpec(
        name=name,
        version=datetime.now(UTC).strftime("imported-%Y%m%d"),
        architecture=ARCHITECTURE,
        width=net.width,
        n_classes=net.n_classes,
        channels=[label.name.lower() for label in channel_list] + ["background"],
        label_values=[int(label) for label in channel_list],
        trained_channels=[label.name.lower() for label in channel_list],
        spacing_mm=[float(v) for v in spacing_mm],
        input_side=input_side,
        weights=f"{name}.pt",
        sha256="",
        source=f"imported from {source.name}",
        card=f"{name}.md",
    )  # validates spacing, input side, labels before anything is written
    staging = folder.with_name(f".{name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        registry.save_model(net, spec, staging / f"{name}.json")
        (staging / spec.card).write_text(
            model_card(spec, source, sha256(source), count_parameters(net))
        )
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)  # the model appears complete or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return registry.read_spec(folder / f"{name}.json")


def model_card(spec: ModelSpec, source: Path, source_sha256: str, parameters: int) -> str:
    z, y, x = spec.spacing_mm
    side = spec.input_side
    out = side - 2 * CONTEXT_MARGIN
    rows = "\n".join(
        f"| {channel} | {value} | {name} |"
        for channel, (value, name) in enumerate(
            zip(spec.label_values, spec.channels[:-1], strict=True)
        )
    )
    published = spec.n_classes == PUBLISHED_CLASSES and spec.label_values == [
        int(label) for label in UNET_CHANNELS
    ]
    return f"""# Organ model `{spec.name}` (imported)

Imported with `ctnode models import` on {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}.

| | |
|---|---|
| source file | `{source.resolve()}` |
| source sha256 | `{source_sha256}` |
| weights | `{spec.weights}` (torch state_dict, float32) |
| weights sha256 | `{spec.sha256}` |
| architecture | 3D U-Net of Humpire-Mamani et al. (arXiv 2311.05032), width {spec.width}, {spec.n_classes} output channels, {parameters:,} parameters |

The weights were converted without retraining: every 3x3x3 and 1x1x1 kernel of the 15
convolutions, permuted from Keras (kd, kh, kw, in, out) to torch (out, in, kd, kh, kw) for an
.h5 file, or read as ONNX Conv weights for an .onnx file (models/organs/importers.py). The
licence of the weights is that of their source; the published release is Apache-2.0.

## Preprocessing and inference (models/organs/inference.py)

- Resampled (linear) to **{z:g} x {y:g} x {x:g} mm** (z, y, x). **This spacing is an
  assumption**: neither the paper nor the release states the voxel spacing the network was
  trained at (the release's weight file name, `unet3d_Isomulti1v810`, suggests isotropic
  voxels). Change it with `ctnode models import FILE --spacing Z Y X` if you know better.
- HU clipped to [{spec.hu_clip[0]:g}, {spec.hu_clip[1]:g}], no other scaling, as published.
- Sliding windows of {side}^3 voxels predicting the central {out}^3 (a {CONTEXT_MARGIN}-voxel
  context margin on every side), overlapping; probabilities averaged where outputs overlap.
- Post-processing as published: a voxel gets the structure whose probability exceeds 0.5,
  otherwise background; the label map is returned on the CT's own grid.

## Label table

Label values are ctnode's (`models.labels.Label`); 0 is background (the network's last
channel, {spec.n_classes - 1}).

| channel | label value | structure |
|---|---|---|
{rows}
| {spec.n_classes - 1} | 0 | background |

{"The channel order is the published one (release README, index of weights)." if published else "The channel order was given at import (--labels); the file itself does not name its channels."}

## Evaluation

None in ctnode: this card describes an imported model. Check it on local data before use;
it is not a medical device.
"""
