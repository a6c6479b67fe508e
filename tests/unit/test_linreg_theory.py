"""Closed forms of icl_gd.linreg.theory against Monte Carlo estimates (float64), within a few standard errors."""

import pytest
import torch

from icl_gd.linreg import theory
from icl_gd.linreg.data import TaskSpec, covariance, sample_tasks

D, N = 4, 6
MC_TASKS = 400_000
TOL_SE = (
    4.0  # fixed seeds make these deterministic; 4 standard errors leaves room for the estimate's own noise
)
F64 = torch.float64


def _spec(x_cov, beta_cov, noise=0.0, rag=0.0, align=0.0) -> TaskSpec:
    one = lambda v: torch.tensor([float(v)], dtype=F64)  # noqa: E731
    return TaskSpec(x_cov[None], beta_cov[None], one(noise), one(rag), one(align))


def _mc_risk(spec: TaskSpec, w: torch.Tensor, n: int = N, tasks: int = MC_TASKS, seed: int = 0):
    """Monte Carlo risk of y_hat = x_q^T W X^T y: (mean, standard error)."""
    xs, ys, _ = sample_tasks(spec, n, tasks, torch.Generator().manual_seed(seed), dtype=F64)
    g = torch.einsum("ebtd,ebt->ebd", xs[:, :, :-1], ys[:, :, :-1])
    err2 = (torch.einsum("ebi,ij,ebj->eb", xs[:, :, -1], w, g) - ys[:, :, -1]) ** 2
    return err2.mean().item(), (err2.std() / tasks**0.5).item()


def _assert_close(closed: float, mc: tuple[float, float]) -> None:
    mean, se = mc
    assert abs(closed - mean) < TOL_SE * se, f"closed form {closed:.5f} vs Monte Carlo {mean:.5f} +- {se:.5f}"


def test_isotropic_closed_form_matches_general_formula():
    for d, n, s2 in [(5, 5, 0.0), (10, 40, 0.5), (3, 1, 2.0)]:
        c, r = theory.isotropic_optimum(d, n, s2)
        eye = torch.eye(d, dtype=F64)
        w, r_gen = theory.optimal_preconditioner(eye, eye, torch.tensor(s2, dtype=F64), n)
        assert torch.allclose(w, c * eye, atol=1e-12)
        assert r == pytest.approx(float(r_gen), rel=1e-12)
        assert c == pytest.approx(1 / (n + 1 + d + s2))
        assert r == pytest.approx(d * (d + 1 + s2) / (n + d + 1 + s2) + s2)


def test_isotropic_optimum_against_monte_carlo():
    eye = torch.eye(D, dtype=F64)
    c, r = theory.isotropic_optimum(D, N, 0.5)
    _assert_close(r, _mc_risk(_spec(eye, eye, 0.5), c * eye))


@pytest.fixture(scope="module")
def non_isotropic():
    s = covariance("powerlaw", D, 1.5)
    sb = covariance("powerlaw", D, 0.7) + 0.2 * torch.ones(D, D, dtype=F64)  # correlated task coordinates
    return s, sb, torch.tensor(0.3, dtype=F64)


def test_non_isotropic_optimum_against_monte_carlo(non_isotropic):
    s, sb, s2 = non_isotropic
    w, r = theory.optimal_preconditioner(s, sb, s2, N)
    _assert_close(float(r), _mc_risk(_spec(s, sb, s2), w))


def test_risk_of_any_preconditioner_against_monte_carlo(non_isotropic):
    s, sb, s2 = non_isotropic
    w = 0.05 * torch.randn(D, D, generator=torch.Generator().manual_seed(3), dtype=F64)
    _assert_close(float(theory.preconditioner_risk(w, s, sb, s2, N)), _mc_risk(_spec(s, sb, s2), w))


def test_optimum_is_a_minimum(non_isotropic):
    s, sb, s2 = non_isotropic
    w, r = theory.optimal_preconditioner(s, sb, s2, N)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert (
            theory.preconditioner_risk(w + 1e-3 * torch.randn(D, D, generator=g, dtype=F64), s, sb, s2, N) > r
        )


def test_best_gd_step(non_isotropic):
    s, sb, s2 = non_isotropic
    c, r = theory.best_gd_step(s, sb, s2, N)
    eye = torch.eye(D, dtype=F64)
    assert float(theory.preconditioner_risk(c * eye, s, sb, s2, N)) == pytest.approx(float(r), rel=1e-12)
    for f in (0.9, 1.1):
        assert theory.preconditioner_risk(f * c * eye, s, sb, s2, N) > r
    assert r > theory.optimal_preconditioner(s, sb, s2, N)[1]  # preconditioning helps when S is not isotropic


@pytest.mark.parametrize("alpha", [0.3, 0.8])
def test_rag_closed_form_against_monte_carlo(alpha):
    eye = torch.eye(D, dtype=F64)
    mom = theory.rag_moments(D, N, 0.5, alpha)
    c, r = mom.optimum()
    spec = _spec(eye, eye, 0.5, rag=alpha)
    _assert_close(float(r), _mc_risk(spec, float(c) * eye))
    _assert_close(float(mom.risk(1.3 * c)), _mc_risk(spec, 1.3 * float(c) * eye, seed=1))


@pytest.mark.parametrize("alpha", [0.3, 0.8, 1.0])
def test_alignment_closed_form_against_monte_carlo(alpha):
    eye = torch.eye(D, dtype=F64)
    mom = theory.alignment_moments(D, N, 0.5, alpha)
    c, r = mom.optimum()
    spec = _spec(eye, eye, 0.5, align=alpha)
    _assert_close(float(r), _mc_risk(spec, float(c) * eye))
    _assert_close(float(mom.risk(0.7 * c)), _mc_risk(spec, 0.7 * float(c) * eye, seed=1))


def test_correlated_designs_reduce_to_iid_at_alpha_zero():
    for mom in (theory.rag_moments, theory.alignment_moments):
        c, r = mom(D, N, 0.5, 0.0).optimum()
        c0, r0 = theory.isotropic_optimum(D, N, 0.5)
        assert float(c) == pytest.approx(c0) and float(r) == pytest.approx(r0)


def test_monte_carlo_quadratic_matches_closed_form(non_isotropic):
    s, sb, s2 = non_isotropic
    quad = theory.mc_moments(_spec(s, sb, s2), N, 200_000, 50_000, torch.Generator().manual_seed(0))[0]
    w, r = theory.optimal_preconditioner(s, sb, s2, N)
    w_mc, r_mc = quad.optimum()
    assert float(r_mc) == pytest.approx(float(r), rel=0.02)
    assert float(quad.risk(w)) == pytest.approx(float(r), rel=0.02)
    assert torch.nn.functional.cosine_similarity(w_mc.flatten(), w.flatten(), dim=0) > 0.99


def test_rank_r_optimum(non_isotropic):
    s, sb, s2 = non_isotropic
    _, r_full = theory.optimal_preconditioner(s, sb, s2, N)
    risks = []
    for r in range(1, D + 1):
        w, risk = theory.rank_r_optimum(s, sb, s2, N, r)
        assert torch.linalg.matrix_rank(w) == r
        assert float(theory.preconditioner_risk(w, s, sb, s2, N)) == pytest.approx(float(risk), rel=1e-10)
        risks.append(float(risk))
    assert risks == sorted(risks, reverse=True)
    assert risks[-1] == pytest.approx(float(r_full), rel=1e-10)
    w1, r1 = theory.rank_r_optimum(s, sb, s2, N, 1)
    _assert_close(float(r1), _mc_risk(_spec(s, sb, s2), w1))
    g = torch.Generator().manual_seed(1)
    for _ in range(10):  # no random rank-1 preconditioner beats the optimum
        u, v = torch.randn(D, 1, generator=g, dtype=F64), torch.randn(1, D, generator=g, dtype=F64)
        w_rand = w1 + 0.01 * u @ v
        w_rand = torch.linalg.svd(w_rand)[0][:, :1] @ torch.linalg.svd(w_rand)[0][:, :1].T @ w_rand
        assert theory.preconditioner_risk(w_rand, s, sb, s2, N) >= r1 - 1e-12


def test_isotropic_rank_r_formula():
    eye = torch.eye(D, dtype=F64)
    for r in range(1, D + 1):
        risk = float(theory.rank_r_optimum(eye, eye, torch.tensor(0.5, dtype=F64), N, r)[1])
        assert risk == pytest.approx(D + 0.5 - r * N / (N + D + 1 + 0.5), rel=1e-10)


def test_lora_optimum(non_isotropic):
    s, sb, s2 = non_isotropic
    eye = torch.eye(D, dtype=F64)
    w0 = theory.isotropic_optimum(D, N, 0.3)[0] * eye  # pretrained on isotropic features
    _, r_new = theory.optimal_preconditioner(s, sb, s2, N)
    w, r0 = theory.lora_optimum(w0, s, sb, s2, N, 0)
    assert float(r0) == pytest.approx(float(theory.preconditioner_risk(w0, s, sb, s2, N)), rel=1e-10)
    prev = float(r0)
    for r in range(1, D + 1):
        w, risk = theory.lora_optimum(w0, s, sb, s2, N, r)
        assert torch.linalg.matrix_rank(w - w0) <= r
        assert float(theory.preconditioner_risk(w, s, sb, s2, N)) == pytest.approx(float(risk), rel=1e-10)
        assert float(risk) <= prev + 1e-12
        prev = float(risk)
    assert prev == pytest.approx(float(r_new), rel=1e-10)
