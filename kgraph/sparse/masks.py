"""Which weights to zero: magnitude or random scores, per tensor or global, blocks, N:M.

Pure numpy; used by the `Sparsify` pass and the gradual-pruning callback.

Example:
    >>> masks = weight_masks({"dense/kernel": kernel}, 0.8)
    >>> masks["dense/kernel"].mean()   # 20% of the weights kept
    0.2
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from kgraph.errors import KGraphError

__all__ = ["PRUNABLE", "SparsityError", "check_options", "is_prunable", "weight_masks"]

# Weights that sparsity zeroes: kernels and embedding tables, never biases or norms.
PRUNABLE = ("kernel", "depthwise_kernel", "pointwise_kernel", "recurrent_kernel", "embeddings")


class SparsityError(KGraphError, ValueError):
    """Sparsity options that cannot be used (a sparsity outside [0, 1), a bad N:M, ...)."""


def is_prunable(weight_name: str) -> bool:
    """True for the weights sparsity acts on (`kernel`, `query/kernel`, `embeddings`, ...)."""
    return weight_name.split("/")[-1] in PRUNABLE


def check_options(
    sparsity: float | None,
    criterion: str,
    scope: str,
    block: tuple[int, int],
    n_m: tuple[int, int] | None,
) -> float:
    """The sparsity to reach, after checking the options (`SparsityError` if bad)."""
    if criterion not in ("magnitude", "random"):
        raise SparsityError(f"criterion must be 'magnitude' or 'random', got {criterion!r}")
    if scope not in ("layer", "global"):
        raise SparsityError(f"scope must be 'layer' or 'global', got {scope!r}")
    if (
        not isinstance(block, (tuple, list))
        or len(block) != 2
        or not all(isinstance(b, int) and b >= 1 for b in block)
    ):
        raise SparsityError(f"block must be two positive integers (rows, columns), got {block!r}")
    if n_m is not None:
        if (
            not isinstance(n_m, (tuple, list))
            or len(n_m) != 2
            or not all(isinstance(v, int) for v in n_m)
            or not 0 < n_m[0] < n_m[1]
        ):
            raise SparsityError(f"n_m must be (N, M) with 0 < N < M, e.g. (2, 4), got {n_m!r}")
        if tuple(block) != (1, 1) or scope != "layer":
            raise SparsityError("n_m works per weight: use it without block= and scope='global'")
        implied = 1 - n_m[0] / n_m[1]
        if sparsity is not None and not math.isclose(sparsity, implied):
            raise SparsityError(f"n_m={tuple(n_m)} means sparsity {implied}, not {sparsity}")
        return implied
    if (
        isinstance(sparsity, bool)
        or not isinstance(sparsity, (int, float))
        or not 0 <= sparsity < 1
    ):
        raise SparsityError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def _as_float(weight: Any) -> np.ndarray:
    """`weight` as a float array: float32/float64 as they are (ranks do not change), others
    (float16, bfloat16, integers) as float64."""
    array = np.asarray(weight)
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float64)


def _as_matrix(weight: np.ndarray) -> np.ndarray:
    """A kernel as (inputs, outputs): every axis but the last folded into rows."""
    return weight.reshape(-1, weight.shape[-1]) if weight.ndim > 1 else weight.reshape(-1, 1)


def _block_scores(scores: np.ndarray, block: tuple[int, int], pooling: str = "mean") -> np.ndarray:
    """Mean (or max) score of every (rows x columns) block of a 2-D array (edges padded)."""
    if tuple(block) == (1, 1):
        return scores
    r, c = block
    rows, cols = scores.shape
    padded = np.full((math.ceil(rows / r) * r, math.ceil(cols / c) * c), np.nan)
    padded[:rows, :cols] = scores
    blocks = padded.reshape(padded.shape[0] // r, r, padded.shape[1] // c, c)
    return (np.nanmax if pooling == "max" else np.nanmean)(blocks, axis=(1, 3))


def _expand(block_keep: np.ndarray, block: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    if tuple(block) == (1, 1):
        return block_keep
    r, c = block
    return np.repeat(np.repeat(block_keep, r, axis=0), c, axis=1)[: shape[0], : shape[1]]


def _n_m_mask(scores: np.ndarray, n: int, m: int, name: str) -> np.ndarray:
    """Keep the `n` best of every `m` consecutive inputs, for every output."""
    rows, cols = scores.shape
    if rows % m:
        raise SparsityError(
            f"{name} has {rows} inputs per output, not a multiple of {m}: {n}:{m} sparsity "
            "needs groups of whole inputs"
        )
    groups = scores.T.reshape(cols, rows // m, m)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros_like(groups, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return keep.reshape(cols, rows).T


def _lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask keeping all but the `count` lowest (NaN never counts; equal scores
    go in order of position, as a stable sort would take them)."""
    flat = np.where(np.isnan(scores), np.inf, scores).reshape(-1)
    if count <= 0 or count >= flat.size:
        return np.full(scores.shape, count <= 0)
    # a partition, not a sort: linear time also for a global ranking of a whole model
    kth = np.partition(flat, count - 1)[count - 1]
    keep = flat >= kth
    ties = np.flatnonzero(flat == kth)
    keep[ties[: count - (flat.size - np.count_nonzero(keep))]] = False
    return keep.reshape(scores.shape)


def weight_masks(
    weights: Mapping[str, np.ndarray],
    sparsity: float | None,
    *,
    criterion: str = "magnitude",
    scope: str = "layer",
    block: tuple[int, int] = (1, 1),
    n_m: tuple[int, int] | None = None,
    seed: int = 0,
    block_pooling: str = "mean",
) -> dict[str, np.ndarray]:
    """A keep-mask (True = keep) for every weight, reaching `sparsity` zeros.

    `scope="layer"` gives every weight tensor the sparsity, `"global"` ranks all of
    them together. `block=(r, c)` zeroes whole r x c blocks of the kernel seen as
    (inputs, outputs), ranked by the mean score of each block (`block_pooling="max"`:
    by its largest); `n_m=(2, 4)` keeps 2 of every 4 consecutive inputs.
    """
    target = check_options(sparsity, criterion, scope, tuple(block), n_m)
    if block_pooling not in ("mean", "max"):
        raise SparsityError(f"block_pooling must be 'mean' or 'max', got {block_pooling!r}")
    rng = np.random.default_rng(seed)
    scores: dict[str, np.ndarray] = {}
    for name, weight in weights.items():
        matrix = _as_matrix(_as_float(weight))
        raw = np.abs(matrix) if criterion == "magnitude" else rng.random(matrix.shape)
        scores[name] = raw if n_m is not None else _block_scores(raw, block, block_pooling)
    if n_m is not None:
        masks = {name: _n_m_mask(s, n_m[0], n_m[1], name) for name, s in scores.items()}
    elif scope == "layer":
        masks = {
            name: _lowest(s, round(target * np.count_nonzero(~np.isnan(s))))
            for name, s in scores.items()
        }
    else:
        everything = np.concatenate([s.reshape(-1) for s in scores.values()])
        keep = _lowest(everything, round(target * np.count_nonzero(~np.isnan(everything))))
        masks, start = {}, 0
        for name, s in scores.items():
            masks[name] = keep[start : start + s.size].reshape(s.shape)
            start += s.size
    result = {}
    for name, weight in weights.items():
        shape = _as_matrix(np.asarray(weight)).shape
        mask = masks[name] if n_m is not None else _expand(masks[name], tuple(block), shape)
        result[name] = mask.reshape(np.shape(weight))
    return result


def describe_options(**options: Any) -> str:
    """`magnitude, per layer, 2:4` for log messages."""
    parts = [options.get("criterion", "magnitude"), f"scope {options.get('scope', 'layer')}"]
    if options.get("n_m"):
        parts.append("{}:{}".format(*options["n_m"]))
    if tuple(options.get("block", (1, 1))) != (1, 1):
        parts.append("blocks {}x{}".format(*options["block"]))
    return ", ".join(parts)
