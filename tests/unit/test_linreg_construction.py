"""The von Oswald construction equals GD; every predictor honours the shared prefix-prediction call."""

import pytest
import torch

from icl_gd.linreg.constructions import (
    GDConstruction,
    gd_weights,
    golden_section,
    load_lsa,
    one_step_line_search,
)
from icl_gd.linreg.data import TaskSpec, sample_tasks
from icl_gd.linreg.models import GD, H3, LSA, H3Config, LSAConfig, Ridge

F64 = torch.float64
E, B, D, N = 3, 16, 4, 7
TOL = 1e-5  # the bar; float64 gives ~1e-14


@pytest.fixture
def prompts():
    """Random float64 prompts (not even linear data): the identities must hold on any input."""
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(E, B, N + 1, D, generator=g, dtype=F64)
    ys = torch.randn(E, B, N + 1, generator=g, dtype=F64)
    return xs, ys


@pytest.fixture
def gd_setup():
    g = torch.Generator().manual_seed(1)
    lr = torch.rand(E, generator=g, dtype=F64) + 0.1
    w0 = torch.randn(E, D, generator=g, dtype=F64)
    precond = torch.eye(D, dtype=F64) + 0.3 * torch.randn(E, D, D, generator=g, dtype=F64)
    return lr, w0, precond


def _explicit_gd(xs, ys, lr, w0, precond, steps):
    """Plain-loop GD on (1/2n)|X b - y|^2 (n fixed to N) for the query, one task at a time: the reference."""
    out = torch.zeros(E, B, dtype=F64)
    for e in range(E):
        for b in range(B):
            x, y = xs[e, b, :-1], ys[e, b, :-1]
            beta = w0[e].clone()
            for _ in range(steps):
                beta = beta - lr[e] * precond[e] @ (x.T @ (x @ beta - y)) / N
            out[e, b] = xs[e, b, -1] @ beta
    return out


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_construction_equals_gd_steps(prompts, gd_setup, steps):
    xs, ys = prompts
    lr, w0, _ = gd_setup
    eye = torch.eye(D, dtype=F64).expand(E, D, D)
    lsa = GDConstruction(N, lr, eye, w0, layers=steps)
    err = (lsa(xs, ys, query_only=True) - _explicit_gd(xs, ys, lr, w0, eye, steps)).abs().max()
    assert err < TOL


def test_construction_matches_gd_at_every_prefix(prompts, gd_setup):
    xs, ys = prompts
    lr, w0, precond = gd_setup
    for steps in (1, 2):
        lsa = GDConstruction(N, lr, precond, w0, layers=steps)
        gd = GD((lr / N)[:, None, None] * precond, steps=steps, w0=w0)
        assert (lsa(xs, ys) - gd(xs, ys)).abs().max() < TOL


def test_von_oswald_weights_are_the_paper_s():
    d, n = 3, 5
    w = gd_weights(
        n, torch.tensor([0.5], dtype=F64), torch.eye(d, dtype=F64)[None], torch.zeros(1, d, dtype=F64)
    )
    top = torch.zeros(d + 1, d + 1, dtype=F64)
    top[:d, :d] = torch.eye(d)
    assert torch.equal(w["wk"][0], top) and torch.equal(w["wq"][0], top)  # W_K = W_Q = [[I, 0], [0, 0]]
    assert w["wv"][0, d, d] == -1 and w["wv"][0, :d].abs().sum() == 0  # W_V = [[0, 0], [W0, -I]], W0 = 0
    assert torch.allclose(w["proj"][0], 0.5 / n * torch.eye(d + 1, dtype=F64))  # P = (eta/N) I


def test_load_lsa_asserts_shapes():
    model = LSA(LSAConfig(d=3, members=2))
    bad = {"wq": torch.zeros(2, 3, 3)}
    with pytest.raises(AssertionError, match="wq"):
        load_lsa(model, [bad])


def test_one_layer_fast_path_equals_generic_attention(prompts):
    xs, ys = prompts
    one = LSA(LSAConfig(D, layers=1, members=E), torch.Generator().manual_seed(2)).to(F64)
    generic = [
        one._stack_query(xs[:, :, : i + 1], ys[:, :, : i + 1], torch.zeros(E, B, dtype=F64))
        for i in range(N + 1)
    ]
    assert (one(xs, ys) - torch.stack(generic, dim=2)).abs().max() < 1e-12


def _predictors():
    g = torch.Generator().manual_seed(3)
    eye = torch.eye(D, dtype=F64).expand(E, D, D).clone()
    return {
        "lsa": LSA(LSAConfig(D, members=E), g).to(F64),
        "lsa_rank2": LSA(LSAConfig(D, rank=2, members=E), g).to(F64),
        "lsa_stack": LSA(LSAConfig(D, layers=2, members=E), g).to(F64),
        "h3": H3(H3Config(D, N, members=E), g).to(F64),
        "gd": GD(0.1 * eye),
        "gd_3": GD(0.05 * eye, steps=3),
        "construction": GDConstruction(N, torch.full((E,), 0.3, dtype=F64), eye),
        "ridge": Ridge(torch.full((E,), 0.5, dtype=F64), eye),
        "least_squares": Ridge(torch.zeros(E, dtype=F64), eye),
    }


@pytest.mark.parametrize("name", list(_predictors()))
def test_shared_call_query_only_and_causality(prompts, name):
    xs, ys = prompts
    model = _predictors()[name]
    with torch.no_grad():
        full = model(xs, ys)
        assert full.shape == (E, B, N + 1)
        assert (model(xs, ys, query_only=True) - full[:, :, -1]).abs().max() < 1e-10
        i = N // 2  # perturbing label i must not move predictions at positions <= i
        ys2 = ys.clone()
        ys2[:, :, i] += 10.0
        assert (model(xs, ys2)[:, :, : i + 1] - full[:, :, : i + 1]).abs().max() < 1e-10


def test_effective_preconditioner_is_the_odd_part(prompts):
    """The part of a one-layer LSA's prediction that is odd in y equals x_q^T W X^T y for W = preconditioner()."""
    xs, ys = prompts
    lsa = LSA(LSAConfig(D, members=E), torch.Generator().manual_seed(4)).to(F64)
    h3 = H3(H3Config(D, N, members=E), torch.Generator().manual_seed(5)).to(F64)
    with torch.no_grad():
        h3.filt[:, :, 1:] = 0.7  # a flat filter: H3's lag weights are then one preconditioner
    for model in (lsa, h3):
        with torch.no_grad():
            odd = (model(xs, ys, query_only=True) - model(xs, -ys, query_only=True)) / 2
            w = model.preconditioner()
        pred = torch.einsum("ebi,eij,ebnj,ebn->eb", xs[:, :, -1], w, xs[:, :, :-1], ys[:, :, :-1])
        assert (odd - pred).abs().max() < 1e-12


def test_line_searches():
    c = golden_section(
        lambda x: (x - torch.tensor([0.3, 2.0])) ** 2, torch.zeros(2), torch.full((2,), 5.0), 60
    )
    assert torch.allclose(c, torch.tensor([0.3, 2.0]), atol=1e-6)
    eye = torch.eye(D, dtype=F64).expand(1, D, D)
    zero = torch.zeros(1, dtype=F64)
    spec = TaskSpec(eye.clone(), eye.clone(), zero + 0.5, zero, zero)
    xs, ys, _ = sample_tasks(spec, N, 200_000, torch.Generator().manual_seed(0), dtype=F64)
    c_hat = one_step_line_search(xs, ys)
    assert float(c_hat) == pytest.approx(
        1 / (N + D + 1 + 0.5), rel=0.02
    )  # the optimal step in isotropic data
