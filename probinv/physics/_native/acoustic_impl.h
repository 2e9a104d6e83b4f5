/* Kernel body of acoustic.c, included once per floating type T with SFX(name) naming the typed functions.
 *
 * Three variants of the pointwise update keep the interior cheap: FULL (every term: CPML in both axes, the
 * free-surface correction, the density terms), XGEN (rows away from the top/bottom layers: only the x-CPML terms)
 * and FAST (the interior, where the CPML coefficients and memory variables are identically zero: one Laplacian).
 * The variants compute the same expression; terms they leave out are exactly zero where they are used.
 */

/* sum_k w[M + k] u[P + k * step], k = -M..M (zero halo: no bounds checks) */
static inline __attribute__((always_inline)) T SFX(stn)(const T *restrict u, int64_t P, int64_t step,
                                                        const T *restrict w, const int M) {
    T s = 0;
    for (int k = -M; k <= M; k++) s += w[M + k] * u[P + k * step];
    return s;
}

/* free-surface correction of row z < M - 1 (forward: row z of C, transpose: column z of C); u at column x */
static inline T SFX(corr)(const T *restrict c, const T *restrict u, int64_t z, int64_t x, int64_t Wp, int M,
                          int transpose) {
    const int64_t r = M - 1;
    T s = 0;
    for (int64_t j = 0; j < r; j++) {
        T cij = transpose ? c[j * r + z] : c[z * r + j];
        s += cij * u[(j + M) * Wp + x + M];
    }
    return s;
}

/* number of the first snapshot step of a block and the count of snapshots in it */
static inline int64_t SFX(first_snap)(const AcArgs *a) {
    if (!a->snap_every) return a->nsteps;
    return (a->snap_every - a->n0 % a->snap_every) % a->snap_every;
}

static inline int64_t SFX(count_snap)(const AcArgs *a) {
    int64_t f = SFX(first_snap)(a);
    return f >= a->nsteps ? 0 : (a->nsteps - 1 - f) / a->snap_every + 1;
}

/* STORE: keep q^n for backward (compile-time constant, so the forward-only loops carry no q stores) */
static inline __attribute__((always_inline)) int SFX(fwd_impl)(const AcArgs *a, int64_t bs, const int M,
                                                               const int STORE) {
    const int64_t H = a->H, W = a->W, Wp = W + 2 * M, Hp = H + 2 * M, HW = H * W, HWp = Hp * Wp;
    const int64_t nsteps = a->nsteps, ns = a->ns, nr = a->nr, b = bs / a->shots, R = M - 1;
    const T *restrict v = (const T *)a->v2dt2 + b * HW;
    const T *restrict gx = a->gx ? (const T *)a->gx + b * HW : NULL;
    const T *restrict gz = a->gz ? (const T *)a->gz + b * HW : NULL;
    const T *restrict ax = (const T *)a->ax + b * W, *restrict bx = (const T *)a->bx + b * W;
    const T *restrict az = (const T *)a->az + b * H, *restrict bz = (const T *)a->bz + b * H;
    /* local copies of the weights: provably not aliased by the stores, so the loops vectorise */
    T w1[9], w2[9];
    for (int k = 0; k <= 2 * M; k++) {
        w1[k] = ((const T *)a->w1)[k];
        w2[k] = ((const T *)a->w2)[k];
    }
    const T *c1 = (a->free_surface && R > 0) ? (const T *)a->c1 : NULL;
    const T *c2 = (a->free_surface && R > 0) ? (const T *)a->c2 : NULL;
    T *restrict p = (T *)a->p + bs * HWp, *restrict pp = (T *)a->pp + bs * HWp;
    T *restrict psx = (T *)a->psx + bs * HWp, *restrict psz = (T *)a->psz + bs * HWp;
    T *restrict zx = (T *)a->zx + bs * HWp, *restrict zz = (T *)a->zz + bs * HWp;
    const int64_t *src = (const int64_t *)a->src + bs * ns, *rec = (const int64_t *)a->rec + bs * nr;
    const T *amp = (const T *)a->amp + bs * ns * nsteps;
    T *data = (T *)a->data + bs * nr * nsteps;
    T *qs = a->qs ? (T *)a->qs + bs * nsteps * HW : NULL;
    T *ps = a->ps ? (T *)a->ps + bs * nsteps * HW : NULL;
    const int64_t csz = a->crop_nz * a->crop_nx, f_snap = SFX(first_snap)(a);
    T *snaps = a->snaps ? (T *)a->snaps + bs * SFX(count_snap)(a) * csz : NULL;
    const int64_t xl = a->left, xr = W - a->right, zt = a->top, zb = H - a->bottom;
    const int64_t f0 = xl + M < W ? xl + M : W, f1 = xr - M > f0 ? xr - M : f0;  /* FAST columns [f0, f1) */
    const int64_t zi0 = zt + M, zi1 = zb - M;  /* rows away from the z-layers (and the mirror rows) */

    for (int64_t i = 0; i < nsteps; i++) {
        for (int64_t r = 0; r < nr; r++) {
            int64_t idx = rec[r];
            data[r * nsteps + i] = p[(idx / W + M) * Wp + idx % W + M];
        }
        if (snaps && i >= f_snap && (i - f_snap) % a->snap_every == 0) {
            T *dst = snaps + ((i - f_snap) / a->snap_every) * csz;
            for (int64_t z = 0; z < a->crop_nz; z++)
                memcpy(dst + z * a->crop_nx, p + (z + a->crop_top + M) * Wp + a->crop_left + M,
                       sizeof(T) * a->crop_nx);
        }
        /* memory variables of the first derivatives, only where the CPML coefficient can be non-zero */
        for (int64_t z = 0; z < H; z++) {
            const int64_t row = (z + M) * Wp + M;
            for (int64_t x = 0; x < xl; x++)
                psx[row + x] = bx[x] * psx[row + x] + ax[x] * SFX(stn)(p, row + x, 1, w1, M);
            for (int64_t x = xr; x < W; x++)
                psx[row + x] = bx[x] * psx[row + x] + ax[x] * SFX(stn)(p, row + x, 1, w1, M);
            if (z < zt || z >= zb) {
                /* the row's coefficients in registers and the mirror rows in their own loop: with either inside,
                   gcc kept this loop scalar (a quarter of the forward's time at 100 x 100) */
                const T bzz = bz[z], azz = az[z];
                if (c1 && z < R) {
                    for (int64_t x = 0; x < W; x++) {
                        T d = SFX(stn)(p, row + x, Wp, w1, M) + SFX(corr)(c1, p, z, x, Wp, M, 0);
                        psz[row + x] = bzz * psz[row + x] + azz * d;
                    }
                } else {
                    #pragma GCC ivdep
                    for (int64_t x = 0; x < W; x++)
                        psz[row + x] = bzz * psz[row + x] + azz * SFX(stn)(p, row + x, Wp, w1, M);
                }
            }
        }
        /* q^n is stored when backward needs it, p^n too for the density terms of backward. The pointwise variants
           are separate loops so that each one vectorises. */
        T *q = STORE ? qs + i * HW : NULL;
        if (ps)
            for (int64_t z = 0; z < H; z++) memcpy(ps + i * HW + z * W, p + (z + M) * Wp + M, sizeof(T) * W);
        for (int64_t z = 0; z < H; z++) {
            const int64_t row = (z + M) * Wp + M;
            const T *restrict vr = v + z * W;
            T *restrict qr = STORE ? q + z * W : NULL;
            if (gx || (c2 && z < R)) {  /* FULL with the mirror correction and/or the density terms (scalar) */
                #pragma GCC ivdep
                for (int64_t x = 0; x < W; x++) {
                    const int64_t P = row + x;
                    T lz = SFX(stn)(p, P, Wp, w2, M);
                    if (c2 && z < R) lz += SFX(corr)(c2, p, z, x, Wp, M, 0);
                    T wx = SFX(stn)(p, P, 1, w2, M) + SFX(stn)(psx, P, 1, w1, M);
                    T wz = lz + SFX(stn)(psz, P, Wp, w1, M);
                    T zxv = bx[x] * zx[P] + ax[x] * wx, zzv = bz[z] * zz[P] + az[z] * wz;
                    zx[P] = zxv;
                    zz[P] = zzv;
                    T qv = wx + zxv + wz + zzv;
                    if (gx) {
                        T dzp = SFX(stn)(p, P, Wp, w1, M);
                        if (c1 && z < R) dzp += SFX(corr)(c1, p, z, x, Wp, M, 0);
                        qv -= gx[z * W + x] * SFX(stn)(p, P, 1, w1, M) + gz[z * W + x] * dzp;
                    }
                    if (STORE) qr[x] = qv;
                    pp[P] = 2 * p[P] - pp[P] + vr[x] * qv;
                }
            } else if (z < zi0 || z >= zi1) {  /* FULL in the x-layer columns, ZGEN between them */
                const T bzz = bz[z], azz = az[z];
                for (int side = 0; side < 2; side++) {
                    const int64_t x0 = side ? f1 : 0, x1 = side ? W : f0;
                    #pragma GCC ivdep
                    for (int64_t x = x0; x < x1; x++) {
                        const int64_t P = row + x;
                        T wx = SFX(stn)(p, P, 1, w2, M) + SFX(stn)(psx, P, 1, w1, M);
                        T wz = SFX(stn)(p, P, Wp, w2, M) + SFX(stn)(psz, P, Wp, w1, M);
                        T zxv = bx[x] * zx[P] + ax[x] * wx, zzv = bzz * zz[P] + azz * wz;
                        zx[P] = zxv;
                        zz[P] = zzv;
                        T qv = wx + zxv + wz + zzv;
                        if (STORE) qr[x] = qv;
                        pp[P] = 2 * p[P] - pp[P] + vr[x] * qv;
                    }
                }
                /* ZGEN: psi_x and zeta_x are exactly 0 here (a = 0, b = 1), so FULL's x-memory terms add exact
                   zeros: (wx + 0) + wz + zzv */
                #pragma GCC ivdep
                for (int64_t x = f0; x < f1; x++) {
                    const int64_t P = row + x;
                    T wz = SFX(stn)(p, P, Wp, w2, M) + SFX(stn)(psz, P, Wp, w1, M);
                    T zzv = bzz * zz[P] + azz * wz;
                    zz[P] = zzv;
                    T qv = SFX(stn)(p, P, 1, w2, M) + wz + zzv;
                    if (STORE) qr[x] = qv;
                    pp[P] = 2 * p[P] - pp[P] + vr[x] * qv;
                }
            } else {
                #pragma GCC ivdep
                for (int64_t x = 0; x < f0; x++) {  /* XGEN (left) */
                    const int64_t P = row + x;
                    T wx = SFX(stn)(p, P, 1, w2, M) + SFX(stn)(psx, P, 1, w1, M);
                    T zxv = bx[x] * zx[P] + ax[x] * wx;
                    zx[P] = zxv;
                    T qv = wx + zxv + SFX(stn)(p, P, Wp, w2, M);
                    if (STORE) qr[x] = qv;
                    pp[P] = 2 * p[P] - pp[P] + vr[x] * qv;
                }
                #pragma GCC ivdep
                for (int64_t x = f0; x < f1; x++) {  /* FAST */
                    const int64_t P = row + x;
                    T qv = SFX(stn)(p, P, 1, w2, M) + SFX(stn)(p, P, Wp, w2, M);
                    if (STORE) qr[x] = qv;
                    pp[P] = 2 * p[P] - pp[P] + vr[x] * qv;
                }
                #pragma GCC ivdep
                for (int64_t x = f1; x < W; x++) {  /* XGEN (right) */
                    const int64_t P = row + x;
                    T wx = SFX(stn)(p, P, 1, w2, M) + SFX(stn)(psx, P, 1, w1, M);
                    T zxv = bx[x] * zx[P] + ax[x] * wx;
                    zx[P] = zxv;
                    T qv = wx + zxv + SFX(stn)(p, P, Wp, w2, M);
                    if (STORE) qr[x] = qv;
                    pp[P] = 2 * p[P] - pp[P] + vr[x] * qv;
                }
            }
        }
        for (int64_t s = 0; s < ns; s++) {
            const int64_t idx = src[s];
            const T val = amp[s * nsteps + i];
            pp[(idx / W + M) * Wp + idx % W + M] += v[idx] * val;
            if (STORE) q[idx] += val;
        }
        T *tmp = p; p = pp; pp = tmp;
    }
    return 0;
}

static inline __attribute__((always_inline)) int SFX(bwd_impl)(const AcArgs *a, int64_t bs, const int M) {
    const int64_t H = a->H, W = a->W, Wp = W + 2 * M, Hp = H + 2 * M, HW = H * W, HWp = Hp * Wp;
    const int64_t nsteps = a->nsteps, ns = a->ns, nr = a->nr, b = bs / a->shots, R = M - 1;
    const T *restrict v = (const T *)a->v2dt2 + b * HW;
    const T *restrict gx = a->gx ? (const T *)a->gx + b * HW : NULL;
    const T *restrict gz = a->gz ? (const T *)a->gz + b * HW : NULL;
    const T *restrict ax = (const T *)a->ax + b * W, *restrict bx = (const T *)a->bx + b * W;
    const T *restrict az = (const T *)a->az + b * H, *restrict bz = (const T *)a->bz + b * H;
    const T *w1 = (const T *)a->w1, *w2 = (const T *)a->w2;
    const T *c1 = (a->free_surface && R > 0) ? (const T *)a->c1 : NULL;
    const T *c2 = (a->free_surface && R > 0) ? (const T *)a->c2 : NULL;
    T *restrict a1 = (T *)a->a1 + bs * HWp, *restrict a0 = (T *)a->a0 + bs * HWp;
    T *restrict psxb = (T *)a->psxb + bs * HWp, *restrict pszb = (T *)a->pszb + bs * HWp;
    T *restrict zxb = (T *)a->zxb + bs * HWp, *restrict zzb = (T *)a->zzb + bs * HWp;
    const int64_t *src = (const int64_t *)a->src + bs * ns, *rec = (const int64_t *)a->rec + bs * nr;
    const T *g_data = (const T *)a->g_data + bs * nr * nsteps;
    const T *qs = (const T *)a->qs + bs * nsteps * HW;
    const T *ps = a->ps ? (const T *)a->ps + bs * nsteps * HW : NULL;
    T *restrict gv = (T *)a->g_v + bs * HW;
    T *ggx = a->g_gx ? (T *)a->g_gx + bs * HW : NULL, *ggz = a->g_gz ? (T *)a->g_gz + bs * HW : NULL;
    T *g_amp = (T *)a->g_amp + bs * ns * nsteps;
    const int64_t csz = a->crop_nz * a->crop_nx, f_snap = SFX(first_snap)(a);
    const T *g_snap = a->g_snap ? (const T *)a->g_snap + bs * SFX(count_snap)(a) * csz : NULL;
    const int64_t xl = a->left, xr = W - a->right, zt = a->top, zb = H - a->bottom;
    const int64_t f0 = xl + M < W ? xl + M : W, f1 = xr - M > f0 ? xr - M : f0;
    const int64_t zi0 = zt + M, zi1 = zb - M;
    /* reversed weights: the transpose of sum_k w_k u[j + k] is sum_k w_{-k} u[j + k] (zero halo) */
    T w1r[9], w2r[9];
    for (int k = -M; k <= M; k++) {
        w1r[M + k] = w1[M - k];
        w2r[M + k] = w2[M - k];
    }
    T *work = calloc((size_t)(6 * HWp), sizeof(T));
    if (!work) return 1;
    T *restrict qb = work, *restrict ex = work + HWp, *restrict ez = work + 2 * HWp;
    T *restrict dxb = work + 3 * HWp, *restrict dzb = work + 4 * HWp, *restrict pt = work + 5 * HWp;

    for (int64_t i = nsteps - 1; i >= 0; i--) {
        const T *qn = qs + i * HW;
        /* adjoint of p^{n+1} -> adjoint of q^n; the gradient of v^2 dt^2; a1 becomes the next adjoint of p^n's
           slot (-adjoint of p^{n+1}) */
        for (int64_t z = 0; z < H; z++) {
            const int64_t row = (z + M) * Wp + M;
            #pragma GCC ivdep
            for (int64_t x = 0; x < W; x++) {
                const T av = a1[row + x];
                qb[row + x] = v[z * W + x] * av;
                gv[z * W + x] += av * qn[z * W + x];
                a1[row + x] = -av;
            }
        }
        for (int64_t s = 0; s < ns; s++) {
            const int64_t idx = src[s];
            g_amp[s * nsteps + i] = qb[(idx / W + M) * Wp + idx % W + M];
        }
        /* second-derivative memory variables (zeta) and their share ex/ez of the stretched second derivative */
        for (int64_t z = 0; z < H; z++) {
            const int64_t row = (z + M) * Wp + M;
            for (int side = 0; side < 2; side++) {  /* the layer columns only: [0, xl) and [xr, W) */
            const int64_t x0 = side ? xr : 0, x1 = side ? W : xl;
            #pragma GCC ivdep
            for (int64_t x = x0; x < x1; x++) {
                const int64_t P = row + x;
                zxb[P] += qb[P];
                ex[P] = ax[x] * zxb[P];
                zxb[P] *= bx[x];
            }
            }
            if (z < zt || z >= zb) {
                #pragma GCC ivdep
                for (int64_t x = 0; x < W; x++) {
                    const int64_t P = row + x;
                    zzb[P] += qb[P];
                    ez[P] = az[z] * zzb[P];
                    zzb[P] *= bz[z];
                }
            }
        }
        /* first-derivative memory variables (psi) and their share dxb/dzb of the first derivatives */
        for (int64_t z = 0; z < H; z++) {
            const int64_t row = (z + M) * Wp + M;
            for (int side = 0; side < 2; side++) {  /* the layer columns only: [0, xl) and [xr, W) */
            const int64_t x0 = side ? xr : 0, x1 = side ? W : xl;
            #pragma GCC ivdep
            for (int64_t x = x0; x < x1; x++) {
                const int64_t P = row + x;
                psxb[P] += SFX(stn)(qb, P, 1, w1r, M) + SFX(stn)(ex, P, 1, w1r, M);
                dxb[P] = ax[x] * psxb[P];
                psxb[P] *= bx[x];
            }
            }
            if (z < zt || z >= zb) {
                #pragma GCC ivdep
                for (int64_t x = 0; x < W; x++) {
                    const int64_t P = row + x;
                    pszb[P] += SFX(stn)(qb, P, Wp, w1r, M) + SFX(stn)(ez, P, Wp, w1r, M);
                    dzb[P] = az[z] * pszb[P];
                    pszb[P] *= bz[z];
                }
            }
        }
        if (gx) {  /* density terms -gx dxp - gz dzp of q: their adjoints and the gradients of gx, gz */
            const T *pn = ps + i * HW;
            for (int64_t z = 0; z < H; z++)
                memcpy(pt + (z + M) * Wp + M, pn + z * W, sizeof(T) * W);
            for (int64_t z = 0; z < H; z++) {
                const int64_t row = (z + M) * Wp + M;
                const int zlayer = z < zt || z >= zb;
                #pragma GCC ivdep
                for (int64_t x = 0; x < W; x++) {
                    const int64_t P = row + x, idx = z * W + x;
                    T dzp = SFX(stn)(pt, P, Wp, w1, M);
                    if (c1 && z < R) dzp += SFX(corr)(c1, pt, z, x, Wp, M, 0);
                    ggx[idx] -= qb[P] * SFX(stn)(pt, P, 1, w1, M);
                    ggz[idx] -= qb[P] * dzp;
                    dxb[P] = ((x < xl || x >= xr) ? dxb[P] : 0) - gx[idx] * qb[P];
                    dzb[P] = (zlayer ? dzb[P] : 0) - gz[idx] * qb[P];
                }
            }
        }
        /* adjoint of p^n, written over a0 (the adjoint of the slot that held p^n) */
        for (int64_t z = 0; z < H; z++) {
            const int64_t row = (z + M) * Wp + M;
            if (z < zi0 || z >= zi1 || gx) {
                #pragma GCC ivdep
                for (int64_t x = 0; x < W; x++) {  /* FULL */
                    const int64_t P = row + x;
                    T pb = a0[P] - 2 * a1[P] + SFX(stn)(qb, P, 1, w2r, M) + SFX(stn)(ex, P, 1, w2r, M)
                           + SFX(stn)(qb, P, Wp, w2r, M) + SFX(stn)(ez, P, Wp, w2r, M)
                           + SFX(stn)(dxb, P, 1, w1r, M) + SFX(stn)(dzb, P, Wp, w1r, M);
                    if (c2 && z < R) pb += SFX(corr)(c2, qb, z, x, Wp, M, 1) + SFX(corr)(c2, ez, z, x, Wp, M, 1);
                    if (c1 && z < R) pb += SFX(corr)(c1, dzb, z, x, Wp, M, 1);
                    a0[P] = pb;
                }
                continue;
            }
            #pragma GCC ivdep
            for (int64_t x = 0; x < W; x++) {
                const int64_t P = row + x;
                T pb = a0[P] - 2 * a1[P] + SFX(stn)(qb, P, 1, w2r, M) + SFX(stn)(qb, P, Wp, w2r, M);
                if (x < f0 || x >= f1)  /* XGEN */
                    pb += SFX(stn)(ex, P, 1, w2r, M) + SFX(stn)(dxb, P, 1, w1r, M);
                a0[P] = pb;
            }
        }
        for (int64_t r = 0; r < nr; r++) {
            const int64_t idx = rec[r];
            a0[(idx / W + M) * Wp + idx % W + M] += g_data[r * nsteps + i];
        }
        if (g_snap && i >= f_snap && (i - f_snap) % a->snap_every == 0) {
            const T *gs = g_snap + ((i - f_snap) / a->snap_every) * csz;
            for (int64_t z = 0; z < a->crop_nz; z++) {
                T *dst = a0 + (z + a->crop_top + M) * Wp + a->crop_left + M;
                for (int64_t x = 0; x < a->crop_nx; x++) dst[x] += gs[z * a->crop_nx + x];
            }
        }
        T *tmp = a1; a1 = a0; a0 = tmp;
    }
    free(work);
    return 0;
}

static int SFX(fwd_shot)(const void *arg, int64_t bs) {
    const AcArgs *a = arg;
    const int store = a->qs != NULL;
    switch (a->M) {
        case 1: return store ? SFX(fwd_impl)(a, bs, 1, 1) : SFX(fwd_impl)(a, bs, 1, 0);
        case 2: return store ? SFX(fwd_impl)(a, bs, 2, 1) : SFX(fwd_impl)(a, bs, 2, 0);
        default: return store ? SFX(fwd_impl)(a, bs, 4, 1) : SFX(fwd_impl)(a, bs, 4, 0);
    }
}

static int SFX(bwd_shot)(const void *arg, int64_t bs) {
    const AcArgs *a = arg;
    switch (a->M) {
        case 1: return SFX(bwd_impl)(a, bs, 1);
        case 2: return SFX(bwd_impl)(a, bs, 2);
        default: return SFX(bwd_impl)(a, bs, 4);
    }
}

/* Run a->nsteps steps of every (model, shot) pair in place; after an odd number of steps the caller swaps p/pp. */
int SFX(probinv_acoustic_forward)(const AcArgs *a) {
    if (a->M != 1 && a->M != 2 && a->M != 4) return 2;
    return run_parallel(a, a->n_bs, a->n_threads, SFX(fwd_shot));
}

/* Transposed steps in reverse, accumulating into g_v/g_gx/g_gz and writing g_amp; a1/a0 swap after odd counts. */
int SFX(probinv_acoustic_backward)(const AcArgs *a) {
    if (a->M != 1 && a->M != 2 && a->M != 4) return 2;
    return run_parallel(a, a->n_bs, a->n_threads, SFX(bwd_shot));
}
