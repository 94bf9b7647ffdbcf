"""Who made a result object: the equipment attributes and the algorithm's identity."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from models.calcium.result import CalciumResult

MANUFACTURER = "ctnode"
MODEL_NAME = "ctnode coronary calcium"
DEVICE_SERIAL_NUMBER = "1"  # ctnode is software; highdicom's SEG requires a value
DEFAULT_ALGORITHM_NAME = "ctnode calcium"


def software_version() -> str:
    """ctnode's package version, as written into Software Versions of every output."""
    try:
        return version("ctnode")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


def equipment(model_name: str = MODEL_NAME) -> dict[str, str]:
    """The General Equipment attributes of every object ctnode writes (SR, SEG, Secondary
    Capture), as highdicom keyword arguments: `hd.sr.Comprehensive3DSR(..., **equipment())`.
    Institution Name is left out: the node does not know it, the source study does."""
    return {
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": model_name,
        "software_versions": software_version(),
        "device_serial_number": DEVICE_SERIAL_NUMBER,
    }


def algorithm_identity(result: CalciumResult) -> tuple[str, str]:
    """(name, version) of the model that produced `result`.

    CalciumScorer names its model "<name> <version>" from the shipped manifest; a result
    without a model name is attributed to ctnode itself at its package version.
    """
    name, _, model_version = result.model.strip().rpartition(" ")
    if name and model_version:
        return name, model_version
    if result.model.strip():
        return result.model.strip(), software_version()
    return DEFAULT_ALGORITHM_NAME, software_version()
