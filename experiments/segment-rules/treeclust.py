"""Tree-defined clusters (family b): segment = leaf of an axis-aligned threshold tree, so the
rule reproduces the segment exactly (fidelity 1).

- IMM (Dasgupta, Frost, Moshkovitz & Rashtchian 2020, "Explainable k-means and k-medians
  clustering"): from k-means centres, split recursively on the (feature, threshold) that
  separates the node's centres with the fewest points cut off from their own centre.
- Greedy SSE tree ("unsupervised CART"): repeatedly make the axis-aligned split (any leaf, any
  column, any threshold) that lowers the within-segment sum of squares the most, leaves at
  least `min_leaf` customers and depth <= max_depth, until k leaves.
Trees live in the scaled space; rules are shown in raw units by inverting the scaling.
"""
import numpy as np
from sklearn.cluster import KMeans
from seglib import Scaler, SKEWED


class Node:
    def __init__(self, depth):
        self.depth, self.feature, self.thr, self.left, self.right, self.label = depth, None, None, None, None, None


def tree_predict(root, Z):
    out = np.empty(len(Z), dtype=int)

    def go(node, idx):
        if node.feature is None:
            out[idx] = node.label
            return
        m = Z[idx, node.feature] <= node.thr
        go(node.left, idx[m]); go(node.right, idx[~m])

    go(root, np.arange(len(Z)))
    return out


def leaves(root):
    res = []

    def go(n, path):
        if n.feature is None:
            res.append((n.label, path)); return
        go(n.left, path + [(n.feature, "<=", n.thr)]); go(n.right, path + [(n.feature, ">", n.thr)])

    go(root, [])
    return res


def depth(root):
    return max(len(p) for _, p in leaves(root))


# ------------------------------------------------------------------ IMM

def imm_tree(Z, assign, centres):
    def build(idx, cset, d):
        node = Node(d)
        if len(cset) == 1:
            node.label = cset[0]; return node
        best = None
        C = centres[cset]
        for f in range(Z.shape[1]):
            lo_c, hi_c = C[:, f].min(), C[:, f].max()
            x = Z[idx, f]; m = centres[assign[idx], f]
            cand = np.unique(np.concatenate([x[(x >= lo_c) & (x < hi_c)], C[:, f][C[:, f] < hi_c]]))
            if len(cand) == 0:
                continue
            lo, hi = np.minimum(x, m), np.maximum(x, m)
            lo_s, hi_s = np.sort(lo), np.sort(hi)
            # mistakes(theta) = #{lo <= theta < hi}
            mist = np.searchsorted(lo_s, cand, "right") - np.searchsorted(hi_s, cand, "right")
            j = int(np.argmin(mist))
            if best is None or mist[j] < best[0]:
                best = (mist[j], f, cand[j])
        if best is None:          # centres identical on every column: one leaf
            node.label = cset[0]; return node
        _, f, thr = best
        node.feature, node.thr = f, thr
        keep = (Z[idx, f] <= thr) == (centres[assign[idx], f] <= thr)   # IMM drops mistakes
        idx = idx[keep]
        left_c = [c for c in cset if centres[c, f] <= thr]
        right_c = [c for c in cset if centres[c, f] > thr]
        node.left = build(idx[Z[idx, f] <= thr], left_c, d + 1)
        node.right = build(idx[Z[idx, f] > thr], right_c, d + 1)
        return node

    return build(np.arange(len(Z)), list(range(len(centres))), 0)


# ------------------------------------------------------------------ greedy SSE tree

def best_split(Z, idx, min_leaf):
    """Best (gain, feature, threshold) for the rows idx, or None."""
    best = None
    n = len(idx)
    if n < 2 * min_leaf:
        return None
    Zi = Z[idx]
    tot = Zi.sum(0)
    for f in range(Z.shape[1]):
        order = np.argsort(Zi[:, f], kind="stable")
        xs = Zi[order, f]
        cs = np.cumsum(Zi[order], axis=0)
        nl = np.arange(1, n + 1)
        valid = np.r_[xs[1:] != xs[:-1], False]          # split after position i
        valid &= (nl >= min_leaf) & (n - nl >= min_leaf)
        if not valid.any():
            continue
        pos = np.nonzero(valid)[0]
        nL = nl[pos].astype(float); nR = n - nL
        mL = cs[pos] / nL[:, None]; mR = (tot - cs[pos]) / nR[:, None]
        gain = nL * nR / n * ((mL - mR) ** 2).sum(1)
        j = int(np.argmax(gain))
        if best is None or gain[j] > best[0]:
            best = (gain[j], f, (xs[pos[j]] + xs[pos[j] + 1]) / 2)
    return best


def greedy_tree(Z, k, max_depth=3, min_leaf=200):
    root = Node(0)
    frontier = [(root, np.arange(len(Z)))]
    while len(frontier) < k:
        cands = []
        for i, (node, idx) in enumerate(frontier):
            if node.depth >= max_depth:
                continue
            b = best_split(Z, idx, min_leaf)
            if b is not None:
                cands.append((b[0], i, b[1], b[2]))
        if not cands:
            break
        _, i, f, thr = max(cands)
        node, idx = frontier.pop(i)
        node.feature, node.thr = f, thr
        node.left, node.right = Node(node.depth + 1), Node(node.depth + 1)
        m = Z[idx, f] <= thr
        frontier += [(node.left, idx[m]), (node.right, idx[~m])]
    for lab, (node, _) in enumerate(frontier):
        node.label = lab
    return root


# ------------------------------------------------------------------ models with fit/predict

class TreeSegmentation:
    """scale -> (k-means + IMM) or greedy SSE tree; segment = leaf."""

    def __init__(self, cols, binary, log, method, k, seed=42, max_depth=3, min_leaf_share=0.05):
        self.cols, self.method, self.k, self.seed = list(cols), method, k, seed
        self.scaler = Scaler(cols, binary, log)
        self.max_depth, self.min_leaf_share = max_depth, min_leaf_share

    def fit(self, X):
        Z = self.scaler.fit(X).transform(X)
        if self.method == "imm":
            km = KMeans(self.k, n_init=10, random_state=self.seed).fit(Z)
            self.root = imm_tree(Z, km.labels_, km.cluster_centers_)
            self.kmeans_labels_ = km.labels_
        else:
            self.root = greedy_tree(Z, self.k, self.max_depth,
                                    int(np.ceil(self.min_leaf_share * len(Z))))
        self.labels_ = tree_predict(self.root, Z)
        return self

    def predict(self, X):
        return tree_predict(self.root, self.scaler.transform(X))

    def raw_threshold(self, f, thr):
        v = thr * self.scaler.std_[f] + self.scaler.mean_[f]
        if self.scaler.log and self.cols[f] in SKEWED:
            v = np.expm1(v)
        return v

    def rules(self):
        from seglib import simplify, fmt_rule
        out = {}
        for lab, path in leaves(self.root):
            raw = [(self.cols[f], op, self.raw_threshold(f, t)) for f, op, t in path]
            r = simplify(raw)
            out[lab] = (len(r), fmt_rule(r))
        return out
