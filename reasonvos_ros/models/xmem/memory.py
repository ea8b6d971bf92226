"""XMem's working and long-term memory for one video session, with per-object validity.

All memory elements (one per stride-16 pixel of every memory frame, and one per long-term prototype) live in one
sequence ``[long-term | working]``: keys (N x key_dim), shrinkage (N), selection (N x key_dim), usage counters,
and, per object, values (N x value_dim) with a validity mask (N). An object added later in the video has no value
for the memory frames before it appeared: those elements are invalid for it and masked out of its readout (the
reference keeps "object groups" of different lengths for the same purpose). Validity sets are nested (older
objects cover more), and elements valid for no object are dropped when an object is removed.

Readout (``read``): similarity between every memory element i (key k_i, shrinkage s_i) and query pixel j (key q_j,
selection e_j) is ``s_i * -sum_c e_cj (k_ci - q_cj)^2 / sqrt(key_dim)``; per query pixel the top-k similarities are
softmax-normalised and the values read out with those weights. Usage (sum of a working-memory element's
affinities over the query pixels) and life (number of reads) accumulate for the consolidation.

Consolidation (``add`` -> ``_compress``): when working memory reaches ``max_mid_term_frames``, everything but the
first frame and the newest ``min_mid_term_frames - 1`` frames is turned into ``num_prototypes`` long-term
prototypes: the candidates with the highest usage/life become prototype keys, and prototype values/shrinkage are
affinity-weighted (full softmax over candidates) sums of the candidates'. Long-term memory is bounded by
``max_long_term_elements``: the least used elements are removed first (or the oldest, when long-term usage is not
counted).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class MemorySettings:
    top_k: int = 30
    enable_long_term: bool = True
    count_long_term_usage: bool = True  # needed to bound long-term memory by usage; else oldest-first removal
    min_mid_term_frames: int = 5
    max_mid_term_frames: int = 10
    num_prototypes: int = 128
    max_long_term_elements: int = 10000

    def validate(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.enable_long_term:
            if not 1 <= self.min_mid_term_frames < self.max_mid_term_frames:
                raise ValueError(
                    "need 1 <= min_mid_term_frames < max_mid_term_frames, got "
                    f"{self.min_mid_term_frames} and {self.max_mid_term_frames}"
                )
            if self.num_prototypes < 1:
                raise ValueError(f"num_prototypes must be >= 1, got {self.num_prototypes}")
            if self.max_long_term_elements < self.num_prototypes:
                raise ValueError(
                    f"max_long_term_elements ({self.max_long_term_elements}) must be >= num_prototypes "
                    f"({self.num_prototypes})"
                )


def similarity(mem_key: Tensor, mem_shrinkage: Tensor | None, query_key: Tensor, query_selection: Tensor | None):
    """Anisotropic negative squared L2 similarity, query-major: (num_queries x num_memory).

    mem_key N x C, mem_shrinkage N, query_key Q x C, query_selection Q x C. Evaluated as ``-a^2 + 2ab - b^2``
    (a: memory, b: query, both weighted by the selection), then scaled by the shrinkage and 1/sqrt(C).
    """
    channels = mem_key.shape[1]
    if query_selection is not None:
        sim = query_selection @ mem_key.pow(2).T
        sim.neg_()
        sim.add_((query_key * query_selection) @ mem_key.T * 2)
        sim.sub_((query_selection * query_key.pow(2)).sum(dim=1, keepdim=True))
    else:
        sim = query_key @ mem_key.T * 2
        sim.sub_(mem_key.pow(2).sum(dim=1)[None])
    if mem_shrinkage is not None:
        sim.mul_(mem_shrinkage[None])
    return sim.div_(math.sqrt(channels))


class MemoryStore:
    """Working + long-term memory; objects are identified by hashable ids (insertion order is kept)."""

    def __init__(self, settings: MemorySettings | None = None) -> None:
        self.settings = settings or MemorySettings()
        self.settings.validate()
        self.clear()

    def clear(self) -> None:
        self.keys: Tensor | None = None  # N x CK
        self.shrinkage: Tensor | None = None  # N
        self.selection: Tensor | None = None  # N x CK
        self.use: Tensor | None = None  # N, summed affinities
        self.life: Tensor | None = None  # N, reads since added (+1e-7)
        self.values: dict[Hashable, Tensor] = {}  # id -> N x CV
        self.valid: dict[Hashable, Tensor] = {}  # id -> N bool
        self.long_size = 0
        self.frame_elements: int | None = None  # elements per memory frame (h * w at stride 16)
        self.grid: tuple[int, int] | None = None
        self.compress_count = 0
        self.removed_long_term = 0

    # ---- sizes -------------------------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return 0 if self.keys is None else self.keys.shape[0]

    @property
    def work_size(self) -> int:
        return self.size - self.long_size

    @property
    def work_frames(self) -> int:
        return 0 if not self.frame_elements else self.work_size // self.frame_elements

    @property
    def object_ids(self) -> list[Hashable]:
        return list(self.values)

    def nbytes(self) -> int:
        tensors = [self.keys, self.shrinkage, self.selection, self.use, self.life]
        tensors += list(self.values.values()) + list(self.valid.values())
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    # ---- writing -----------------------------------------------------------------------------------------------

    def add(self, key: Tensor, shrinkage: Tensor, selection: Tensor, values: Mapping[Hashable, Tensor]) -> None:
        """Add one memory frame. key/selection: 1 x CK x h x w; shrinkage 1 x 1 x h x w; values: id -> CV x h x w
        for every object to be remembered (ids not yet in memory become valid from this frame on)."""
        grid = tuple(key.shape[-2:])
        if self.grid is not None and grid != self.grid:
            raise ValueError(f"memory holds a {self.grid} feature grid; this frame has {grid} (frame size changed)")
        missing = [i for i in self.values if i not in values]
        if missing:
            raise ValueError(f"memory frame lacks values for objects {missing}")
        self.grid = grid
        count = grid[0] * grid[1]
        self.frame_elements = count
        new_key = key.flatten(2)[0].T.float()
        new_selection = selection.flatten(2)[0].T.float()
        new_shrinkage = shrinkage.flatten().float()
        device = new_key.device
        old = self.size
        for obj_id, value in values.items():
            value = value.flatten(1).T.float()
            if obj_id not in self.values:
                self.values[obj_id] = value.new_zeros((old, value.shape[1]))
                self.valid[obj_id] = torch.zeros(old, dtype=torch.bool, device=device)
            self.values[obj_id] = torch.cat([self.values[obj_id], value])
            self.valid[obj_id] = torch.cat([self.valid[obj_id], torch.ones(count, dtype=torch.bool, device=device)])
        self.keys = _cat(self.keys, new_key)
        self.shrinkage = _cat(self.shrinkage, new_shrinkage)
        self.selection = _cat(self.selection, new_selection)
        self.use = _cat(self.use, torch.zeros(count, device=device))
        self.life = _cat(self.life, torch.full((count,), 1e-7, device=device))

        cfg = self.settings
        if cfg.enable_long_term and self.work_size >= cfg.max_mid_term_frames * count:
            limit = cfg.max_long_term_elements - cfg.num_prototypes
            if self.long_size > limit:
                self._shrink_long_term(limit)
            self._compress()

    # ---- reading -----------------------------------------------------------------------------------------------

    def read(self, query_key: Tensor, query_selection: Tensor) -> dict[Hashable, Tensor]:
        """Top-k readout for every object: query 1 x CK x h x w -> id -> CV x h x w. Updates usage counters."""
        with _full_precision(query_key.device):
            return self._read(query_key, query_selection)

    def _read(self, query_key: Tensor, query_selection: Tensor) -> dict[Hashable, Tensor]:
        if self.keys is None:
            raise RuntimeError("memory is empty: seed an object before reading")
        grid = tuple(query_key.shape[-2:])
        if grid != self.grid:
            raise ValueError(f"memory holds a {self.grid} feature grid; this frame has {grid} (frame size changed)")
        q_key = query_key.flatten(2)[0].T.float()
        q_sel = query_selection.flatten(2)[0].T.float()
        sim = similarity(self.keys, self.shrinkage, q_key, q_sel)  # Q x N
        out: dict[Hashable, Tensor] = {}
        usage: Tensor | None = None
        best_coverage = -1
        for valid, ids in self._validity_groups():
            coverage = int(valid.sum())
            if coverage == 0:
                # Possible only when consolidation kept none of an object's elements (min_mid_term_frames 1).
                for obj_id in ids:
                    out[obj_id] = self.values[obj_id].new_zeros((self.values[obj_id].shape[1], *grid))
                continue
            if coverage == valid.numel():
                masked = sim
            else:
                masked = sim.masked_fill(~valid[None], float("-inf"))
            top_values, top_index = masked.topk(min(self.settings.top_k, coverage), dim=1)
            weights = torch.softmax(top_values, dim=1)
            for obj_id in ids:
                readout = F.embedding_bag(top_index, self.values[obj_id], per_sample_weights=weights, mode="sum")
                out[obj_id] = readout.T.reshape(-1, *grid)
            if coverage > best_coverage:
                # The widest group covers every element once unused ones are pruned (validity sets are nested).
                best_coverage = coverage
                usage = torch.zeros(self.size, device=sim.device).index_add_(0, top_index.flatten(), weights.flatten())
        self._update_usage(usage)
        return out

    # ---- internals ---------------------------------------------------------------------------------------------

    def _validity_groups(self) -> list[tuple[Tensor, list[Hashable]]]:
        groups: list[tuple[Tensor, list[Hashable]]] = []
        for obj_id, valid in self.valid.items():
            for group_valid, ids in groups:
                if torch.equal(group_valid, valid):
                    ids.append(obj_id)
                    break
            else:
                groups.append((valid, [obj_id]))
        return groups

    def _update_usage(self, usage: Tensor) -> None:
        work = slice(self.long_size, None)
        self.use[work] += usage[work]
        self.life[work] += 1
        if self.settings.count_long_term_usage and self.long_size:
            long = slice(0, self.long_size)
            self.use[long] += usage[long]
            self.life[long] += 1

    def _keep(self, keep: Tensor) -> None:
        """Keep only the elements where ``keep`` (N bool) is True, in order."""
        self.keys = self.keys[keep]
        self.shrinkage = self.shrinkage[keep]
        self.selection = self.selection[keep]
        self.use = self.use[keep]
        self.life = self.life[keep]
        for obj_id in self.values:
            self.values[obj_id] = self.values[obj_id][keep]
            self.valid[obj_id] = self.valid[obj_id][keep]

    def _shrink_long_term(self, limit: int) -> None:
        """Reduce long-term memory to at most ``limit`` elements: least used first (ties go together), or the
        oldest when long-term usage is not counted."""
        excess = self.long_size - limit
        keep = torch.ones(self.size, dtype=torch.bool, device=self.keys.device)
        if self.settings.count_long_term_usage:
            usage = self.use[: self.long_size] / self.life[: self.long_size]
            threshold = usage.topk(excess, largest=False, sorted=True).values[-1]
            keep[: self.long_size] = usage > threshold
        else:
            keep[:excess] = False
        removed = int((~keep).sum())
        self._keep(keep)
        self.long_size -= removed
        self.removed_long_term += removed

    def _compress(self) -> None:
        cfg = self.settings
        count = self.frame_elements
        start = self.long_size + count  # the first working-memory frame stays
        end = self.size - (cfg.min_mid_term_frames - 1) * count  # and so do the newest min-1 frames
        if end <= start:
            return
        cand = slice(start, end)
        cand_key, cand_shrinkage, cand_selection = self.keys[cand], self.shrinkage[cand], self.selection[cand]
        usage = self.use[cand] / self.life[cand]
        num_prototypes = min(cfg.num_prototypes, end - start)
        proto_index = usage.topk(num_prototypes, sorted=True).indices
        proto_key = cand_key[proto_index]
        # Prototypes act as queries (with their own selection) against all candidates (with their shrinkage).
        sim = similarity(cand_key, cand_shrinkage, proto_key, cand_selection[proto_index])  # P x C
        affinity = torch.softmax(sim, dim=1)
        proto_shrinkage = affinity @ cand_shrinkage
        proto_values: dict[Hashable, Tensor] = {}
        proto_valid: dict[Hashable, Tensor] = {}
        for valid_all, ids in self._validity_groups():
            valid = valid_all[cand]
            p_valid = valid[proto_index]
            if bool(valid.all()):
                group_affinity = affinity
            elif bool(valid.any()):
                group_affinity = torch.softmax(sim.masked_fill(~valid[None], float("-inf")), dim=1)
            else:
                group_affinity = None
            for obj_id in ids:
                if group_affinity is None:
                    value = self.values[obj_id].new_zeros((num_prototypes, self.values[obj_id].shape[1]))
                else:
                    value = group_affinity @ self.values[obj_id][cand]
                    value[~p_valid] = 0
                proto_values[obj_id] = value
                proto_valid[obj_id] = p_valid

        def splice(old: Tensor, new: Tensor) -> Tensor:
            # [long-term | new prototypes | first working frame | newest frames]
            return torch.cat([old[: self.long_size], new, old[self.long_size : start], old[end:]])

        device = self.keys.device
        self.keys = splice(self.keys, proto_key)
        self.shrinkage = splice(self.shrinkage, proto_shrinkage)
        self.selection = splice(self.selection, cand_selection[proto_index])
        self.use = splice(self.use, torch.zeros(num_prototypes, device=device))
        self.life = splice(self.life, torch.full((num_prototypes,), 1e-7, device=device))
        for obj_id in self.values:
            self.values[obj_id] = splice(self.values[obj_id], proto_values[obj_id])
            self.valid[obj_id] = splice(self.valid[obj_id], proto_valid[obj_id])
        self.long_size += num_prototypes
        self.compress_count += 1


def _full_precision(device: torch.device):
    # Memory maths stays in float32 under the network's autocast: squared distances and exp() overflow in half.
    return torch.autocast(device_type=device.type, enabled=False)


def _cat(old: Tensor | None, new: Tensor) -> Tensor:
    return new if old is None else torch.cat([old, new])
