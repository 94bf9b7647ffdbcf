"""The shipped organ model on the real CT in ../shared/data/real, reported whatever it gives.

python -m training.organs.real [--spec models/weights/organs_base.json] [--real DIR]
                               --out FILE.json [--figure FILE.png]

Cases: both series of `lung_pet_ct_dx_A0001` (the same non-contrast chest CT reconstructed with
a sharp and a soft kernel; no reference masks, so the report gives volumes and how much the two
reconstructions agree) and `totalseg_examples/pulmonary_report` (a contrast chest CT crop with a
reference heart mask: Dice of the heart, the mask resampled nearest onto the CT grid).
Segmentation goes through `models.organs.inference.OrganSegmenter` (the node's path: resampling
to the model spacing, HU clip, sliding windows, the published post-processing, back to the CT
grid). Nothing from the scans is copied into the repository; only the figures of the report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from models.labels import Label
from training.organs.common import dice, one_thread, write_json

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "data" / "real"
STRUCTURES = (
    Label.HEART, Label.AORTA, Label.LEFT_LUNG, Label.RIGHT_LUNG, Label.TRACHEA,
    Label.SPINAL_CORD, Label.STERNUM, Label.LIVER,
)  # fmt: skip


def read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(folder))
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    return reader.Execute()


def volumes_ml(labels: np.ndarray, spacing_xyz) -> dict[str, float]:
    voxel_ml = float(np.prod(spacing_xyz)) / 1000.0
    return {s.name.lower(): round(float((labels == s).sum()) * voxel_ml, 1) for s in STRUCTURES}


def segment(spec: Path, ct: sitk.Image) -> tuple[np.ndarray, float, str]:
    """Labels on the CT grid, seconds, and which code produced them."""
    start = time.perf_counter()
    try:
        from models.organs.inference import OrganSegmenter
    except ImportError:
        labels = _own_segment(spec, ct)
        return labels, time.perf_counter() - start, "training.organs.real._own_segment"
    result = OrganSegmenter(spec, device="cpu").segment(ct)
    labels = sitk.GetArrayFromImage(result.labels)
    return labels, time.perf_counter() - start, "models.organs.inference.OrganSegmenter"


def _own_segment(spec_path: Path, ct: sitk.Image) -> np.ndarray:
    """Fallback while the node's inference module is missing: linear resampling to the model
    spacing, one whole-volume pass by windows, the published post-processing, nearest back."""
    from models.organs import registry
    from training.organs.common import postprocess, predict_probs

    net, spec = registry.load_model(spec_path)
    spacing_xyz = list(reversed(spec.spacing_mm))
    size = [
        int(round(n * s / t))
        for n, s, t in zip(ct.GetSize(), ct.GetSpacing(), spacing_xyz, strict=True)
    ]
    grid = sitk.Resample(
        ct, size, sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(), spacing_xyz,
        ct.GetDirection(), -1000.0, sitk.sitkFloat32,
    )  # fmt: skip
    probs = predict_probs(net, sitk.GetArrayFromImage(grid), scaled_input=False)
    labels = sitk.GetImageFromArray(postprocess(probs, spec.label_values))
    labels.CopyInformation(grid)
    back = sitk.Resample(labels, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(back)


def run(spec: Path, real: Path) -> tuple[dict, dict]:
    one_thread()
    cases, arrays = [], {}
    lung = real / "lung_pet_ct_dx_A0001"
    for series in ("series_soft_kernel", "series_lung_kernel"):
        ct = read_series(lung / series)
        labels, seconds, method = segment(spec, ct)
        arrays[series] = (sitk.GetArrayFromImage(ct), labels)
        vols = volumes_ml(labels, ct.GetSpacing())
        cases.append(
            {
                "name": f"lung_pet_ct_dx_A0001/{series}",
                "size_xyz": list(ct.GetSize()),
                "spacing_xyz_mm": [round(v, 3) for v in ct.GetSpacing()],
                "seconds": round(seconds, 1),
                "volumes_ml": vols,
            }
        )
    soft, sharp = arrays["series_soft_kernel"][1], arrays["series_lung_kernel"][1]
    agreement = {
        s.name.lower(): round(dice(soft == s, sharp == s), 3)
        for s in STRUCTURES
        if (soft == s).any() or (sharp == s).any()
    }
    for case in cases[:2]:
        case["kernel_agreement_dice"] = agreement

    folder = real / "totalseg_examples" / "pulmonary_report"
    ct = sitk.ReadImage(str(folder / "ct_cropped.nii.gz"))
    heart = sitk.Resample(
        sitk.ReadImage(str(folder / "heart.nii.gz")), ct, sitk.Transform(), sitk.sitkNearestNeighbor
    )
    labels, seconds, method = segment(spec, ct)
    truth = sitk.GetArrayFromImage(heart) > 0
    arrays["pulmonary_report"] = (sitk.GetArrayFromImage(ct), labels, truth)
    vols = volumes_ml(labels, ct.GetSpacing())
    cases.append(
        {
            "name": "totalseg_examples/pulmonary_report",
            "size_xyz": list(ct.GetSize()),
            "spacing_xyz_mm": [round(v, 3) for v in ct.GetSpacing()],
            "seconds": round(seconds, 1),
            "volumes_ml": vols,
            "heart_reference_ml": round(float(truth.sum()) * np.prod(ct.GetSpacing()) / 1000, 1),
            "heart_dice": round(dice(labels == Label.HEART, truth), 3),
        }
    )
    for case in cases:
        v = case["volumes_ml"]
        text = f"{case['seconds']} s on one CPU thread; volumes (ml): " + ", ".join(
            f"{k} {x}" for k, x in v.items()
        )
        if "heart_dice" in case:
            text += (
                f"; heart Dice {case['heart_dice']} against heart.nii.gz "
                f"({case['heart_reference_ml']} ml)"
            )
        if "kernel_agreement_dice" in case and case["name"].endswith("soft_kernel"):
            text += "; soft vs sharp kernel agreement (Dice): " + (
                ", ".join(f"{k} {x}" for k, x in agreement.items())
                or "nothing segmented in either series"
            )
        case["text"] = text
    summary = f"Segmented with {method} (CPU, one thread)."
    return {"spec": str(spec), "method": method, "summary": summary, "cases": cases}, arrays


def figure(arrays: dict, path: Path) -> None:
    """Middle axial slice of each case with the predicted structures (and the reference heart)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(arrays), figsize=(4 * len(arrays), 4), dpi=100)
    for ax, (name, item) in zip(axes, arrays.items(), strict=True):
        image, labels = item[0], item[1]
        counts = (labels == Label.HEART).sum(axis=(1, 2))
        z = int(np.argmax(counts)) if counts.max() > 0 else image.shape[0] // 2
        ax.imshow(np.clip(image[z], -500, 400), cmap="gray")
        shown = np.ma.masked_equal(labels[z].astype(float), 0)
        ax.imshow(shown, cmap="tab20", alpha=0.45, vmin=0, vmax=22, interpolation="nearest")
        if len(item) > 2:
            ax.contour(item[2][z], levels=[0.5], colors="yellow", linewidths=0.8)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=REPO / "models/weights/organs_base.json")
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args(argv)
    report, arrays = run(args.spec, args.real)
    write_json(args.out, report)
    if args.figure:
        figure(arrays, args.figure)
    for case in report["cases"]:
        print(f"{case['name']}: {case['text']}")


if __name__ == "__main__":
    main()
