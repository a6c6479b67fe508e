"""Attention weights built by formula: linear self-attention that performs gradient descent in its forward pass.

von Oswald et al. (2023): with tokens z = (x, y) in R^D, D = d + 1,

    W_K = [[I, 0], [0, 0]],  W_Q = [[H^T, 0], [0, 0]],  W_V = [[0, 0], [w0^T, -1]],  P = (eta / n) I,

and the query token (x_q, -w0^T x_q), one LSA layer moves every y-slot by -x^T (eta/n) H X^T (y - X w0): the query's
y-slot becomes -(w0 + Delta)^T x_q, the one-step (preconditioned, H) GD prediction with its sign flipped, and each
context y-slot becomes the residual y_j - Delta^T x_j, so k stacked copies take k GD steps. H = I is the paper's
construction exactly; H = n W* / eta gives Li et al.'s optimal one-step preconditioned GD.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from icl_gd.linreg.models import GD, LSA, LSAConfig


def gd_weights(n: int, lr: Tensor, precond: Tensor, w0: Tensor) -> dict[str, Tensor]:
    """Per-member LSA weights for one GD step: lr (E,), precond H (E, d, d), w0 (E, d) -> each (E, D, D)."""
    E, d = w0.shape
    D = d + 1
    eye = torch.eye(D, dtype=precond.dtype).expand(E, D, D)
    wk = torch.zeros(E, D, D, dtype=precond.dtype)
    wk[:, :d, :d] = torch.eye(d, dtype=precond.dtype)
    wq = torch.zeros(E, D, D, dtype=precond.dtype)
    wq[:, :d, :d] = precond.transpose(-1, -2)
    wv = torch.zeros(E, D, D, dtype=precond.dtype)
    wv[:, d, :d] = w0
    wv[:, d, d] = -1.0
    proj = (lr / n)[:, None, None] * eye
    return {"wq": wq, "wk": wk, "wv": wv, "proj": proj}


def load_lsa(model: LSA, layer_weights: list[dict[str, Tensor]]) -> LSA:
    """Copy constructed weights into an LSA, asserting every shape (as nanoGPT's from_pretrained does)."""
    assert len(layer_weights) == len(model.layers), (
        f"{len(layer_weights)} weight sets for {len(model.layers)} layers"
    )
    with torch.no_grad():
        for layer, weights in zip(model.layers, layer_weights, strict=True):
            for name, w in weights.items():
                p = getattr(layer, name)
                assert p.shape == w.shape, f"{name}: model {tuple(p.shape)} vs constructed {tuple(w.shape)}"
                p.copy_(w)
    return model


class GDConstruction(nn.Module):
    """An LSA stack with von Oswald weights: k layers = k steps of (preconditioned) GD from w0 with step lr.

    Same call as every predictor; it feeds the query y-slot -w0^T x_q and reads the prediction as minus the final
    query y-slot, the sign convention of the construction.
    """

    def __init__(self, n: int, lr: Tensor, precond: Tensor, w0: Tensor | None = None, layers: int = 1):
        super().__init__()
        E, d = precond.shape[0], precond.shape[-1]
        w0 = torch.zeros(E, d, dtype=precond.dtype) if w0 is None else w0
        self.lsa = LSA(LSAConfig(d=d, layers=layers, members=E)).to(precond.dtype)
        load_lsa(self.lsa, [gd_weights(n, lr, precond, w0)] * layers)
        self.lsa.requires_grad_(False)
        self.register_buffer("w0", w0)  # (E, d)
        self.register_buffer("step", (lr / n)[:, None, None] * precond)  # (E, d, d) W of one step
        self.layers = layers

    def preconditioner(self) -> Tensor:
        """W (E, d, d) of one step, (eta/n) H: the construction's prediction is x_q^T W X^T y (from w0 = 0)."""
        if self.layers != 1:
            raise ValueError("an effective preconditioner exists for one step only")
        return self.step

    def forward(self, xs: Tensor, ys: Tensor, query_only: bool = False) -> Tensor:
        y0 = -torch.einsum("ebtd,ed->ebt", xs, self.w0.to(xs.dtype))  # query tokens (x, -w0^T x)
        return -self.lsa.to(xs.dtype)(xs, ys, query_only=query_only, y0=y0)


def one_step_line_search(xs: Tensor, ys: Tensor) -> Tensor:
    """Exact line search for one GD step from 0 on a tuning batch: the c (E,) minimising sum (c s - y_q)^2.

    The prediction c x_q^T X^T y is linear in the step, so the empirical risk is a parabola in c with minimum at
    sum(s y_q) / sum(s^2); the GD learning rate is eta = n c.
    """
    s = torch.einsum("ebd,ebnd,ebn->eb", xs[:, :, -1], xs[:, :, :-1], ys[:, :, :-1])  # (E, B) x_q^T X^T y
    return (s * ys[:, :, -1]).sum(-1) / (s**2).sum(-1)


def golden_section(f: Callable[[Tensor], Tensor], lo: Tensor, hi: Tensor, iters: int) -> Tensor:
    """Per-member golden-section minimisation of a unimodal f: (E,) -> (E,) on [lo, hi] (E,)."""
    inv_phi = (5**0.5 - 1) / 2
    a, b = lo.clone(), hi.clone()
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        left = fc < fd  # the minimum lies in [a, d]
        a, b = torch.where(left, a, c), torch.where(left, d, b)
        c_new, d_new = b - inv_phi * (b - a), a + inv_phi * (b - a)
        c, d = c_new, d_new
        fc, fd = f(c), f(d)
    return (a + b) / 2


def construction_weights(d: int, n: int, lr: float = 1.0) -> dict[str, Tensor]:
    """von Oswald et al.'s LSA weights for one GD step from w0 = 0 with H = I, (D, D) each, D = d + 1, and the
    products that act on the tokens: W_K^T W_Q (the attention scores' bilinear form) and P W_V (what is written)."""
    w = gd_weights(
        n,
        torch.tensor([lr], dtype=torch.float64),
        torch.eye(d, dtype=torch.float64)[None],
        torch.zeros(1, d, dtype=torch.float64),
    )
    w = {k: v[0] for k, v in w.items()}  # the one member
    return {**w, "wk_t_wq": w["wk"].T @ w["wq"], "proj_wv": w["proj"] @ w["wv"]}


def construction_check(
    d: int, n: int, stack: int, tasks: int, generator: torch.Generator
) -> dict[str, float]:
    """On random float64 prompts: the max |error| of the von Oswald LSA against one GD step, of `stack` stacked
    layers against as many steps, and of the preconditioned construction against preconditioned GD (~1e-15)."""
    g = generator
    xs = torch.randn(1, tasks, n + 1, d, generator=g, dtype=torch.float64)
    ys = torch.randn(1, tasks, n + 1, generator=g, dtype=torch.float64)
    lr = torch.rand(1, generator=g, dtype=torch.float64)  # an arbitrary step in (0, 1)
    w0 = torch.randn(1, d, generator=g, dtype=torch.float64)
    precond = torch.randn(1, d, d, generator=g, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64)[None]
    out = {}
    with torch.no_grad():
        for name, h, layers in [
            ("one_step", eye, 1),
            (f"stack{stack}", eye, stack),
            ("preconditioned", precond, 1),
        ]:
            lsa = GDConstruction(n, lr, h, w0, layers=layers)
            gd = GD((lr / n)[:, None, None] * h, steps=layers, w0=w0)
            out[f"construction/{name}_max_abs_err"] = float((lsa(xs, ys) - gd(xs, ys)).abs().max())
    return out
