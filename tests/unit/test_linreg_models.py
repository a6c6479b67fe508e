"""Shapes (rank, LoRA, H3), the task sampler, and a short training run against theory."""

import pytest
import torch
from torch.nn.utils import parametrize

from icl_gd.linreg import theory
from icl_gd.linreg.data import TaskSampler, TaskSpec, covariance, sample_tasks
from icl_gd.linreg.evaluate import evaluate
from icl_gd.linreg.models import GD, H3, LSA, H3Config, LoRA, LSAConfig, Ridge
from icl_gd.linreg.train import Schedule, checkpoint_steps, lr_factor, train

F64 = torch.float64


@pytest.fixture
def one_thread():
    """Train as run_job does (method.threads=1): these tensors are too small to share between threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spec(E, d, noise=0.0, x_cov=None, rag=0.0, align=0.0) -> TaskSpec:
    eye = torch.eye(d, dtype=F64).expand(E, d, d).clone()
    full = lambda v: torch.full((E,), float(v), dtype=F64)  # noqa: E731
    return TaskSpec(
        eye if x_cov is None else x_cov.expand(E, d, d).clone(),
        eye.clone(),
        full(noise),
        full(rag),
        full(align),
    )


def test_lsa_rank_shapes_and_masks():
    d, E = 5, 4
    model = LSA(LSAConfig(d, rank=3, members=E)).to(F64)
    layer = model.layers[0]
    assert layer.wq.shape == (E, 3, d + 1) and layer.wk.shape == (E, 3, d + 1)
    assert layer.wv.shape == (E, d + 1, d + 1) and layer.proj.shape == (E, d + 1, d + 1)
    layer.set_ranks(torch.tensor([1, 2, 3, 3]))
    ranks = torch.linalg.matrix_rank(layer.kq().detach()).tolist()
    assert ranks == [1, 2, 3, 3]
    assert (torch.linalg.matrix_rank(model.preconditioner().detach()) <= torch.tensor([2, 3, 4, 4])).all()
    assert LSA(LSAConfig(d, members=E)).layers[0].wq.shape == (E, d + 1, d + 1)  # full rank by default


def test_h3_shapes():
    d, n, E = 4, 6, 3
    model = H3(H3Config(d, n, hidden=7, members=E))
    assert (
        model.wq.shape == (E, 7, d + 1) and model.filt.shape == (E, 7, n + 1) and model.head.shape == (E, 7)
    )
    xs, ys, _ = sample_tasks(_spec(E, d), n, 5, torch.Generator().manual_seed(0))
    assert model(xs, ys).shape == (E, 5, n + 1) and model(xs, ys, query_only=True).shape == (E, 5)
    assert model.preconditioner().shape == (E, d, d)
    with pytest.raises(ValueError, match="filter spans"):
        model(*sample_tasks(_spec(E, d), n + 3, 2, torch.Generator().manual_seed(0))[:2])


def test_lora_shapes_ranks_and_start():
    d, E = 5, 4
    model = LSA(LSAConfig(d, members=E), torch.Generator().manual_seed(0)).to(F64)
    layer = model.layers[0]
    xs, ys, _ = sample_tasks(_spec(E, d), 8, 16, torch.Generator().manual_seed(1), dtype=F64)
    before = model(xs, ys).detach()
    model.requires_grad_(False)
    ranks = torch.tensor([1, 2, 3, 5])
    lora = LoRA(
        tuple(layer.wq.shape), ranks, alpha=1.0, init_std=0.1, generator=torch.Generator().manual_seed(2)
    ).to(F64)
    assert lora.a.shape == (E, 5, d + 1) and lora.b.shape == (E, d + 1, 5)
    parametrize.register_parametrization(layer, "wq", lora)
    assert torch.equal(model(xs, ys).detach(), before)  # B = 0: adaptation starts at the pretrained model
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "layers.0.parametrizations.wq.0.a",
        "layers.0.parametrizations.wq.0.b",
    }
    with torch.no_grad():
        lora.b.normal_()
    assert torch.linalg.matrix_rank(lora.delta()).tolist() == ranks.tolist()
    assert not torch.equal(model(xs, ys).detach(), before)


def test_sampler_is_seeded_and_has_the_right_moments():
    d, n, E = 3, 4, 2
    s = covariance("powerlaw", d, 1.0)
    spec = _spec(E, d, noise=0.25, x_cov=s)
    a = sample_tasks(spec, n, 10, torch.Generator().manual_seed(7))
    b = sample_tasks(spec, n, 10, torch.Generator().manual_seed(7))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    xs, ys, betas = sample_tasks(spec, n, 50_000, torch.Generator().manual_seed(0), dtype=F64)
    assert (
        xs.shape == (E, 50_000, n + 1, d) and ys.shape == (E, 50_000, n + 1) and betas.shape == (E, 50_000, d)
    )
    cov = torch.einsum("ebti,ebtj->ij", xs, xs) / (E * 50_000 * (n + 1))
    assert torch.allclose(cov, s, atol=0.02)
    resid = ys - torch.einsum("ebtd,ebd->ebt", xs, betas)
    assert resid.var().item() == pytest.approx(0.25, rel=0.02)


def test_correlated_designs():
    d, n = 4, 5
    xs, _, betas = sample_tasks(_spec(1, d, rag=0.8), n, 40_000, torch.Generator().manual_seed(0), dtype=F64)
    corr = (xs[..., :-1, 0] * xs[..., -1:, 0]).mean()  # E[x_i,k x_q,k] = alpha
    assert corr.item() == pytest.approx(0.8, abs=0.02)
    xs, _, betas = sample_tasks(
        _spec(1, d, align=0.7), n, 40_000, torch.Generator().manual_seed(0), dtype=F64
    )
    second = torch.einsum("ebti,ebtj->ij", xs, xs) / xs[0, :, :, 0].numel()
    assert torch.allclose(second, torch.eye(d, dtype=F64), atol=0.03)  # marginal E[x x^T] stays I
    along = torch.einsum("ebtd,ebd->ebt", xs, betas / betas.norm(dim=-1, keepdim=True))
    assert along.var().item() == pytest.approx(1 - 0.49 + 0.49 * d, rel=0.03)  # tau^2 along the task


def test_schedule_is_a_pure_function_of_the_step():
    s = Schedule(steps=100, lr=0.1, warmup=10, min_lr_ratio=0.01)
    assert lr_factor(0, s) == pytest.approx(0.1)
    assert lr_factor(10, s) == pytest.approx(1.0)
    assert lr_factor(100, s) == pytest.approx(0.01)
    assert checkpoint_steps(100, 5)[0] == 0 and checkpoint_steps(100, 5)[-1] == 100


@pytest.mark.parametrize("kind", ["lsa", "h3"])
def test_short_training_run_reaches_theory(kind, one_thread):
    """d=4, n=8: a short Adam run on fresh tasks lands within 5% of the optimal one-step PGD risk."""
    d, n, seeds, noise = 4, 8, 2, 0.5
    spec = _spec(seeds, d, noise=noise)
    gen_init = torch.Generator().manual_seed(0)
    model = (
        LSA(LSAConfig(d, members=seeds), gen_init)
        if kind == "lsa"
        else H3(H3Config(d, n, members=seeds), gen_init)
    )
    sampler, gen = TaskSampler(spec, n), torch.Generator().manual_seed(1)
    train(model, lambda: sampler.sample(256, gen)[:2], Schedule(600, 0.02, 50, 0.01), 100, [])
    model.requires_grad_(False)
    c, r_star = theory.isotropic_optimum(d, n, noise)
    eye = torch.eye(d, dtype=F64).expand(seeds, d, d)
    preds = {"model": model, "opt": GD((c * eye).float()), "ridge": Ridge(spec.noise, spec.beta_cov)}
    risks, paired = evaluate(preds, sampler, 32768, 16384, torch.Generator().manual_seed(2), reference="opt")
    mc = risks["model"].mean
    assert ((mc / r_star - 1).abs() < 0.05).all(), f"trained {mc.tolist()} vs theory {r_star:.4f}"
    cv = r_star + paired["model"].mean  # control variate: much tighter
    assert ((cv / r_star - 1).abs() < 0.02).all()
    assert (risks["ridge"].mean < mc).all()  # Bayes ridge beats any one-step GD
    w = model.preconditioner().double()
    cos = torch.nn.functional.cosine_similarity(w.flatten(1), eye.flatten(1), dim=1)
    assert (cos > 0.98).all()


@pytest.mark.parametrize("m", [2, 5, 9])
def test_ridge_matches_the_reference_formulas(m):
    """Bayes ridge (lam > 0, correlated task prior) and min-norm least squares (lam = 0), fewer or more examples than d."""
    d, E, B = 5, 2, 4
    g = torch.Generator().manual_seed(m)
    xs, ys = (
        torch.randn(E, B, m + 1, d, generator=g, dtype=F64),
        torch.randn(E, B, m + 1, generator=g, dtype=F64),
    )
    s = torch.randn(E, d, d, generator=g, dtype=F64)
    s = s @ s.transpose(1, 2) + torch.eye(d, dtype=F64)
    lam = torch.tensor([0.0, 0.7], dtype=F64)
    got = Ridge(lam, s)(xs, ys, query_only=True)
    for e in range(E):
        for b in range(B):
            x, y = xs[e, b, :-1], ys[e, b, :-1]
            if lam[e] == 0:  # minimum S^-1-norm interpolant / least squares
                beta = (
                    s[e] @ x.T @ torch.linalg.pinv(x @ s[e] @ x.T) @ y if m < d else torch.linalg.pinv(x) @ y
                )
            else:  # posterior mean
                beta = torch.linalg.solve(x.T @ x + lam[e] * torch.linalg.inv(s[e]), x.T @ y)
            assert float(got[e, b]) == pytest.approx(float(xs[e, b, -1] @ beta), abs=1e-5)


def test_least_squares_survives_collinear_features():
    d = 5
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(1, 4, 8, 1, generator=g, dtype=F64) * torch.randn(1, 4, 1, d, generator=g, dtype=F64)
    ys = torch.randn(1, 4, 8, generator=g, dtype=F64)
    got = Ridge(torch.zeros(1, dtype=F64), torch.eye(d, dtype=F64)[None])(xs, ys, query_only=True)
    ref = torch.stack([xs[0, i, -1] @ torch.linalg.pinv(xs[0, i, :-1]) @ ys[0, i, :-1] for i in range(4)])
    assert torch.allclose(got[0], ref, atol=1e-6)
