"""Chat-UniVi spatial token merging (CTM): density-peak clustering of visual tokens, written from its description.

Chat-UniVi (and VISA, which reuses it) shrinks the 256 CLIP patch tokens of a frame with three successive
clustering stages, 256 -> 64 -> 32 -> 16 tokens, and feeds the concatenation of the three stage outputs
(64 + 32 + 16 = 112 tokens) to the language model. One stage is DPC-kNN (density peaks clustering with a k-nearest
neighbour density):

1. ``D`` = pairwise Euclidean distances of the tokens divided by ``sqrt(C)`` (float32, ``torch.cdist``);
2. density ``rho_i = exp(-mean_{j in kNN(i)} D_ij^2)`` (the k nearest include the token itself) plus a tiny uniform
   noise ``1e-6 * u_i`` that breaks exact ties (the official code draws ``u`` with ``torch.rand``);
3. distance indicator ``delta_i`` = distance to the nearest strictly denser token, or the largest entry of ``D`` for
   the densest token;
4. the ``K`` tokens with the highest ``rho * delta`` become centres (cluster id = rank in that order); every token
   joins the centre ``c`` with the smallest ``D[c, token]``, and centres are forced into their own cluster;
5. merged token = sum of its members weighted by ``w_i / (sum of member weights + 1e-6)``, where ``w`` is the
   per-token importance. Chat-UniVi's CTM has no importance predictor, so ``w = 1`` (plain mean).

Each stage is followed by Chat-UniVi's ``TCBlock``, which in the released model has no parameters and returns the
token dict unchanged; ``TCBlock`` here is that identity, kept so the stage structure matches the description.

The noise of step 2 can be injected (``noise_fn``), which the golden check uses to replay the official draws.

Numerics, as in the official code: ``torch.cdist`` on more than 25 tokens uses the matrix-product form
``sqrt(max(|a|^2 + |b|^2 - 2 a.b, 0))``, so a token's distance to itself is not exactly 0 but the square root of a
rounding error (up to ~1e-3), and it is one of the k nearest. The densities therefore depend on the GEMM's rounding,
which can change with the BLAS kernel (thread count, CPU vs GPU): assignments of near-tied tokens may differ between
machines, exactly as they would for the official implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

# (cluster rate, k of the kNN density) per stage, as in Chat-UniVi / VISA ("spatial_cluster_rate0/1/2" of the
# checkpoint config; a rate > 1 is an absolute cluster count, a rate <= 1 a fraction of the input tokens).
DEFAULT_STAGES: tuple[tuple[float, int], ...] = ((64, 5), (32, 3), (16, 3))
DENSITY_NOISE_SCALE = 1e-6

# noise_fn(shape, like) -> tensor of U[0,1) draws with that shape; the default is torch.rand.
NoiseFn = Callable[[torch.Size, torch.Tensor], torch.Tensor]


def _torch_rand_noise(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, device=like.device, dtype=like.dtype)


@dataclass
class ClusterResult:
    """Outcome of one DPC-kNN step for a batch of token sets."""

    assignment: torch.Tensor  # (B, N) int64 cluster id of every token
    centres: torch.Tensor  # (B, K) int64 token index of each centre, in rank order (= cluster id)
    density: torch.Tensor  # (B, N) float32, noise included
    score: torch.Tensor  # (B, N) float32, density * distance indicator
    distances: torch.Tensor  # (B, N, N) float32 scaled distance matrix


def dpc_knn_cluster(x: torch.Tensor, num_clusters: int, k: int, noise_fn: NoiseFn | None = None) -> ClusterResult:
    """Density-peak clustering of ``x`` (B, N, C) into ``num_clusters`` clusters (see the module docstring)."""
    if x.dim() != 3:
        raise ValueError(f"dpc_knn_cluster expects tokens of shape (B, N, C), got {tuple(x.shape)}")
    batch, num_tokens, channels = x.shape
    if not 1 <= num_clusters <= num_tokens:
        raise ValueError(f"cannot make {num_clusters} clusters from {num_tokens} tokens")
    if not 1 <= k <= num_tokens:
        raise ValueError(f"kNN density needs 1 <= k <= {num_tokens}, got k={k}")
    with torch.no_grad():
        feats = x.float()
        distances = torch.cdist(feats, feats) / math.sqrt(channels)
        nearest, _ = torch.topk(distances, k=k, dim=-1, largest=False)
        density = torch.exp(-(nearest**2).mean(dim=-1))
        draws = (noise_fn or _torch_rand_noise)(density.shape, density)
        if draws.shape != density.shape:
            raise ValueError(f"density noise has shape {tuple(draws.shape)}, expected {tuple(density.shape)}")
        density = density + draws.to(device=density.device, dtype=density.dtype) * DENSITY_NOISE_SCALE

        # denser[b, i, j]: token j is strictly denser than token i.
        denser = density[:, None, :] > density[:, :, None]
        largest = distances.flatten(1).max(dim=-1).values[:, None, None]
        indicator = torch.where(denser, distances, largest.expand_as(distances)).min(dim=-1).values
        score = indicator * density

        _, centres = torch.topk(score, k=num_clusters, dim=-1)
        # Row c of centre_to_token holds D[centre_c, every token]; argmin over centres picks the first on ties.
        centre_to_token = torch.gather(distances, 1, centres[:, :, None].expand(batch, num_clusters, num_tokens))
        assignment = centre_to_token.argmin(dim=1)
        ranks = torch.arange(num_clusters, device=x.device).expand(batch, num_clusters)
        assignment.scatter_(1, centres, ranks)
    return ClusterResult(assignment, centres, density, score, distances)


def merge_clustered_tokens(
    x: torch.Tensor, assignment: torch.Tensor, num_clusters: int, token_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted mean of the tokens of each cluster: (B, N, C) -> (B, num_clusters, C).

    ``token_weight`` (B, N, 1) is the importance of each token (ones when None); a cluster's weights are
    normalised by their sum + 1e-6, as in Chat-UniVi.
    """
    batch, num_tokens, channels = x.shape
    if token_weight is None:
        token_weight = x.new_ones(batch, num_tokens, 1)
    flat_index = (assignment + torch.arange(batch, device=x.device)[:, None] * num_clusters).reshape(-1)
    weight_sum = x.new_zeros(batch * num_clusters, 1)
    weight_sum.index_add_(0, flat_index, token_weight.reshape(batch * num_tokens, 1))
    weight_sum = weight_sum + 1e-6
    normalised = token_weight / weight_sum[flat_index].reshape(batch, num_tokens, 1)
    merged = x.new_zeros(batch * num_clusters, channels)
    merged.index_add_(0, flat_index, (x * normalised).reshape(batch * num_tokens, channels))
    return merged.reshape(batch, num_clusters, channels)


class TCBlock(nn.Module):
    """Chat-UniVi's transformer block after each merge. The released Chat-UniVi/VISA block holds no parameters and
    leaves the tokens unchanged, so this is the identity (kept as a module so hooks and structure match)."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens


def cluster_count(rate: float, num_tokens: int) -> int:
    """Clusters made from ``num_tokens`` tokens: ``ceil(rate)`` when rate > 1, else ``ceil(num_tokens * rate)``."""
    return max(math.ceil(rate), 1) if rate > 1 else max(math.ceil(num_tokens * rate), 1)


def effective_k(k: int, num_clusters: int) -> int:
    """Chat-UniVi shrinks the kNN size when it exceeds the cluster count."""
    return min(3, max(num_clusters // 2, 1)) if k > num_clusters else k


class ClusterMerge(nn.Module):
    """One CTM stage: DPC-kNN clustering at ``rate`` (see ``cluster_count``), then importance-weighted merging."""

    def __init__(self, rate: float, k: int) -> None:
        super().__init__()
        if rate <= 0:
            raise ValueError(f"cluster rate must be positive, got {rate}")
        self.rate = rate
        self.k = int(k)

    def output_tokens(self, num_tokens: int) -> int:
        return cluster_count(self.rate, num_tokens)

    def forward(
        self, tokens: torch.Tensor, noise_fn: NoiseFn | None = None, token_weight: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ClusterResult]:
        num_clusters = self.output_tokens(tokens.shape[1])
        result = dpc_knn_cluster(tokens, num_clusters, effective_k(self.k, num_clusters), noise_fn)
        return merge_clustered_tokens(tokens, result.assignment, num_clusters, token_weight), result

    def extra_repr(self) -> str:
        return f"rate={self.rate}, k={self.k}"


@dataclass
class MergeTrace:
    """Per-stage clustering results of one ``SpatialTokenMerger`` call (for inspection and golden checks)."""

    stages: list[ClusterResult]


class SpatialTokenMerger(nn.Module):
    """The three CTM stages of Chat-UniVi for single images: returns [stage0 | stage1 | stage2] tokens.

    Input (B, N, C) patch tokens of B independent images; output (B, sum(num_clusters), C). Each stage clusters
    the previous stage's output. ``noise_fn(stage, shape, like)`` may supply the density noise of every stage.
    """

    def __init__(self, stages: Sequence[tuple[float, int]] = DEFAULT_STAGES) -> None:
        super().__init__()
        if not stages:
            raise ValueError("the spatial merger needs at least one clustering stage")
        self.merges = nn.ModuleList([ClusterMerge(rate, k) for rate, k in stages])
        self.blocks = nn.ModuleList([TCBlock() for _ in stages])

    def tokens_per_image(self, num_patches: int) -> int:
        """Output tokens per image for ``num_patches`` input tokens (112 for 256 with the default stages)."""
        total = 0
        current = num_patches
        for merge in self.merges:
            current = merge.output_tokens(current)
            total += current
        return total

    def forward(
        self, tokens: torch.Tensor, noise_fn: Callable[[int, torch.Size, torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, MergeTrace]:
        outputs = []
        results = []
        current = tokens
        for stage, (merge, block) in enumerate(zip(self.merges, self.blocks)):
            stage_noise = None if noise_fn is None else (lambda shape, like, s=stage: noise_fn(s, shape, like))
            current, result = merge(current, stage_noise)
            current = block(current)
            outputs.append(current)
            results.append(result)
        return torch.cat(outputs, dim=1), MergeTrace(results)
