"""Organ-segmentation models on disk: the JSON spec, the sha256-checked weights, where they live.

A model is a weight file plus a JSON spec beside it (the contract of issue 6):

    <stem>.pt    torch state_dict of `UNet3D` (float16 tensors are fine; loaded as float32)
    <stem>.json  the `ModelSpec` below, with the sha256 of the .pt
    <stem>.md    the model card (source, label table, spacing, figures)

The shipped base model is `models/weights/organs_base.{pt,json,md}`. Imported models live in
the configured models directory (`[organs] models_dir`), one folder per model name holding the
same three files. `find(None, ...)` is the shipped base; `installed_models` lists both kinds.

The sha256 is checked on every load so that a truncated copy or a weight file swapped without
its spec is refused with a message, rather than segmenting with the wrong network.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

import torch

from models.device import pick_device
from models.files import ModelFileError, sha256
from models.labels import Label
from models.organs.unet import HU_CLIP, UNet3D, is_valid_input_side

# Package data of `models`, on disk in a checkout and in an installed wheel alike.
SHIPPED_DIR = Path(str(resources.files("models") / "weights")).resolve()
SHIPPED_BASE = SHIPPED_DIR / "organs_base.json"
ARCHITECTURE = "unet3d-sparse-label"
log = logging.getLogger(__name__)


@dataclass
class ModelSpec:
    """The JSON spec of one segmentation model (field names are the JSON keys)."""

    name: str
    version: str
    architecture: str
    width: int
    n_classes: int
    channels: list[str]  # lower-case Label names in channel order, "background" last
    label_values: list[int]  # models.labels.Label value of each non-background channel
    trained_channels: list[str]  # channels that ever saw annotations
    spacing_mm: list[float]  # (z, y, x) grid the CT is resampled to before inference
    input_side: int  # side of the input cube of one sliding window (92 + 8k)
    weights: str  # file name of the .pt, relative to the spec
    sha256: str  # of the .pt file
    source: str
    card: str = ""  # file name of the model card, relative to the spec
    hu_clip: list[float] = field(default_factory=lambda: list(HU_CLIP))
    # Where the spec was read from; not part of the JSON.
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = f"model spec {self.name!r}"
        if self.architecture != ARCHITECTURE:
            raise ModelFileError(f"{where}: architecture {self.architecture!r}, not {ARCHITECTURE}")
        if self.width < 1 or self.n_classes < 2:
            raise ModelFileError(f"{where}: width {self.width}, n_classes {self.n_classes}")
        if len(self.channels) != self.n_classes or self.channels[-1] != "background":
            raise ModelFileError(
                f"{where}: {len(self.channels)} channel names for {self.n_classes} classes "
                "(background must be the last)"
            )
        if len(self.label_values) != self.n_classes - 1:
            raise ModelFileError(
                f"{where}: {len(self.label_values)} label values for "
                f"{self.n_classes - 1} foreground channels"
            )
        known = {int(label) for label in Label} - {0}
        unknown = sorted(set(self.label_values) - known)
        if unknown or len(set(self.label_values)) != len(self.label_values):
            raise ModelFileError(f"{where}: label values must be distinct Label values {unknown}")
        if len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0:
            raise ModelFileError(f"{where}: spacing_mm must be three positive (z, y, x) values")
        if not is_valid_input_side(self.input_side):
            raise ModelFileError(f"{where}: input_side {self.input_side} is not 92 + 8k")
        if len(self.hu_clip) != 2 or self.hu_clip[0] >= self.hu_clip[1]:
            raise ModelFileError(f"{where}: hu_clip must be [low, high], got {self.hu_clip}")
        self.spacing_mm = [float(v) for v in self.spacing_mm]
        self.hu_clip = [float(v) for v in self.hu_clip]

    @property
    def labels(self) -> list[Label]:
        """The Label of each foreground channel, in channel order."""
        return [Label(v) for v in self.label_values]

    def weights_path(self) -> Path:
        if self.path is None:
            raise ModelFileError(f"model spec {self.name!r} was not read from a file")
        return self.path.parent / self.weights

    def to_json(self) -> dict:
        values = asdict(self)
        values.pop("path")
        return values


def read_spec(spec_path: Path) -> ModelSpec:
    """The spec in `spec_path` (not yet checked against its weight file)."""
    spec_path = Path(spec_path)
    try:
        values = json.loads(spec_path.read_text())
    except FileNotFoundError as error:
        raise ModelFileError(f"model spec {spec_path} does not exist") from error
    except (OSError, ValueError) as error:
        raise ModelFileError(f"model spec {spec_path} is unreadable: {error}") from error
    if not isinstance(values, dict):
        raise ModelFileError(f"model spec {spec_path} is not a JSON object")
    names = {f.name for f in fields(ModelSpec)} - {"path"}
    unknown, missing = set(values) - names, names - set(values) - {"card", "hu_clip"}
    if unknown or missing:
        raise ModelFileError(
            f"model spec {spec_path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
        )
    try:
        return ModelSpec(**values, path=spec_path)
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"model spec {spec_path}: {error}") from error


def write_spec(spec: ModelSpec, spec_path: Path) -> None:
    spec_path = Path(spec_path)
    spec_path.write_text(json.dumps(spec.to_json(), indent=1) + "\n")
    spec.path = spec_path


def save_model(net: UNet3D, spec: ModelSpec, spec_path: Path, half: bool = False) -> ModelSpec:
    """Write `net`'s weights as `spec.weights` beside `spec_path`, then the spec with its sha256.

    `half` stores float16 tensors (half the size; `load_model` returns float32 again)."""
    spec_path = Path(spec_path)
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    weights_path = spec_path.parent / spec.weights
    state = {k: (v.half() if half else v.float()).cpu() for k, v in net.state_dict().items()}
    torch.save(state, weights_path)
    spec.width, spec.n_classes = net.width, net.n_classes
    spec.sha256 = sha256(weights_path)
    write_spec(spec, spec_path)
    return spec


def verify_weights(spec: ModelSpec) -> Path:
    """The spec's weight file, after checking that it exists and has the spec's sha256."""
    weights = spec.weights_path()
    if not weights.is_file():
        raise ModelFileError(f"model {spec.name!r}: weight file {weights} does not exist")
    actual = sha256(weights)
    if actual != spec.sha256:
        raise ModelFileError(
            f"model {spec.name!r}: {weights.name} has sha256 {actual[:16]}..., the spec "
            f"{spec.path.name if spec.path else 'spec'} says "
            f"{spec.sha256[:16]}...; the weight file is damaged or is not the one this spec describes"
        )
    return weights


def load_model(spec_path: Path, device: str | torch.device = "cpu") -> tuple[UNet3D, ModelSpec]:
    """The network described by `spec_path`, in eval mode on `device`, float32.

    Raises ModelFileError when the weight file is missing, its sha256 differs from the spec's,
    or its tensors do not fit the spec's width and number of classes."""
    spec = read_spec(spec_path)
    weights = verify_weights(spec)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net = UNet3D(n_classes=spec.n_classes, width=spec.width)
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except (RuntimeError, OSError, AttributeError, ValueError) as error:
        raise ModelFileError(
            f"model {spec.name!r}: {weights.name} does not load: {error}"
        ) from error
    return net.eval().to(pick_device(device)), spec


def _specs_in(paths: list[Path]) -> list[ModelSpec]:
    specs = []
    for path in sorted(paths):
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(values, dict) and values.get("architecture") == ARCHITECTURE:
            try:
                specs.append(read_spec(path))
            except ModelFileError as error:  # one broken folder must not hide the others
                log.warning("organ model skipped: %s", error)
    return specs


def installed_models(models_dir: Path | None = None) -> list[ModelSpec]:
    """Shipped models (JSON specs of this architecture in models/weights), then the imported
    ones (`<models_dir>/<name>/*.json`). Specs are read, weights are not checked here."""
    specs = _specs_in(list(SHIPPED_DIR.glob("*.json")))
    if models_dir is not None and Path(models_dir).is_dir():
        specs += _specs_in(list(Path(models_dir).glob("*/*.json")))
    return specs


def is_shipped(spec: ModelSpec) -> bool:
    return spec.path is not None and spec.path.resolve().parent == SHIPPED_DIR


def find(name: str | None, models_dir: Path | None = None) -> Path:
    """The spec path of the model called `name` (its spec name, or its folder/file stem);
    None or "" is the shipped base model."""
    if not name:
        if not SHIPPED_BASE.is_file():
            raise ModelFileError(f"the shipped organ model {SHIPPED_BASE} is not installed")
        return SHIPPED_BASE
    specs = installed_models(models_dir)
    for spec in specs:
        assert spec.path is not None
        if name in (
            spec.name,
            spec.path.stem,
            spec.path.parent.name if not is_shipped(spec) else None,
        ):
            return spec.path
    available = ", ".join(spec.name for spec in specs) or "none"
    raise ModelFileError(f"no organ model named {name!r} is installed (installed: {available})")
