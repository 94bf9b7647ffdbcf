"""A phantom data folder records its generator version, and the model card names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.organs.data import dataset_generator, record_dataset
from training.organs.ship import _column, _data_command, _train_command


def test_a_folder_records_its_generator_and_refuses_another(tmp_path: Path) -> None:
    assert dataset_generator(tmp_path) == 2  # a folder from before the record: version 2
    record_dataset(tmp_path, 4, 128)
    assert dataset_generator(tmp_path) == 4
    record_dataset(tmp_path, 4, 128)  # the same again: fine (a resumed generation)
    with pytest.raises(SystemExit, match="generator"):
        record_dataset(tmp_path, 2, 128)  # one folder, one generator


def test_the_card_names_the_data_a_run_trained_and_was_tested_on() -> None:
    base = {"mode": "full", "iterations": 1600, "width": 4, "lr": 3e-4, "seed": 0,
            "patch": [124, 140, 140]}  # fmt: skip
    broad = {**base, "iterations": 600, "data_generator": 4, "threads": 2}
    assert _column(base, 1600, True) == "full labels, 1,600 steps (shipped)"
    assert _column(broad, 2200, True) == (
        "full labels, 2,200 steps (shipped; generator-4 test phantoms)"
    )
    assert _column(broad, 600, False) == "full labels, 600 steps (generator-4 test phantoms)"
    assert _data_command(base) == "python -m training.organs.data --out /work/organs/data"
    assert "--generator 4" in _data_command(broad) and "data_g4" in _data_command(broad)
    command = _train_command(broad, "RUN", "RUN1/final.pt")
    assert "--data /work/organs/data_g4" in command and command.endswith("--threads 2")
    assert "--threads" not in _train_command(base, "RUN1")
