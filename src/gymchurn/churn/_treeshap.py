"""Compiled kernels of `gymchurn.churn.reasons.LightGBMContributions` (its docstring says how it works).

Kept apart so that numba is imported (and the kernels loaded from numba's cache, compiled on
the first run only) when reasons are computed, not on every import of gymchurn.churn.reasons.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MAX_CACHED_PATH = 20  # leaves whose path has more distinct features are computed uncached


@njit(nogil=True, cache=True)
def add_tree(out, bins, weights, starts, values, position, zero_fraction, lo, hi, used, interval,
             offset, radix):
    """Add one tree's exact TreeSHAP contributions of every row (of `bins`) to `out`."""
    inverse, first = _distinct_patterns(bins, used, interval, offset, radix)
    # The patterns' rows, on the tree's own features only: read once per leaf below.
    pattern_bins = np.empty((len(first), len(used)), bins.dtype)
    for p in range(len(first)):
        for j in range(len(used)):
            pattern_bins[p, j] = bins[first[p], used[j]]
    table = _pattern_contributions(pattern_bins, used, weights, starts, values, position,
                                   zero_fraction, lo, hi)
    for row in range(len(inverse)):
        pattern = inverse[row]
        for j in range(len(used)):
            out[row, used[j]] += table[pattern, j]


@njit(nogil=True, cache=True)
def _slot(key, bits):
    """Fibonacci hashing of a pattern number into a table of 2**bits slots."""
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits))


@njit(nogil=True, cache=True)
def _distinct_patterns(bins, used, interval, offset, radix):
    """(pattern of each row, one row of each pattern): a hash table on the pattern numbers,
    grown so it stays small (about the number of distinct patterns) and in cache."""
    n = bins.shape[0]
    inverse = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    keys = np.empty(n, np.int64)
    bits = 12
    slots = np.full(1 << bits, -1, np.int64)
    count = 0
    for row in range(n):
        key = 0
        for j in range(len(used)):
            key = key * radix[j] + interval[offset[j] + bins[row, used[j]]]
        h = _slot(key, bits)
        while slots[h] >= 0 and keys[slots[h]] != key:
            h = (h + 1) & ((1 << bits) - 1)
        if slots[h] >= 0:
            inverse[row] = slots[h]
            continue
        slots[h] = count
        keys[count] = key
        first[count] = row
        inverse[row] = count
        count += 1
        if 2 * count > 1 << bits:  # at most half full: rehash into a table 4 times larger
            bits += 2
            slots = np.full(1 << bits, -1, np.int64)
            for s in range(count):
                h = _slot(keys[s], bits)
                while slots[h] >= 0:
                    h = (h + 1) & ((1 << bits) - 1)
                slots[h] = s
    return inverse, first[:count]


@njit(nogil=True, cache=True)
def _pattern_contributions(bins, used, weights, starts, values, position, zero_fraction, lo, hi):
    """Contributions (patterns x the tree's features) of the patterns' rows `bins`, leaf by
    leaf; a leaf's shares are computed once per 0/1 mask of its path (cached) and added to
    every pattern with that mask."""
    n_patterns = len(bins)
    table = np.zeros((n_patterns, len(used)))
    longest = 1
    for leaf in range(len(values)):
        longest = max(longest, starts[leaf + 1] - starts[leaf])
    cached = min(longest, MAX_CACHED_PATH)
    slot_of_mask = np.full(1 << cached, -1, np.int64)
    cache = np.empty((min(n_patterns, 1 << cached), cached))
    masks = np.empty(n_patterns, np.int64)
    shares = np.empty(longest)
    r = np.empty(longest + 1)
    s = np.empty(longest + 1)
    for leaf in range(len(values)):
        a, d = starts[leaf], starts[leaf + 1] - starts[leaf]
        if d == 0:
            continue
        n_cached = 0
        for p in range(n_patterns):
            mask = 0  # bit j: the row satisfies the path's conditions on its j-th feature
            for j in range(d):
                b = bins[p, position[a + j]]
                if lo[a + j] <= b and b <= hi[a + j]:
                    mask |= 1 << j
            masks[p] = mask
            if d > MAX_CACHED_PATH:
                _leaf_shares(weights, values[leaf], zero_fraction[a:a + d], mask, d, shares, r, s)
                for j in range(d):
                    table[p, position[a + j]] += shares[j]
                continue
            slot = slot_of_mask[mask]
            if slot < 0:
                slot = n_cached
                n_cached += 1
                slot_of_mask[mask] = slot
                _leaf_shares(weights, values[leaf], zero_fraction[a:a + d], mask, d, shares, r, s)
                cache[slot, :d] = shares[:d]
            for j in range(d):
                table[p, position[a + j]] += cache[slot, j]
        if d <= MAX_CACHED_PATH:
            for p in range(n_patterns):
                slot_of_mask[masks[p]] = -1
    return table


@njit(nogil=True, cache=True)
def _leaf_shares(weights, value, z, mask, d, shares, r, s):
    """One leaf's share of each of its path's d features, for a row with 0/1 mask `mask`.

    TreeSHAP's sum over subsets S of the other path features is
    phi_i = value (o_i - z_i) sum_k w(k, d) [t^k] prod_{j != i} (z_j + o_j t)
    with w(k, d) = k! (d - 1 - k)! / d!. Where o_j = 0 the factor is the constant z_j, so the
    product is zc R(t), zc = prod of those z_j and R(t) = prod over the o_j = 1 of (z_j + t);
    for an o_i = 1 feature R is divided by (z_i + t) instead.
    """
    m = 0
    zc = 1.0
    r[0] = 1.0
    for j in range(d):
        if mask >> j & 1:
            r[m + 1] = r[m]
            for k in range(m, 0, -1):
                r[k] = r[k] * z[j] + r[k - 1]
            r[0] *= z[j]
            m += 1
        else:
            zc *= z[j]
    if m < d:  # every o = 0 feature gets -value zc sum_k w(k, d) r_k (its z_i cancels)
        acc = 0.0
        for k in range(m + 1):
            acc += weights[d, k] * r[k]
        for j in range(d):
            if not mask >> j & 1:
                shares[j] = -value * zc * acc
    for j in range(d):
        if mask >> j & 1:
            s[m - 1] = r[m]  # s = R / (z_j + t), by synthetic division from the top
            for k in range(m - 1, 0, -1):
                s[k - 1] = r[k] - z[j] * s[k]
            acc = 0.0
            for k in range(m):
                acc += weights[d, k] * s[k]
            shares[j] = value * (1.0 - z[j]) * zc * acc
