"""Closed-form risks of one-step preconditioned GD in context: pure functions of tensors (float64).

Convention used everywhere (Li, Rawat, Oymak, NeurIPS 2024): with n context examples X (n, d), labels y and a
query x_q, the one-step preconditioned-GD predictor from beta_0 = 0 is

    y_hat = x_q^T W X^T y                        (W absorbs the step size and the 1/n of the loss)

and its risk is R(W) = E (y_hat - y_q)^2, the expected squared error of the query prediction *including* the
label noise of y_q. One linear-attention layer and one H3 block both compute exactly this predictor (plus terms of
even degree in y that the optimum switches off), so the optimal risk over W is their optimal risk too.

I.i.d. Gaussian design, x ~ N(0, S), beta ~ N(0, S_b), eps ~ N(0, s2), g = X^T y (derived with Wick's theorem,
E[x x^T M x x^T] = 2 S M S + tr(M S) S for symmetric M; checked by Monte Carlo in tests/test_linreg_theory.py):

    B = E[g beta^T] = n S S_b
    A = E[g g^T]    = n [ (n + 1) S S_b S + (tr(S_b S) + s2) S ]
    R(W) = s2 + tr(S S_b) - 2 tr(S W B) + tr(S W A W^T)
    W*   = B^T A^-1,   R* = s2 + tr(S S_b) - tr(S B^T A^-1 B)

Isotropic (S = S_b = I): W* = I / (n + d + 1 + s2), R* = d (d + 1 + s2) / (n + d + 1 + s2) + s2.

Rank-r and LoRA: with C = S^1/2 B^T A^-1/2 and M = S^1/2 W A^1/2 (a rank-preserving change of variables),
R(W) = R* + |M - C|_F^2, so by Eckart-Young the best rank-r W truncates the SVD of C, R*_r = R* + sum_{i>r} s_i(C)^2,
and the best rank-r update of a given W0 truncates C - M0: R = R* + sum_{i>r} s_i(C - M0)^2.

RAG and task-feature alignment (isotropic S = S_b = I, see data.py for the designs): the joint law is invariant under
rotations, so by convexity W* = c I and R(c I) = E t^2 + s2 - 2 c E[s t] + c^2 E[s^2] with s = x_q^T X^T y and
t = x_q^T beta; the moments are derived in `rag_moments` and `alignment_moments` (r = |x_q|^2 ~ chi^2_d).
Everything else (a correlated design with a non-isotropic S, or a learned W under RAG/alignment) uses
`mc_moments`: the risk is a quadratic in vec(W) whose coefficients are estimated by Monte Carlo, then solved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from icl_gd.linreg.data import TaskSpec, sample_tasks


def _tr(m: Tensor) -> Tensor:
    return m.diagonal(dim1=-2, dim2=-1).sum(-1)


def _sym_pow(m: Tensor, p: float) -> Tensor:
    """m^p for a batch of symmetric positive definite matrices."""
    lam, q = torch.linalg.eigh(m)
    return q @ torch.diag_embed(lam.clamp_min(0) ** p) @ q.transpose(-1, -2)


def iid_moments(x_cov: Tensor, beta_cov: Tensor, noise: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """(A, B, c0) of the i.i.d. Gaussian design: A = E[g g^T], B = E[g beta^T], c0 = E[y_q^2] = tr(S S_b) + s2.

    Shapes: x_cov, beta_cov (..., d, d), noise (...); returns (..., d, d), (..., d, d), (...).
    """
    s, sb = x_cov, beta_cov
    tr_sbs = _tr(sb @ s)  # (...)
    b = n * s @ sb
    a = n * ((n + 1) * s @ sb @ s + (tr_sbs + noise)[..., None, None] * s)
    return a, b, tr_sbs + noise


def preconditioner_risk(w: Tensor, x_cov: Tensor, beta_cov: Tensor, noise: Tensor, n: int) -> Tensor:
    """R(W) of y_hat = x_q^T W X^T y under the i.i.d. design with n context examples. w (..., d, d) -> (...)."""
    a, b, c0 = iid_moments(x_cov, beta_cov, noise, n)
    return c0 - 2 * _tr(x_cov @ w @ b) + _tr(x_cov @ w @ a @ w.transpose(-1, -2))


def optimal_preconditioner(x_cov: Tensor, beta_cov: Tensor, noise: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """(W*, R*) of one-step preconditioned GD under the i.i.d. design: W* = B^T A^-1."""
    a, b, c0 = iid_moments(x_cov, beta_cov, noise, n)
    w = torch.linalg.solve(a, b).transpose(-1, -2)  # B^T A^-1 (A symmetric)
    return w, c0 - _tr(x_cov @ w @ b)


def isotropic_optimum(d: int, n: int, noise: float) -> tuple[float, float]:
    """(c, R*) with W* = c I for x, beta ~ N(0, I_d): c = 1/(n+d+1+s2), R* = d(d+1+s2)/(n+d+1+s2) + s2."""
    denom = n + d + 1 + noise
    return 1.0 / denom, d * (d + 1 + noise) / denom + noise


def best_gd_step(x_cov: Tensor, beta_cov: Tensor, noise: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """(eta, R) of plain one-step GD, W = eta I, at its best step: eta = tr(S B) / tr(S A) (i.i.d. design)."""
    a, b, c0 = iid_moments(x_cov, beta_cov, noise, n)
    num, den = _tr(x_cov @ b), _tr(x_cov @ a)
    return num / den, c0 - num**2 / den


def _whitened_target(x_cov: Tensor, beta_cov: Tensor, noise: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """(C, S^1/2, A^1/2) of the change of variables M = S^1/2 W A^1/2 used for rank constraints."""
    a, b, _ = iid_moments(x_cov, beta_cov, noise, n)
    s_half, a_half = _sym_pow(x_cov, 0.5), _sym_pow(a, 0.5)
    c = s_half @ b.transpose(-1, -2) @ _sym_pow(a, -0.5)
    return c, s_half, a_half


def _truncate(m: Tensor, r: int) -> tuple[Tensor, Tensor]:
    """(best rank-r approximation, squared singular values beyond r summed) of a batch of matrices."""
    u, sv, vh = torch.linalg.svd(m)
    keep = (torch.arange(sv.shape[-1]) < r).to(sv.dtype)  # (d,)
    return u @ torch.diag_embed(sv * keep) @ vh, (sv**2 * (1 - keep)).sum(-1)


def rank_r_optimum(x_cov: Tensor, beta_cov: Tensor, noise: Tensor, n: int, r: int) -> tuple[Tensor, Tensor]:
    """(W*_r, R*_r): best preconditioner of rank <= r (Eckart-Young in the whitened variables)."""
    c, s_half, a_half = _whitened_target(x_cov, beta_cov, noise, n)
    m, tail = _truncate(c, r)
    w = torch.linalg.solve(s_half, m) @ torch.linalg.inv(a_half)
    _, r_star = optimal_preconditioner(x_cov, beta_cov, noise, n)
    return w, r_star + tail


def lora_optimum(
    w0: Tensor, x_cov: Tensor, beta_cov: Tensor, noise: Tensor, n: int, r: int
) -> tuple[Tensor, Tensor]:
    """(W, R): best W0 + Delta with rank(Delta) <= r on the (new) design; r = 0 gives R(W0)."""
    c, s_half, a_half = _whitened_target(x_cov, beta_cov, noise, n)
    m0 = s_half @ w0 @ a_half
    delta, tail = _truncate(c - m0, r)
    w = w0 + torch.linalg.solve(s_half, delta) @ torch.linalg.inv(a_half)
    _, r_star = optimal_preconditioner(x_cov, beta_cov, noise, n)
    return w, r_star + tail


@dataclass
class ScalarMoments:
    """Moments of s = x_q^T X^T y and t = x_q^T beta that fix R(c I) = tt + noise - 2 c st + c^2 ss."""

    st: Tensor
    ss: Tensor
    tt: Tensor
    noise: Tensor

    def risk(self, c: Tensor | float) -> Tensor:
        return self.tt + self.noise - 2 * c * self.st + c**2 * self.ss

    def optimum(self) -> tuple[Tensor, Tensor]:
        """(c*, R*) over W = c I."""
        return self.st / self.ss, self.tt + self.noise - self.st**2 / self.ss


def rag_moments(d: int, n: int, noise: Tensor | float, alpha: Tensor | float) -> ScalarMoments:
    """RAG design, x_i = alpha x_q + sqrt(1-alpha^2) u_i, isotropic x and beta.

    With r = |x_q|^2 and, given x_q, x_i ~ N(alpha x_q, g2 I), g2 = 1 - alpha^2, a_i = x_q^T x_i:
    E[s t] = n E[a_i^2] = n (alpha^2 E r^2 + g2 E r); for i != j E[a_i a_j x_i^T x_j | x_q] = (alpha^2 r + g2)^2 r;
    for i = j E[a_i^2 |x_i|^2 | x_q] = alpha^4 r^3 + (d+5) alpha^2 g2 r^2 + (d+2) g2^2 r; noise adds s2 E[a_i^2].
    """
    noise, alpha = torch.as_tensor(noise, dtype=torch.float64), torch.as_tensor(alpha, dtype=torch.float64)
    m1, m2, m3 = d, d * (d + 2), d * (d + 2) * (d + 4)  # E r, E r^2, E r^3 for r ~ chi^2_d
    a2, g2 = alpha**2, 1 - alpha**2
    ea2 = a2 * m2 + g2 * m1  # E a_i^2
    diag = a2**2 * m3 + (d + 5) * a2 * g2 * m2 + (d + 2) * g2**2 * m1
    off = a2**2 * m3 + 2 * a2 * g2 * m2 + g2**2 * m1
    ss = n * diag + n * (n - 1) * off + n * noise * ea2
    return ScalarMoments(
        st=n * ea2, ss=ss, tt=torch.full_like(ss, float(d)), noise=noise + torch.zeros_like(ss)
    )


def alignment_moments(d: int, n: int, noise: Tensor | float, alpha: Tensor | float) -> ScalarMoments:
    """Task-feature alignment, x_i = sqrt(1-alpha^2) u_i + alpha sqrt(d) xi_i beta/|beta|, isotropic beta.

    Split each x into a_i = x_i^T beta/|beta| ~ N(0, tau2), tau2 = 1 - alpha^2 + alpha^2 d, and x_perp with
    covariance (1 - alpha^2) on the other d - 1 directions; y_i = a_i |beta| + eps_i. Then
    E[s t] = n tau2^2 d, E t^2 = tau2 d, and E s^2 = tau2 E S1^2 + (1 - alpha^2)^2 n (d - 1)(tau2 d + s2) with
    E S1^2 = n (3 tau2^2 d + tau2 s2) + n (n - 1) tau2^2 d.
    """
    noise, alpha = torch.as_tensor(noise, dtype=torch.float64), torch.as_tensor(alpha, dtype=torch.float64)
    perp = 1 - alpha**2
    tau2 = perp + alpha**2 * d
    s1 = n * (3 * tau2**2 * d + tau2 * noise) + n * (n - 1) * tau2**2 * d
    ss = tau2 * s1 + perp**2 * n * (d - 1) * (tau2 * d + noise)
    return ScalarMoments(st=n * tau2**2 * d, ss=ss, tt=tau2 * d, noise=noise + torch.zeros_like(ss))


@dataclass
class QuadraticRisk:
    """R(W) = vec(W)^T M vec(W) - 2 m^T vec(W) + c0, estimated by Monte Carlo (float64)."""

    mat: Tensor  # (d*d, d*d)
    vec: Tensor  # (d*d,)
    c0: Tensor  # ()
    samples: int

    def risk(self, w: Tensor) -> Tensor:
        """w (..., d, d) -> (...)."""
        v = w.reshape(*w.shape[:-2], -1).to(self.mat.dtype)
        return torch.einsum("...i,ij,...j->...", v, self.mat, v) - 2 * v @ self.vec + self.c0

    def optimum(self) -> tuple[Tensor, Tensor]:
        """(W*, R*) minimising the quadratic."""
        v = torch.linalg.solve(self.mat, self.vec)
        d = int(round(v.numel() ** 0.5))
        return v.reshape(d, d), self.c0 - self.vec @ v


def mc_moments(
    spec: TaskSpec, n: int, samples: int, chunk: int, generator: torch.Generator
) -> list[QuadraticRisk]:
    """Monte Carlo coefficients of R(W) for every member of `spec` (any design), in float64.

    y_hat = x_q^T W g = <vec(W), vec(x_q g^T)>, so R is a least-squares objective in the features
    phi = vec(x_q g^T); its Gram matrix, cross moment and E y_q^2 are accumulated over `samples` fresh tasks.
    """
    E, d = spec.members, spec.d
    mat = torch.zeros(E, d * d, d * d, dtype=torch.float64)
    vec = torch.zeros(E, d * d, dtype=torch.float64)
    c0 = torch.zeros(E, dtype=torch.float64)
    done = 0
    while done < samples:
        b = min(chunk, samples - done)
        xs, ys, _ = sample_tasks(spec, n, b, generator, dtype=torch.float64)
        g = torch.einsum("ebtd,ebt->ebd", xs[:, :, :-1], ys[:, :, :-1])  # (E, b, d) X^T y
        phi = torch.einsum("ebi,ebj->ebij", xs[:, :, -1], g).reshape(E, b, d * d)  # (E, b, d*d)
        yq = ys[:, :, -1]  # (E, b)
        mat += torch.einsum("ebi,ebj->eij", phi, phi)
        vec += torch.einsum("ebi,eb->ei", phi, yq)
        c0 += (yq**2).sum(-1)
        done += b
    return [QuadraticRisk(mat[e] / done, vec[e] / done, c0[e] / done, done) for e in range(E)]


# ------------------------------------------------------------------------------- which derivation fits a design


@dataclass
class PointTheory:
    """What theory says about one grid point."""

    w_star: Tensor  # (d, d) optimal preconditioner under the point's rank constraint
    risk: float  # its risk R*
    method: str  # how R* was obtained
    gd_scale: float  # c of the best plain one-step GD, W = c I
    gd_risk: float
    risk_of: Callable[[Tensor], Tensor]  # R(W) of any preconditioner(s) (..., d, d)
    iid: bool
    risk_full: float  # R* without the rank constraint
    risk_at: Callable[[Tensor, int], float] | None = None  # R(W) with k context examples (i.i.d. only)
    optimum_at: Callable[[int], float] | None = None  # R*_k (i.i.d. only)


def _isotropic(spec: TaskSpec) -> bool:
    eye = torch.eye(spec.d, dtype=torch.float64)
    return torch.equal(spec.x_cov[0], eye) and torch.equal(spec.beta_cov[0], eye)


def closed_form_risk(spec: TaskSpec, n: int, rank: int | None) -> tuple[float, str] | None:
    """(R*, derivation) where a closed form is derived (py), else None. spec has E = 1."""
    s, sb, noise = spec.x_cov[0], spec.beta_cov[0], spec.noise[0]
    ra, aa = float(spec.rag_alpha[0]), float(spec.align_alpha[0])
    if ra == 0 and aa == 0:
        if rank is not None and rank < spec.d:
            return float(rank_r_optimum(s, sb, noise, n, rank)[1]), "closed form (rank-r Eckart-Young)"
        return float(optimal_preconditioner(s, sb, noise, n)[1]), "closed form (i.i.d. Gaussian)"
    if _isotropic(spec) and rank is None and (ra == 0) != (aa == 0):
        mom = rag_moments if ra else alignment_moments
        return float(
            mom(spec.d, n, noise, ra or aa).optimum()[1]
        ), "closed form (W = cI, rotation invariance)"
    return None


def point_theory(
    spec: TaskSpec, n: int, rank: int | None, mc_samples: int, chunk: int, gen: torch.Generator
) -> PointTheory:
    """Theory for one design (E = 1): closed forms for i.i.d. designs and isotropic RAG/alignment, else Monte Carlo.

    The Monte Carlo quadratic (`mc_moments`, `mc_samples` tasks drawn in chunks of `chunk`) prices arbitrary W where
    only the optimum is closed (RAG/alignment), and gives W* and R* where nothing is closed.
    """
    d = spec.d
    s, sb, noise = spec.x_cov[0], spec.beta_cov[0], spec.noise[0]
    eye = torch.eye(d, dtype=torch.float64)
    if bool(spec.is_iid()[0]):
        w_full, r_full = optimal_preconditioner(s, sb, noise, n)
        w, r = (w_full, r_full) if rank is None or rank >= d else rank_r_optimum(s, sb, noise, n, rank)
        c, gd_r = best_gd_step(s, sb, noise, n)
        method = closed_form_risk(spec, n, rank)[1]
        return PointTheory(
            w,
            float(r),
            method,
            float(c),
            float(gd_r),
            risk_of=lambda m: preconditioner_risk(m.to(torch.float64), s, sb, noise, n),
            iid=True,
            risk_full=float(r_full),
            risk_at=lambda m, k: float(preconditioner_risk(m.to(torch.float64), s, sb, noise, k)),
            optimum_at=lambda k: (
                float(optimal_preconditioner(s, sb, noise, k)[1]) if k else float(_tr(s @ sb) + noise)
            ),
        )
    quad = mc_moments(spec, n, mc_samples, chunk, gen)[0]
    closed = closed_form_risk(spec, n, rank)
    vi = eye.flatten()
    c = float(vi @ quad.vec / (vi @ quad.mat @ vi))
    if closed is not None:  # W* = c* I exactly; the quadratic only prices other W
        mom = rag_moments if float(spec.rag_alpha[0]) else alignment_moments
        cs, r = mom(d, n, noise, float(spec.rag_alpha[0]) or float(spec.align_alpha[0])).optimum()
        w, r, method, c, gd_r = float(cs) * eye, float(r), closed[1], float(cs), float(r)
    else:
        w, r = quad.optimum()
        r, method, gd_r = float(r), f"monte carlo ({quad.samples} tasks)", float(quad.risk(c * eye))
    return PointTheory(w, r, method, c, gd_r, risk_of=quad.risk, iid=False, risk_full=r)
