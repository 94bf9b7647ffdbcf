"""Ship the organ base model: weights, spec, model card, curve.

python -m training.organs.ship --run DIR [--init-run DIR] [--compare DIR ...] [--transfer DIR]
                               [--real FILE] [--note FILE.md] [--out models/weights]
                               [--stem organs_base]

Reads the training run (`final.pt`, `run.json`, `curve.png` of training.organs.train), writes
`<stem>.pt` (float16 state_dict that takes clipped HU: the training input centring and scale
are folded into the first convolution), `<stem>.json` (the spec of models.organs.registry, with the sha256 of
the .pt), `<stem>_curve.png` and the model card `<stem>.md`. The card carries the held-out Dice
per structure beside that of other runs (`--compare`, e.g. sparse vs full labels), the transfer-learning
table (`--transfer`, training.organs.transfer) and the real-CT results (`--real`,
training.organs.real), whichever are given. Rerunning with the same run rewrites the same .pt.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
from pathlib import Path

import torch

from models.labels import UNET_CHANNELS
from models.organs.unet import HU_CLIP, UNet3D, count_parameters
from training.organs.common import N_CLASSES, export_state, read_json, write_json
from training.organs.data import SOURCES, SPACING_MM, SPARSE_STRUCTURES, SPLITS

NAME = "ctnode-organs-base"
# 1.3: 1.2 fine-tuned on generator-4 phantoms (2026-12-05); 1.2: the 1,600-step fully labelled
# run of 2026-11-29; 1.1: sparse labels
VERSION = "1.3"
INPUT_SIDE = 180  # window cube: output 92 voxels = 368 mm at 4 mm, a chest in one or two windows
REPO = Path(__file__).resolve().parents[2]


def spec_for(width: int, sha256: str, stem: str) -> dict:
    return {
        "name": NAME,
        "version": VERSION,
        "architecture": "unet3d-sparse-label",
        "width": width,
        "n_classes": N_CLASSES,
        "channels": [c.name.lower() for c in UNET_CHANNELS] + ["background"],
        "label_values": [int(c) for c in UNET_CHANNELS],
        "trained_channels": [s.name.lower() for s in SPARSE_STRUCTURES],
        "spacing_mm": list(SPACING_MM),
        "input_side": INPUT_SIDE,
        "hu_clip": list(HU_CLIP),
        "weights": f"{stem}.pt",
        "sha256": sha256,
        "source": "trained by ctnode on phantoms",
        "card": f"{stem}.md",
    }


def write_weights(run: Path, path: Path) -> str:
    """The run's final weights as float16 (clipped-HU input); returns the sha256."""
    state = torch.load(Path(run) / "final.pt", map_location="cpu", weights_only=True)
    buffer = io.BytesIO()
    torch.save(export_state_from(state), buffer)
    data = buffer.getvalue()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def export_state_from(state: dict) -> dict:
    width = state["enc1a.weight"].shape[0]
    net = UNet3D(n_classes=state["head.weight"].shape[0], width=width)
    net.load_state_dict(state)
    return export_state(net)


def _dice_table(columns: list[tuple[str, dict]]) -> str:
    """Dice per structure, one column per run; rows are the first column's structures."""
    rows = ["| structure | " + " | ".join(h for h, _ in columns) + " |"]
    rows.append("|---" * (len(columns) + 1) + "|")
    for name in columns[0][1]:
        cells = [f"{d[name]:.3f}" if name in d else "" for _, d in columns]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _data_folder(run: dict) -> str:
    generator = run.get("data_generator", 2)
    return "/work/organs/data" if generator == 2 else f"/work/organs/data_g{generator}"


def _data_command(run: dict) -> str:
    generator = run.get("data_generator", 2)
    return f"python -m training.organs.data --out {_data_folder(run)}" + (
        "" if generator == 2 else f" --split train validation test --generator {generator}"
    )


def _column(run: dict, steps: int, shipped: bool) -> str:
    """A Dice-table heading: the run, whether it is shipped, and the test phantoms' generator
    where it is not version 2 (columns of different generators are not the same phantoms)."""
    generator = run.get("data_generator", 2)
    notes = (["shipped"] if shipped else []) + (
        [f"generator-{generator} test phantoms"] if generator != 2 else []
    )
    return f"{run['mode']} labels, {steps:,} steps" + (f" ({'; '.join(notes)})" if notes else "")


def _train_command(run: dict, out: str, init: str | None = None) -> str:
    threads = run.get("threads", 1)
    return (
        f"python -m training.organs.train --data {_data_folder(run)} --out {out} "
        f"--mode {run['mode']} --iterations {run['iterations']} --width {run['width']} "
        f"--lr {run['lr']} --seed {run['seed']} --patch {' '.join(map(str, run['patch']))}"
        + (f" \\\n    --init {init}" if init else "")
        + (f" --threads {threads}" if threads > 1 else "")
    )


def _steps(run: dict, earlier: dict | None) -> int:
    return run["iterations"] + (earlier["iterations"] if earlier else 0)


def card(spec: dict, run: dict, compare: list[dict], transfer: str | None, real: dict | None,
         params: int, size: int, note: str | None = None,
         earlier: dict | None = None) -> str:  # fmt: skip
    """The model card. `earlier`: the run.json of the run the shipped run continued from
    (train --init), whose command and Dice are then shown with the shipped run's; `compare`:
    run.json of other runs whose Dice go beside it."""
    sources = "; ".join(f"{k}: {', '.join(s.name.lower() for s in v)}" for k, v in SOURCES.items())
    seeds = ", ".join(f"{k} {r.start}-{r.stop - 1}" for k, r in SPLITS.items())
    columns = [(_column(run, _steps(run, earlier), True), run.get("test_dice", {}))]
    for other in (earlier, *compare):
        if other and "test_dice" in other:
            columns.append((_column(other, other["iterations"], False), other["test_dice"]))
    lines = [
        f"# {spec['name']} {spec['version']}: organ U-Net trained on phantoms with {run['mode']} labels",
        "",
        "The published 3D U-Net of Humpire-Mamani et al. (arXiv 2311.05032) at "
        f"width {spec['width']} instead of 32 ({params:,} parameters, {size / 1e6:.2f} MB as "
        "float16), trained by ctnode on synthetic chest CT phantoms (`models/phantoms`) on one "
        "CPU. **Not trained on patients; see 'Real CT' below before trusting it on a scan.**",
        "",
        *([note.strip(), ""] if note else []),
        "## Files",
        f"- `{spec['weights']}`: float16 state_dict of `models.organs.unet.UNet3D(n_classes=23, "
        f"width={spec['width']})`; input clipped HU ({spec['hu_clip']}), no other scaling, "
        "as the published network.",
        f"- sha256 `{spec['sha256']}`",
        f"- spec `organs_base.json`; spacing {spec['spacing_mm']} mm (z, y, x); window input "
        f"side {spec['input_side']} voxels (output {spec['input_side'] - 88}).",
        f"- trained channels (ever annotated): {', '.join(spec['trained_channels'])}. The other "
        "12 channels (abdominal organs the phantoms lack) were trained as always absent; their "
        "outputs mean nothing.",
        "",
        "## Training data",
        f"- {run['train_phantoms']} phantoms, `generate_case(seed, options=CaseOptions(matrix=128))`"
        " (about 3 x 3 x 1 mm, 150-350 mm of chest), resampled to 4 mm isotropic (image: box "
        "average then linear; labels: nearest)"
        + (
            "."
            if run.get("data_generator", 2) == 2
            else f"; made by generator version {run['data_generator']} (`data --generator "
            f"{run['data_generator']}`: the broad variety"
            + (", with fat around the heart" if run["data_generator"] >= 4 else "")
            + "; [phantoms.md](../../docs/phantoms.md))."
            + (
                f" The run it continued from trained on generator-{earlier.get('data_generator', 2)}"
                " phantoms of the same seeds."
                if earlier
                else ""
            )
        ),
        f"- seed ranges: {seeds} (calcium work uses 1001.. and 424242).",
        f"- sparse sources (training phantom i is source i % 4; `--mode sparse`): {sources}. "
        "With `--mode full` every phantom has every structure annotated.",
        "",
        "## Training",
        "```",
        *(
            [_data_command(earlier)]
            if earlier and _data_command(earlier) != _data_command(run)
            else []
        ),
        _data_command(run),
        *(
            [_train_command(earlier, "RUN1"), _train_command(run, "RUN", "RUN1/final.pt")]
            if earlier
            else [_train_command(run, "RUN")]
        ),
        "python -m training.organs.ship --run RUN"
        + (" --init-run RUN1" if earlier else "")
        + " --compare RUN_OTHER --transfer TRANSFER --real REAL_JSON",
        "```",
        f"- {(earlier or run)['iterations']} steps, batch 1, one crop of {run['patch']} input "
        "voxels per step (output 88 smaller per axis) centred with probability 0.8 on a random "
        f"annotated structure; Adam, lr {(earlier or run)['lr']} with 10 warm-up steps and cosine "
        "decay to 5 %; He initialisation rescaled on two training crops (data-dependent, zero "
        "mean and unit variance per channel); training input (HU + 100) / 300, folded into the "
        "first convolution on export.",
        *(
            [
                f"- Then {run['iterations']} more steps from those weights (`--init`): fresh Adam "
                f"state, lr {run['lr']} with the same warm-up and cosine decay, crops drawn with "
                f"seed {run['seed']}. "
                + (
                    f"The shipped run started from `{Path(run['init']['path']).name}`, sha256 "
                    f"`{run['init']['sha256']}`."
                    if run.get("init")
                    else ""
                )
            ]
            if earlier
            else []
        ),
        f"- {(run['seconds_train'] + (earlier or {}).get('seconds_train', 0)) / 60:.1f} min "
        "on the shared 2-core machine"
        + (
            f" ({earlier['seconds_train'] / 60:.1f} min on one thread, then "
            f"{run['seconds_train'] / 60:.1f} min on {run.get('threads', 1)})."
            if earlier
            else f" on {run.get('threads', 1)} CPU thread(s)."
        ),
        "- Loss: marginal cross-entropy (Shi et al., MedIA 2021): a voxel of annotated structure c "
        "gives -log p_c; a voxel the source calls background gives -log(1 - sum of p over the "
        "source's structures) (the unannotated channels are merged into background), plus the "
        "soft Dice loss over the source's structures present in the crop. Voxels outside the "
        "scan are ignored. With `--mode full` every structure is annotated, so this is plain "
        "cross-entropy plus soft Dice.",
        "",
        "![training curve](organs_base_curve.png)",
        "",
        "## Held-out Dice (test phantoms, whole volumes)",
        "",
        f"Test seeds {run.get('test_seeds')}. Runs with the same number of steps share the "
        "phantoms, crops and settings; sparse and full labels differ only in the annotations.",
        "",
        _dice_table(columns),
        "",
    ]
    if transfer:
        lines += [
            "## Transfer learning (training/organs/transfer.py)",
            "",
            "Dice (mean ± sd over seeds) on held-out phantoms for structures the base never saw; "
            "see `training/organs/results/README.md` for the setting.",
            "",
            transfer.strip(),
            "",
        ]
    if real:
        lines += ["## Real CT", "", real.get("summary", ""), ""]
        for case in real.get("cases", []):
            lines.append(f"- {case['name']}: {case['text']}")
        lines += [
            "",
            "![real CT: predicted labels, reference heart in yellow](organs_base_real.png)",
            "",
        ]
    return "\n".join(lines)


def ship(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = read_json(Path(args.run) / "run.json")
    compare = [read_json(Path(d) / "run.json") for d in args.compare]
    earlier = read_json(Path(args.init_run) / "run.json") if args.init_run else None
    pt = out / f"{args.stem}.pt"
    sha = write_weights(Path(args.run), pt)
    spec = spec_for(run["width"], sha, args.stem)
    write_json(out / f"{args.stem}.json", spec)
    shutil.copyfile(Path(args.run) / "curve.png", out / f"{args.stem}_curve.png")
    transfer = None
    if args.transfer:
        transfer = (Path(args.transfer) / "transfer_table.md").read_text()
    real = read_json(args.real) if args.real else None
    params = count_parameters(UNet3D(N_CLASSES, run["width"]))
    note = Path(args.note).read_text() if args.note else None
    text = card(spec, run, compare, transfer, real, params, pt.stat().st_size, note, earlier)
    (out / f"{args.stem}.md").write_text(text)
    return spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument(
        "--init-run", type=Path, default=None,
        help="the run --run continued from (train --init): its command and Dice go in the card",
    )  # fmt: skip
    parser.add_argument(
        "--compare", type=Path, nargs="+", default=[], help="runs whose Dice go beside the shipped"
    )
    parser.add_argument("--transfer", type=Path, default=None)
    parser.add_argument("--real", type=Path, default=None)
    parser.add_argument("--note", type=Path, default=None, help="markdown put under the title")
    parser.add_argument("--out", type=Path, default=REPO / "models" / "weights")
    parser.add_argument("--stem", default="organs_base")
    spec = ship(parser.parse_args(argv))
    print(f"{spec['weights']}: sha256 {spec['sha256']}")


if __name__ == "__main__":
    main()
