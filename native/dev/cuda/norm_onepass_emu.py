# Thread-level numpy emulation of the one-pass norm kernels in native/dev/cuda/norm_onepass.cuh
# (dev_cuda_norm version 2): ln_mod_bwd_1p_k, gated_res_bwd_1p_k, colpart_sum_k,
# ln_mod_fwd_reg_k and the launchers' choices (norm_onepass_rows, thread counts, partial layout).
# Checked before any GPU run: every index the kernels compute, that each output element is
# written exactly once (nothing outside the mod_stride chunks, nothing past D), that every read
# is in bounds, and the results against float64. Float32 arithmetic in the kernels' order
# (warp sums as the xor butterfly); no GPU needed, ~10 s:
#   python3 native/dev/cuda/norm_onepass_emu.py
# (native/dev/cuda/test_norm_onepass_host.cpp runs the kernels' own source on the host; this port is
# an independent second reading, with write counts on every buffer.)
import numpy as np

f32 = np.float32
R_LN, R_GATED, MAX_THREADS, MAX_VPL = 4, 8, 512, 12


def norm_onepass_rows(N, L, D):  # norm_onepass_rows_policy, same integer arithmetic
    threads = ((D + 3) // 4 + 31) // 32 * 32
    want = max(264, (131072 + threads - 1) // threads)
    tr = 64
    while tr > 8 and N * ((L + tr - 1) // tr) < want:
        tr //= 2
    return tr


class Mem:  # a device buffer: reads must be in bounds and initialised, writes are counted
    def __init__(self, a, name):
        self.a = np.array(a, dtype=f32).ravel()
        self.w = np.zeros(self.a.size, np.int64)
        self.name = name

    def ld(self, idx):
        idx = np.asarray(idx)
        assert idx.size == 0 or (idx.min() >= 0 and idx.max() < self.a.size), f"{self.name}: read out of bounds"
        v = self.a[idx]
        assert not np.isnan(v).any(), f"{self.name}: read of an unwritten (NaN) element"
        return v

    def st(self, idx, v):
        idx = np.asarray(idx)
        assert idx.size == 0 or (idx.min() >= 0 and idx.max() < self.a.size), f"{self.name}: write out of bounds"
        assert len(np.unique(idx)) == idx.size
        self.a[idx] = v
        self.w[idx] += 1


def warp_sum(v):  # v [threads]: xor butterfly per warp, float32, as warp_sum()
    v = v.astype(f32).copy()
    lanes = np.arange(v.size)
    for o in (16, 8, 4, 2, 1):
        v = (v + v[lanes ^ o]).astype(f32)
    return v


def ln_bwd_1p(dy, x, mean, rstd, scale, ms, dx, part, N, L, D, W, TR, accum):
    """ln_mod_bwd_1p_k on grid (P, N); dx may be None. Vectorised over the block's threads."""
    R = R_LN
    threads = ((D // W) + 31) // 32 * 32
    assert threads <= MAX_THREADS
    P = (L + TR - 1) // TR
    t = np.arange(threads)
    c = t * W
    own = c < D
    warp = t >> 5
    nw = threads >> 5
    cols = (c[:, None] + np.arange(W)[None, :])  # [threads, W]
    acc = dx is not None and accum
    for n in range(N):
        for p in range(P):
            l0, l1 = p * TR, min(L, p * TR + TR)
            sc1 = np.ones((threads, W), f32)
            sc1[own] = (f32(1) + scale.ld(n * ms + cols[own])).astype(f32)
            as_ = np.zeros((threads, W), f32)
            ac = np.zeros((threads, W), f32)
            red = np.full((2, MAX_THREADS // 32, 2 * R), np.nan, f32)
            buf = 0
            lb = l0
            while lb < l1:
                row0 = n * L + lb
                e0 = row0 * D + c  # [threads]
                g = np.zeros((R, threads, W), f32)
                xh = np.zeros((R, threads, W), f32)
                old = np.zeros((R, threads, W), f32)
                rs = np.zeros(R, f32)
                for r in range(R):
                    l = lb + r
                    e = e0 + r * D
                    if l < l1:
                        rs[r] = rstd.ld(row0 + r)
                        mu = mean.ld(row0 + r)
                        idx = e[own][:, None] + np.arange(W)[None, :]
                        g[r][own] = dy.ld(idx)
                        xx = x.ld(idx)
                        if acc:
                            old[r][own] = dx.ld(idx)
                        xh[r][own] = ((xx - mu).astype(f32) * rs[r]).astype(f32)
                if dx is not None:
                    sa = np.zeros((R, threads), f32)
                    sb = np.zeros((R, threads), f32)
                    for r in range(R):
                        for i in range(W):
                            gm = (g[r][:, i] * sc1[:, i]).astype(f32)
                            sa[r] = (sa[r] + gm).astype(f32)
                            sb[r] = (sb[r] + gm * xh[r][:, i]).astype(f32)
                        sa[r] = warp_sum(sa[r])
                        sb[r] = warp_sum(sb[r])
                    for w in range(nw):  # lane 0 of each warp
                        red[buf, w, :R] = sa[:, w * 32]
                        red[buf, w, R:] = sb[:, w * 32]
                    A = np.zeros(R, f32)
                    B = np.zeros(R, f32)
                    for w in range(nw):
                        assert not np.isnan(red[buf, w]).any()
                        A = (A + red[buf, w, :R]).astype(f32)
                        B = (B + red[buf, w, R:]).astype(f32)
                    a = (A / f32(D)).astype(f32)
                    b = (B / f32(D)).astype(f32)
                    for r in range(R):
                        l = lb + r
                        if l < l1:
                            q = (e0 + r * D)[own][:, None] + np.arange(W)[None, :]
                            o = rs[r] * (g[r][own] * sc1[own] - a[r] - xh[r][own] * b[r])
                            o = o.astype(f32)
                            if acc:
                                o = (o + old[r][own]).astype(f32)
                            dx.st(q, o)
                    buf ^= 1
                for r in range(R):
                    as_ = (as_ + g[r]).astype(f32)
                    ac = (ac + g[r] * xh[r]).astype(f32)
                lb += R
            q = ((n * P + p) * 2 * D + c)[own][:, None] + np.arange(W)[None, :]
            part.st(q, as_[own])
            part.st(q + D, ac[own])
    return P


def gated_bwd_1p(dxm, gate, ms, h, dh, part, N, L, D, W, TR):
    R = R_GATED
    threads = ((D // W) + 31) // 32 * 32
    assert threads <= MAX_THREADS
    P = (L + TR - 1) // TR
    c = np.arange(threads) * W
    c = c[c < D]  # threads past D return at once
    for n in range(N):
        for p in range(P):
            l0, l1 = p * TR, min(L, p * TR + TR)
            gidx = n * ms + c[:, None] + np.arange(W)[None, :]
            g = gate.ld(gidx)
            acc = np.zeros((c.size, W), f32)
            lb = l0
            while lb < l1:
                v = np.zeros((R, c.size, W), f32)
                u = np.zeros((R, c.size, W), f32)
                for r in range(R):
                    if lb + r < l1:
                        e = ((n * L + lb + r) * D + c)[:, None] + np.arange(W)[None, :]
                        v[r] = dxm.ld(e)
                        u[r] = h.ld(e)
                for r in range(R):
                    if lb + r < l1:
                        e = ((n * L + lb + r) * D + c)[:, None] + np.arange(W)[None, :]
                        dh.st(e, (g * v[r]).astype(f32))
                    acc = (acc + v[r] * u[r]).astype(f32)
                lb += R
            part.st(((n * P + p) * D + c)[:, None] + np.arange(W)[None, :], acc)
    return P


def colpart_sum(part, P, K, D, outs, ms, N):
    for n in range(N):
        for d in range(D):  # one thread per (n, d); threads with d >= D return
            step = K * D
            q = n * P * step + d
            s = [f32(0)] * K
            for p in range(P):
                for k in range(K):
                    s[k] = f32(s[k] + part.ld(q + p * step + k * D))
            for k in range(K):
                outs[k].st(n * ms + d, s[k])


def ln_fwd_reg(x, shift, scale, ms, y, mean_o, rstd_o, N, L, D4, eps):
    vpl = (D4 + 31) // 32
    assert vpl <= MAX_VPL
    D = f32(4 * D4)
    lane = np.arange(32)
    for row in range(N * L):  # one warp per row (rows past N*L: warps return)
        n = row // L
        v = np.zeros((vpl, 32, 4), f32)
        for k in range(vpl):
            d = lane + 32 * k
            ok = d < D4
            v[k][ok] = x.ld((row * D4 + d[ok])[:, None] * 4 + np.arange(4)[None, :])
        s = np.zeros(32, f32)
        for k in range(vpl):
            ok = lane + 32 * k < D4
            t = ((v[k][:, 0] + v[k][:, 1]).astype(f32) + (v[k][:, 2] + v[k][:, 3]).astype(f32)).astype(f32)
            s = np.where(ok, (s + t).astype(f32), s)
        mu = f32(warp_sum(s)[0] / D)
        s2 = np.zeros(32, f32)
        for k in range(vpl):
            ok = lane + 32 * k < D4
            a = (v[k] - mu).astype(f32)
            t = ((a[:, 0] * a[:, 0] + a[:, 1] * a[:, 1]).astype(f32) + (a[:, 2] * a[:, 2] + a[:, 3] * a[:, 3]).astype(f32)).astype(f32)
            s2 = np.where(ok, (s2 + t).astype(f32), s2)
        var = f32(warp_sum(s2)[0] / D)
        rs = f32(1.0 / np.sqrt(np.float64(var) + eps))
        for k in range(vpl):
            d = lane + 32 * k
            ok = d < D4
            e = (d[ok])[:, None] * 4 + np.arange(4)[None, :]
            hh = shift.ld(n * ms + e)
            kk = scale.ld(n * ms + e)
            o = ((v[k][ok] - mu) * rs * (f32(1) + kk) + hh).astype(f32)
            y.st(row * 4 * D4 + e, o)
        mean_o.st(row, mu)
        rstd_o.st(row, rs)


def rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.sqrt(((a - b) ** 2).sum() / max((b ** 2).sum(), 1e-300))


def check_ln(N, L, D, W, TR, accum, has_dx, rng):
    ms = 6 * D + (4 if W == 1 else 0)  # a stride that is not 6 D in the scalar case too
    xs = rng.normal(0.5, 2.0, (N, L, D))
    mean = xs.mean(-1)
    rstd = 1.0 / np.sqrt(xs.var(-1) + 1e-6)
    mod = rng.normal(0, 0.3, N * ms + 2 * D)
    sc_off = D  # scale = chunk 1
    dyv = rng.normal(0, 1, (N, L, D))
    dx0 = rng.normal(0, 1, (N, L, D))
    # float64 reference (the CPU backend's formula)
    sc = np.stack([mod[n * ms + sc_off: n * ms + sc_off + D] for n in range(N)])[:, None, :]
    xh = (xs - mean[..., None]) * rstd[..., None]
    g = dyv * (1 + sc)
    ref_dx = rstd[..., None] * (g - g.mean(-1, keepdims=True) - xh * (g * xh).mean(-1, keepdims=True))
    if accum:
        ref_dx = ref_dx + dx0
    ref_ds, ref_dc = dyv.sum(1), (dyv * xh).sum(1)
    dyM, xM = Mem(dyv, "dy"), Mem(xs, "x")
    meanM, rstdM = Mem(mean, "mean"), Mem(rstd, "rstd")
    scM = Mem(mod[sc_off:], "scale")
    dxM = Mem(dx0 if accum else np.full(N * L * D, np.nan), "dx") if has_dx else None
    P = (L + TR - 1) // TR
    part = Mem(np.full(N * P * 2 * D, np.nan), "part")
    dmod = Mem(np.full(N * ms + 2 * D, np.nan), "dmod")
    ln_bwd_1p(dyM, xM, meanM, rstdM, scM, ms, dxM, part, N, L, D, W, TR, accum)
    assert (part.w == 1).all(), "every partial written exactly once"

    class View:  # dshift = dmod + 0, dscale = dmod + D, both at mod_stride
        def __init__(self, m, off): self.m, self.off = m, off
        def st(self, i, v): self.m.st(np.asarray(i) + self.off, v)
    colpart_sum(part, P, 2, D, [View(dmod, 0), View(dmod, D)], ms, N)
    want = np.zeros(dmod.a.size, np.int64)
    for n in range(N):
        want[n * ms: n * ms + 2 * D] = 1
    assert (dmod.w == want).all(), "dshift/dscale: each (n, d) exactly once, nothing else"
    got_ds = np.stack([dmod.a[n * ms: n * ms + D] for n in range(N)])
    got_dc = np.stack([dmod.a[n * ms + D: n * ms + 2 * D] for n in range(N)])
    errs = [rel(got_ds, ref_ds), rel(got_dc, ref_dc)]
    if has_dx:
        assert (dxM.w == 1).all(), "dx: every element exactly once"
        errs.append(rel(dxM.a.reshape(N, L, D), ref_dx))
    ok = max(errs) < 1e-5
    print(f"{'ok  ' if ok else 'FAIL'} ln bwd 1p N{N} L{L} D{D} W{W} TR{TR} P{P} accum{int(accum)} dx{int(has_dx)}: "
          f"rel dshift {errs[0]:.1e} dscale {errs[1]:.1e}" + (f" dx {errs[2]:.1e}" if has_dx else ""))
    return ok


def check_gated(N, L, D, W, TR, rng):
    ms = 6 * D + (4 if W == 1 else 0)
    mod = rng.normal(0, 1, N * ms + 3 * D)
    dxv = rng.normal(0, 1, (N, L, D))
    hv = rng.normal(0, 1, (N, L, D))
    gate = np.stack([mod[n * ms + 2 * D: n * ms + 3 * D] for n in range(N)])
    ref_dh = gate[:, None, :] * dxv
    ref_dg = (dxv * hv).sum(1)
    P = (L + TR - 1) // TR
    dxM, hM, gM = Mem(dxv, "dx"), Mem(hv, "h"), Mem(mod[2 * D:], "gate")
    dh = Mem(np.full(N * L * D, np.nan), "dh")
    part = Mem(np.full(N * P * D, np.nan), "part")
    dg = Mem(np.full(N * ms + 3 * D, np.nan), "dgate")
    gated_bwd_1p(dxM, gM, ms, hM, dh, part, N, L, D, W, TR)
    assert (dh.w == 1).all() and (part.w == 1).all()

    class View:
        def __init__(self, m, off): self.m, self.off = m, off
        def st(self, i, v): self.m.st(np.asarray(i) + self.off, v)
    colpart_sum(part, P, 1, D, [View(dg, 2 * D)], ms, N)
    want = np.zeros(dg.a.size, np.int64)
    for n in range(N):
        want[n * ms + 2 * D: n * ms + 3 * D] = 1
    assert (dg.w == want).all()
    got = np.stack([dg.a[n * ms + 2 * D: n * ms + 3 * D] for n in range(N)])
    e1, e2 = rel(dh.a.reshape(N, L, D), ref_dh), rel(got, ref_dg)
    ok = max(e1, e2) < 1e-5
    print(f"{'ok  ' if ok else 'FAIL'} gated bwd 1p N{N} L{L} D{D} W{W} TR{TR} P{P}: rel dh {e1:.1e} dgate {e2:.1e}")
    return ok


def check_fwd(N, L, D, rng):
    D4 = D // 4
    ms = 6 * D
    xs = rng.normal(0.5, 2.0, (N, L, D))
    mod = rng.normal(0, 0.3, N * ms + 2 * D)
    y, mo, ro = Mem(np.full(N * L * D, np.nan), "y"), Mem(np.full(N * L, np.nan), "mean"), Mem(np.full(N * L, np.nan), "rstd")
    ln_fwd_reg(Mem(xs, "x"), Mem(mod, "shift"), Mem(mod[D:], "scale"), ms, y, mo, ro, N, L, D4, 1e-6)
    assert (y.w == 1).all() and (mo.w == 1).all() and (ro.w == 1).all()
    sh = np.stack([mod[n * ms: n * ms + D] for n in range(N)])[:, None, :]
    sc = np.stack([mod[n * ms + D: n * ms + 2 * D] for n in range(N)])[:, None, :]
    mean = xs.mean(-1)
    rstd = 1 / np.sqrt(xs.var(-1) + 1e-6)
    ref = (xs - mean[..., None]) * rstd[..., None] * (1 + sc) + sh
    e = [rel(y.a.reshape(N, L, D), ref), rel(mo.a, mean.ravel()), rel(ro.a, rstd.ravel())]
    ok = max(e) < 1e-5
    print(f"{'ok  ' if ok else 'FAIL'} ln fwd reg N{N} L{L} D{D} VPL{(D4 + 31) // 32}: rel y {e[0]:.1e} mean {e[1]:.1e} rstd {e[2]:.1e}")
    return ok


def main():
    rng = np.random.default_rng(7)
    ok = True
    # the launcher's choice of rows per block at DiT sizes (and what the partials cost)
    for name, N, L, D in [("S/2 b32", 32, 256, 384), ("S/2 b256", 256, 256, 384), ("B/2 b256", 256, 256, 768),
                          ("XL/2 b32", 32, 256, 1152), ("XL/2 b256", 256, 256, 1152)]:
        tr = norm_onepass_rows(N, L, D)
        P = (L + tr - 1) // tr
        print(f"     rows {name:<10} D{D}: TR {tr:2d}, P {P:2d}, blocks {N * P:5d} x {(D // 4 + 31) // 32 * 32} threads, "
              f"LN partials {N * P * 2 * D * 4 / 2**20:.1f} MiB ({2 * 2 * 4 / tr:.3f} B/elem written + read)")
    assert norm_onepass_rows(256, 256, 1152) == 64 and norm_onepass_rows(32, 256, 1152) == 16
    # shapes of dev_cuda_norm (policy TR, and 10 rows per block as its version 3), accumulate
    # on/off, dx null, the scalar form (D = 50) and the float4 form
    cases = [(2, 67, 384, 4), (1, 5, 72, 4), (3, 13, 1152, 4), (2, 7, 50, 1), (3, 29, 50, 1), (2, 9, 8, 4), (1, 1, 4, 4)]
    for (N, L, D, W) in cases:
        for TR in sorted({norm_onepass_rows(N, L, D), 10, 4, 1}):
            for accum in (True, False):
                ok &= check_ln(N, L, D, W, TR, accum, True, rng)
            ok &= check_gated(N, L, D, W, TR, rng)
        ok &= check_ln(N, L, D, W, norm_onepass_rows(N, L, D), False, False, rng)
    # widest rows the one-pass kernels serve: 512 threads (float4 D = 2048, scalar D = 512)
    ok &= check_ln(1, 6, 2048, 4, 4, True, True, rng)
    ok &= check_ln(1, 6, 512, 1, 4, True, True, rng)
    ok &= check_gated(1, 9, 2048, 4, 8, rng)
    for (N, L, D) in [(2, 67, 384), (1, 5, 72), (3, 13, 1152), (1, 3, 1536), (2, 3, 4)]:
        ok &= check_fwd(N, L, D, rng)
    print("PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
