"""Exact L1 search past the fp32 kernel's speed: 8-bit codes bound every distance, the bounds keep
the few references that can be among the k nearest, and the fp32 kernel re-ranks only those.

Codes. Every dimension is shifted by its own offset and divided by one common step s, then rounded
and clipped to 0..255: x -> c(x), read back as q(x) = lo + s c(x). Then ||q(x) - q(r)||_1 =
s SAD(c(x), c(r)), a sum of absolute byte differences that x86 computes 64 at a time (`vpsadbw`,
reached through LLVM's intrinsic: numba does not find it by itself). Each vector's own error
e(x) = ||x - q(x)||_1, clipping included, is computed in float64 and rounded up past its error.

The bound (triangle inequality, per dimension): |d(x, r) - s SAD| <= e(x) + e(r), so
lb = s SAD - e(x) - e(r) <= d(x, r) <= s SAD + e(x) + e(r) = ub.

The candidate test. Let tau be the k-th smallest ub of a query, g = 2 (dim + 1) 2^-24 (twice the
bound on the relative error of a float32 sum of dim non-negative rounded terms) and d~ the fp32
kernel's distance, |d~ - d| <= g d. Keep r when lb(r) <= tau (1 + g) / (1 - g).
  Proof that no neighbour is dropped: k references have d~ <= (1 + g) ub <= (1 + g) tau, so the k-th
  smallest d~ is at most (1 + g) tau; any r with d~(r) at most that has lb(r) <= d(r) <= d~(r) / (1 - g).
So every reference whose fp32 distance is at most the k-th smallest is kept, ties at the k-th
included; the candidates, in increasing index order, are re-ranked with the fp32 search's own
kernel (`knn_kernels._l1_rows`, called with the argument types it has there, so that it compiles to
the same sums: `tests/test_knn_filter.py` checks the float32 values bit for bit) and sorted by
(distance, index): the same neighbours, neighbour for neighbour, as the fp32 search.
"""
from __future__ import annotations

import os

import numpy as np
from llvmlite import binding as llb
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils, config
from numba.extending import intrinsic

from .knn_kernels import _l1_rows, sample_rank, sorted_topk

BLOCK = 64  # bytes of codes per SAD step (the codes are padded to a multiple of it with zeros)
TILE = 256  # references per re-rank tile: a query's candidates among them go to `_l1_rows` in one call
SAD_BUFFER = 64 * 2**20  # bytes of SADs a thread holds: queries per block = this / (4 m), at most QB
QB = 256  # queries per block at most: a block reads each candidate row once
TJ_SAD = 128  # references' codes per tile (128 x 640 bytes: 80 KB, in L2 while a block of queries uses them)


def _sad_width() -> int:
    """Bytes per `vpsadbw` on this CPU: 64 (AVX-512 BW), 32 (AVX2), or 0 (no such instruction, or
    code compiled for another CPU (NUMBA_CPU_NAME): then the fp32 search runs alone). $DNNKNN_SAD_WIDTH
    lowers it (32: the AVX2 kernel on an AVX-512 CPU, with a NUMBA_CACHE_DIR of its own; 0: no filter)."""
    if config.CPU_NAME or config.CPU_FEATURES or config.DISABLE_JIT:
        return 0
    try:
        feats = llb.get_host_cpu_features()
    except RuntimeError:
        return 0
    host = 64 if feats.get("avx512bw") else 32 if feats.get("avx2") else 0
    asked = os.environ.get("DNNKNN_SAD_WIDTH", "")
    return min(host, int(asked)) if asked in ("0", "32", "64") else host


SAD_WIDTH = _sad_width()


@intrinsic
def _sad_4x2(typingctx, q0, q1, q2, q3, r0, r1, nblk):
    """The 8 sums of absolute byte differences of 4 query rows and 2 reference rows, each given by
    its address and nblk blocks of 64 bytes: UniTuple(int64, 8), (q0, r0), (q0, r1), (q1, r0), ..."""
    w = SAD_WIDTH or 32
    name = "llvm.x86.avx512.psad.bw.512" if w == 64 else "llvm.x86.avx2.psad.bw"
    sig = types.UniTuple(types.int64, 8)(q0, q1, q2, q3, r0, r1, nblk)

    def codegen(context, builder, signature, args):
        i8, i64 = ir.IntType(8), ir.IntType(64)
        vty, accty = ir.VectorType(i8, w), ir.VectorType(i64, w // 8)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(accty, [vty, vty]), name)
        ptrs = [builder.inttoptr(a, vty.as_pointer()) for a in args[:6]]
        accs = [cgutils.alloca_once_value(builder, ir.Constant(accty, [0] * (w // 8))) for _ in range(8)]
        steps = builder.mul(args[6], ir.Constant(args[6].type, BLOCK // w))
        with cgutils.for_range(builder, steps) as loop:
            qs = [builder.load(builder.gep(p, [loop.index]), align=1) for p in ptrs[:4]]
            rs = [builder.load(builder.gep(p, [loop.index]), align=1) for p in ptrs[4:]]
            for a, (qv, rv) in enumerate((qv, rv) for qv in qs for rv in rs):
                builder.store(builder.add(builder.load(accs[a]), builder.call(fn, [qv, rv])), accs[a])
        red = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [accty]),
                                             f"llvm.vector.reduce.add.v{w // 8}i64")
        sums = [builder.call(red, [builder.load(acc)]) for acc in accs]
        return context.make_tuple(builder, signature.return_type, sums)
    return sig, codegen


@intrinsic
def _prefetch(typingctx, addr):
    """A hint to bring the cache line at address addr into cache (llvm.prefetch: read, keep)."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.inttoptr(args[0], i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(addr), codegen


@njit(nogil=True, cache=True)
def _prefetch_row(row):
    """Prefetch every 64-byte line of a contiguous row (its rows are read from memory in no order the
    hardware prefetcher follows)."""
    base = row.ctypes.data
    for a in range(base & ~63, base + row.shape[0] * row.itemsize, 64):  # from the line holding its start
        _prefetch(a)


def quantise(refs: np.ndarray, queries: np.ndarray):
    """8-bit codes of both sets on one grid fitted to the references: offsets lo (dim,) at each
    dimension's minimum, one step s from the 99.9th percentile of the shifted values (the rare larger
    ones clip, their error counted in e). Returns (codes_refs, codes_queries) uint8 (n, padded dim),
    (w_refs, w_queries) float64: e / s rounded up, the bound's slack in code units."""
    lo = refs.min(axis=0).astype(np.float64)
    sample = refs[::max(1, len(refs) // 2048)]  # ~2,000 rows: the step needs no more
    shifted = sample - lo.astype(np.float32)
    top = float(np.quantile(shifted, 0.999)) if refs.size else 0.0
    top = top if top > 0 else float(shifted.max(initial=0.0))  # mostly zeros: the largest value
    s = top / 255 if top > 0 else 1.0
    dp = -(-refs.shape[1] // BLOCK) * BLOCK
    out = []
    for x in (refs, queries):
        codes, w = np.zeros((len(x), dp), np.uint8), np.empty(len(x), np.float64)
        _encode(x, lo, s, codes, w)
        out.append((codes, w))
    (cr, wr), (cq, wq) = out
    return (cr, cq), (wr, wq)


@njit(parallel=True, nogil=True, cache=True)
def _encode(x, lo, s, codes, w):
    """codes[i, :d] = round((x[i] - lo) / s) clipped to 0..255, and w[i] = ||x[i] - lo - s codes[i]||_1 / s
    (float64), rounded up."""
    for i in prange(x.shape[0]):
        e = 0.0
        for k in range(x.shape[1]):
            v = np.float64(x[i, k]) - lo[k]
            c = min(255.0, max(0.0, np.rint(v / s)))
            codes[i, k] = np.uint8(c)
            e += abs(v - s * c)
        w[i] = np.nextafter(e / s, np.inf) * (1 + 1e-12)


@njit(nogil=True, cache=True)
def _sad_tile(CQ, CR, i, i1, j0, j1, sad, nblk):
    """sad[a, j] = SAD(CQ[i + a], CR[j]) for the up-to-4 queries i:i1 (a = 0..3) and j0 <= j < j1."""
    a0, a1, a2, a3 = i, min(i + 1, i1 - 1), min(i + 2, i1 - 1), min(i + 3, i1 - 1)
    q0, q1 = CQ[a0].ctypes.data, CQ[a1].ctypes.data
    q2, q3 = CQ[a2].ctypes.data, CQ[a3].ctypes.data
    for j in range(j0, j1, 2):
        b1 = min(j + 1, j1 - 1)  # an odd tile's last reference is summed twice, stored once
        s = _sad_4x2(q0, q1, q2, q3, CR[j].ctypes.data, CR[b1].ctypes.data, nblk)
        sad[0, j], sad[0, b1] = s[0], s[1]
        sad[1, j], sad[1, b1] = s[2], s[3]
        sad[2, j], sad[2, b1] = s[4], s[5]
        sad[3, j], sad[3, b1] = s[6], s[7]


@njit(nogil=True, cache=True)
def _candidates(row, wr, wq, kk, factor, ci, cu):
    """The references that the bound cannot rule out of a query's kk nearest, in increasing index
    order, into ci[:c]; returns c. row (m,) int32: SAD to each reference; wr (m,), wq: slacks. In
    code units ub_j = row_j + wr_j + wq, lb_j = row_j - wr_j - wq, tau = the kk-th smallest ub:
    keep j when lb_j <= tau * factor. One pass keeps a superset, lb_j <= t * factor for t a sampled
    ub, which holds for every ub_j <= t; where at least kk of those were kept, tau <= t and tau is
    read from the superset; else t = inf (every reference) and the pass runs again."""
    m = len(row)
    step, ns, rank = sample_rank(m, kk)
    for a in range(ns):
        cu[a] = row[a * step] + wr[a * step]
    t = np.inf if rank >= ns - 1 else np.partition(cu[:ns], rank)[rank] + wq
    while True:
        lim = t * factor + wq
        c = 0
        for j in range(m):
            v = row[j] - wr[j]
            ci[c] = j
            cu[c] = v + 2 * wr[j]  # ub_j - wq
            c += v <= lim
        below = 0
        for a in range(c):
            below += cu[a] + wq <= t
        if below >= kk:
            break
        t = np.inf  # an unlucky sample: every reference
    tau = np.partition(cu[:c], kk - 1)[kk - 1] + wq
    lim = tau * factor + wq
    keep = 0
    for a in range(c):
        j = ci[a]
        if row[j] - wr[j] <= lim:
            ci[keep] = j
            keep += 1
    return keep


@njit(parallel=True, nogil=True, cache=True)
def filtered_l1(Q, R, CQ, CR, wq, wr, kk, vals, idxs, counts, neg, gamma, nthreads, qb):
    """The kk nearest references (L1) of each query, sorted by (distance, index), into vals/idxs
    (n, kk): 8-bit bounds keep the candidates, `_l1_rows` re-ranks them (see the module's proof).
    counts (n,) receives each query's number of candidates re-ranked. Queries go in blocks of qb (a
    multiple of 4) that share each tile of references while it is in cache: TJ_SAD references'
    codes for the bounds, then TILE references' rows for the re-rank, so that a block reads each
    candidate row from memory once, not once per query that keeps it (while a thread's tile, the
    next one and its queries' rows, about 2 MB at d = 640, stay in cache)."""
    n, m, d = Q.shape[0], R.shape[0], Q.shape[1]
    nblk = CQ.shape[1] // 64
    factor = (1 + gamma) / (1 - gamma) * (1 + 1e-12)
    ngroups = (n + qb - 1) // qb
    nblocks = min(nthreads, ngroups)  # one block a thread: its buffers allocated once
    for b in prange(nblocks):
        sad = np.empty((qb, m), np.int32)  # a query's SADs, then its candidates (increasing index)
        ci = np.empty(m, np.int32)
        cu = np.empty(m, np.float64)
        tile = np.empty((TILE, d), np.float32)
        row0, row1 = np.int64(0), np.int64(1)  # int64 variables, as l1_distances passes its bounds: the same _l1_rows
        qrow = np.empty((1, d), np.float32)
        tout = np.empty((1, TILE), np.float32)
        key, key2 = np.empty(m, np.uint32), np.empty(m, np.uint32)
        pos, pos2 = np.empty(m, np.int32), np.empty(m, np.int32)
        hist = np.empty(256, np.int64)
        off = np.empty(qb + 1, np.int64)  # query a's distances are cv[off[a]:off[a + 1]]
        done, ahead = np.empty(qb, np.int64), np.empty(qb, np.int64)  # its candidates re-ranked / prefetched
        cv = np.empty(m, np.float32)  # the block's distances: grown when a block keeps more
        for g in range(ngroups * b // nblocks, ngroups * (b + 1) // nblocks):
            i0, i1 = g * qb, min(n, g * qb + qb)
            for t in range(0, m, TJ_SAD):
                for a in range(i0, i1, 4):
                    _sad_tile(CQ, CR, a, min(i1, a + 4), t, min(m, t + TJ_SAD), sad[a - i0:], nblk)
            off[0] = 0
            for a in range(i1 - i0):
                c = _candidates(sad[a], wr, wq[i0 + a], kk, factor, ci, cu)
                counts[i0 + a] = c
                sad[a, :c] = ci[:c]
                off[a + 1] = off[a] + c
                done[a] = ahead[a] = 0
            if off[i1 - i0] > len(cv):
                cv = np.empty(off[i1 - i0], np.float32)
            for t in range(-TILE, m, TILE):  # t = -TILE: only the prefetch of the first tile
                for a in range(i1 - i0):
                    c, p, e = off[a + 1] - off[a], done[a], ahead[a]
                    nxt = e  # prefetch this query's candidates in the next tile while this one is re-ranked
                    while nxt < c and sad[a, nxt] < t + 2 * TILE:
                        _prefetch_row(R[sad[a, nxt]])
                        nxt += 1
                    ahead[a] = nxt
                    if e == p:
                        continue
                    for u in range(p, e):
                        tile[u - p] = R[sad[a, u]]
                    qrow[0] = Q[i0 + a]
                    _l1_rows(qrow, tile[:e - p], tout[0:1], row0, row1, neg)
                    cv[off[a] + p:off[a] + e] = tout[0, :e - p]
                    done[a] = e
            for a in range(i1 - i0):
                sorted_topk(cv[off[a]:off[a + 1]], sad[a], off[a + 1] - off[a], kk, vals[i0 + a], idxs[i0 + a],
                            key, key2, pos, pos2, hist)
