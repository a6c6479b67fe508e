"""In-context linear-regression tasks, sampled for many ensemble members at once.

A *member* is one independently trained model (one seed at one grid point). Every tensor carries a leading
member axis E so that seeds and grid points train as one batched computation. Dimensions used throughout:

    E  ensemble members (grid points x seeds)
    B  tasks (prompts) per member
    T  tokens per prompt = n context examples + 1 query (the query is the last position)
    d  feature dimension

A task is beta ~ N(0, S_beta); its examples are x_i with E[x x^T] = S (before the correlated designs below) and
y_i = x_i^T beta + eps_i, eps_i ~ N(0, sigma^2). Two correlated designs of Li et al. (NeurIPS 2024):

- RAG (query-context correlation alpha_r): context features are retrieved near the query,
  x_i = alpha_r x_q + sqrt(1 - alpha_r^2) x_i' with x_q, x_i' drawn from the base design.
- task-feature alignment (alpha_a): each feature leans towards the task direction,
  x_i = sqrt(1 - alpha_a^2) L u_i + alpha_a sqrt(tr S) xi_i beta / |beta|, with S = L L^T, u_i ~ N(0, I),
  xi_i ~ N(0, 1); for isotropic tasks the marginal second moment of x stays S's scale (tr S) but, given the task,
  the features concentrate along beta.

Sampling uses an explicit `torch.Generator`, never the global RNG, so a seed fixes every task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

COVARIANCE_KINDS = ("isotropic", "powerlaw", "matrix")


def covariance(kind: str, d: int, power: float = 1.0, matrix: list | None = None) -> Tensor:
    """A d x d covariance (float64): identity, power-law diagonal, or a given matrix.

    The power-law spectrum lambda_k = k^-power is rescaled to trace d so that the signal power (tr S) matches the
    isotropic case and risks stay comparable across spectra.
    """
    if kind == "isotropic":
        return torch.eye(d, dtype=torch.float64)
    if kind == "powerlaw":
        lam = torch.arange(1, d + 1, dtype=torch.float64) ** (-power)  # (d,)
        return torch.diag(lam * d / lam.sum())
    if kind == "matrix":
        return torch.as_tensor(matrix, dtype=torch.float64)
    raise ValueError(f"unknown covariance kind {kind!r}; allowed: {', '.join(COVARIANCE_KINDS)}")


@dataclass
class TaskSpec:
    """Per-member task distribution, batched along E (all float64 so theory can use it directly)."""

    x_cov: Tensor  # (E, d, d) feature covariance S
    beta_cov: Tensor  # (E, d, d) task covariance S_beta
    noise: Tensor  # (E,) label-noise variance sigma^2
    rag_alpha: Tensor  # (E,) query-context correlation
    align_alpha: Tensor  # (E,) task-feature alignment

    @property
    def members(self) -> int:
        return self.noise.shape[0]

    @property
    def d(self) -> int:
        return self.x_cov.shape[-1]

    def member(self, e: int) -> TaskSpec:
        """The spec of member e alone (E = 1)."""
        return self.select(torch.tensor([e]))

    def select(self, idx: Tensor) -> TaskSpec:
        """The members at `idx` (a 1-D index tensor), in that order."""
        return TaskSpec(
            self.x_cov[idx], self.beta_cov[idx], self.noise[idx], self.rag_alpha[idx], self.align_alpha[idx]
        )

    def is_iid(self) -> Tensor:
        """(E,) bool: the plain i.i.d. Gaussian design, for which the general closed forms hold."""
        return (self.rag_alpha == 0) & (self.align_alpha == 0)


def stack_specs(specs: list[TaskSpec]) -> TaskSpec:
    """Concatenate specs along the member axis."""
    return TaskSpec(
        torch.cat([s.x_cov for s in specs]),
        torch.cat([s.beta_cov for s in specs]),
        torch.cat([s.noise for s in specs]),
        torch.cat([s.rag_alpha for s in specs]),
        torch.cat([s.align_alpha for s in specs]),
    )


class TaskSampler:
    """Draws fresh prompts for every member; factors and flags are computed once, not every step.

    Transforms that are the identity for every member (isotropic covariances, alpha = 0) are skipped, which keeps
    the per-step cost of the common i.i.d. isotropic design at a few random draws.
    """

    def __init__(
        self, spec: TaskSpec, n: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ):
        self.spec, self.n, self.dtype, self.device = spec, n, dtype, torch.device(device)
        eye = torch.eye(spec.d, dtype=spec.x_cov.dtype)

        def factor(cov: Tensor) -> Tensor | None:
            return (
                None if torch.equal(cov, eye.expand_as(cov)) else torch.linalg.cholesky(cov).to(device, dtype)
            )

        self.lx = factor(spec.x_cov)  # (E, d, d) or None for the identity
        self.lb = factor(spec.beta_cov)  # (E, d, d) or None
        self.noise_std = spec.noise.sqrt().to(device, dtype)[:, None, None]  # (E, 1, 1)
        self.rag = spec.rag_alpha.to(device, dtype)[:, None, None, None] if spec.rag_alpha.any() else None
        self.align = (
            spec.align_alpha.to(device, dtype)[:, None, None, None] if spec.align_alpha.any() else None
        )
        tr_x = spec.x_cov.diagonal(dim1=-2, dim2=-1).sum(-1)  # (E,)
        self.tr_x_sqrt = tr_x.sqrt().to(device, dtype)[:, None, None, None]  # (E, 1, 1, 1)

    def _randn(self, generator: torch.Generator, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=self.dtype, device=generator.device).to(
            self.device
        )

    def sample(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Fresh prompts: xs (E, B, T, d), ys (E, B, T), betas (E, B, d); T = n + 1, the query is last."""
        E, d, T, B = self.spec.members, self.spec.d, self.n + 1, batch
        betas = self._randn(generator, E, B, d)  # (E, B, d)
        if self.lb is not None:
            betas = torch.einsum("eij,ebj->ebi", self.lb, betas)
        xs = self._randn(generator, E, B, T, d)  # (E, B, T, d)
        if self.lx is not None:
            xs = (xs.reshape(E, B * T, d) @ self.lx.transpose(-1, -2)).reshape(E, B, T, d)  # L u
        if self.align is not None:  # lean every feature towards the task direction
            xi = self._randn(generator, E, B, T, 1)  # (E, B, T, 1)
            beta_dir = betas / betas.norm(dim=-1, keepdim=True).clamp_min(
                torch.finfo(self.dtype).tiny
            )  # (E, B, d)
            along = self.tr_x_sqrt * xi * beta_dir[:, :, None, :]  # (E, B, T, d)
            xs = (1 - self.align**2).sqrt() * xs + self.align * along
        if self.rag is not None:  # context features correlate with the query (the last position)
            xq = xs[:, :, -1:, :]  # (E, B, 1, d)
            ctx = self.rag * xq + (1 - self.rag**2).sqrt() * xs[:, :, :-1, :]  # (E, B, n, d)
            xs = torch.cat([ctx, xq], dim=2)
        ys = torch.einsum("ebtd,ebd->ebt", xs, betas) + self.noise_std * self._randn(
            generator, E, B, T
        )  # (E, B, T)
        return xs, ys, betas


def sample_tasks(
    spec: TaskSpec,
    n: int,
    batch: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor, Tensor]:
    """One draw of `batch` prompts per member (see TaskSampler.sample); build a TaskSampler to draw repeatedly."""
    return TaskSampler(spec, n, dtype, device).sample(batch, generator)
