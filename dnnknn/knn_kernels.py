"""The numba kernels of the CPU k-NN (compiled once, cached on disk): L1 distances, exact
selection of the k nearest, and the vote.

L1 has no matrix-multiply shortcut and it is the paper's default metric, so its distances come
from `l1_distances`: a register block of 4 queries x 2 references keeps 8 accumulators in vector
registers while LLVM vectorises the sum over dimensions (AVX2 or AVX-512, whatever the host has),
sweeping tiles of 128 references that stay in cache. The block is written out by hand because
numba cannot unroll it; 4 x 2 fits AVX2's 16 registers (8 accumulators, 4 query and 2 reference
values). A metric with a matrix form (L2, cosine) needs no kernel: see `knn._distances`. One
without (L-infinity, say) is this kernel with its `abs(x - r)` terms and `+` changed.

Selection (`select_dense`) ends in `sorted_topk`: candidates (distance, index) that arrive in
increasing index order are sorted by distance with a stable LSD radix sort on the float bits
(mapped to unsigned keys that order like the floats), so ties keep the lower index first. That is
exactly scikit-learn's (distance, index) order, at a few passes over ~1.3 k candidates instead of a
comparison sort.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

TJ = 128  # references per cache tile (128 x 640 floats = 320 KB, in L2 beside the query rows)


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma.f32): fastmath does not contract x + r * -1 by itself."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.FloatType(), [ir.FloatType()] * 3)
        return builder.call(cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.f32"), args)
    return types.float32(types.float32, types.float32, types.float32), codegen


# knn_filter.filtered_l1 compiles this function (and sample_rank, sorted_topk) in too, and numba's
# cache there does not see an edit here: after changing one, delete dnnknn/__pycache__
@njit(fastmath=True, nogil=True, cache=True)
def _l1_rows(Q, R, out, i0, i1, neg):
    """out[i - i0, j] = sum_k |Q[i, k] - R[j, k]| for queries i0:i1 and every reference j.
    |x - r| is a subtraction, an and and an addition: on CPUs with two add and two FMA pipes (Zen)
    the adds would all queue on the add pipes, so half of the pairs subtract as fma(r, neg, x) with
    neg = -1 at run time (LLVM cannot fold it): exact, and 15-20% faster there."""
    d, m = Q.shape[1], R.shape[0]
    for t in range(0, m, TJ):
        for i in range(i0, i1, 4):
            # rows past i1 / references past m repeat the last one: same value, stored twice
            a0, a1, a2, a3 = i, min(i + 1, i1 - 1), min(i + 2, i1 - 1), min(i + 3, i1 - 1)
            for j in range(t, min(m, t + TJ), 2):
                b0, b1 = j, min(j + 1, m - 1)
                s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = np.float32(0.0)
                for k in range(d):  # vectorised over k: 8 vector accumulators
                    r0, r1 = R[b0, k], R[b1, k]
                    x0, x1, x2, x3 = Q[a0, k], Q[a1, k], Q[a2, k], Q[a3, k]
                    s00, s01 = s00 + abs(x0 - r0), s01 + abs(fma(r1, neg, x0))
                    s10, s11 = s10 + abs(fma(r0, neg, x1)), s11 + abs(x1 - r1)
                    s20, s21 = s20 + abs(x2 - r0), s21 + abs(fma(r1, neg, x2))
                    s30, s31 = s30 + abs(fma(r0, neg, x3)), s31 + abs(x3 - r1)
                out[a0 - i0, b0], out[a0 - i0, b1] = s00, s01
                out[a1 - i0, b0], out[a1 - i0, b1] = s10, s11
                out[a2 - i0, b0], out[a2 - i0, b1] = s20, s21
                out[a3 - i0, b0], out[a3 - i0, b1] = s30, s31


@njit(parallel=True, nogil=True, cache=True)
def l1_distances(Q, R, out, nb, neg):
    """out (n, m) = L1 distances of Q (n, d) to R (m, d), blocks of nb queries in parallel (each
    block streams R once, in cache-sized tiles); neg: -1.0."""
    n = Q.shape[0]
    for b in prange((n + nb - 1) // nb):
        i0 = b * nb
        _l1_rows(Q, R, out[i0:min(n, i0 + nb)], i0, min(n, i0 + nb), neg)


@njit(nogil=True, cache=True)
def sorted_topk(cv, ci, c, kk, out_v, out_i, key, key2, pos, pos2, hist):
    """The kk smallest of the c candidates cv[:c] (float32) with indices ci[:c] (increasing),
    sorted by (distance, index), into out_v/out_i (kk,). key/key2 (uint32) and pos/pos2 (int32)
    hold >= c entries, hist 256: scratch, passed in so a thread allocates it once."""
    lo = np.uint32(0xFFFFFFFF)
    hi = np.uint32(0)
    bits = cv.view(np.uint32)
    for a in range(c):
        b = bits[a]  # float bits -> an unsigned key in the same order (negatives flipped)
        b ^= np.uint32(0x80000000) | ((b >> np.uint32(31)) * np.uint32(0x7FFFFFFF))
        key[a] = b
        pos[a] = a
        lo = min(lo, b)
        hi = max(hi, b)
    for a in range(c):
        key[a] -= lo
    span = hi - lo
    shift = 0
    while shift < 32 and (span >> np.uint32(shift)) > 0:
        hist[:] = 0
        for a in range(c):
            hist[(key[a] >> np.uint32(shift)) & np.uint32(255)] += 1
        total = 0
        for h in range(256):
            cnt = hist[h]
            hist[h] = total
            total += cnt
        for a in range(c):
            h = (key[a] >> np.uint32(shift)) & np.uint32(255)
            dst = hist[h]
            hist[h] = dst + 1
            key2[dst] = key[a]
            pos2[dst] = pos[a]
        key, key2 = key2, key
        pos, pos2 = pos2, pos
        shift += 8
    for a in range(kk):
        p = pos[a]
        out_v[a] = cv[p]
        out_i[a] = ci[p]


@njit(parallel=True, nogil=True, cache=True)
def vote_kernel(lookup, idx, ks, num_classes, out):
    """out[t, i] = the most common lookup[idx[i, :ks[t]]] (ties to the lowest class), for ks
    ascending; the counts grow from one k to the next, so all ks cost one pass."""
    n = idx.shape[0]
    nblocks = min(n, 64)
    for b in prange(nblocks):
        counts = np.empty(num_classes, np.int64)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            counts[:] = 0
            done = 0
            for t in range(len(ks)):
                for a in range(done, ks[t]):
                    counts[lookup[idx[i, a]]] += 1
                done = ks[t]
                best = 0
                for c in range(1, num_classes):
                    if counts[c] > counts[best]:
                        best = c
                out[t, i] = best


@njit(nogil=True, cache=True)
def smallest_at(x, r, top):
    """The r-th smallest (from 0) of x, by insertion into top (r + 1,): the r + 1 smallest so far,
    in order. Past the first values nearly every one is turned away by one comparison: on a row's
    sampled values 7x faster than np.partition, which copies x (1,042 values, r = 7: k = 30), and
    2x (2,000 values, r = 62: k = 1,000)."""
    nt = 0
    for v in x:
        if nt <= r or v < top[r]:
            j = min(nt, r) - 1
            while j >= 0 and top[j] > v:
                top[j + 1] = top[j]
                j -= 1
            top[j + 1] = v
            nt += 1
    return top[r]


@njit(nogil=True, cache=True)
def sample_rank(m, kk):
    """(step, ns, rank): a row of m values sampled every step-th (ns samples), and the rank of the
    sampled value that lies 3 standard deviations above the expected rank of the kk-th smallest."""
    step = max(1, m // max(1024, 2 * kk))
    ns = (m + step - 1) // step
    lam = kk * ns / m  # expected sampled values among the kk smallest
    return step, ns, min(ns - 1, int(np.ceil(lam + 3 * np.sqrt(lam) + 3)))


@njit(parallel=True, nogil=True, cache=True)
def select_dense(D, kk, vals, idxs):
    """The kk smallest of each row of D (n, m), sorted by (distance, index), into vals/idxs (n, kk).

    A threshold a little above the kk-th value - from a strided sample of the row when the row is
    long (the rank-th smallest sampled value, 3 standard deviations above the expected rank of the
    kk-th: ~1.2-2 kk candidates), else the exact kk-th value (introselect) - keeps the candidates in
    one branch-free pass; if an unlucky sample kept fewer than kk, the exact kk-th value is used.
    Rows go in blocks so that each thread allocates its buffers once."""
    n, m = D.shape
    step, ns, rank = sample_rank(m, kk)
    nblocks = min(n, 256)
    for b in prange(nblocks):
        cv = np.empty(m, np.float32)
        ci = np.empty(m, np.int32)
        key, key2 = np.empty(m, np.uint32), np.empty(m, np.uint32)
        pos, pos2 = np.empty(m, np.int32), np.empty(m, np.int32)
        hist = np.empty(256, np.int64)
        top = np.empty(rank + 1, np.float32)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            row = D[i]
            if step > 1 and rank < ns - 1:
                thr = smallest_at(row[::step], rank, top)
            else:
                thr = np.partition(row, kk - 1)[kk - 1]
            while True:
                c = 0
                for j in range(m):
                    ci[c] = j
                    c += row[j] <= thr
                if c >= kk:
                    break
                thr = np.partition(row, kk - 1)[kk - 1]  # an unlucky sample: the exact value
            for a in range(c):
                cv[a] = row[ci[a]]
            sorted_topk(cv, ci, c, kk, vals[i], idxs[i], key, key2, pos, pos2, hist)

