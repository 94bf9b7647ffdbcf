"""Report a calcium model on both phantom styles, on cardiac field-of-view crops and on the real
controls (issue 25: a model that is good on one style only is overfit).

python -m training.calcium.evaluate_styles [--styles own,alt] [--n-own 200] [--n-alt 100]
    [--fov] [--fov-resampled] [--n-contrast 0] [--real] [--weights DIR]
    [--method exact|regression|both] [--workers 2] [--out training/calcium/results/styles/]

own: `models.phantoms` cases from the held-out seed 424242 (as training/calcium/evaluate.py),
     scored on the generator's image; `--own-generator 3` makes them with the broad variety
     (generator version 3) instead of version 2.
alt: `training.phantoms_alt` cases (evaluation only, seed 2525), written as DICOM by that
     style's own writer and read back with `node.volume.read_ct`, as `ctnode score` does.
--fov: each alt case also cropped to a 220 mm cardiac field of view (carina to below the apex,
     same voxels) and scored: the share whose category equals the full scan's, and how often
     `heart_outside_field_of_view` is raised on the crop. --fov-resampled also scores the crop
     resampled to 512 x 512.
--n-contrast K: the first K alt cases also as contrast-enhanced images (blood pool 200-450 HU,
     no contrast agent in the header): the share the scorer refuses or flags.
--real: lung_pet_ct_dx_A0001 (both kernels, no coronary calcium: expect 0) and the contrast
     chest CT totalseg_examples/pulmonary_report (expect a contrast flag, no score).

Methods: the scorer may take `method` ("exact": the definition on candidate voxels, decided by
the network; "regression": paper A's direct regression) and give `regression_total` /
`regression_per_artery` / `volume_mm3_total` beside the exact result. A scorer without them
(main before that change) is today's direct regression: its results are reported as
"regression" only. A result the node shows as indeterminate (not scored, or a flag that makes
it untrusted, such as `excess_image_noise` or `heart_outside_field_of_view`: shown_category)
counts as indeterminate, apart from the agreement figures, which are on the determinate cases;
crops agree with their full scan only where both show the same category. A second table gives
the agreement on every measured number, flags aside (`all_measured`): what the network
measured, for comparing two models on the same cases whatever the gates withhold.

Each scored case is appended to OUT/cases.jsonl as it completes; `--report-only` rebuilds the
report from that file (e.g. after a run cut short). Writes OUT/styles.json and OUT/styles.md.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from models.agatston import CATEGORY_NAMES, risk_category
from models.calcium.inference import WEIGHTS_DIR, CalciumScorer
from models.calcium.result import UNTRUSTED_FLAGS
from node.volume import read_ct
from training.calcium import metrics

OWN_SEED = 424242  # held out from training (training/calcium/evaluate.py)
ALT_SEED = 2525
ARTERIES = ("LAD", "LCX", "RCA")
REAL_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
OUTSIDE = "heart_outside_field_of_view"

_scorers: dict[str, CalciumScorer] = {}
_methods: list[str] = []


# --------------------------------------------------------------------------- scoring


def supports_method() -> bool:
    return "method" in inspect.signature(CalciumScorer.__init__).parameters


def scored_methods(method: str) -> list[str]:
    """The methods a run reports: a scorer without `method` is the direct regression."""
    if not supports_method():
        return ["regression"]
    return ["exact", "regression"] if method == "both" else [method]


def load_scorers(weights: Path, method: str, heart_search: bool | None) -> dict:
    if not supports_method():
        return {"regression": CalciumScorer(weights, device="cpu", heart_search=heart_search)}
    return {
        m: CalciumScorer(weights, device="cpu", heart_search=heart_search, method=m)
        for m in scored_methods(method)
    }


def _row(result, total, per_artery) -> dict:
    category = getattr(result, "category", None)
    return {
        "total": None if total is None else float(total),
        "per_artery": None if per_artery is None else {a: float(v) for a, v in per_artery.items()},
        # What the total falls into; None: not scored. Whether it may be shown: shown_category.
        "category": None if category is None or total is None else risk_category(float(total)),
        "flags": list(result.flags),
        "volume_mm3": getattr(result, "volume_mm3_total", None),
        "seconds": round(float(getattr(result, "seconds", 0.0)), 3),
    }


def score_all(ct) -> dict[str, dict]:
    """Every requested method's row for one volume, with the loaded scorers."""
    rows: dict[str, dict] = {}
    for method in _methods:
        if method in rows:
            continue
        result = _scorers[method].score(ct)
        rows[method] = _row(result, result.agatston_total, result.agatston_per_artery)
        regression = getattr(result, "regression_total", None)
        if method == "exact" and "regression" in _methods and regression is not None:
            rows["regression"] = _row(
                result, regression, getattr(result, "regression_per_artery", None)
            )
    return rows


def _init(weights: str, method: str, heart_search: bool | None) -> None:
    import torch

    torch.set_num_threads(1)  # one model per worker process, loaded once
    global _scorers, _methods
    _scorers = load_scorers(Path(weights), method, heart_search)
    _methods = list(_scorers)


def _read_back(case, folder: Path):
    from training.phantoms_alt.dicom import write_series

    write_series(case, folder)
    return read_ct(folder)


def _job(job: dict) -> list[dict]:
    """Score one case (and its variants); one row per scored volume."""
    if job["style"] == "own":
        from models.phantoms.case import CaseOptions, generate_case
        from models.phantoms.variety import variety_for

        variety = variety_for(job.get("generator", 2))
        case = generate_case(job["seed"], job["category"], CaseOptions(variety=variety))
        base = {**job, "set": "own", "truth": case.truth.total,
                "truth_per_artery": case.truth.per_artery}  # fmt: skip
        return [{**base, "scores": score_all(case.grid.to_image(case.image))}]

    from training.phantoms_alt.case import AltOptions, generate_case
    from training.phantoms_alt.variants import contrast_variant, fov_crop, fov_resampled

    contrast = job.get("contrast", False)
    options = AltOptions(matrix=job.get("matrix", 512), contrast=contrast)
    case = generate_case(job["seed"], job["category"], options)
    variants = [("alt", case)]
    if job.get("fov"):
        variants.append(("fov_crop", fov_crop(case)))
    if job.get("fov_resampled"):
        variants.append(("fov_resampled", fov_resampled(case)))
    if contrast:
        variants.append(("contrast", contrast_variant(case)))
    rows = []
    for name, variant in variants:
        row = {"style": "alt", "set": name, "index": job["index"], "seed": job["seed"],
               "category": job["category"], "truth": variant.truth.total,
               "truth_per_artery": variant.truth.per_artery,
               "acquisition": variant.acquisition.to_dict()}  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="ctnode_alt_") as tmp:
            try:
                row["scores"] = score_all(_read_back(variant, Path(tmp)))
            except ValueError as error:  # read_ct refused the series (e.g. no stack chosen)
                row["refused"] = str(error)
        rows.append(row)
    return rows


def score_real(root: Path) -> list[dict]:
    """The real controls with the main process's scorers."""
    controls = [
        (root / "lung_pet_ct_dx_A0001" / name, "0 AU (no coronary calcium)")
        for name in ("series_lung_kernel", "series_soft_kernel")
    ]
    controls.append(
        (
            root / "totalseg_examples" / "pulmonary_report" / "ct_cropped.nii.gz",
            "contrast-enhanced: flagged, no score",
        )  # fmt: skip
    )
    out = []
    for path, expected in controls:
        if not path.exists():
            print(f"real control not found: {path}", file=sys.stderr)
            continue
        row = {"series": f"{path.parent.name}/{path.name}", "expected": expected}
        try:
            row["scores"] = score_all(read_ct(path))
        except ValueError as error:
            row["refused"] = str(error)
        out.append(row)
    return out


# --------------------------------------------------------------------------- report


def shown_category(score: dict) -> int | None:
    """The category the node shows for a scored row: None (indeterminate) when the volume was
    not scored or a flag makes the result untrusted (models.calcium.result.UNTRUSTED_FLAGS),
    whatever the measured number; read from the flags, so rows of earlier runs are judged
    the same way."""
    if score["category"] is None or any(flag in UNTRUSTED_FLAGS for flag in score["flags"]):
        return None
    return score["category"]


def _contrast_flagged(row: dict, method: str) -> bool:
    if "refused" in row:
        return True
    score = row["scores"][method]
    return score["category"] is None or any("contrast" in f for f in score["flags"])


def summarise(rows: list[dict], methods: list[str]) -> dict:
    """Agreement per set and method, FOV agreement, contrast refusals."""
    report: dict = {}
    for name in ("own", "alt", "fov_crop", "fov_resampled"):
        subset = [r for r in rows if r["set"] == name]
        if not subset:
            continue
        report[name] = {}
        for method in methods:
            scored = [r for r in subset if "scores" in r and method in r["scores"]]
            determinate = [r for r in scored if shown_category(r["scores"][method]) is not None]
            flags: dict[str, int] = {}
            for r in scored:
                for flag in r["scores"][method]["flags"]:
                    flags[flag] = flags.get(flag, 0) + 1
            entry = {
                "n": len(subset),
                "refused": len(subset) - len(scored),
                "indeterminate": len(scored) - len(determinate),
                "flag_counts": flags,
            }
            entry.update(agreement(determinate, method))
            # The same on every measured number, flags aside: what the network measured
            # whatever the quality gates then show, so that two models are compared on the
            # same cases even where a gate withholds a category.
            measured = [r for r in scored if r["scores"][method]["total"] is not None]
            entry["all_measured"] = {"n": len(measured), **agreement(measured, method)}
            report[name][method] = entry
    if any(r["set"] == "fov_crop" for r in rows):
        report["fov_agreement"] = {m: fov_agreement(rows, m) for m in methods}
    contrast = [r for r in rows if r["set"] == "contrast"]
    if contrast:
        report["contrast"] = {
            m: {
                "n": len(contrast),
                "flagged_or_refused": sum(_contrast_flagged(r, m) for r in contrast),
            }
            for m in methods
        }
    return report


def agreement(rows: list[dict], method: str) -> dict:
    """Score agreement (metrics.summary) and per-artery ICC of scored rows; empty under two."""
    if len(rows) < 2:
        return {}
    truth = [r["truth"] for r in rows]
    predicted = [max(r["scores"][method]["total"], 0.0) for r in rows]
    per_artery = {
        a: metrics.icc_absolute_agreement(
            [r["truth_per_artery"][a] for r in rows],
            [(r["scores"][method]["per_artery"] or {}).get(a, 0.0) for r in rows],
        )
        for a in ARTERIES
    }
    return {"summary": metrics.summary(truth, predicted), "per_artery_icc": per_artery}


def fov_agreement(rows: list[dict], method: str) -> dict:
    """Crop vs full scan of the same alt case, as the node shows them: an indeterminate crop
    never agrees; pairs whose full scan is indeterminate are counted apart (there is no
    category to keep)."""
    full = {r["index"]: r for r in rows if r["set"] == "alt" and "scores" in r}
    pairs = [(full[r["index"]], r) for r in rows
             if r["set"] == "fov_crop" and "scores" in r and r["index"] in full]  # fmt: skip
    if not pairs:
        return {"n": 0}
    full_indeterminate = [p for p in pairs if shown_category(p[0]["scores"][method]) is None]
    pairs = [p for p in pairs if shown_category(p[0]["scores"][method]) is not None]
    if not pairs:
        return {"n": 0, "full_scan_indeterminate": len(full_indeterminate)}
    same_as_full, same_as_truth, outside_crop, outside_full, lost = 0, 0, 0, 0, 0
    for whole, crop in pairs:
        w, c = whole["scores"][method], crop["scores"][method]
        same_as_full += shown_category(c) == shown_category(w)
        same_as_truth += shown_category(c) == risk_category(whole["truth"])
        outside_crop += OUTSIDE in c["flags"]
        outside_full += OUTSIDE in w["flags"]
        lost += abs(crop["truth"] - whole["truth"]) > 1e-6
    n = len(pairs)
    return {
        "n": n,
        "same_category_as_full_scan": same_as_full / n,
        "same_category_as_full_truth": same_as_truth / n,
        "heart_outside_flag_on_crop": outside_crop,
        "heart_outside_flag_on_full": outside_full,
        "crops_whose_truth_differs": lost,
        "full_scan_indeterminate": len(full_indeterminate),
    }


def _f(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value != value:
        return "nan"
    return f"{value:.{digits}f}"


def markdown(report: dict, real: list[dict], methods: list[str], header: str) -> str:
    lines = [header, "",
             "| set | method | n | refused | indeterminate | ICC(A,1) | weighted kappa | "
             "accuracy | MAE (AU) | bias [95 % LoA] (AU) | flags |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    titles = {"own": "own style (models.phantoms, seed 424242)",
              "alt": "second style (phantoms_alt, DICOM)", "fov_crop": "alt, cardiac FOV crop",
              "fov_resampled": "alt, cardiac FOV 512"}  # fmt: skip
    for name, title in titles.items():
        for method in methods:
            entry = report.get(name, {}).get(method)
            if entry is None:
                continue
            s = entry.get("summary", {})
            ba = s.get("bland_altman", {})
            loa = (f"{_f(ba.get('bias'), 1)} [{_f(ba.get('loa_lower'), 1)}, "
                   f"{_f(ba.get('loa_upper'), 1)}]") if ba else "-"  # fmt: skip
            flags = ", ".join(f"{k} {v}" for k, v in sorted(entry["flag_counts"].items())) or "none"
            lines.append(
                f"| {title} | {method} | {entry['n']} | {entry['refused']} | "
                f"{entry['indeterminate']} | {_f(s.get('icc'))} | {_f(s.get('weighted_kappa'))} | "
                f"{_f(s.get('category_accuracy'))} | {_f(s.get('mae'), 1)} | {loa} | {flags} |"
            )
    measured_rows = []
    for name, title in titles.items():
        for method in methods:
            measured = report.get(name, {}).get(method, {}).get("all_measured")
            if not measured or "summary" not in measured:
                continue
            s, arteries = measured["summary"], measured["per_artery_icc"]
            measured_rows.append(
                f"| {title} | {method} | {measured['n']} | {_f(s.get('icc'))} | "
                f"{_f(s.get('weighted_kappa'))} | {_f(s['bland_altman']['bias'], 1)} | "
                + " / ".join(_f(arteries[a], 2) for a in ARTERIES)
                + " |"
            )
    if measured_rows:
        lines += ["", "Every measured number, flags aside (what the network measured, whatever "
                  "the gates show):", "",
                  "| set | method | measured | ICC(A,1) | weighted kappa | bias (AU) | "
                  "ICC LAD / LCX / RCA |", "|---|---|---|---|---|---|---|", *measured_rows]  # fmt: skip
    for method, fov in report.get("fov_agreement", {}).items():
        if fov.get("n"):
            lines += ["", f"Cardiac FOV crops ({method}, n={fov['n']} whose full scan has a "
                      f"category; {fov.get('full_scan_indeterminate', 0)} more indeterminate): "
                      f"shown category equal to the full scan's "
                      f"{100 * fov['same_category_as_full_scan']:.1f} %, to the full scan's "
                      f"truth {100 * fov['same_category_as_full_truth']:.1f} %; "
                      f"`{OUTSIDE}` on {fov['heart_outside_flag_on_crop']} crops "
                      f"({fov['heart_outside_flag_on_full']} full scans)."]  # fmt: skip
    for method, c in report.get("contrast", {}).items():
        lines += ["", f"Contrast-enhanced alt cases ({method}): {c['flagged_or_refused']} of "
                  f"{c['n']} flagged or refused."]  # fmt: skip
    if real:
        lines += ["", "| real control | expected | method | Agatston | category | flags |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for row in real:
            if "refused" in row:
                lines.append(f"| {row['series']} | {row['expected']} | - | refused: "
                             f"{row['refused'][:80]} | - | - |")  # fmt: skip
                continue
            for method, s in row["scores"].items():
                shown = shown_category(s)
                category = "indeterminate" if shown is None else CATEGORY_NAMES[shown]
                lines.append(f"| {row['series']} | {row['expected']} | {method} | "
                             f"{_f(s['total'], 1)} | {category} | {', '.join(s['flags']) or 'none'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def figures(rows: list[dict], methods: list[str], out: Path) -> None:
    for name in ("own", "alt", "fov_crop"):
        for method in methods:
            chosen = [r for r in rows if r["set"] == name and "scores" in r
                      and r["scores"].get(method, {}).get("category") is not None]  # fmt: skip
            if len(chosen) < 2:
                continue
            truth = [r["truth"] for r in chosen]
            predicted = [max(r["scores"][method]["total"], 0.0) for r in chosen]
            s = metrics.summary(truth, predicted)
            metrics.scatter_plot(truth, predicted, out / f"scatter_{name}_{method}.png",
                                 f"{name}, {method}", icc=s["icc"], kappa=s["weighted_kappa"])  # fmt: skip


# --------------------------------------------------------------------------- main


def plan_jobs(args) -> list[dict]:
    jobs = []
    styles = [s.strip() for s in args.styles.split(",") if s.strip()]
    if "own" in styles and args.n_own:
        from models.phantoms.plan import case_plan

        jobs += [{"style": "own", "index": i, "seed": s, "category": c,
                  "generator": args.own_generator}
                 for i, s, c in case_plan(args.n_own, OWN_SEED)]  # fmt: skip
    if "alt" in styles and args.n_alt:
        from training.phantoms_alt.output import plan

        jobs += [{"style": "alt", "index": i, "seed": s, "category": c, "fov": args.fov,
                  "fov_resampled": args.fov_resampled, "contrast": i < args.n_contrast,
                  "matrix": args.alt_matrix}
                 for i, s, c in plan(args.n_alt, args.alt_seed)]  # fmt: skip
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calcium.evaluate_styles")
    parser.add_argument("--styles", default="own,alt")
    parser.add_argument("--n-own", type=int, default=200)
    parser.add_argument("--own-generator", type=int, choices=(2, 3, 4), default=2,
                        help="own-style generator version (3: the broad variety; 4: with fat "
                        "around the heart)")  # fmt: skip
    parser.add_argument("--n-alt", type=int, default=100)
    parser.add_argument("--alt-seed", type=int, default=ALT_SEED)
    parser.add_argument("--alt-matrix", type=int, default=512, help="alt in-plane matrix")
    parser.add_argument("--fov", action="store_true", help="also score cardiac-FOV crops (alt)")
    parser.add_argument("--fov-resampled", action="store_true",
                        help="also score the crops resampled to 512 x 512")  # fmt: skip
    parser.add_argument("--n-contrast", type=int, default=0,
                        help="score the first K alt cases also contrast-enhanced")  # fmt: skip
    parser.add_argument("--real", action="store_true", help="also score the real controls")
    parser.add_argument("--real-root", type=Path, default=REAL_ROOT)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--method", choices=("exact", "regression", "both"), default="both")
    parser.add_argument("--heart-search", action=argparse.BooleanOptionalAction)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("training/calcium/results/styles"))
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the report from OUT/cases.jsonl")  # fmt: skip
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "cases.jsonl"
    started = time.time()
    methods = scored_methods(args.method)
    real_file = args.out / "real.json"
    real = json.loads(real_file.read_text()) if args.report_only and real_file.exists() else []
    if args.real and not args.report_only:  # first: a run cut short still has them
        _init(str(args.weights), args.method, args.heart_search)
        real = score_real(args.real_root)
        real_file.write_text(json.dumps(real, indent=1) + "\n")
    if not args.report_only:
        jobs = plan_jobs(args)
        log.write_text("")
        init = (str(args.weights), args.method, args.heart_search)
        with ProcessPoolExecutor(args.workers, initializer=_init, initargs=init) as pool:
            for done, rows in enumerate(pool.map(_job, jobs), start=1):
                with log.open("a") as fp:
                    for row in rows:
                        fp.write(json.dumps(row) + "\n")
                print(f"[{done}/{len(jobs)}] {rows[0]['style']} {rows[0]['index']} "
                      f"({time.time() - started:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    report = summarise(rows, methods)
    manifest = json.loads((args.weights / "calcium_manifest.json").read_text())
    model = f"{manifest.get('name', 'calcium')} {manifest.get('version', '')}".strip()
    header = (f"# Calcium model {model} on both phantom styles\n\n"
              f"Methods: {', '.join(methods)} (scorer takes `method`: {supports_method()}). "
              f"{platform.machine()}, {args.workers} worker(s), CPU.")  # fmt: skip
    result = {"model": model, "methods": methods, "method_supported": supports_method(),
              "own_seed": OWN_SEED, "own_generator": args.own_generator,
              "alt_seed": args.alt_seed, "report": report, "real": real,
              "seconds": round(time.time() - started, 1)}  # fmt: skip
    (args.out / "styles.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "styles.md").write_text(markdown(report, real, methods, header))
    figures(rows, methods, args.out)
    print((args.out / "styles.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
