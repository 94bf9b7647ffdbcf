"""Training (`--init`) and the transfer study (`--base`) start from a run's weights or a shipped file."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from training.organs.common import export_state, load_training_weights, make_net, to_input


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
