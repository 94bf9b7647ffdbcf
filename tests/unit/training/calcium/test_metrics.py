"""Agreement statistics for Agatston scores (training/calcium/metrics.py).

Every expected number is worked out by hand in the comments, from the defining formulas; none
is taken from the code under test.
"""

from __future__ import annotations

import math

import matplotlib.image as mpimg
import numpy as np
import pytest

from models.agatston import risk_category
from training.calcium.metrics import (
    bland_altman,
    bland_altman_plot,
    categories_from_bounds,
    category_accuracy,
    confusion_matrix,
    icc_absolute_agreement,
    mean_absolute_error,
    scatter_plot,
    summary,
    weighted_kappa,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# --------------------------------------------------------------------------- ICC(A,1)


def test_icc_two_rater_example_by_hand():
    ref = [2, 4, 6, 8]
    pred = [3, 4, 8, 9]
    # n = 4 subjects, k = 2 raters. Row means 2.5, 4, 7, 8.5; column means 5, 6;
    # grand mean g = (20 + 24) / 8 = 5.5.
    # SSR = k * sum (r_i - g)^2 = 2 * (3^2 + 1.5^2 + 1.5^2 + 3^2) = 2 * 22.5 = 45
    # SSC = n * sum (c_j - g)^2 = 4 * (0.5^2 + 0.5^2) = 2
    # SST = sum (x - g)^2: reference 12.25 + 2.25 + 0.25 + 6.25 = 21,
    #                      predicted  6.25 + 2.25 + 6.25 + 12.25 = 27  -> 48
    # SSE = 48 - 45 - 2 = 1
    # MSR = 45 / 3 = 15, MSC = 2 / 1 = 2, MSE = 1 / (3 * 1) = 1/3
    # ICC = (15 - 1/3) / (15 + 1/3 + 2 * (2 - 1/3) / 4) = (44/3) / (97/6) = 88/97
    assert icc_absolute_agreement(ref, pred) == pytest.approx(88 / 97, abs=1e-12)

    # Same value from the k = 2 covariance form 2 s_xy / (s_x^2 + s_y^2 + dbar^2 - s_d^2 / n):
    # deviations (-3, -1, 1, 3) and (-3, -2, 2, 3): s_xy = 22/3, s_x^2 = 20/3, s_y^2 = 26/3;
    # d = (1, 0, 2, 1): dbar = 1, s_d^2 = 2/3.  (44/3) / (46/3 + 1 - 1/6) = 88/97.
    (s_x2, s_xy), (_, s_y2) = np.cov(ref, pred)
    d = np.subtract(pred, ref)
    assert (s_x2, s_xy, s_y2, d.mean(), d.var(ddof=1)) == pytest.approx(
        (20 / 3, 22 / 3, 26 / 3, 1, 2 / 3)
    )
    covariance_form = 2 * s_xy / (s_x2 + s_y2 + d.mean() ** 2 - d.var(ddof=1) / len(d))
    assert icc_absolute_agreement(ref, pred) == pytest.approx(covariance_form, abs=1e-12)


def test_icc_perfect_agreement_is_one():
    scores = [0.0, 3.0, 40.0, 250.0, 1200.0]
    assert icc_absolute_agreement(scores, scores) == pytest.approx(1.0, abs=1e-12)


def test_icc_constant_bias_lowers_absolute_agreement():
    ref = np.array([0.0, 10.0, 50.0, 120.0, 400.0, 900.0])
    pred = ref + 50.0
    icc = icc_absolute_agreement(ref, pred)
    # Consistency would be perfect (the predictions are a pure shift: Pearson r = 1) ...
    assert np.corrcoef(ref, pred)[0, 1] == pytest.approx(1.0)
    # ... but absolute agreement is not. For pred = ref + c: s_xy = s_x^2 = s^2, s_d = 0, so
    # ICC(A,1) = 2 s^2 / (2 s^2 + c^2).
    s2 = np.var(ref, ddof=1)
    assert icc < 1.0
    assert icc == pytest.approx(2 * s2 / (2 * s2 + 50.0**2))


def test_icc_symmetric_in_raters():
    ref = [0.0, 12.0, 95.0, 410.0, 33.0, 7.0]
    pred = [2.0, 8.0, 120.0, 380.0, 40.0, 0.0]
    assert icc_absolute_agreement(ref, pred) == pytest.approx(icc_absolute_agreement(pred, ref))


def test_icc_degenerate_cases():
    # Zero variance: agreement undefined, not perfect.
    assert math.isnan(icc_absolute_agreement([5.0, 5.0, 5.0], [5.0, 5.0, 5.0]))
    # n = 2, rows (0, 1) and (1, 0): MSR = MSC = 0 and the denominator MSE - MSE = 0.
    assert math.isnan(icc_absolute_agreement([0.0, 1.0], [1.0, 0.0]))
    with pytest.raises(ValueError):
        icc_absolute_agreement([1.0], [1.0])
    with pytest.raises(ValueError):
        icc_absolute_agreement([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        icc_absolute_agreement([1.0, np.nan], [1.0, 2.0])


# --------------------------------------------------------------------------- categories


def test_confusion_matrix_orientation():
    # Rows are the reference, columns the prediction.
    cm = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 0], n_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert cm.dtype == np.int64


def _from_counts(counts):
    ref, pred = [], []
    for i, row in enumerate(counts):
        for j, c in enumerate(row):
            ref += [i] * c
            pred += [j] * c
    return ref, pred


def test_weighted_kappa_three_classes_by_hand():
    counts = [[3, 1, 0], [1, 2, 1], [0, 1, 1]]  # N = 10, rows reference
    ref, pred = _from_counts(counts)
    assert confusion_matrix(ref, pred, n_classes=3).tolist() == counts
    # Linear weights for K = 3: w = 1 on the diagonal, 0.5 one apart, 0 two apart.
    # p_o = (3 + 2 + 1) / 10 + 0.5 * (1 + 1 + 1 + 1) / 10 = 0.6 + 0.2 = 0.8
    # Marginals: reference (0.4, 0.4, 0.2), predicted (0.4, 0.4, 0.2)
    # p_e = diagonal 0.16 + 0.16 + 0.04 = 0.36
    #     + 0.5 * (0.4*0.4 + 0.4*0.4 + 0.4*0.2 + 0.2*0.4) = 0.5 * 0.48 = 0.24  -> 0.60
    # kappa = (0.8 - 0.6) / (1 - 0.6) = 0.5
    assert weighted_kappa(ref, pred, n_classes=3) == pytest.approx(0.5, abs=1e-12)


def test_weighted_kappa_five_classes_by_hand():
    ref = [0, 1, 2, 3, 4]
    pred = [0, 2, 2, 3, 3]
    # K = 5: w_ij = 1 - |i - j| / 4. Pairs weigh 1, 0.75, 1, 1, 0.75 -> p_o = 4.5 / 5 = 0.9
    # Reference marginals 0.2 each; predicted (0.2, 0, 0.4, 0.4, 0).
    # p_e = sum_j S_j * sum_i R_i w_ij = 0.2 * sum_j S_j * (column sum of w):
    #   column sums of w: j=0 -> 1+.75+.5+.25+0 = 2.5, j=2 -> 3.5, j=3 -> .25+.5+.75+1+.75 = 3.25
    #   p_e = 0.2 * (0.2*2.5 + 0.4*3.5 + 0.4*3.25) = 0.2 * 3.2 = 0.64
    # kappa = (0.9 - 0.64) / 0.36 = 13/18
    assert weighted_kappa(ref, pred) == pytest.approx(13 / 18, abs=1e-12)


def test_weighted_kappa_perfect_and_degenerate():
    cats = [0, 1, 2, 3, 4, 4, 2]
    assert weighted_kappa(cats, cats) == pytest.approx(1.0)
    # Everyone in one category in both: p_o = p_e = 1, kappa = 0 / 0.
    assert math.isnan(weighted_kappa([0, 0, 0], [0, 0, 0]))
    with pytest.raises(ValueError):
        weighted_kappa([0, 5], [0, 1])
    with pytest.raises(ValueError):
        weighted_kappa([0, 1.5], [0, 1])


def test_weighted_kappa_off_by_one_beats_off_by_two():
    ref = [0, 0, 0, 1, 1, 2, 2, 2]
    near = [0, 0, 1, 1, 1, 2, 2, 1]  # two disagreements, each one category apart
    far = [0, 0, 2, 1, 1, 2, 2, 0]  # the same two disagreements, two categories apart
    assert category_accuracy(ref, near) == category_accuracy(ref, far) == 0.75
    k_near = weighted_kappa(ref, near, n_classes=3)
    k_far = weighted_kappa(ref, far, n_classes=3)
    # near: p_o = (6 + 2 * 0.5) / 8 = 0.875; marginals R = (3, 2, 3)/8, S = (2, 4, 2)/8;
    #   p_e = [sum_i R_i S_i + 0.5 (R0 S1 + R1 S0 + R1 S2 + R2 S1)] / 64
    #       = [6 + 8 + 6 + 0.5 (12 + 4 + 4 + 12)] / 64 = 36 / 64 = 0.5625
    #   kappa = 0.3125 / 0.4375 = 5/7
    # far: p_o = 6 / 8 = 0.75; S = (3, 2, 3)/8; p_e = [9 + 4 + 9 + 0.5 (6 + 6 + 6 + 6)] / 64
    #   = 34 / 64 = 0.53125; kappa = 0.21875 / 0.46875 = 7/15
    assert k_near == pytest.approx(5 / 7, abs=1e-12)
    assert k_far == pytest.approx(7 / 15, abs=1e-12)
    assert k_near > k_far


def test_category_accuracy_and_mae():
    assert category_accuracy([0, 1, 2, 3], [0, 1, 3, 3]) == 0.75
    # |12 - 10| + |18 - 20| + |35 - 30| + |41 - 40| = 2 + 2 + 5 + 1 = 10 -> 2.5
    assert mean_absolute_error([10, 20, 30, 40], [12, 18, 35, 41]) == pytest.approx(2.5)


def test_categories_from_default_bounds_match_risk_category():
    scores = [0, 0.49, 0.5, 1, 10, 10.49, 10.5, 11, 100.4, 100.5, 400, 400.5, 401, 5000]
    expected = [risk_category(s) for s in scores]
    assert categories_from_bounds(scores, (0, 10, 100, 400)).tolist() == expected
    assert expected == [0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4]


# --------------------------------------------------------------------------- Bland-Altman


def test_bland_altman_by_hand():
    stats = bland_altman([10, 20, 30, 40], [12, 18, 35, 41])
    # d = (2, -2, 5, 1): bias = 6/4 = 1.5; deviations (0.5, -3.5, 3.5, -0.5),
    # sum of squares 0.25 + 12.25 + 12.25 + 0.25 = 25, sd = sqrt(25/3) = 5/sqrt(3)
    sd = 5 / math.sqrt(3)
    assert stats["bias"] == pytest.approx(1.5)
    assert stats["sd"] == pytest.approx(sd)
    assert stats["loa_lower"] == pytest.approx(1.5 - 1.96 * sd)
    assert stats["loa_upper"] == pytest.approx(1.5 + 1.96 * sd)
    assert stats["n"] == 4


def test_bland_altman_log1p():
    # log(1 + 3) - log(1 + 1) = log 2 and log(1 + 7) - log(1 + 3) = log 2: bias log 2, sd 0.
    stats = bland_altman([1, 3], [3, 7], log1p=True)
    assert stats["bias"] == pytest.approx(math.log(2))
    assert stats["sd"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        bland_altman([1, 3], [-2, 7], log1p=True)


def _read_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    return mpimg.imread(path)


def test_bland_altman_plot_writes_png(tmp_path):
    import matplotlib.pyplot as plt

    ref = [0, 0, 4, 25, 80, 150, 390, 800, 2500]
    pred = [0, 3, 6, 20, 95, 140, 420, 700, 3100]
    out = bland_altman_plot(ref, pred, tmp_path / "sub" / "ba.png", title="test set")
    assert out == tmp_path / "sub" / "ba.png"
    image = _read_png(out)
    assert abs(image.shape[1] - 1000) <= 10 and abs(image.shape[0] - 500) <= 10
    assert float(np.std(image[..., :3])) > 0  # not a blank canvas
    assert plt.get_fignums() == []  # nothing left open in pyplot


def test_scatter_plot_writes_png(tmp_path):
    ref = [0, 0, 4, 25, 80, 150, 390, 800, 2500]
    pred = [0, 3, 6, 20, 95, 140, 420, 700, 3100]
    out = scatter_plot(ref, pred, tmp_path / "scatter.png", title="test set", icc=0.97, kappa=0.9)
    image = _read_png(out)
    assert abs(image.shape[1] - 600) <= 10 and abs(image.shape[0] - 600) <= 10
    # Without the optional annotations, and with a single point.
    image = _read_png(scatter_plot([5.0], [7.0], tmp_path / "one.png", title="one"))
    assert image.shape[0] > 0
    with pytest.raises(ValueError):
        scatter_plot([1.0], [-1.0], tmp_path / "neg.png", title="negative")


# --------------------------------------------------------------------------- summary


def test_summary_small_example():
    ref = [0.0, 5.0, 50.0, 200.0, 800.0]
    pred = [0.0, 10.6, 50.0, 150.0, 900.0]
    # Categories (rounded half up): reference 0, 1, 2, 3, 4; predicted 0, 2 (10.6 -> 11), 2, 3, 4
    result = summary(ref, pred)
    assert result["n"] == 5
    assert result["category_accuracy"] == pytest.approx(0.8)
    # |0| + |5.6| + |0| + |50| + |100| = 155.6 -> 31.12
    assert result["mae"] == pytest.approx(31.12)
    # K = 5 linear weights. p_o = (4 + 0.75) / 5 = 0.95. R = 0.2 each, S = (0.2, 0, 0.4, 0.2, 0.2);
    # column sums of w: 2.5, -, 3.5, 3.25, 2.5 -> p_e = 0.2 * (0.5 + 1.4 + 0.65 + 0.5) = 0.61
    # kappa = (0.95 - 0.61) / 0.39 = 34/39
    assert result["weighted_kappa"] == pytest.approx(34 / 39, abs=1e-12)
    assert result["icc"] == pytest.approx(icc_absolute_agreement(ref, pred))
    assert 0.9 < result["icc"] < 1.0
    # d = (0, 5.6, 0, -50, 100): bias = 55.6 / 5 = 11.12
    assert result["bland_altman"]["bias"] == pytest.approx(11.12)
    assert result["confusion_matrix"][1] == [0, 0, 1, 0, 0]
    assert all(isinstance(result[key], float) for key in ("icc", "weighted_kappa", "mae"))

    # Given categories are used as they are.
    given = summary(
        ref, pred, reference_categories=[0, 1, 2, 3, 4], predicted_categories=[0, 1, 2, 3, 4]
    )
    assert given["category_accuracy"] == 1.0
    assert given["weighted_kappa"] == pytest.approx(1.0)
