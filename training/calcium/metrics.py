"""Agreement statistics between predicted and reference Agatston scores.

The statistics used by the orCaScore challenge (Wolterink et al. 2016) and by de Vos et al.
(2019, "Direct automatic coronary calcium scoring in cardiac and chest CT"):

* `icc_absolute_agreement`: intraclass correlation ICC(2,1) / ICC(A,1), two-way random
  effects, absolute agreement, single measure, on the scores;
* `weighted_kappa`: Cohen's kappa with linear weights on the five risk categories
  (0 / 1-10 / 11-100 / 101-400 / >400, see `models.agatston.risk_category`), with
  `confusion_matrix` and `category_accuracy`;
* `mean_absolute_error` and `bland_altman` (bias and 95 % limits of agreement);
* `bland_altman_plot` and `scatter_plot` write PNG figures;
* `summary` bundles the numbers for one evaluation set.

Arguments are array-likes of equal length, one entry per scan; results are plain Python
floats / ints / dicts so that they can go straight into JSON. Differences are always
predicted - reference.

The plotting functions draw on `matplotlib.figure.Figure` objects attached to the Agg canvas
directly, not through pyplot: the process-wide backend is left alone, no GUI is needed, and no
figure is registered with pyplot, so nothing stays open after the PNG is written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from models.agatston import CATEGORY_NAMES, risk_category, rounded_score

N_CATEGORIES = len(CATEGORY_NAMES)  # 5
DEFAULT_CATEGORY_BOUNDS = (0, 10, 100, 400)
# Tick positions of the log1p score axes, in Agatston units.
_SCORE_TICKS = (0, 1, 10, 100, 400, 1000, 5000, 10000, 20000, 50000, 100000)
_LOA_Z = 1.96


# --------------------------------------------------------------------------- input checks


def _scores(reference: ArrayLike, predicted: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Two finite 1-D float arrays of equal, non-zero length."""
    ref = np.asarray(reference, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    if ref.ndim != 1 or pred.ndim != 1:
        raise ValueError(f"expected 1-D arrays, got shapes {ref.shape} and {pred.shape}")
    if ref.shape != pred.shape:
        raise ValueError(f"reference and predicted differ in length: {ref.size} vs {pred.size}")
    if ref.size == 0:
        raise ValueError("no scores given")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(pred))):
        raise ValueError("scores must be finite")
    return ref, pred


def _categories(values: ArrayLike, n_classes: int, name: str) -> np.ndarray:
    """1-D int64 array of category indices in [0, n_classes)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        as_float = arr.astype(np.float64)
        if not np.all(as_float == np.round(as_float)):
            raise ValueError(f"{name}: categories must be integers")
        arr = as_float
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"{name}: categories must lie in [0, {n_classes - 1}]")
    return arr


def _category_pair(
    reference_categories: ArrayLike, predicted_categories: ArrayLike, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    if n_classes < 2:
        raise ValueError("n_classes must be at least 2")
    ref = _categories(reference_categories, n_classes, "reference_categories")
    pred = _categories(predicted_categories, n_classes, "predicted_categories")
    if ref.shape != pred.shape:
        raise ValueError(f"reference and predicted differ in length: {ref.size} vs {pred.size}")
    if ref.size == 0:
        raise ValueError("no categories given")
    return ref, pred


def _non_negative(*arrays: np.ndarray) -> None:
    for arr in arrays:
        if np.any(arr < 0):
            raise ValueError(
                "log(1 + score) needs scores >= 0; clip negative predictions before plotting"
            )


# --------------------------------------------------------------------------- statistics


def icc_absolute_agreement(reference: ArrayLike, predicted: ArrayLike) -> float:
    """ICC(2,1): two-way random effects, absolute agreement, single measure.

    Shrout & Fleiss (1979) ICC(2,1), McGraw & Wong (1996) ICC(A,1). The n scans are the rows
    (subjects) and the k = 2 raters (reference, predicted) the columns of an n x k table x_ij.
    With row means r_i, column means c_j and grand mean g::

        SSR = k * sum_i (r_i - g)^2              MSR = SSR / (n - 1)
        SSC = n * sum_j (c_j - g)^2              MSC = SSC / (k - 1)
        SSE = sum_ij (x_ij - g)^2 - SSR - SSC    MSE = SSE / ((n - 1)(k - 1))

        ICC = (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)

    Unlike the consistency ICC(C,1) = (MSR - MSE) / (MSR + (k - 1) MSE), a systematic offset
    between the raters (MSC) lowers the value. For k = 2 this equals
    2 s_xy / (s_x^2 + s_y^2 + dbar^2 - s_d^2 / n), with sample (co)variances (ddof 1), dbar the
    mean and s_d^2 the variance of the differences.

    Returns nan when the denominator vanishes: all 2n values identical (zero variance, where
    agreement is undefined rather than perfect), or, with n = 2, a table whose row and column
    means are all equal, e.g. [[0, 1], [1, 0]]. Raises ValueError for fewer than two scans.
    """
    ref, pred = _scores(reference, predicted)
    n, k = ref.size, 2
    if n < 2:
        raise ValueError("ICC needs at least two scans")
    table = np.stack([ref, pred], axis=1)
    grand = table.mean()
    ss_total = float(np.sum((table - grand) ** 2))
    ss_rows = k * float(np.sum((table.mean(axis=1) - grand) ** 2))
    ss_cols = n * float(np.sum((table.mean(axis=0) - grand) ** 2))
    ss_error = max(ss_total - ss_rows - ss_cols, 0.0)
    ms_rows = ss_rows / (n - 1)
    ms_cols = ss_cols / (k - 1)
    ms_error = ss_error / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n
    # The denominator is >= 0 for n >= 2, k = 2; treat round-off-sized values as zero.
    if ss_total == 0.0 or denominator <= 1e-12 * ss_total / (n * k - 1):
        return math.nan
    return float((ms_rows - ms_error) / denominator)


def confusion_matrix(
    reference_categories: ArrayLike, predicted_categories: ArrayLike, n_classes: int = 5
) -> np.ndarray:
    """Counts C[i, j] of scans with reference category i and predicted category j.

    Rows are the reference, columns the prediction; shape (n_classes, n_classes), int64.
    """
    ref, pred = _category_pair(reference_categories, predicted_categories, n_classes)
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (ref, pred), 1)
    return counts


def weighted_kappa(
    reference_categories: ArrayLike, predicted_categories: ArrayLike, n_classes: int = 5
) -> float:
    """Cohen's kappa with linear agreement weights.

    With K = n_classes, N scans, confusion counts C_ij, row totals R_i and column totals S_j::

        w_ij = 1 - |i - j| / (K - 1)
        p_o  = sum_ij w_ij C_ij / N                  (weighted observed agreement)
        p_e  = sum_ij w_ij R_i S_j / N^2             (weighted chance agreement)
        kappa_w = (p_o - p_e) / (1 - p_e)

    Equivalent to 1 - sum v_ij C_ij / sum v_ij E_ij with disagreement weights v = 1 - w, as in
    sklearn's cohen_kappa_score(weights="linear"). Returns nan when p_e = 1, i.e. both raters
    put every scan in one and the same category (kappa is 0 / 0 there).
    """
    counts = confusion_matrix(reference_categories, predicted_categories, n_classes)
    total = counts.sum()
    idx = np.arange(n_classes)
    weights = 1.0 - np.abs(idx[:, None] - idx[None, :]) / (n_classes - 1)
    observed = counts / total
    expected = np.outer(counts.sum(axis=1), counts.sum(axis=0)) / total**2
    p_o = float(np.sum(weights * observed))
    p_e = float(np.sum(weights * expected))
    if p_e >= 1.0 - 1e-12:
        return math.nan
    return (p_o - p_e) / (1.0 - p_e)


def category_accuracy(reference_categories: ArrayLike, predicted_categories: ArrayLike) -> float:
    """Fraction of scans whose predicted category equals the reference category."""
    ref = np.asarray(reference_categories)
    pred = np.asarray(predicted_categories)
    if ref.ndim != 1 or ref.shape != pred.shape or ref.size == 0:
        raise ValueError(
            f"expected two non-empty 1-D arrays of equal length, got {ref.shape}, {pred.shape}"
        )
    return float(np.mean(ref == pred))


def mean_absolute_error(reference: ArrayLike, predicted: ArrayLike) -> float:
    """MAE = (1/n) sum_i |predicted_i - reference_i|, in Agatston units."""
    ref, pred = _scores(reference, predicted)
    return float(np.mean(np.abs(pred - ref)))


def bland_altman(reference: ArrayLike, predicted: ArrayLike, log1p: bool = False) -> dict:
    """Bias and 95 % limits of agreement (Bland & Altman 1986).

    With d_i = predicted_i - reference_i (or log(1 + predicted_i) - log(1 + reference_i) when
    `log1p` is true)::

        bias = mean(d)
        sd   = sqrt(sum (d_i - bias)^2 / (n - 1))
        limits of agreement = bias -/+ 1.96 sd

    Returns {"bias", "sd", "loa_lower", "loa_upper", "n"}; sd and the limits are nan for n = 1.
    On the log1p scale exp(bias) is the typical ratio (1 + predicted) / (1 + reference).
    """
    ref, pred = _scores(reference, predicted)
    if log1p:
        _non_negative(ref, pred)
        ref, pred = np.log1p(ref), np.log1p(pred)
    diff = pred - ref
    bias = float(np.mean(diff))
    sd = float(np.std(diff, ddof=1)) if diff.size > 1 else math.nan
    return {
        "bias": bias,
        "sd": sd,
        "loa_lower": bias - _LOA_Z * sd,
        "loa_upper": bias + _LOA_Z * sd,
        "n": int(diff.size),
    }


def score_categories(scores: ArrayLike) -> np.ndarray:
    """`models.agatston.risk_category` of each score (rounded half up), as int64."""
    return np.array([risk_category(float(s)) for s in np.asarray(scores).ravel()], dtype=np.int64)


def summary(
    reference_scores: ArrayLike,
    predicted_scores: ArrayLike,
    reference_categories: ArrayLike | None = None,
    predicted_categories: ArrayLike | None = None,
) -> dict:
    """All agreement numbers for one evaluation set.

    Categories not given are computed from the scores with `models.agatston.risk_category`
    (five classes on the score rounded half up). Returns::

        {"n", "icc", "weighted_kappa", "category_accuracy", "mae",
         "bland_altman": {"bias", "sd", "loa_lower", "loa_upper", "n"},
         "confusion_matrix": 5 x 5 nested list, rows = reference}

    icc is nan for fewer than two scans and for zero variance; weighted_kappa is nan when all
    scans share one category in both (see the individual functions).
    """
    ref, pred = _scores(reference_scores, predicted_scores)
    ref_cat = score_categories(ref) if reference_categories is None else reference_categories
    pred_cat = score_categories(pred) if predicted_categories is None else predicted_categories
    ref_cat, pred_cat = _category_pair(ref_cat, pred_cat, N_CATEGORIES)
    if ref_cat.size != ref.size:
        raise ValueError("categories and scores differ in length")
    return {
        "n": int(ref.size),
        "icc": icc_absolute_agreement(ref, pred) if ref.size >= 2 else math.nan,
        "weighted_kappa": weighted_kappa(ref_cat, pred_cat, N_CATEGORIES),
        "category_accuracy": category_accuracy(ref_cat, pred_cat),
        "mae": mean_absolute_error(ref, pred),
        "bland_altman": bland_altman(ref, pred),
        "confusion_matrix": confusion_matrix(ref_cat, pred_cat, N_CATEGORIES).tolist(),
    }


# --------------------------------------------------------------------------- plots


def _figure(width_in: float, height_in: float, ncols: int = 1):
    """A pyplot-free figure on the Agg canvas, and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    fig.clear()
    return path


def _bland_altman_panel(ax, ref: np.ndarray, pred: np.ndarray, stats: dict, log: bool) -> None:
    mean = (ref + pred) / 2.0
    diff = pred - ref
    ax.scatter(mean, diff, s=14, alpha=0.7, color="tab:blue", edgecolors="none")
    unit = "" if log else " (Agatston)"
    lines = (
        ("bias", stats["bias"], "-", "tab:red"),
        ("+1.96 SD", stats["loa_upper"], "--", "tab:gray"),
        ("-1.96 SD", stats["loa_lower"], "--", "tab:gray"),
    )
    for label, value, style, colour in lines:
        if not math.isfinite(value):
            continue
        ax.axhline(value, linestyle=style, color=colour, linewidth=1.2)
        ax.annotate(
            f"{label} {value:.3g}",
            xy=(1.0, value),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=8,
            color=colour,
        )
    ax.axhline(0.0, color="black", linewidth=0.6, alpha=0.5)
    if log:
        ax.set_xlabel("mean of log(1 + reference) and log(1 + predicted)")
        ax.set_ylabel("log(1 + predicted) - log(1 + reference)")
        ax.set_title("log scale: log(1 + score)", fontsize=10)
    else:
        ax.set_xlabel(f"mean of reference and predicted{unit}")
        ax.set_ylabel(f"predicted - reference{unit}")
        ax.set_title("linear scale (Agatston)", fontsize=10)
    ax.grid(True, alpha=0.3)


def bland_altman_plot(
    reference: ArrayLike, predicted: ArrayLike, path: str | Path, title: str = ""
) -> Path:
    """Write a 1000 x 500 px PNG with two Bland-Altman panels side by side.

    Left: x = (reference + predicted) / 2, y = predicted - reference, in Agatston units, with
    lines at the bias and at bias -/+ 1.96 SD. Right: the same after log(1 + score), because
    Agatston scores are heavy-tailed and a few large scores dominate the linear panel. Scores
    must be >= 0 (for the log panel). Returns the path written.
    """
    ref, pred = _scores(reference, predicted)
    _non_negative(ref, pred)
    fig, (ax_lin, ax_log) = _figure(10.0, 5.0, ncols=2)
    _bland_altman_panel(ax_lin, ref, pred, bland_altman(ref, pred), log=False)
    _bland_altman_panel(
        ax_log, np.log1p(ref), np.log1p(pred), bland_altman(ref, pred, log1p=True), log=True
    )
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def categories_from_bounds(scores: ArrayLike, bounds: Sequence[int]) -> np.ndarray:
    """Category of each score for inclusive upper bounds b_0 < b_1 < ...: the number of bounds
    that the score, rounded half up, exceeds. With (0, 10, 100, 400) this is `risk_category`.
    """
    rounded = np.array([rounded_score(float(s)) for s in np.asarray(scores).ravel()])
    return np.sum(rounded[:, None] > np.asarray(bounds)[None, :], axis=1).astype(np.int64)


def _category_labels(bounds: Sequence[int]) -> list[str]:
    labels = ["0" if bounds[0] == 0 else f"0-{bounds[0]}"]
    labels += [f"{lo + 1}-{hi}" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    labels.append(f">{bounds[-1]}")
    return labels


def scatter_plot(
    reference: ArrayLike,
    predicted: ArrayLike,
    path: str | Path,
    title: str = "",
    categories_bounds: Sequence[int] = DEFAULT_CATEGORY_BOUNDS,
    icc: float | None = None,
    kappa: float | None = None,
) -> Path:
    """Write a 600 x 600 px PNG of predicted against reference score.

    Both axes show log(1 + score), ticked in Agatston units (0, 1, 10, 100, 400, 1000, 5000,
    ...). The dotted diagonal is the identity; dashed lines mark the category boundaries at
    b + 0.5 for each inclusive upper bound b in `categories_bounds` (0.5, 10.5, 100.5, 400.5 by
    default: categories are taken on scores rounded half up, 0 / 1-10 / 11-100 / 101-400 /
    >400). Markers are coloured by reference category. `icc` and `kappa`, when given, are
    printed in the upper-left corner. Scores must be >= 0. Returns the path written.
    """
    ref, pred = _scores(reference, predicted)
    _non_negative(ref, pred)
    bounds = [int(b) for b in categories_bounds]
    if not bounds or any(b < 0 for b in bounds) or sorted(set(bounds)) != bounds:
        raise ValueError("categories_bounds must be strictly increasing non-negative integers")

    fig, (ax,) = _figure(6.0, 6.0)
    x, y = np.log1p(ref), np.log1p(pred)
    # Axes run to the first tick at or above the largest score (at least 1000).
    top = max(float(ref.max()), float(pred.max()), 1000.0)
    top = next((t for t in _SCORE_TICKS if t >= top), top)
    hi = math.log1p(top) * 1.03
    lo = -0.05 * hi
    ax.plot([lo, hi], [lo, hi], color="black", linestyle=":", linewidth=1.0, label="identity")
    for b in bounds:
        edge = math.log1p(b + 0.5)
        ax.axvline(edge, color="gray", linestyle="--", linewidth=0.8)
        ax.axhline(edge, color="gray", linestyle="--", linewidth=0.8)

    cats = categories_from_bounds(ref, bounds)
    labels = _category_labels(bounds)
    colours = ("tab:green", "tab:olive", "tab:orange", "tab:red", "tab:purple")
    for c, label in enumerate(labels):
        sel = cats == c
        if not np.any(sel):
            continue
        colour = colours[c] if c < len(colours) else f"C{c}"
        ax.scatter(
            x[sel],
            y[sel],
            s=18,
            alpha=0.8,
            color=colour,
            edgecolors="none",
            label=f"reference {label} (n={int(sel.sum())})",
        )

    ticks = [t for t in _SCORE_TICKS if math.log1p(t) <= hi]
    positions = [math.log1p(t) for t in ticks]
    ax.set_xticks(positions, [str(t) for t in ticks], fontsize=8)
    ax.set_yticks(positions, [str(t) for t in ticks], fontsize=8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("reference (Agatston, log(1 + score) axis)")
    ax.set_ylabel("predicted (Agatston, log(1 + score) axis)")
    ax.legend(loc="lower right", fontsize=8)

    notes = [f"n = {ref.size}"]
    if icc is not None:
        notes.append(f"ICC(A,1) = {icc:.3f}")
    if kappa is not None:
        notes.append(f"linear kappa = {kappa:.3f}")
    ax.text(
        0.03,
        0.97,
        "\n".join(notes),
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=9,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"},
    )
    if title:
        ax.set_title(title)
    return _save(fig, path)
