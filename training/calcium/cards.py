"""Model cards of the calcium models, rendered from the manifest and the evaluation results.

Both files are regenerated whenever the weights (ship.py) or the evaluation (evaluate.py)
change, so the card never disagrees with the files it describes.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from models.calcium.inference import MANIFEST
from models.labels import ARTERIES

EVALUATION = "calcium_evaluation.json"

RECIPE = """The shipped weights were trained on the 2-core CPU development machine (no GPU was
available to the sessions that trained them), with these commands:

```bash
# Registration ConvNet and atlas: version 1.0's, unchanged (trained on generator-1 phantoms):
python -m training.calcium.prepare --out data/calcium_g1 --n 1500 --seed 1001 --workers 2 \\
    --generator 1 --max-minutes 34    # 308 cases
OMP_NUM_THREADS=1 python -m training.calcium.train_registration --data data/calcium_g1 \\
    --out runs/registration --iterations 2000 --batch 8 --seed 1001 --max-minutes 20
# 1. fresh generator-2 phantoms -> training samples (seed 1001; never used for evaluation).
#    Stopped by time after the first 1398 cases of the plan (1017 for the first three score
#    runs, then resumed: prepare skips the cases it has, so rerunning it with the same
#    arguments continues the same plan). A separate validation folder from seed 5151.
python -m training.calcium.prepare --out data/calcium --n 1500 --seed 1001 --workers 2
python -m training.calcium.prepare --out data/calcium_val --n 150 --seed 5151 --workers 2 \\
    --max-minutes 7    # 135 cases
# 2. score ConvNet with the candidate-score prior: from scratch for 28 minutes on 2 threads,
#    then continued three times, each from the last (each run its own one-cycle schedule
#    over its minutes). Runs a-c trained on the first 1017 cases; their 10 % validation
#    split followed each --seed, so it was partly training data of the run before.
#    Steps taken: 2,801, 5,737, 3,153 and 6,962 of 4 crops.
python -m training.calcium.train_score --data data/calcium --out runs/score_a \\
    --iterations 20000 --batch 4 --patch 48 48 48 --seed 1003 --max-minutes 28
python -m training.calcium.train_score --data data/calcium --out runs/score_b \\
    --init runs/score_a/score.pt --iterations 20000 --batch 4 --patch 48 48 48 --seed 1004 \\
    --lr 5e-4 --max-minutes 62
python -m training.calcium.train_score --data data/calcium --out runs/score_c \\
    --init runs/score_b/score.pt --iterations 20000 --batch 4 --patch 48 48 48 --seed 1005 \\
    --lr 3e-4 --max-minutes 33
python -m training.calcium.train_score --data data/calcium --out runs/score \\
    --init runs/score_c/score.pt --iterations 20000 --batch 4 --patch 48 48 48 --seed 1006 \\
    --split-seed 1006 --lr 4e-4 --max-minutes 60    # all 1398 cases
# 3. coronary region from the training phantoms (central 99.9 % of the truth's score per
#    axis + 25 mm), located by 1.0's registration with the heart search; presence at
#    inference chosen on the independent validation folder of seed 5151
python -m training.calcium.coronary_extent --data data/calcium --score runs/score \\
    --quantile 0.999
python -m training.calcium.select_presence --data data/calcium --score runs/score \\
    --validation data/calcium_val
# 4. install beside the registration (float16, sha256 in calcium_manifest.json), search on
python -m training.calcium.ship --registration runs/registration --score runs/score \\
    --heart-search
# 5. the exact method's presence threshold on 60 phantoms of seed 5252 (used by nothing else),
#    written into the manifest (score.exact); version 2.2 is 2.1's weight files with this
#    choice and score.method = exact (`ship --method exact` writes the method for a new run)
python -m training.calcium.select_exact --n 60 --seed 5252 --workers 2
# 6. held-out evaluation (seed 424242), both methods from one pass -> calcium_evaluation.json,
#    figures, this card
python -m training.calcium.evaluate --n 200 --seed 424242 --workers 2
# 7. version 2.3: generator-3 phantoms (the broad variety, models/phantoms/variety.py), stopped
#    by time after 803 cases of the plan, and 2.2's score network (its float16 file as
#    shipped) fine-tuned on them for 50 minutes (3,003 steps; 723 training, 80 validation);
#    registration, heart search and coronary region are 2.2's (step 3's region file copied
#    unchanged into the new run folder); then steps 5 and 6 again
python -m training.calcium.prepare --out data/calcium_g3 --n 1500 --seed 1001 --workers 2 \\
    --generator 3 --max-minutes 36    # 803 cases
python -m training.calcium.train_score --data data/calcium_g3 --out runs/score_g3 \\
    --init models/weights/calcium_score.pt --iterations 20000 --batch 4 --patch 48 48 48 \\
    --seed 1007 --split-seed 1007 --lr 4e-4 --max-minutes 50
cp runs/score/coronary_region.json runs/score_g3/
python -m training.calcium.ship --score runs/score_g3 --version 2.3 --method exact \\
    --generator 3
python -m training.calcium.select_exact --n 60 --seed 5252 --workers 2
python -m training.calcium.evaluate --n 200 --seed 424242 --workers 2
# 8. version 2.4: generator-4 phantoms (version 3 with fat around the heart and noisier sharp
#    kernels), stopped by time after 572 cases of the plan, and 2.3's score network fine-tuned
#    on them together with step 7's 803 generator-3 samples for 45 minutes (2,346 steps; 1,237
#    training, 138 validation); registration, heart search and coronary region unchanged;
#    then steps 5 and 6 again
python -m training.calcium.prepare --out data/calcium_g4 --n 640 --seed 1002 --workers 2 \\
    --generator 4 --max-minutes 26    # 572 cases
python -m training.calcium.train_score --data data/calcium_g3 data/calcium_g4 \\
    --out runs/score_g4 --init models/weights/calcium_score.pt --iterations 20000 --batch 4 \\
    --patch 48 48 48 --seed 1008 --split-seed 1008 --lr 4e-4 --max-minutes 45
cp runs/score/coronary_region.json runs/score_g4/
python -m training.calcium.ship --score runs/score_g4 --version 2.4 --method exact \\
    --generator 4
python -m training.calcium.select_exact --n 60 --seed 5252 --workers 2
python -m training.calcium.evaluate --n 200 --seed 424242 --workers 2
# 9. version 2.7: more generator-4 phantoms (seed 1011, stopped by time after 594 cases), and
#    2.4's score network fine-tuned on them together with steps 7 and 8's samples for 55
#    minutes (3,033 steps; 1,772 training, 197 validation, a new split that holds samples
#    2.4 trained on); the exact threshold chosen on the 60 cases of seed 5252 made by
#    generator 2 and by generator 4 (120 phantoms: the versions the network is trained for);
#    registration, heart search and coronary region unchanged; then step 6
python -m training.calcium.prepare --out data/calcium_g4b --n 800 --seed 1011 --workers 2 \\
    --generator 4 --max-minutes 30    # 594 cases
python -m training.calcium.train_score --data data/calcium_g3 data/calcium_g4 data/calcium_g4b \\
    --out runs/score_g4c --init models/weights/calcium_score.pt --iterations 20000 --batch 4 \\
    --patch 48 48 48 --seed 1012 --split-seed 1012 --lr 3e-4 --max-minutes 55
cp runs/score/coronary_region.json runs/score_g4c/
python -m training.calcium.ship --score runs/score_g4c --version 2.7 --method exact \\
    --generator 4
python -m training.calcium.select_exact --n 60 --seed 5252 --generator 2 4 --workers 2
python -m training.calcium.evaluate --n 200 --seed 424242 --workers 2
```

With `--max-minutes` the learning-rate schedule follows the elapsed time, so the number of
steps depends on the machine (the tables below record the steps each run took); without it the
runs are step-driven and repeat exactly on the same device. `python -m
training.calcium.train_all --work DIR --minutes M` runs steps 1-4 and 6 in one budget (one score
run from scratch instead of four, presence on its own split; it ships the regression method,
step 5 chooses the exact method's threshold)."""


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(rows: list[tuple[str, object]]) -> str:
    return "\n".join(["| | |", "|---|---|", *[f"| {k} | {_fmt(v)} |" for k, v in rows]])


def _methods(ev: dict) -> dict:
    """Figures per scoring method; an evaluation from before version 2.2 has one method."""
    if "methods" in ev:
        return ev["methods"]
    return {ev.get("method", "regression"): {k: ev[k] for k in ("summary", "per_artery_icc")}}


def evaluation_section(weights: Path) -> str:
    path = weights / EVALUATION
    if not path.exists():
        return "Not evaluated yet: run `python -m training.calcium.evaluate`."
    ev = json.loads(path.read_text())
    methods = _methods(ev)
    shipped = ev.get("method", "regression")
    names = list(methods)

    def row(label: str, pick) -> str:
        return f"| {label} | " + " | ".join(_fmt(pick(methods[m])) for m in names) + " |"

    def limits(m: dict) -> str:
        ba = m["summary"]["bland_altman"]
        return f"{ba['bias']:.1f} / [{ba['loa_lower']:.1f}, {ba['loa_upper']:.1f}]"

    header = "| | " + " | ".join(f"{m}{' (shipped)' if m == shipped else ''}" for m in names)
    lines = [
        header + " |",
        "|---|" + "---|" * len(names),
        "| held-out phantoms (seed, n) | "
        + " | ".join(f"{ev['seed']}, {methods[m]['summary']['n']}" for m in names)
        + " |",
        row("ICC(A,1) total", lambda m: m["summary"]["icc"]),
        row("linearly weighted kappa, 5 categories", lambda m: m["summary"]["weighted_kappa"]),
        row("category accuracy", lambda m: m["summary"]["category_accuracy"]),
        row("mean absolute error (Agatston)", lambda m: m["summary"]["mae"]),
        row("Bland-Altman bias / limits", limits),
        *[row(f"ICC(A,1) {a}", lambda m, a=a: m["per_artery_icc"][a]) for a in ARTERIES],
    ]
    common = [
        ("flags raised on phantoms", ev.get("flag_counts", {})),
        ("seconds per scan (median, this machine; both methods)", ev.get("seconds_median")),
        (
            "indeterminate / not scored (counted apart)",
            f"{ev['summary'].get('n_indeterminate', 0)} / {ev['summary'].get('n_not_scored', 0)}",
        ),
    ]
    if ev.get("volume_mae_mm3") is not None:
        common.append(("calcium volume, mean absolute error (mm^3, exact)", ev["volume_mae_mm3"]))
    confusion = "\n\n".join(
        f"Confusion matrix, {m} (rows: truth, columns: predicted; categories 0 / 1-10 / "
        "11-100 / 101-400 / >400):\n\n"
        + "\n".join(
            "    " + " ".join(f"{v:4d}" for v in r)
            for r in methods[m]["summary"]["confusion_matrix"]
        )
        for m in names
    )
    figures = " ".join(
        f"![{m}: {'scatter' if 'scatter' in f else 'Bland-Altman'}]({f})"
        for m in names
        for f in methods[m].get("figures", ["calcium_scatter.png", "calcium_bland_altman.png"])
    )
    real_rows = "\n".join(
        f"| {r['series']} | {_total(r)} ({r.get('method', 'regression')}) | "
        + (f"{r['regression_total']:.1f}" if r.get("regression_total") is not None else "-")
        + f" | {r.get('category_name', r['category'])} | {', '.join(r['flags']) or '-'} |"
        for r in ev.get("real", [])
    )
    real = (
        "Real negative control (`lung_pet_ct_dx_A0001`, no visible coronary calcium), both "
        "methods from one pass:\n\n| series | Agatston | regression | category (first "
        "column) | flags |\n|---|---|---|---|---|\n" + real_rows
        if real_rows
        else ""
    )
    return "\n\n".join(
        [
            "\n".join(lines),
            _table(common),
            confusion,
            figures,
            real,
            f"Machine: {ev.get('machine', 'not recorded')}.",
        ]
    )


def method_section(score: dict) -> str:
    """Which scoring method is shipped, why, and the exact method's threshold choice."""
    method = score.get("method", "regression")
    exact = score.get("exact")
    text = (
        "## Scoring method\n\n"
        + textwrap.fill(
            "Two methods from one pass of the network (`models/calcium/inference.py`, "
            "`CalciumScorer(method=...)`). Exact (`models/calcium/exact.py`): the network only "
            "decides; every native candidate voxel (HU >= 130) in the score box and the coronary "
            "region takes the presence probability of its nearest score cell and is labelled "
            "with the artery of highest presence where that reaches the threshold below; the "
            "score, per artery, and the calcium volume are `models/agatston.py` on the scan's own "
            "voxels with these labels, and the feedback is each labelled voxel's contribution. "
            "Regression (paper A, de Vos et al. 2019): the sums of the network's map (presence x "
            "correction x candidate prior); every result carries its figures "
            "(`regression_total`).",
            width=96,
        )
        + "\n\n"
        + textwrap.fill(
            f"Shipped: **{method}**. {score.get('method_reason', '')}".strip(), width=96
        )
    )
    if not exact or "selection" not in exact:
        return text + "\n"
    selection = exact["selection"]
    header = ("presence threshold", "ICC", "weighted kappa", "category accuracy", "MAE")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        f"| {r['presence_threshold']} | {r['icc']:.4f} | {r['weighted_kappa']:.3f} | "
        f"{r['category_accuracy']:.3f} | {r['mae']:.1f} |"
        for r in selection["rows"]
    ]
    reg = selection.get("regression")
    if reg:
        lines.append(
            f"| (regression, same phantoms) | {reg['icc']:.4f} | {reg['weighted_kappa']:.3f} | "
            f"{reg['category_accuracy']:.3f} | {reg['mae']:.1f} |"
        )
    return (
        text
        + "\n\n### Exact method: presence threshold (chosen on validation phantoms)\n\n"
        + textwrap.fill(
            f"`python -m training.calcium.select_exact` on {selection['validation']} (neither "
            "training, the soft-presence choice nor the held-out evaluation uses the seed): "
            "highest weighted kappa, then ICC, then nearest 0.5. Shipped: presence >= "
            f"{exact['presence_threshold']}.",
            width=96,
        )
        + "\n\n"
        + "\n".join(lines)
        + "\n"
    )


def presence_section(score: dict) -> str:
    """How presence is applied at inference and the validation figures behind the choice."""
    selection = score.get("presence_selection")
    if not selection:
        return ""
    rows = [
        (
            "soft" if r["presence_threshold"] is None else f"hard, >= {r['presence_threshold']}",
            f"{r['icc']:.4f}",
            f"{r['weighted_kappa']:.3f}",
            f"{r['category_accuracy']:.3f}",
            f"{r['mae']:.1f}",
        )
        for r in selection["rows"]
    ]
    header = ("presence", "ICC", "weighted kappa", "category accuracy", "MAE")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    chosen = selection["chosen"]
    return (
        "## Presence at inference (chosen on the validation phantoms)\n\n"
        f"`select_presence` on {selection['n_validation']} validation phantoms "
        f"({selection.get('validation', 'the validation split of the training data')}; "
        "true heart centre): the soft map sums small probabilities over many "
        "candidate voxels into a few Agatston units, which moves true zeros into 1-10; a hard "
        "decision removes that floor. Shipped: "
        + ("the soft map" if chosen is None else f"hard, at presence >= {chosen}")
        + ".\n\n"
        + "\n".join(lines)
        + "\n"
    )


def region_section(score: dict, heart_search: bool) -> str:
    """The coronary region the map is limited to (coronary_region.py), with its figures."""
    region = score.get("coronary_region")
    if not region:
        return ""
    low, high = score["coronary_region_mm"]["low"], score["coronary_region_mm"]["high"]
    box = ", ".join(f"{a} {lo:+g} to {hi:+g}" for a, lo, hi in zip("xyz", low, high, strict=True))
    lesion = ", ".join(
        f"{a} {lo:+g} to {hi:+g}"
        for a, lo, hi in zip("xyz", region["lesion_low_mm"], region["lesion_high_mm"], strict=True)
    )
    located = region["located_error_mm"]
    return (
        "## Coronary region\n\n"
        + textwrap.fill(
            "The score map counts only inside a box around the located heart centre: "
            f"{box} mm (patient axes, LPS: +x left, +y posterior, +z head; "
            "`models/calcium/coronary_region.py`, `python -m training.calcium.coronary_extent`): "
            "the range of the truth's score "
            f"around the true heart centre in {region['data']} "
            f"({lesion} mm, the central {region['quantile'] * 100:g} % of the score per axis) "
            f"widened by {region['margin_mm']} mm on every side for the error of the heart's "
            "location. The network sees the whole box; calcium outside the region is not counted "
            "and each result reports how much the network had put there (`outside_region_au`). "
            f"Checked on the same samples, located as the node locates them (registration "
            f"{'and heart search' if heart_search else 'alone'}; error median "
            f"{located['median']:.1f}, 95th percentile {located['p95']:.1f}, maximum "
            f"{located['max']:.1f} mm): {region['truth_outside_fraction'] * 100:.3f} % of the "
            f"truth's score fell outside the region ({region['truth_outside_au']:.1f} AU; "
            f"{region['samples_losing_over_1_au']} samples lost more than 1 AU).",
            width=96,
        )
        + "\n"
    )


def score_design(score: dict) -> str:
    """What the score network sees and computes, for the prior it was trained with
    (models/calcium/networks.PRIORS; a manifest without the key is version 1.0's summary)."""
    candidate = score.get("prior", "summary") == "candidate"
    channels = (
        "four channels, three summarising the scan's native voxels under one box voxel (mean "
        "HU; peak HU; fraction of voxels at or above 130 HU) and the candidate score: the "
        "Agatston score of the native voxels binned into that box voxel as if every calcium "
        "candidate were coronary (2-D components per slice, the 1 mm^2 minimum area and the "
        "component's density weight, all on the native grid)"
        if candidate
        else "three channels, each summarising the scan's native voxels under one box voxel "
        "(mean HU; peak HU, so that sub-voxel calcifications keep the peak that sets their "
        "density weight; fraction of voxels at or above 130 HU, the candidate area the score "
        "counts)"
    )
    prior = (
        "the prior is the candidate score, so a voxel with no counted candidate carries "
        "exactly zero and the truth's own score lies on the same voxels as its candidate "
        "score, however small the lesion; the network decides per artery whether the "
        "candidate calcium is coronary (a sigmoid presence, against bone, aortic wall and "
        "valve calcium, the mitral annulus and noise) and corrects its size (a factor between "
        "e^-2 and e^2, for voxels that a lesion shares with other calcium)"
        if candidate
        else "the prior is the Agatston definition applied to the voxel's own summary "
        "(fraction at or above 130 HU x the density weight of its peak x 7.5 AU, the score of a "
        "fully counted 3 x 3 x 2.5 mm voxel at any pixel size and increment), so a voxel with "
        "no candidate calcium carries exactly zero; the network decides per artery whether "
        "the candidate calcium is coronary (a sigmoid presence, against bone, aortic wall and "
        "valve calcium, the mitral annulus and noise) and corrects its size (a factor between "
        "e^-2 and e^2, for lesion edges, specks under 1 mm^2 and peaks shared with bone)"
    )
    return textwrap.fill(
        "Fully convolutional regression of the Agatston score (de Vos et al. 2019 design): input "
        f"a 192 x 192 x 180 mm box around the located heart at 3 x 3 x 2.5 mm with {channels}, "
        "plus the slice increment, thickness and pixel size; output a non-negative map per "
        "artery (LAD, LCX, RCA) on the same grid whose sums are the artery scores. The map is "
        f"the decision feedback. Each map voxel is presence x correction x prior: {prior}. "
        "Loss: squared error of log(1 + score) per artery and for the total, plus "
        f"{score.get('placement_weight', 0)} x a placement loss against the truth's own score "
        "density (each counted voxel's share of the Agatston score): class-balanced "
        "cross-entropy of the presence on the candidate voxels and squared error of the log "
        f"correction where the truth carries score. Width {score['width']}.",
        width=96,
    )


def _heart_term(reg: dict) -> str:
    weight = reg.get("heart_weight", 0.0)
    if not weight:
        return "; without labels."
    return (
        f", plus {weight:g} x a Huber loss (1 cm scale) of the heart-centre error against the "
        "phantoms' known heart centres (train_registration --heart-weight; a weak supervision)."
    )


def _search_note(reg: dict) -> str:
    if not reg.get("heart_search"):
        return ""
    radius = reg.get("heart_search_radius_mm", 40)
    return (
        f" At inference the heart search (models/calcium/heart_search.py) refines the heart "
        f"centre by up to +-{radius:g} mm per axis."
    )


def write_cards(weights: Path) -> None:
    m = json.loads((weights / MANIFEST).read_text())
    reg, score = m["registration"], m["score"]
    shared = (
        f"Version {m['version']} ({m['date']}), phantom generator version {m['generator_version']}. "
        f"Training data: {m['training_data'] or 'see recipe'}.\n\nFiles and sha256 (checked at load time):\n\n"
        + "\n".join(f"- `{name}`: `{digest}`" for name, digest in m["sha256"].items())
        + f"\n\nReproduce:\n\n{RECIPE}\n"
    )
    val = reg["validation"]
    (weights / "calcium_registration.md").write_text(f"""# Model card: calcium registration ConvNet

Affine registration (translation, rotation, anisotropic scale) of a whole chest CT, resampled to
80^3 voxels of 5 mm around its field of view and averaged to 40^3 voxels of 10 mm for the
network, to a phantom atlas (the mean of the training
phantoms, heart-centred), following the DLIR/AIRNet design: shared trunk of 3x3x3 convolutions
(width {reg["width"]}) with ELU and average pooling, two dense layers of 64, separate heads.
Trained to maximise the normalised cross-correlation with the atlas, weighted
towards the atlas heart, on phantoms perturbed by random affines (translation +-40 mm,
rotation +-15 deg, scale +-15 %){_heart_term(reg)} Its job in ctnode: put the heart in the score
network's box.{_search_note(reg)}

{shared}
## Training

{
        _table(
            [
                ("iterations run", reg.get("iterations_run", reg["iterations"])),
                ("initialised from", reg.get("init") or "random"),
                ("heart-centre term weight", reg.get("heart_weight", 0.0)),
                ("batch", reg["batch"]),
                ("learning rate (one-cycle)", f"{reg['lr']:g}"),
                ("seed", reg["seed"]),
                ("device", reg["device"]),
                ("seconds", reg["seconds"]),
                (
                    "training / validation phantoms",
                    f"{reg['samples_train']} / {reg['samples_validation']}",
                ),
            ]
        )
    }

![training curve](calcium_registration_curve.png)

## Heart-centre error on validation phantoms (known perturbations)

"Two passes" runs the network again on the scan as aligned by the first pass and composes the
two transforms (`models/calcium/networks.align`); "as shipped" is the number of passes the
manifest sets.

{
        _table(
            [
                ("n (phantoms x random perturbations)", val["n"]),
                *[
                    (f"{label}, {passes}", val.get(f"heart_error_{key}_mm{suffix}", "n/a"))
                    for label, key in (
                        ("median (mm)", "median"),
                        ("mean (mm)", "mean"),
                        ("95th percentile (mm)", "p95"),
                        ("maximum (mm)", "max"),
                    )
                    for passes, suffix in (
                        ("one pass", "_one_pass"),
                        ("two passes", "_two_passes"),
                        ("as shipped", ""),
                    )
                ],
            ]
        )
    }

The score network is trained with crops displaced by up to +-21 mm in plane and +-20 mm in z,
so errors within that range are covered by design.
""")
    sval = score["validation"]
    (
        weights / "calcium_score.md"
    ).write_text(f"""# Model card: direct coronary calcium score ConvNet

{score_design(score)}

{shared}
## Training

{
        _table(
            [
                ("iterations run / planned", f"{score['iterations_run']} / {score['iterations']}"),
                ("initialised from", score.get("init") or "random"),
                ("batch", score["batch"]),
                ("training crop (z, y, x score voxels)", score.get("patch_zyx", "72 x 64 x 64")),
                (
                    "presence at inference",
                    "soft (probability x correction x prior)"
                    if score.get("presence_threshold") is None
                    else f"hard: counted in full where the probability is at least "
                    f"{score['presence_threshold']}",
                ),
                ("learning rate (one-cycle, AdamW)", f"{score['lr']:g}"),
                ("seed", score["seed"]),
                ("device", score["device"]),
                ("seconds", score["seconds"]),
                (
                    "training / validation phantoms",
                    f"{score['samples_train']} / {score['samples_validation']}",
                ),
                ("validation category accuracy (true heart centre)", sval["category_accuracy"]),
                ("validation MAE total (Agatston)", sval["mae_total"]),
            ]
        )
    }

![training curve](calcium_score_curve.png)

{method_section(score)}
{presence_section(score)}
{region_section(score, bool(reg.get("heart_search")))}

## Evaluation (the whole pipeline: registration, crop, score; both methods)

{evaluation_section(weights)}

## Limits

Trained on synthetic phantoms only (`models/phantoms`): no stents, valve prostheses, pacemaker
leads, motion or beam-hardening artefacts, contrast media or other pathology. Results on real
scans are reported above as measured; the score is an automated estimate, not a diagnosis.
""")


def _total(row: dict) -> str:
    """A real scan's total as the card shows it (None: not scored, contrast gate)."""
    total = row["agatston_total"]
    return "not scored" if total is None else f"{total:.1f}"
