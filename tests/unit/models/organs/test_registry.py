"""Organ model specs: round trip, sha256 check, lookup of shipped and imported models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.files import sha256
from models.labels import UNET_CHANNELS
from models.organs import registry
from models.organs.registry import ModelFileError, ModelSpec
from models.organs.unet import UNet3D


def tiny_spec(name: str = "tiny", width: int = 2) -> ModelSpec:
    return ModelSpec(
        name=name,
        version="0.1",
        architecture=registry.ARCHITECTURE,
        width=width,
        n_classes=23,
        channels=[label.name.lower() for label in UNET_CHANNELS] + ["background"],
        label_values=[int(label) for label in UNET_CHANNELS],
        trained_channels=["heart", "aorta"],
        spacing_mm=[3.0, 3.0, 3.0],
        input_side=92,
        weights=f"{name}.pt",
        sha256="",
        source="test",
        card=f"{name}.md",
    )


def write_tiny(folder: Path, name: str = "tiny", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    spec_path = folder / f"{name}.json"
    registry.save_model(UNet3D(width=2), tiny_spec(name), spec_path, half=True)
    return spec_path


def test_written_spec_round_trips_and_loads_the_same_network(tmp_path):
    torch.manual_seed(3)
    net = UNet3D(width=2)
    spec_path = tmp_path / "m.json"
    spec = registry.save_model(net, tiny_spec("m"), spec_path)
    again = registry.read_spec(spec_path)
    assert again == spec and again.path == spec_path
    assert json.loads(spec_path.read_text())["sha256"] == sha256(tmp_path / "m.pt")
    loaded, loaded_spec = registry.load_model(spec_path, "cpu")
    assert loaded_spec == spec and not loaded.training
    x = torch.randn(1, 1, 92, 92, 92) * 300
    with torch.inference_mode():
        assert torch.equal(loaded(x), net.eval()(x))


def test_float16_weights_load_as_float32(tmp_path):
    net, _ = registry.load_model(write_tiny(tmp_path), "cpu")
    assert torch.load(tmp_path / "tiny.pt")["enc1a.weight"].dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_sha256_mismatch_raises(tmp_path):
    spec_path = write_tiny(tmp_path)
    weights = tmp_path / "tiny.pt"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        registry.load_model(spec_path)


def test_missing_weights_and_bad_spec_raise(tmp_path):
    spec_path = write_tiny(tmp_path)
    (tmp_path / "tiny.pt").unlink()
    with pytest.raises(ModelFileError, match="does not exist"):
        registry.load_model(spec_path)
    values = json.loads(spec_path.read_text())
    values["label_values"] = values["label_values"][:-1]
    spec_path.write_text(json.dumps(values))
    with pytest.raises(ModelFileError, match="label values"):
        registry.read_spec(spec_path)


def test_weights_of_another_width_raise(tmp_path):
    spec_path = write_tiny(tmp_path)
    values = json.loads(spec_path.read_text())
    values["width"] = 4  # the .pt holds width 2
    spec_path.write_text(json.dumps(values))
    with pytest.raises(ModelFileError, match="does not load"):
        registry.load_model(spec_path)


def test_find_and_installed_models(tmp_path):
    models_dir = tmp_path / "models"
    write_tiny(models_dir / "first", "first")
    write_tiny(models_dir / "second", "second", seed=1)
    (models_dir / "notes.json").write_text("{}")  # not in a model folder: ignored
    names = [spec.name for spec in registry.installed_models(models_dir)]
    assert {"first", "second"} <= set(names)
    assert registry.find("second", models_dir) == models_dir / "second" / "second.json"
    with pytest.raises(ModelFileError, match="no organ model named 'third'"):
        registry.find("third", models_dir)
    shipped = [s for s in registry.installed_models(None) if registry.is_shipped(s)]
    assert [s.name for s in registry.installed_models(models_dir)][: len(shipped)] == [
        s.name for s in shipped
    ]
    if registry.SHIPPED_BASE.is_file():
        assert registry.find(None, models_dir) == registry.SHIPPED_BASE
        assert registry.find("", models_dir) == registry.SHIPPED_BASE
