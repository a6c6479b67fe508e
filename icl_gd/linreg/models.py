"""Predictors for in-context linear regression: linear self-attention, H3, LoRA, and the classical baselines.

Every predictor is an `nn.Module` with one call, `model(xs, ys, query_only=False)`: xs (E, B, T, d) and ys (E, B, T)
go in, and the prediction for position i uses positions < i only (dtsip/Garg style), so one evaluation loop and one
test cover trained models, constructions and baselines alike. `query_only=True` returns only the last position,
the query the models are trained on (E, B); otherwise (E, B, T). Position 0 has no context and predicts the
initial y-slot (zero).

Tokens are z = (x, y) in R^D, D = d + 1; a query token is (x, 0). Every weight carries a leading member axis E so
that seeds and grid points train as one batched computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


def tokens(xs: Tensor, ys: Tensor) -> Tensor:
    """Stack features and labels into tokens z = (x, y): (E, B, T, d), (E, B, T) -> (E, B, T, D)."""
    return torch.cat([xs, ys[..., None]], dim=-1)


def prefix_loop(xs: Tensor, ys: Tensor, query_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Prefix predictions from a query-only function by running it on every prefix (a loop over positions).

    query_fn(xs_i, ys_i) predicts the last position of the prompt it is given (E, B), also with no context at all
    (position 0). Used where a prediction
    depends on the whole context non-causally (stacked attention layers, least squares, multi-step GD).
    """
    return torch.stack([query_fn(xs[:, :, : i + 1], ys[:, :, : i + 1]) for i in range(xs.shape[2])], dim=2)


def _init(shape: tuple[int, ...], std: float, generator: torch.Generator | None) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape, generator=generator) * std)


# --------------------------------------------------------------------------------------------- linear attention


@dataclass
class LSAConfig:
    d: int  # feature dimension; tokens are (x, y), width D = d + 1
    layers: int = 1  # stacked LSA layers (von Oswald: k layers can carry k GD steps)
    rank: int | None = None  # key/query width r = rank of W_K^T W_Q; None = full (d + 1)
    members: int = 1  # ensemble members E (grid points x seeds) trained as one batched computation
    init_std: float = 0.1  # std of the initial weights: small, so training starts near the zero predictor
    value_init: str = "identity"  # W_V and P: "identity" (+ noise, residual-style) or "random"; see LSALayer


class LSALayer(nn.Module):
    """One linear self-attention layer (von Oswald et al.): z_t += P W_V sum_{j in ctx} z_j (W_K z_j)^T (W_Q z_t).

    The context tokens are the keys and values, the query is never a key (von Oswald's mask M), and there is no
    softmax and no 1/N: the step size lives in P. Per-member ranks are a mask on the key/query rows, so models of
    different rank r <= r_max still train as one batch.

    Why W_V and P start at the identity by default: the query's signal reaches it by two routes, W = v_y G_x^T
    (full rank) and W = g_y v_x^T (rank one), and having both costs an even-in-y term v_y y^T y g_y^T x_q, so they
    compete. From a fully random start about half the members settle on the rank-one route (a spurious stationary
    point, observed with power-law features); starting P W_V near the identity (v near e_y) selects the full route.
    W_K and W_Q, which carry the preconditioner, always start random.
    """

    def __init__(self, cfg: LSAConfig, generator: torch.Generator | None = None):
        super().__init__()
        E, D = cfg.members, cfg.d + 1
        r = cfg.rank or D
        self.d = cfg.d
        self.wq = _init((E, r, D), cfg.init_std, generator)  # W_Q
        self.wk = _init((E, r, D), cfg.init_std, generator)  # W_K
        self.wv = _init((E, D, D), cfg.init_std, generator)  # W_V
        self.proj = _init((E, D, D), cfg.init_std, generator)  # P
        if cfg.value_init == "identity":
            with torch.no_grad():
                self.wv += torch.eye(D)
                self.proj += torch.eye(D)
        elif cfg.value_init != "random":
            raise ValueError(f"value_init={cfg.value_init!r}; allowed: identity, random")
        self.register_buffer("rank_mask", torch.ones(E, r))  # (E, r) 1 for the rows a member may use

    def set_ranks(self, ranks: Tensor) -> None:
        """Restrict member e to its first ranks[e] key/query rows."""
        r = self.rank_mask.shape[1]
        self.rank_mask.copy_((torch.arange(r)[None, :] < ranks[:, None]).to(self.rank_mask.dtype))

    def qk(self) -> tuple[Tensor, Tensor]:
        """Rank-masked W_Q, W_K (E, r, D)."""
        m = self.rank_mask[:, :, None].to(self.wq.dtype)
        return self.wq * m, self.wk * m

    def kq(self) -> Tensor:
        """Gamma = W_K^T W_Q (E, D, D): the bilinear form between key and query tokens."""
        wq, wk = self.qk()
        return wk.transpose(-1, -2) @ wq

    def pv(self) -> Tensor:
        """P W_V (E, D, D); its last row is the value read out into the y-slot."""
        return self.proj @ self.wv

    def forward(self, z: Tensor, n_ctx: int) -> Tensor:
        """Update every token with attention over the first n_ctx tokens: (E, B, T, D) -> (E, B, T, D)."""
        wq, wk = self.qk()
        ctx = z[:, :, :n_ctx]  # (E, B, N, D)
        k = torch.einsum("erd,ebnd->ebnr", wk, ctx)  # (E, B, N, r)
        q = torch.einsum("erd,ebtd->ebtr", wq, z)  # (E, B, T, r)
        scores = torch.einsum("ebnr,ebtr->ebtn", k, q)  # (E, B, T, N)
        vals = torch.einsum("eij,ebnj->ebni", self.pv(), ctx)  # (E, B, N, D)
        return z + torch.einsum("ebtn,ebni->ebti", scores, vals)


class LSA(nn.Module):
    """A stack of linear self-attention layers that reads its prediction from the query's y-slot."""

    def __init__(self, cfg: LSAConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList([LSALayer(cfg, generator) for _ in range(cfg.layers)])

    def forward(self, xs: Tensor, ys: Tensor, query_only: bool = False, y0: Tensor | None = None) -> Tensor:
        """Prefix predictions (E, B, T), or the query's (E, B). y0 (E, B, T): initial query y-slots (default 0)."""
        y0 = torch.zeros_like(ys) if y0 is None else y0
        if len(self.layers) == 1:
            return self._one_layer(xs, ys, y0, query_only)
        if query_only:
            return self._stack_query(xs, ys, y0[:, :, -1])
        preds = [
            self._stack_query(xs[:, :, : i + 1], ys[:, :, : i + 1], y0[:, :, i]) for i in range(xs.shape[2])
        ]
        return torch.stack(preds, dim=2)  # a loop over positions: each prefix is its own context

    def _stack_query(self, xs: Tensor, ys: Tensor, y0q: Tensor) -> Tensor:
        """Run the whole stack with the last token as the query (E, B): context tokens attend to each other."""
        z = tokens(xs, torch.cat([ys[:, :, :-1], y0q[:, :, None]], dim=-1))  # (E, B, T, D)
        n_ctx = z.shape[2] - 1
        for layer in self.layers:
            z = layer(z, n_ctx)
        return z[:, :, -1, -1]

    def _one_layer(self, xs: Tensor, ys: Tensor, y0: Tensor, query_only: bool) -> Tensor:
        """One layer in closed form: y_hat_i = y0_i + sum_{j<i} (v^T z_j)(W_K z_j)^T (W_Q (x_i, 0)).

        Every position reads the same causal prefix sum, so all T predictions cost about as much as one.
        """
        layer = self.layers[0]
        d = xs.shape[-1]
        wq, wk = layer.qk()
        v = layer.pv()[:, -1, :]  # (E, D) value read into the y-slot
        if (
            query_only
        ):  # only the query: sum the values first, u = sum_j (v^T z_j) z_j, then one bilinear form
            ctx = tokens(xs[:, :, :-1], ys[:, :, :-1])  # (E, B, n, D)
            a = (ctx * v[:, None, None, :]).sum(-1)  # (E, B, n)
            u = (a[..., None] * ctx).sum(2)  # (E, B, D)
            gx = wk.transpose(-1, -2) @ wq[:, :, :d]  # (E, D, d) Gamma restricted to query tokens (x, 0)
            return y0[:, :, -1] + ((u @ gx) * xs[:, :, -1]).sum(-1)
        z = tokens(xs, ys)  # (E, B, T, D)
        a = torch.einsum("ed,ebtd->ebt", v, z)  # (E, B, T)
        k = torch.einsum("erd,ebtd->ebtr", wk, z)  # (E, B, T, r)
        s = torch.cumsum(a[..., None] * k, dim=2) - a[..., None] * k  # (E, B, T, r) exclusive prefix sum
        q = torch.einsum("erd,ebtd->ebtr", wq[:, :, :d], xs)  # (E, B, T, r)
        return y0 + (s * q).sum(-1)

    def preconditioner(self) -> Tensor:
        """Effective W (E, d, d) of a one-layer model: its prediction's odd-in-y part is x_q^T W X^T y.

        With v the read-out row of P W_V and G = Gamma[:, :d], W = v_y G_x^T + g_y v_x^T (the remaining terms are
        even in y and carry no signal about beta; the optimum switches them off).
        """
        if len(self.layers) != 1:
            raise ValueError("an effective preconditioner exists for a one-layer LSA only")
        layer = self.layers[0]
        d = layer.d
        v = layer.pv()[:, -1, :]  # (E, D)
        g = layer.kq()[:, :, :d]  # (E, D, d)
        return v[:, -1, None, None] * g[:, :d, :].transpose(-1, -2) + g[:, d, :, None] * v[:, None, :d]


# ------------------------------------------------------------------------------------------------------------ H3


@dataclass
class H3Config:
    d: int  # feature dimension; tokens are (x, y), width D = d + 1
    context: int  # n: context length the long-convolution filter spans (lags 0..n)
    hidden: int | None = None  # channels; None = d + 1 (at least d are needed to reach any preconditioner)
    members: int = 1  # ensemble members E
    init_std: float = 0.1  # std of the initial projections and filter taps


class H3(nn.Module):
    """The H3-style block of Li et al.: gate(q, longconv(gate(k, v))) read out by a linear head.

    For the token at position i, with channels c: q = W_Q (x_i, 0), g_j = (W_K z_j) * (W_V z_j), and
    y_hat_i = sum_c h_c q_c (f_{c,0} g0_c + sum_{j<i} f_{c,i-j} g_{j,c}), where g0 is the query's own gated token
    (x_i, 0). The per-channel filter f (a direct parameterisation of the SSM kernel) weights the examples by lag;
    that sample weighting is what H3 has beyond linear attention.
    """

    def __init__(self, cfg: H3Config, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        E, D, C = cfg.members, cfg.d + 1, cfg.hidden or cfg.d + 1
        self.wq = _init((E, C, D), cfg.init_std, generator)
        self.wk = _init((E, C, D), cfg.init_std, generator)
        self.wv = _init((E, C, D), cfg.init_std, generator)
        self.filt = _init((E, C, cfg.context + 1), cfg.init_std, generator)  # taps for lags 0..n
        self.head = _init((E, C), cfg.init_std, generator)

    def forward(self, xs: Tensor, ys: Tensor, query_only: bool = False) -> Tensor:
        """Prefix predictions (E, B, T), or the query's (E, B)."""
        d, T = xs.shape[-1], xs.shape[2]
        if self.cfg.context < T - 1:
            raise ValueError(f"prompt has {T - 1} context examples; the filter spans {self.cfg.context}")
        z = tokens(xs, ys)  # (E, B, T, D)
        if query_only:  # only the query's features and one weighted sum over the context
            E, B, n = xs.shape[0], xs.shape[1], T - 1
            ctx = z[:, :, :-1].reshape(E, B * n, -1)  # (E, B*n, D)
            g = (ctx @ self.wk.transpose(1, 2)) * (ctx @ self.wv.transpose(1, 2))  # (E, B*n, C)
            taps = (
                self.filt[:, :, 1 : n + 1].flip(-1).transpose(1, 2)
            )  # (E, n, C): example j sits at lag n - j
            conv = (g.reshape(E, B, n, -1) * taps[:, None]).sum(2)  # (E, B, C)
            xq = xs[:, :, -1]  # (E, B, d)
            q = xq @ self.wq[..., :d].transpose(1, 2)  # (E, B, C) from (x_q, 0)
            g0 = (xq @ self.wk[..., :d].transpose(1, 2)) * (
                xq @ self.wv[..., :d].transpose(1, 2)
            )  # (E, B, C)
            conv = conv + self.filt[:, None, :, 0] * g0
            return (q * conv * self.head[:, None, :]).sum(-1)
        q = torch.einsum("ecd,ebtd->ebtc", self.wq[..., :d], xs)  # (E, B, T, C) from (x, 0)
        g0 = torch.einsum("ecd,ebtd->ebtc", self.wk[..., :d], xs) * torch.einsum(
            "ecd,ebtd->ebtc", self.wv[..., :d], xs
        )  # (E, B, T, C) each position's own gated query token
        g = torch.einsum("ecd,ebtd->ebtc", self.wk, z) * torch.einsum(
            "ecd,ebtd->ebtc", self.wv, z
        )  # (E,B,T,C)
        idx = torch.arange(T)
        lag = idx[:, None] - idx[None, :]  # (T, T) i - j
        toeplitz = self.filt[:, :, lag.clamp(min=0)] * (lag > 0).to(
            self.filt.dtype
        )  # (E, C, T, T) strictly past
        conv = (
            torch.einsum("ecij,ebjc->ebic", toeplitz, g) + self.filt[:, None, None, :, 0] * g0
        )  # (E, B, T, C)
        return torch.einsum("ec,ebtc->ebt", self.head, q * conv)

    def preconditioner(self) -> Tensor:
        """Effective W (E, d, d): the lag-averaged W_l of y_hat_odd = x_q^T sum_j W_{lag j} x_j y_j.

        W_l = sum_c h_c f_{c,l} wq_{c,x} (wv_{c,y} wk_{c,x} + wk_{c,y} wv_{c,x})^T, averaged over lags 1..n (equal to W
        when the filter is flat, as the optimum for exchangeable examples allows).
        """
        d = self.cfg.d
        wq, wk, wv = self.wq[..., :d], self.wk, self.wv
        outer = wv[..., d, None] * wk[..., :d] + wk[..., d, None] * wv[..., :d]  # (E, C, d)
        fbar = self.filt[:, :, 1:].mean(-1)  # (E, C) mean tap over the context lags
        return torch.einsum("ec,eci,ecj->eij", self.head * fbar, wq, outer)


# ---------------------------------------------------------------------------------------------------------- LoRA


class LoRA(nn.Module):
    """A rank-r update W + (alpha/r) B A for a batched weight (E, out, in), as a torch parametrization.

    Registered with `torch.nn.utils.parametrize.register_parametrization(layer, "wq", LoRA(...))` it adds the update
    wherever the layer reads its weight, so the model code is unchanged. Each member has its own rank (a mask on
    the r_max columns of B and rows of A), so ranks 1..r_max adapt as one batch. B starts at zero: the adapted
    model starts equal to the pretrained one (Hu et al.). peft's LoRA wraps nn.Linear (or a 2-D/expert parameter)
    with one rank per module, so it cannot batch ranks per member; this is the same update written for that.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        ranks: Tensor,
        alpha: float,
        init_std: float,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        E, out, inp = shape
        r_max = int(ranks.max())
        self.a = _init((E, r_max, inp), init_std, generator)  # A: down-projection
        self.b = nn.Parameter(torch.zeros(E, out, r_max))  # B: up-projection, zero so the update starts at 0
        mask = (torch.arange(r_max)[None, :] < ranks[:, None]).to(torch.get_default_dtype())  # (E, r_max)
        self.register_buffer("mask", mask)
        self.register_buffer("scale", alpha / ranks.to(torch.get_default_dtype()).clamp_min(1))  # (E,)

    def delta(self) -> Tensor:
        """(E, out, in) the low-rank update."""
        return self.scale[:, None, None] * (self.b * self.mask[:, None, :]) @ self.a

    def forward(self, w: Tensor) -> Tensor:
        return w + self.delta()


# ----------------------------------------------------------------------------------------------------- baselines


class GD(nn.Module):
    """Explicit (preconditioned) gradient descent in context, from beta_0 = w0.

    One step is beta <- beta + W (X^T y - X^T X beta), i.e. GD on (1/2n)|X beta - y|^2 with W = (eta/n) H for a
    preconditioner H. With one step from 0 this is y_hat = x_q^T W X^T y, the predictor of theory.py.
    """

    def __init__(self, precond: Tensor, steps: int = 1, w0: Tensor | None = None):
        super().__init__()
        self.register_buffer("precond", precond)  # (E, d, d)
        self.register_buffer("w0", torch.zeros(precond.shape[:-1]) if w0 is None else w0)  # (E, d)
        self.steps = steps

    def forward(self, xs: Tensor, ys: Tensor, query_only: bool = False) -> Tensor:
        w, w0 = self.precond.to(xs.dtype), self.w0.to(xs.dtype)
        if self.steps == 1 and query_only:  # beta = w0 + W X^T (y - X w0)
            ctx = xs[:, :, :-1]  # (E, B, n, d)
            resid = ys[:, :, :-1] - (ctx * w0[:, None, None, :]).sum(-1)  # (E, B, n)
            beta = w0[:, None, :] + (ctx * resid[..., None]).sum(2) @ w.transpose(-1, -2)  # (E, B, d)
            return (xs[:, :, -1] * beta).sum(-1)
        if self.steps == 1:  # causal prefix sums: every position in one pass
            g = torch.cumsum(xs * ys[..., None], dim=2) - xs * ys[..., None]  # (E, B, T, d) exclusive X^T y
            r0 = torch.einsum("ebtd,ed->ebt", xs, w0)  # w0^T x at every position
            corr = torch.cumsum(xs * r0[..., None], dim=2) - xs * r0[..., None]  # (E, B, T, d) X^T X w0
            beta = w0[:, None, None, :] + torch.einsum("eij,ebtj->ebti", w, g - corr)  # (E, B, T, d)
            return (xs * beta).sum(-1)
        return self._query(xs, ys) if query_only else prefix_loop(xs, ys, self._query)

    def _query(self, xs: Tensor, ys: Tensor) -> Tensor:
        w, ctx, yc = self.precond.to(xs.dtype), xs[:, :, :-1], ys[:, :, :-1]
        gram = torch.einsum("ebni,ebnj->ebij", ctx, ctx)  # (E, B, d, d)
        xty = torch.einsum("ebni,ebn->ebi", ctx, yc)  # (E, B, d)
        beta = self.w0.to(xs.dtype)[:, None, :].expand_as(xty)
        for _ in range(self.steps):
            beta = beta + torch.einsum("eij,ebj->ebi", w, xty - torch.einsum("ebij,ebj->ebi", gram, beta))
        return (xs[:, :, -1] * beta).sum(-1)


JITTER = 1e-10  # relative ridge added to every solve: exact to ~1e-10, minimum-norm in the singular limit


def _psd_solve(gram: Tensor, rhs: Tensor, lam: Tensor) -> Tensor:
    """(gram + lam I)^-1 rhs for symmetric PSD gram (..., k, k), by Cholesky with a tiny relative jitter.

    Collinear contexts (e.g. full task-feature alignment) make the Gram matrix exactly singular; the jitter
    delta = JITTER * tr(gram) / k keeps the factorisation defined, and (G + delta I)^-1 A^T y tends to the
    minimum-norm solution G^+ A^T y as delta -> 0, so lam = 0 still means least squares.
    """
    k = gram.shape[-1]
    delta = JITTER * gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(torch.finfo(gram.dtype).tiny)  # (...)
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    chol = torch.linalg.cholesky(gram + (lam + delta[..., None, None]) * eye)
    return torch.cholesky_solve(rhs, chol)


class Ridge(nn.Module):
    """Ridge regression on the context, min |X b - y|^2 + lam b^T S_b^-1 b (lam = 0: minimum-norm least squares).

    With lam = sigma^2 and S_b the task covariance this is the posterior mean of beta, the Bayes-optimal predictor
    of the i.i.d. Gaussian design. In the whitened variable g = L_b^-1 b, with A = X L_b, it is solved in the primal
    (A^T A + lam I) g = A^T y when there are at least d examples and in the dual g = A^T (A A^T + lam I)^-1 y when
    there are fewer: both are exact for every lam >= 0, and lam = 0 gives the minimum-norm interpolant.
    """

    def __init__(self, lam: Tensor, beta_cov: Tensor):
        super().__init__()
        self.register_buffer("lam", lam)  # (E,)
        self.register_buffer("chol", torch.linalg.cholesky(beta_cov))  # (E, d, d)
        self.whiten = not torch.equal(
            beta_cov, torch.eye(beta_cov.shape[-1], dtype=beta_cov.dtype).expand_as(beta_cov)
        )

    def forward(self, xs: Tensor, ys: Tensor, query_only: bool = False) -> Tensor:
        return self._query(xs, ys) if query_only else prefix_loop(xs, ys, self._query)

    def _query(self, xs: Tensor, ys: Tensor) -> Tensor:
        dt = torch.float64  # near m = d the normal equations are ill-conditioned; float64 keeps them honest
        m, d = xs.shape[2] - 1, xs.shape[-1]
        if m == 0:
            return torch.zeros(xs.shape[:2], dtype=xs.dtype, device=xs.device)
        lam = self.lam.to(dt)[:, None, None, None]  # (E, 1, 1, 1)
        a = xs[:, :, :-1].to(dt)  # (E, B, m, d)
        if self.whiten:  # X L_b; skipped for isotropic tasks (L_b = I)
            a = a @ self.chol.to(dt)[:, None]
        y = ys[:, :, :-1].to(dt)[..., None]  # (E, B, m, 1)
        at = a.transpose(-1, -2)
        # primal with at least d examples, dual (an m x m system) with fewer: gamma (E, B, d, 1)
        gamma = _psd_solve(at @ a, at @ y, lam) if m >= d else at @ _psd_solve(a @ at, y, lam)
        beta = self.chol.to(dt)[:, None] @ gamma if self.whiten else gamma  # (E, B, d, 1)
        return (xs[:, :, -1].to(dt) * beta[..., 0]).sum(-1).to(xs.dtype)


def n_params(model: nn.Module) -> int:
    """Trainable parameters per member."""
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    members = getattr(getattr(model, "cfg", None), "members", 1)
    return math.ceil(total / members)
