"""A one-row PNG preview of a phantom case: axial slices through the heart, calcium outlined."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from models.phantoms.case import Case  # noqa: E402
from models.phantoms.compare import (  # noqa: E402
    CONFOUNDER_LABELS,
    LESION_LABELS,
    WINDOW,
    display,
    heart_z_range,
    phantom_slices,
    volume_from_case,
)


def write_preview(case: Case, path: Path) -> Path:
    vol = volume_from_case(case)
    slices = phantom_slices(vol, heart_z_range(vol))
    level, width = WINDOW
    fig, axes = plt.subplots(1, len(slices), figsize=(4 * len(slices), 4.4), dpi=90)
    for ax, k in zip(np.atleast_1d(axes), slices, strict=True):
        plane, x, y, extent = display(vol, k)
        ax.imshow(plane, cmap="gray", vmin=level - width / 2, vmax=level + width / 2, extent=extent)
        for labels, colour in ((LESION_LABELS, "red"), (CONFOUNDER_LABELS, "yellow")):
            mask = display(vol, k, np.isin(vol.labels[k], labels).astype(float))[0]
            if mask.any():
                ax.contour(x, y, mask, levels=[0.5], colors=colour, linewidths=1.0)
        ax.set_title(f"z = {vol.z[k]:.1f} mm", fontsize=10)
        ax.axis("off")
    truth = case.truth
    fig.suptitle(
        f"Phantom (seed {case.seed}): Agatston {truth.total:.0f}, category {truth.category}, "
        f"{truth.cacdrs}. Red: coronary calcium; yellow: calcium that must not count. "
        f"Radiological view, W {width:g} / L {level:g}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
