"""Hand-checkable cases for icl_gd.metrics (no model, no files)."""

from __future__ import annotations

import math

import pytest
import torch

from icl_gd import metrics as M

LN2 = math.log(2.0)


def dist(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def topk(p: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    probs, ids = p.topk(k, dim=-1)
    return ids, probs


# ----------------------------------------------------------------------------------------------------------
# Equal distributions: overlap 1, OCS 1, KL/TV/JS 0, agreement 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_equal_distributions(dtype: torch.dtype) -> None:
    p = torch.softmax(torch.randn(4, 50, generator=torch.Generator().manual_seed(0)), -1).to(dtype)
    ids, probs = topk(p, 10)
    for value, expected in [
        (M.topk_overlap(ids, ids), 1.0),
        (M.overlap_cosine(ids, probs, ids, probs), 1.0),
        (M.kl_divergence(p, p), 0.0),
        (M.total_variation(p, p), 0.0),
        (M.js_divergence(p, p), 0.0),
        (M.argmax_agreement(p, p), 1.0),
    ]:
        assert value.shape == (4,)
        assert value.dtype == torch.float64
        torch.testing.assert_close(value, torch.full((4,), expected, dtype=torch.float64), atol=1e-12, rtol=0)


def test_disjoint_topk_gives_zero_overlap_and_ocs() -> None:
    ids_a, ids_b = torch.tensor([[0, 1, 2]]), torch.tensor([[3, 4, 5]])
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    assert M.topk_overlap(ids_a, ids_b).tolist() == [0.0]
    assert M.overlap_cosine(ids_a, probs, ids_b, probs).tolist() == [0.0]


def test_partial_overlap_worked_example() -> None:
    # a's top-3: tokens 7, 3, 9 with p_a = 0.5, 0.3, 0.1
    # b's top-3: tokens 3, 5, 7 with p_b = 0.6, 0.2, 0.1  (ids in another order on purpose)
    # shared S = {3, 7}: overlap@3 = 2/3.
    # restricted to S (order 3, 7): u = p_a = (0.3, 0.5), v = p_b = (0.6, 0.1)
    # u.v = 0.18 + 0.05 = 0.23; |u| = sqrt(0.09 + 0.25) = sqrt(0.34); |v| = sqrt(0.36 + 0.01) = sqrt(0.37)
    # OCS = 0.23 / sqrt(0.34 * 0.37) = 0.23 / sqrt(0.1258) = 0.23 / 0.354683 = 0.648466
    ids_a, probs_a = torch.tensor([[7, 3, 9]]), torch.tensor([[0.5, 0.3, 0.1]])
    ids_b, probs_b = torch.tensor([[3, 5, 7]]), torch.tensor([[0.6, 0.2, 0.1]])
    assert M.topk_overlap(ids_a, ids_b).item() == pytest.approx(2 / 3)
    ocs = M.overlap_cosine(ids_a, probs_a, ids_b, probs_b)
    assert ocs.item() == pytest.approx(0.648466, abs=1e-6)
    assert M.overlap_cosine(ids_b, probs_b, ids_a, probs_a).item() == pytest.approx(ocs.item())


def test_ocs_one_shared_token_is_one_and_rows_are_independent() -> None:
    # row 0 shares only token 1 -> cosine of two 1-vectors = 1; row 1 shares nothing -> 0
    ids_a = torch.tensor([[1, 2], [1, 2]])
    ids_b = torch.tensor([[1, 3], [4, 3]])
    probs = torch.tensor([[0.6, 0.4], [0.6, 0.4]], dtype=torch.float16)
    assert M.overlap_cosine(ids_a, probs, ids_b, probs).tolist() == [1.0, 0.0]
    assert M.topk_overlap(ids_a, ids_b).tolist() == [0.5, 0.0]


def test_kl_two_point_closed_form() -> None:
    # KL((a, 1-a) || (b, 1-b)) = a ln(a/b) + (1-a) ln((1-a)/(1-b))
    a, b = 0.25, 0.6
    expected = a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))
    assert M.kl_divergence(dist([a, 1 - a]), dist([b, 1 - b])).item() == pytest.approx(expected, rel=1e-12)
    # zeros: 0 ln 0 = 0 on the left; a zero on the right is clamped to eps, so KL stays finite
    assert M.kl_divergence(dist([0.0, 1.0]), dist([0.5, 0.5])).item() == pytest.approx(LN2)
    assert M.kl_divergence(dist([1.0, 0.0]), dist([0.0, 1.0])).item() == pytest.approx(-math.log(1e-12))


def test_js_and_tv_are_symmetric_and_bounded() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(3 * torch.randn(16, 30, generator=g), -1)
    q = torch.softmax(3 * torch.randn(16, 30, generator=g), -1)
    js, tv = M.js_divergence(p, q), M.total_variation(p, q)
    torch.testing.assert_close(js, M.js_divergence(q, p))
    torch.testing.assert_close(tv, M.total_variation(q, p))
    assert (js > 0).all() and (js <= LN2).all()
    assert (tv > 0).all() and (tv <= 1).all()
    # disjoint supports reach the upper bounds exactly
    a, b = dist([0.5, 0.5, 0.0, 0.0]), dist([0.0, 0.0, 0.3, 0.7])
    assert M.js_divergence(a, b).item() == pytest.approx(LN2, abs=1e-12)
    assert M.total_variation(a, b).item() == pytest.approx(1.0)
    # TV worked example: 0.5 * (|0.5-0.2| + |0.5-0.8|) = 0.3
    assert M.total_variation(dist([0.5, 0.5]), dist([0.2, 0.8])).item() == pytest.approx(0.3)


def test_js_two_point_closed_form() -> None:
    # p = (1, 0), q = (0.5, 0.5): m = (0.75, 0.25)
    # KL(p||m) = ln(1/0.75); KL(q||m) = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25)
    expected = 0.5 * math.log(1 / 0.75) + 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2.0))
    assert M.js_divergence(dist([1.0, 0.0]), dist([0.5, 0.5])).item() == pytest.approx(expected, rel=1e-12)


def test_entropy() -> None:
    for v in (2, 7, 49152):
        assert M.entropy(torch.full((1, v), 1.0 / v, dtype=torch.float64)).item() == pytest.approx(
            math.log(v)
        )
        assert M.entropy(torch.full((1, v), 1.0 / v)).item() == pytest.approx(
            math.log(v), rel=1e-5
        )  # float32
    assert M.entropy(dist([1.0, 0.0, 0.0])).item() == 0.0  # 0 ln 0 = 0, no NaN
    assert M.entropy(dist([0.5, 0.5, 0.0])).item() == pytest.approx(LN2)


def test_argmax_agreement_and_accuracy() -> None:
    p = dist([0.1, 0.7, 0.2], [0.5, 0.3, 0.2])
    q = dist([0.2, 0.6, 0.2], [0.1, 0.3, 0.6])
    assert M.argmax_agreement(p, q).tolist() == [1.0, 0.0]
    acc = M.accuracy(torch.tensor([5, 3, 9, 9]), torch.tensor([5, 4, 9, 1]))
    assert acc.dtype == torch.float64
    assert acc.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_renormalize() -> None:
    r = M.renormalize(torch.tensor([[0.02, 0.06], [0.0, 0.0]], dtype=torch.float16))
    assert r.dtype == torch.float64
    torch.testing.assert_close(r[0], torch.tensor([0.25, 0.75], dtype=torch.float64), atol=1e-3, rtol=0)
    assert torch.isnan(r[1]).all()  # an all-zero row is flagged, not silently made uniform


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        M.topk_overlap(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))


# ----------------------------------------------------------------------------------------------------------
# Reduction


@pytest.mark.parametrize(
    ("q", "df", "expected"),
    [(0.975, 1, 12.7062), (0.975, 4, 2.7764), (0.975, 10, 2.2281), (0.995, 3, 5.8409), (0.95, 5, 2.0150)],
)
def test_t_quantile_known_values(q: float, df: int, expected: float) -> None:
    assert M.intervals.t_quantile(q, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_tends_to_normal() -> None:
    assert M.intervals.t_quantile(0.975, 10**6) == pytest.approx(1.95996, abs=1e-5)
    assert M.intervals.t_quantile(0.975, 1000) == pytest.approx(1.96234, abs=1e-5)


def test_mean_ci_known_data() -> None:
    # mean 3, sd = sqrt(2.5) = 1.5811, half-width = t_{0.975,4} * sd / sqrt(5) = 2.7764 * 1.5811 / 2.2361 = 1.9632
    mean, lo, hi = M.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == pytest.approx(3.0)
    assert lo == pytest.approx(3.0 - 1.9632, abs=1e-3)
    assert hi == pytest.approx(3.0 + 1.9632, abs=1e-3)


def test_mean_ci_drops_nan_and_edge_cases() -> None:
    with_nan = M.mean_ci(torch.tensor([1.0, float("nan"), 2.0, 3.0, 4.0, 5.0]))
    assert with_nan == pytest.approx(M.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0]))
    mean, lo, hi = M.mean_ci([4.0])
    assert mean == 4.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in M.mean_ci([float("nan")]))
    assert M.mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)  # no spread, no width
    with pytest.raises(ValueError, match="confidence"):
        M.mean_ci([1.0, 2.0], confidence=95)


def test_summarize() -> None:
    s = M.summarize("icl/accuracy", [1.0, 2.0, 3.0, 4.0, 5.0, float("nan")])
    assert set(s) == {"icl/accuracy", "icl/accuracy_ci_lo", "icl/accuracy_ci_hi", "icl/accuracy_n"}
    assert s["icl/accuracy"] == pytest.approx(3.0)
    assert s["icl/accuracy_ci_hi"] - s["icl/accuracy"] == pytest.approx(1.9632, abs=1e-3)
    assert s["icl/accuracy_n"] == 5.0
