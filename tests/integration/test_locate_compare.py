"""locate_compare: the heart-centre error of installed calcium models on the same phantoms."""

from __future__ import annotations

import json
from pathlib import Path

from models.calcium.inference import WEIGHTS_DIR
from training.calcium import locate_compare


def test_both_styles_are_located_by_every_model(tmp_path: Path) -> None:
    out = tmp_path / "locate.json"
    args = ["--weights", str(WEIGHTS_DIR), str(WEIGHTS_DIR), "--generator", "2", "--alt"]
    assert locate_compare.main([*args, "--n", "1", "--workers", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [row["generator"] for row in report["cases"]] == [2, "alt"]
    for row in report["cases"]:
        # The same model twice gives the same place; a located heart is near the true one.
        assert row["error_mm"][0] == row["error_mm"][1] and row["error_mm"][0] < 60
        assert all(-1 <= ncc <= 1 for ncc in row["ncc"])
    figures = report["models"][str(WEIGHTS_DIR)]
    assert set(figures) == {"generator_2", "alt"}
    assert figures["alt"]["within_21_mm"] in (0.0, 1.0)  # one case
