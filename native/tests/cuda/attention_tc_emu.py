# Lane-level numpy emulation of native/src/cuda/attention_tc.cu (see the end of the file).
import numpy as np
rng = np.random.default_rng(0)
def bf(x): # round to bf16 (RNE)
    x = np.asarray(x, np.float32).copy(); u = x.view(np.uint32)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32); return u.view(np.float32)

# shared memory as bf16-element arrays; a "word" w of a row holds elements 2w, 2w+1
def word(S, idx_words):  # S: flat bf16 array; returns pair
    return (S[2*idx_words], S[2*idx_words+1])

def mma(Cfr, Afr, Bfr):
    # Cfr[lane] = [c0..c3], Afr[lane] = 4 pairs, Bfr[lane] = 2 pairs -> D
    A = np.zeros((16,16)); B = np.zeros((16,8)); C = np.zeros((16,8))
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        a = Afr[lane]
        A[g, 2*t:2*t+2] = a[0]; A[g+8, 2*t:2*t+2] = a[1]; A[g, 2*t+8:2*t+10] = a[2]; A[g+8, 2*t+8:2*t+10] = a[3]
        b = Bfr[lane]
        B[2*t:2*t+2, g] = b[0]; B[2*t+8:2*t+10, g] = b[1]
        c = Cfr[lane]
        C[g, 2*t:2*t+2] = c[0:2]; C[g+8, 2*t:2*t+2] = c[2:4]
    D = C + A @ B
    out = []
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        out.append(np.array([D[g,2*t], D[g,2*t+1], D[g+8,2*t], D[g+8,2*t+1]]))
    return out

def pack(lo, hi): return (bf(lo), bf(hi))

def dims(HD):
    HDP = (HD + 15)//16*16; return HDP, HDP//16, HDP//8, HDP//2 + 4
def TW(R): return R//2 + 4

def load_tile(mat, r0, L, HD, ROWS, f):  # mat: [Ltot, HD] float
    HDP = dims(HD)[0]
    for r in range(ROWS):
        for c in range(0, HDP, 4):
            v = np.zeros(4, np.float32)
            if r0 + r < L and c < HD: v = mat[r0 + r, c:c+4]
            f(r, c, v)

def st_row(S, SW):
    def f(r, c, v):
        i = 2*(r*SW + c//2); S[i:i+4] = bf(v)
    return f
def st_col(T, TWW):
    def f(r, c, v):
        for q in range(4): T[(c+q)*(2*TWW) + r] = bf(v[q])
    return f

def load_a(S, SW, row0, KT, lane):
    g, t = lane >> 2, lane & 3
    return [[word(S, (row0+g)*SW + kt*8 + t), word(S, (row0+g+8)*SW + kt*8 + t),
             word(S, (row0+g)*SW + kt*8 + 4 + t), word(S, (row0+g+8)*SW + kt*8 + 4 + t)] for kt in range(KT)]

def mma_k_hd(NTILES, KT, a_all, B, SW):  # returns c[lane][nt] (4)
    c = [[np.zeros(4) for _ in range(NTILES)] for _ in range(32)]
    for nt in range(NTILES):
        cur = [c[l][nt] for l in range(32)]
        for kt in range(KT):
            Bfr = []
            for lane in range(32):
                g, t = lane >> 2, lane & 3
                rw = (nt*8 + g)*SW + kt*8
                Bfr.append([word(B, rw + t), word(B, rw + 4 + t)])
            cur = mma(cur, [a_all[l][kt] for l in range(32)], Bfr)
        for l in range(32): c[l][nt] = cur[l]
    return c

def mma_k_rows(acc, p, KSTEPS, NT, BT, TWW):
    for kk in range(KSTEPS):
        Afr = []
        for lane in range(32):
            P = p[lane]
            Afr.append([pack(P[2*kk][0], P[2*kk][1]), pack(P[2*kk][2], P[2*kk][3]),
                        pack(P[2*kk+1][0], P[2*kk+1][1]), pack(P[2*kk+1][2], P[2*kk+1][3])])
        for nt in range(NT):
            Bfr = []
            for lane in range(32):
                g, t = lane >> 2, lane & 3
                rw = (nt*8 + g)*TWW + kk*8
                Bfr.append([word(BT, rw + t), word(BT, rw + 4 + t)])
            cur = mma([acc[l][nt] for l in range(32)], Afr, Bfr)
            for l in range(32): acc[l][nt] = cur[l]

LOG2E = 1.4426950408889634; LN2 = 0.6931471805599453

def fwd(Q, K, V, HD, W=4):  # one head: Q,K,V [L, HD]
    L = Q.shape[0]; HDP, KT, NT, SW = dims(HD); VW = TW(64)
    scale_log2 = 1/np.sqrt(HD) * LOG2E
    out = np.full((L, HD), np.nan); lse = np.full(L, np.nan)
    R = 16*W
    for q0 in range(0, L, R):
        Qs = np.zeros(2*R*SW); load_tile(Q, q0, L, HD, R, st_row(Qs, SW))
        for warp in range(W):
            qa = [load_a(Qs, SW, warp*16, KT, l) for l in range(32)]
            o = [[np.zeros(4) for _ in range(NT)] for _ in range(32)]
            m0 = [-np.inf]*32; m1 = [-np.inf]*32; l0 = [0.0]*32; l1 = [0.0]*32
            for j0 in range(0, L, 64):
                Ks = np.zeros(2*64*SW); Vt = np.zeros(HDP*2*VW)
                load_tile(K, j0, L, HD, 64, st_row(Ks, SW)); load_tile(V, j0, L, HD, 64, st_col(Vt, VW))
                s = mma_k_hd(8, KT, qa, Ks, SW)
                mx0 = []; mx1 = []
                for lane in range(32):
                    g, t = lane >> 2, lane & 3
                    a0 = -np.inf; a1 = -np.inf
                    for nt in range(8):
                        j = j0 + nt*8 + 2*t
                        for e in range(4):
                            s[lane][nt][e] = s[lane][nt][e]*scale_log2 if j + (e & 1) < L else -np.inf
                        a0 = max(a0, s[lane][nt][0], s[lane][nt][1]); a1 = max(a1, s[lane][nt][2], s[lane][nt][3])
                    mx0.append(a0); mx1.append(a1)
                qm0 = [max(mx0[(l & ~3) + k] for k in range(4)) for l in range(32)]
                qm1 = [max(mx1[(l & ~3) + k] for k in range(4)) for l in range(32)]
                for lane in range(32):
                    mn0 = max(m0[lane], qm0[lane]); mn1 = max(m1[lane], qm1[lane])
                    c0 = 2.0**(m0[lane]-mn0); c1 = 2.0**(m1[lane]-mn1)
                    m0[lane] = mn0; m1[lane] = mn1; l0[lane] *= c0; l1[lane] *= c1
                    for i in range(NT): o[lane][i] *= np.array([c0, c0, c1, c1])
                    for nt in range(8):
                        S = s[lane][nt]
                        S[0] = 2.0**(S[0]-mn0); S[1] = 2.0**(S[1]-mn0); S[2] = 2.0**(S[2]-mn1); S[3] = 2.0**(S[3]-mn1)
                        l0[lane] += S[0]+S[1]; l1[lane] += S[2]+S[3]
                mma_k_rows(o, s, 4, NT, Vt, VW)
            L0 = [sum(l0[(l & ~3)+k] for k in range(4)) for l in range(32)]
            L1 = [sum(l1[(l & ~3)+k] for k in range(4)) for l in range(32)]
            for lane in range(32):
                g, t = lane >> 2, lane & 3
                i0 = q0 + warp*16 + g; i1 = i0 + 8
                for nt in range(NT):
                    d = nt*8 + 2*t
                    if d < HD:
                        if i0 < L: out[i0, d:d+2] = o[lane][nt][0:2] / L0[lane]
                        if i1 < L: out[i1, d:d+2] = o[lane][nt][2:4] / L1[lane]
                if t == 0:
                    if i0 < L: lse[i0] = m0[lane]*LN2 + np.log(L0[lane])
                    if i1 < L: lse[i1] = m1[lane]*LN2 + np.log(L1[lane])
    return out, lse

def bwd_dq(Q, K, V, O, dO, lse, HD):
    L = Q.shape[0]; HDP, KT, NT, SW = dims(HD); KW = TW(64)
    scale = 1/np.sqrt(HD); scale_log2 = scale*LOG2E
    dQ = np.full((L, HD), np.nan); Dt = np.full(L, np.nan)
    for q0 in range(0, L, 64):
        Dsh = np.zeros(64); Lsh = np.zeros(64)
        for r in range(64):
            i = q0 + r
            if i < L: Dsh[r] = np.dot(bf(O[i]).astype(np.float64), bf(dO[i])); Lsh[r] = lse[i]*LOG2E; Dt[i] = Dsh[r]
        Ks0 = np.zeros(2*64*SW); Vs0 = np.zeros(2*64*SW)
        load_tile(Q, q0, L, HD, 64, st_row(Ks0, SW)); load_tile(dO, q0, L, HD, 64, st_row(Vs0, SW))
        for warp in range(4):
            qa = [load_a(Ks0, SW, warp*16, KT, l) for l in range(32)]
            da = [load_a(Vs0, SW, warp*16, KT, l) for l in range(32)]
            dq = [[np.zeros(4) for _ in range(NT)] for _ in range(32)]
            for j0 in range(0, L, 64):
                Ks = np.zeros(2*64*SW); Vs = np.zeros(2*64*SW); Kt = np.zeros(HDP*2*KW)
                load_tile(K, j0, L, HD, 64, lambda r, c, v: (st_row(Ks, SW)(r, c, v), st_col(Kt, KW)(r, c, v)))
                load_tile(V, j0, L, HD, 64, st_row(Vs, SW))
                s = mma_k_hd(8, KT, qa, Ks, SW); dp = mma_k_hd(8, KT, da, Vs, SW)
                for lane in range(32):
                    g, t = lane >> 2, lane & 3; r0 = warp*16 + g
                    for nt in range(8):
                        j = j0 + nt*8 + 2*t
                        for e in range(4):
                            ok = j + (e & 1) < L
                            p = 2.0**(s[lane][nt][e]*scale_log2 - (Lsh[r0] if e < 2 else Lsh[r0+8])) if ok else 0.0
                            s[lane][nt][e] = p*(dp[lane][nt][e] - (Dsh[r0] if e < 2 else Dsh[r0+8]))
                mma_k_rows(dq, s, 4, NT, Kt, KW)
            for lane in range(32):
                g, t = lane >> 2, lane & 3; i0 = q0 + warp*16 + g; i1 = i0 + 8
                for nt in range(NT):
                    d = nt*8 + 2*t
                    if d < HD:
                        if i0 < L: dQ[i0, d:d+2] = dq[lane][nt][0:2]*scale
                        if i1 < L: dQ[i1, d:d+2] = dq[lane][nt][2:4]*scale
    return dQ, Dt

def bwd_dkv(Q, K, V, dO, lse, Dt, HD, W=4):
    L = Q.shape[0]; HDP, KT, NT, SW = dims(HD); QW = TW(32)
    scale = 1/np.sqrt(HD); scale_log2 = scale*LOG2E
    dK = np.full((L, HD), np.nan); dV = np.full((L, HD), np.nan)
    R = 16*W
    for k0 in range(0, L, R):
        st0 = np.zeros(2*R*SW); st1 = np.zeros(2*R*SW)
        load_tile(K, k0, L, HD, R, st_row(st0, SW)); load_tile(V, k0, L, HD, R, st_row(st1, SW))
        for warp in range(W):
            ka = [load_a(st0, SW, warp*16, KT, l) for l in range(32)]
            va = [load_a(st1, SW, warp*16, KT, l) for l in range(32)]
            dk = [[np.zeros(4) for _ in range(NT)] for _ in range(32)]
            dv = [[np.zeros(4) for _ in range(NT)] for _ in range(32)]
            for i0 in range(0, L, 32):
                Qs = np.zeros(2*32*SW); dOs = np.zeros(2*32*SW); Qt = np.zeros(HDP*2*QW); dOt = np.zeros(HDP*2*QW)
                load_tile(Q, i0, L, HD, 32, lambda r, c, v: (st_row(Qs, SW)(r, c, v), st_col(Qt, QW)(r, c, v)))
                load_tile(dO, i0, L, HD, 32, lambda r, c, v: (st_row(dOs, SW)(r, c, v), st_col(dOt, QW)(r, c, v)))
                Lsh = np.array([lse[i0+r]*LOG2E if i0+r < L else np.inf for r in range(32)])
                Dsh = np.array([Dt[i0+r] if i0+r < L else 0.0 for r in range(32)])
                s = mma_k_hd(4, KT, ka, Qs, SW); dp = mma_k_hd(4, KT, va, dOs, SW)
                for lane in range(32):
                    g, t = lane >> 2, lane & 3
                    for nt in range(4):
                        q = nt*8 + 2*t
                        for e in range(4):
                            qq = q + (e & 1)
                            p = 2.0**(s[lane][nt][e]*scale_log2 - Lsh[qq])
                            s[lane][nt][e] = p; dp[lane][nt][e] = p*(dp[lane][nt][e] - Dsh[qq])
                mma_k_rows(dv, s, 2, NT, dOt, QW); mma_k_rows(dk, dp, 2, NT, Qt, QW)
            for lane in range(32):
                g, t = lane >> 2, lane & 3; j0 = k0 + warp*16 + g; j1 = j0 + 8
                for nt in range(NT):
                    d = nt*8 + 2*t
                    if d < HD:
                        if j0 < L: dK[j0, d:d+2] = dk[lane][nt][0:2]*scale; dV[j0, d:d+2] = dv[lane][nt][0:2]
                        if j1 < L: dK[j1, d:d+2] = dk[lane][nt][2:4]*scale; dV[j1, d:d+2] = dv[lane][nt][2:4]
    return dK, dV

def ref(Q, K, V, dO, HD):
    sc = 1/np.sqrt(HD); S = Q @ K.T * sc; m = S.max(1, keepdims=True); P = np.exp(S - m); l = P.sum(1, keepdims=True)
    P /= l; O = P @ V; lse = (m + np.log(l))[:, 0]
    dV = P.T @ dO; dP = dO @ V.T; D = (dO*O).sum(1, keepdims=True); dS = P*(dP - D)
    return O, lse, dS @ K * sc, dS.T @ Q * sc, dV

def rel(a, b): return np.linalg.norm(a-b)/np.linalg.norm(b)

# Usage: python3 native/tests/cuda/attention_tc_emu.py   (numpy; ~1 min)
# Mirrors attention_tc.cu's index math lane by lane (fragments, shared layouts, masking,
# online softmax) with bf16 rounding of the operands, against float64. Run it after any
# change to the kernels' indexing; it needs no GPU.
if __name__ == "__main__":
    worst = 0.0
    for L, HD, W in [(67, 72, 4), (33, 32, 4), (70, 16, 4), (67, 72, 8), (150, 64, 8)]:
        Q, K, V = (rng.standard_normal((L, HD))*1.5 for _ in range(3)); dO = rng.standard_normal((L, HD))
        O_, lse_, dQ_, dK_, dV_ = ref(Q, K, V, dO, HD)
        O, lse = fwd(Q, K, V, HD, W)
        dQ, Dt = bwd_dq(Q, K, V, O_, dO, lse_, HD)
        dK, dV = bwd_dkv(Q, K, V, dO, lse_, Dt, HD, W)
        errs = [rel(O, O_), rel(lse, lse_), rel(dQ, dQ_), rel(dK, dK_), rel(dV, dV_)]
        nan = sum(int(np.isnan(x).sum()) for x in (O, lse, dQ, dK, dV))
        worst = max(worst, max(errs)) if nan == 0 else float("inf")
        print(f"L{L} hd{HD} warps{W}: out {errs[0]:.2e} lse {errs[1]:.2e} dQ {errs[2]:.2e} dK {errs[3]:.2e} dV {errs[4]:.2e} unwritten {nan}", flush=True)
    print("PASSED" if worst < 2e-2 else "FAILED", f"(worst {worst:.2e}, tolerance 2e-2)")
    raise SystemExit(0 if worst < 2e-2 else 1)
