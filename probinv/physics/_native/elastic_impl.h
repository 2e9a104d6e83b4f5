/* Kernel bodies of elastic.c, included once per floating type T with SFX(name) naming the typed functions.
 *
 * Every pass over the grid is split per row into three column segments with compile-time flags CX / CZ (whether
 * the x / z CPML memory variables are updated there): the layers' columns [0, xl) and [xr, W), the interior
 * [xl, xr), and rows inside / outside the z layers (z < zt or z >= zb). Outside the layers a = 0 and b = 1, so the
 * memory variables stay exactly zero and the skipped terms are exactly zero: every variant computes the same values.
 */
#ifndef PROBINV_ELASTIC_MACROS
#define PROBINV_ELASTIC_MACROS
#define AI static inline __attribute__((always_inline))
#define IDX(f) (((f) / W + 2 * M) * Wp + (f) % W + M)
#define SEG(X0, X1, CXV, CZV, ...)                                   \
    {                                                                \
        const int CX = (CXV), CZ = (CZV);                            \
        (void)CX;                                                    \
        (void)CZ;                                                    \
        _Pragma("GCC ivdep") for (int64_t x = (X0); x < (X1); x++) { \
            __VA_ARGS__                                              \
        }                                                            \
    }
/* one pass over the grid: rows z, with row constants; BODY sees z, x, row, zi, the flags and the z profiles */
#define ROWLOOP(...)                                                                                  \
    for (int64_t z = 0; z < H; z++) {                                                                 \
        const int64_t row = (z + 2 * M) * Wp + M, zi = z * W;                                         \
        const T az0z = az0[z], bz0z = bz0[z], azhz = azh[z], bzhz = bzh[z];                           \
        (void)row; (void)zi; (void)az0z; (void)bz0z; (void)azhz; (void)bzhz;                          \
        const int zl_ = z < zt || z >= zb;                                                            \
        for (int sg = 0; sg < 3; sg++) {                                                              \
            const int64_t x0_ = zl_ ? (sg ? W : 0) : (sg == 0 ? 0 : sg == 1 ? xl : xr);               \
            const int64_t x1_ = zl_ ? (sg ? W : W) : (sg == 0 ? xl : sg == 1 ? xr : W);               \
            if (sg == 1 && !zl_) SEG(x0_, x1_, 0, 0, __VA_ARGS__)                                     \
            else SEG(x0_, x1_, 1, 1, __VA_ARGS__)                                                     \
        }                                                                                             \
    }
/* the set-up shared by every kernel of one (model, shot) pair */
#define COMMON(NCO, NST, NSV)                                                                          \
    const int64_t H = a->H, W = a->W, Wp = W + 2 * M, Hp = H + 3 * M, HW = H * W, HWp = Hp * Wp;      \
    const int64_t nsteps = a->nsteps, ns = a->ns, nr = a->nr, b = bs / a->shots;                       \
    const int64_t xl = a->xl, xr = a->xr, zt = a->zt, zb = a->zb;                                      \
    const int fs = a->free_surface != 0;                                                               \
    const T dt = (T)a->dt;                                                                             \
    const T *restrict px = (const T *)a->px + b * 4 * W, *restrict pz = (const T *)a->pz + b * 4 * H;  \
    const T *restrict ax0 = px, *restrict bx0 = px + W, *restrict axh = px + 2 * W;                    \
    const T *restrict bxh = px + 3 * W;                                                                \
    const T *restrict az0 = pz, *restrict bz0 = pz + H, *restrict azh = pz + 2 * H;                    \
    const T *restrict bzh = pz + 3 * H;                                                                \
    const T *restrict co = (const T *)a->co + b * (NCO) * HW;                                          \
    T cc[4] = {0, 0, 0, 0};                                                                            \
    for (int k = 0; k < M; k++) cc[k] = ((const T *)a->cc)[k];                                         \
    const int64_t *src = (const int64_t *)a->src + bs * ns, *rec = (const int64_t *)a->rec + bs * nr;  \
    const T *amp = (const T *)a->amp + bs * ns * nsteps;                                               \
    T *data = (T *)a->data + bs * nr * nsteps;                                                         \
    T *saves = a->saves ? (T *)a->saves + bs * nsteps * (NSV) * HW : NULL;                             \
    T *st = (T *)a->state + bs * (NST) * HWp;                                                          \
    (void)Hp; (void)co; (void)amp; (void)data; (void)saves; (void)src; (void)rec; (void)st; (void)dt;  \
    (void)fs; (void)ax0; (void)bx0; (void)axh; (void)bxh;
#endif

/* staggered derivatives (weights already divided by dx), zero halo: D+ from integer to half points, D- back */
AI T SFX(dp)(const T *restrict f, int64_t P, int64_t s, const T *restrict c, const int M) {
    T r = c[0] * (f[P + s] - f[P]);
    for (int k = 2; k <= M; k++) r += c[k - 1] * (f[P + k * s] - f[P - (k - 1) * s]);
    return r;
}

AI T SFX(dm)(const T *restrict f, int64_t P, int64_t s, const T *restrict c, const int M) {
    T r = c[0] * (f[P] - f[P - s]);
    for (int k = 2; k <= M; k++) r += c[k - 1] * (f[P + (k - 1) * s] - f[P - k * s]);
    return r;
}

/* ------------------------------------------------------------------------------------------------------------
 * SH: state u, v, psi(du/dx), psi(du/dz), psi(dsxy/dx), psi(dszy/dz); coefficients mu_x, mu_z, dt/rho;
 * saved per step ex, ez, div (the fields that multiply a coefficient)
 * ------------------------------------------------------------------------------------------------------------ */
AI int SFX(sh_fwd_impl)(const ElArgs *a, int64_t bs, const int M, const int STORE) {
    COMMON(3, 6, 3)
    const T *restrict mux = co, *restrict muz = co + HW, *restrict buoy = co + 2 * HW;
    T *restrict u = st, *restrict v = st + HWp, *restrict pux = st + 2 * HWp, *restrict puz = st + 3 * HWp;
    T *restrict psx = st + 4 * HWp, *restrict psz = st + 5 * HWp;
    T *work = calloc((size_t)(2 * HWp), sizeof(T));
    if (!work) return 1;
    T *restrict S1 = work, *restrict S2 = work + HWp;
    for (int64_t i = 0; i < nsteps; i++) {
        for (int64_t r = 0; r < nr; r++) data[r * nsteps + i] = u[IDX(rec[r])];
        if (fs)  /* symmetric image of u about row 0 */
            for (int r = 1; r < M; r++) memcpy(u + (2 * M - r) * Wp + M, u + (2 * M + r) * Wp + M, sizeof(T) * W);
        T *restrict sv = STORE ? saves + i * 3 * HW : NULL;
#define BODY_SH1                                                        \
        const int64_t P = row + x;                                      \
        T ex = SFX(dp)(u, P, 1, cc, M), ez = SFX(dp)(u, P, Wp, cc, M);  \
        if (CX) { pux[P] = bxh[x] * pux[P] + axh[x] * ex; ex += pux[P]; } \
        if (CZ) { puz[P] = bzhz * puz[P] + azhz * ez; ez += puz[P]; }   \
        if (STORE) { sv[zi + x] = ex; sv[HW + zi + x] = ez; }           \
        S1[P] = mux[zi + x] * ex;                                       \
        S2[P] = muz[zi + x] * ez;
        ROWLOOP(BODY_SH1)
        if (fs)  /* antisymmetric image of sigma_zy (half rows) */
            for (int r = 1; r <= M; r++)
                for (int64_t x = 0; x < W; x++) S2[(2 * M - r) * Wp + M + x] = -S2[(2 * M + r - 1) * Wp + M + x];
#define BODY_SH2                                                         \
        const int64_t P = row + x;                                       \
        T dsx = SFX(dm)(S1, P, 1, cc, M), dsz = SFX(dm)(S2, P, Wp, cc, M); \
        if (CX) { psx[P] = bx0[x] * psx[P] + ax0[x] * dsx; dsx += psx[P]; } \
        if (CZ) { psz[P] = bz0z * psz[P] + az0z * dsz; dsz += psz[P]; }  \
        const T div = dsx + dsz;                                         \
        if (STORE) sv[2 * HW + zi + x] = div;                            \
        const T vv = v[P] + buoy[zi + x] * div;                          \
        v[P] = vv;                                                       \
        u[P] = u[P] + dt * vv;
        ROWLOOP(BODY_SH2)
        for (int64_t s = 0; s < ns; s++) {
            const int64_t Q = IDX(src[s]);
            const T val = amp[s * nsteps + i];
            v[Q] += val;
            u[Q] += dt * val;
        }
    }
    free(work);
    return 0;
}

AI int SFX(sh_bwd_impl)(const ElArgs *a, int64_t bs, const int M) {
    COMMON(3, 6, 3)
    const T *restrict mux = co, *restrict muz = co + HW, *restrict buoy = co + 2 * HW;
    T *la = (T *)a->lam + bs * 6 * HWp;
    T *restrict lu = la, *restrict lv = la + HWp, *restrict lux = la + 2 * HWp, *restrict luz = la + 3 * HWp;
    T *restrict lsx = la + 4 * HWp, *restrict lsz = la + 5 * HWp;
    T *gco = (T *)a->g_co + bs * 3 * HW;
    T *restrict gmux = gco, *restrict gmuz = gco + HW, *restrict gbuoy = gco + 2 * HW;
    const T *g_data = (const T *)a->g_data + bs * nr * nsteps;
    T *g_amp = (T *)a->g_amp + bs * ns * nsteps;
    T *work = calloc((size_t)(4 * HWp), sizeof(T));
    if (!work) return 1;
    T *restrict A1 = work, *restrict A2 = work + HWp, *restrict B1 = work + 2 * HWp, *restrict B2 = work + 3 * HWp;
    for (int64_t i = nsteps - 1; i >= 0; i--) {
        const T *restrict sex = saves + i * 3 * HW, *restrict sez = sex + HW, *restrict sdv = sex + 2 * HW;
        /* u += dt v, v += (dt/rho) div: adjoint of v, the gradient of dt/rho, the CPML of the stress divergence */
#define BODY_SHA                                                             \
        const int64_t P = row + x;                                           \
        const T lvv = lv[P] + dt * lu[P];                                    \
        lv[P] = lvv;                                                         \
        gbuoy[zi + x] += lvv * sdv[zi + x];                                  \
        const T r = buoy[zi + x] * lvv;                                      \
        T d1 = r, d2 = r;                                                    \
        if (CX) { const T t = lsx[P] + r; lsx[P] = bx0[x] * t; d1 = r + ax0[x] * t; } \
        if (CZ) { const T t = lsz[P] + r; lsz[P] = bz0z * t; d2 = r + az0z * t; } \
        A1[P] = d1;                                                          \
        A2[P] = d2;
        ROWLOOP(BODY_SHA)
        for (int64_t s = 0; s < ns; s++) g_amp[s * nsteps + i] = lv[IDX(src[s])];
        /* adjoint stresses (D-)^T = -D+, with the transposed antisymmetric half-row image on top */
        for (int64_t z = 0; z < H; z++) {
            const int64_t row = (z + 2 * M) * Wp + M, zi = z * W, off = (2 * z + 1) * Wp;
            const int img = fs && z < M;
            const T azhz = azh[z], bzhz = bzh[z];
#define BODY_SHB                                                              \
            const int64_t P = row + x;                                        \
            const T nsx = SFX(dp)(A1, P, 1, cc, M);                           \
            T l = -SFX(dp)(A2, P, Wp, cc, M);                                 \
            if (img) l += SFX(dp)(A2, P - off, Wp, cc, M);                    \
            gmux[zi + x] -= nsx * sex[zi + x];                                \
            gmuz[zi + x] += l * sez[zi + x];                                  \
            const T qx = -mux[zi + x] * nsx, qz = muz[zi + x] * l;            \
            T d1 = qx, d2 = qz;                                               \
            if (CX) { const T t = lux[P] + qx; lux[P] = bxh[x] * t; d1 = qx + axh[x] * t; } \
            if (CZ) { const T t = luz[P] + qz; luz[P] = bzhz * t; d2 = qz + azhz * t; } \
            B1[P] = d1;                                                       \
            B2[P] = d2;
            const int zl_ = z < zt || z >= zb;
            for (int sg = 0; sg < 3; sg++) {
                const int64_t x0_ = zl_ ? (sg ? W : 0) : (sg == 0 ? 0 : sg == 1 ? xl : xr);
                const int64_t x1_ = zl_ ? W : (sg == 0 ? xl : sg == 1 ? xr : W);
                if (sg == 1 && !zl_) SEG(x0_, x1_, 0, 0, BODY_SHB)
                else SEG(x0_, x1_, 1, 1, BODY_SHB)
            }
        }
        /* adjoint of u: (D+)^T = -D-, with the transposed symmetric integer-row image */
        for (int64_t z = 0; z < H; z++) {
            const int64_t row = (z + 2 * M) * Wp + M, off = 2 * z * Wp;
            const int img = fs && z >= 1 && z < M;
            _Pragma("GCC ivdep") for (int64_t x = 0; x < W; x++) {
                const int64_t P = row + x;
                T l = lu[P] - SFX(dm)(B1, P, 1, cc, M) - SFX(dm)(B2, P, Wp, cc, M);
                if (img) l -= SFX(dm)(B2, P - off, Wp, cc, M);
                lu[P] = l;
            }
        }
        for (int64_t r = 0; r < nr; r++) lu[IDX(rec[r])] += g_data[r * nsteps + i];
    }
    free(work);
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------
 * P-SV: state vx, vz, sxx, szz, sxz, psi 1..8 (dvx/dx x0, dvz/dz z0, dvx/dz zh, dvz/dx xh, dsxx/dx xh,
 * dsxz/dz z0, dsxz/dx x0, dszz/dz zh); coefficients dt/rho_x, dt/rho_z, dt(l+2m)_xx, dt l_xx, dt l, dt(l+2m),
 * dt mu_xz; saved per step fx, fz, exx, ezz, exz. src_type 0 explosive, 1 force_z, 2 force_x; rec_comp 0 vz,
 * 1 vx, 2 pressure.
 * ------------------------------------------------------------------------------------------------------------ */
AI int SFX(psv_fwd_impl)(const ElArgs *a, int64_t bs, const int M, const int STORE) {
    COMMON(7, 13, 5)
    const T *restrict cbx = co, *restrict cbz = co + HW, *restrict l2mxx = co + 2 * HW, *restrict lxx = co + 3 * HW;
    const T *restrict lam = co + 4 * HW, *restrict l2m = co + 5 * HW, *restrict muxz = co + 6 * HW;
    T *restrict vx = st, *restrict vz = st + HWp, *restrict sxx = st + 2 * HWp, *restrict szz = st + 3 * HWp;
    T *restrict sxz = st + 4 * HWp;
    T *restrict p1 = st + 5 * HWp, *restrict p2 = st + 6 * HWp, *restrict p3 = st + 7 * HWp;
    T *restrict p4 = st + 8 * HWp, *restrict p5 = st + 9 * HWp, *restrict p6 = st + 10 * HWp;
    T *restrict p7 = st + 11 * HWp, *restrict p8 = st + 12 * HWp;
    const int st_ = (int)a->src_type, rc = (int)a->rec_comp;
    T *rv = rc == 1 ? vx : vz;
    for (int64_t i = 0; i < nsteps; i++) {
        for (int64_t r = 0; r < nr; r++) {
            const int64_t Q = IDX(rec[r]);
            data[r * nsteps + i] = rc == 2 ? (T)-0.5 * (sxx[Q] + szz[Q]) : rv[Q];
        }
        if (fs) {  /* antisymmetric images: sxz on half rows, szz on integer rows */
            for (int r = 1; r <= M; r++)
                for (int64_t x = 0; x < W; x++) sxz[(2 * M - r) * Wp + M + x] = -sxz[(2 * M + r - 1) * Wp + M + x];
            for (int r = 1; r < M; r++)
                for (int64_t x = 0; x < W; x++) szz[(2 * M - r) * Wp + M + x] = -szz[(2 * M + r) * Wp + M + x];
        }
        T *restrict sv = STORE ? saves + i * 5 * HW : NULL;
#define BODY_PV                                                                                   \
        const int64_t P = row + x;                                                                \
        T d5 = SFX(dp)(sxx, P, 1, cc, M), d6 = SFX(dm)(sxz, P, Wp, cc, M);                        \
        T d7 = SFX(dm)(sxz, P, 1, cc, M), d8 = SFX(dp)(szz, P, Wp, cc, M);                        \
        if (CX) {                                                                                 \
            p5[P] = bxh[x] * p5[P] + axh[x] * d5; d5 += p5[P];                                    \
            p7[P] = bx0[x] * p7[P] + ax0[x] * d7; d7 += p7[P];                                    \
        }                                                                                         \
        if (CZ) {                                                                                 \
            p6[P] = bz0z * p6[P] + az0z * d6; d6 += p6[P];                                        \
            p8[P] = bzhz * p8[P] + azhz * d8; d8 += p8[P];                                        \
        }                                                                                         \
        const T fx = d5 + d6, fz = d7 + d8;                                                       \
        if (STORE) { sv[zi + x] = fx; sv[HW + zi + x] = fz; }                                     \
        vx[P] = vx[P] + cbx[zi + x] * fx;                                                         \
        vz[P] = vz[P] + cbz[zi + x] * fz;
        ROWLOOP(BODY_PV)
        if (st_ != 0) {
            T *f = st_ == 1 ? vz : vx;
            for (int64_t s = 0; s < ns; s++) f[IDX(src[s])] += amp[s * nsteps + i];
        }
        if (rc != 2)
            for (int64_t r = 0; r < nr; r++) data[r * nsteps + i] = (T)0.5 * (data[r * nsteps + i] + rv[IDX(rec[r])]);
#define BODY_PS                                                                                   \
        const int64_t P = row + x;                                                                \
        T d1 = SFX(dm)(vx, P, 1, cc, M), d2 = SFX(dm)(vz, P, Wp, cc, M);                          \
        T d3 = SFX(dp)(vx, P, Wp, cc, M), d4 = SFX(dp)(vz, P, 1, cc, M);                          \
        if (CX) {                                                                                 \
            p1[P] = bx0[x] * p1[P] + ax0[x] * d1; d1 += p1[P];                                    \
            p4[P] = bxh[x] * p4[P] + axh[x] * d4; d4 += p4[P];                                    \
        }                                                                                         \
        if (CZ) {                                                                                 \
            p2[P] = bz0z * p2[P] + az0z * d2; d2 += p2[P];                                        \
            p3[P] = bzhz * p3[P] + azhz * d3; d3 += p3[P];                                        \
        }                                                                                         \
        const T exz = d3 + d4;                                                                    \
        if (STORE) { sv[2 * HW + zi + x] = d1; sv[3 * HW + zi + x] = d2; sv[4 * HW + zi + x] = exz; } \
        sxx[P] = (sxx[P] + l2mxx[zi + x] * d1) + lxx[zi + x] * d2;                                \
        szz[P] = (szz[P] + lam[zi + x] * d1) + l2m[zi + x] * d2;                                  \
        sxz[P] = sxz[P] + muxz[zi + x] * exz;
        ROWLOOP(BODY_PS)
        if (st_ == 0)
            for (int64_t s = 0; s < ns; s++) {
                const int64_t Q = IDX(src[s]);
                sxx[Q] += amp[s * nsteps + i];
                szz[Q] += amp[s * nsteps + i];
            }
        if (fs) memset(szz + 2 * M * Wp + M, 0, sizeof(T) * W);  /* sigma_zz = 0 on the surface row */
    }
    return 0;
}

AI int SFX(psv_bwd_impl)(const ElArgs *a, int64_t bs, const int M) {
    COMMON(7, 13, 5)
    const T *restrict cbx = co, *restrict cbz = co + HW, *restrict l2mxx = co + 2 * HW, *restrict lxx = co + 3 * HW;
    const T *restrict lam = co + 4 * HW, *restrict l2m = co + 5 * HW, *restrict muxz = co + 6 * HW;
    T *la = (T *)a->lam + bs * 13 * HWp;
    T *restrict lvx = la, *restrict lvz = la + HWp, *restrict lsxx = la + 2 * HWp, *restrict lszz = la + 3 * HWp;
    T *restrict lsxz = la + 4 * HWp;
    T *restrict l1 = la + 5 * HWp, *restrict l2 = la + 6 * HWp, *restrict l3 = la + 7 * HWp;
    T *restrict l4 = la + 8 * HWp, *restrict l5 = la + 9 * HWp, *restrict l6 = la + 10 * HWp;
    T *restrict l7 = la + 11 * HWp, *restrict l8 = la + 12 * HWp;
    T *gco = (T *)a->g_co + bs * 7 * HW;
    T *restrict gbx = gco, *restrict gbz = gco + HW, *restrict gl2mxx = gco + 2 * HW, *restrict glxx = gco + 3 * HW;
    T *restrict glam = gco + 4 * HW, *restrict gl2m = gco + 5 * HW, *restrict gmuxz = gco + 6 * HW;
    const T *g_data = (const T *)a->g_data + bs * nr * nsteps;
    T *g_amp = (T *)a->g_amp + bs * ns * nsteps;
    const int st_ = (int)a->src_type, rc = (int)a->rec_comp;
    T *lrv = rc == 1 ? lvx : lvz;
    T *work = calloc((size_t)(8 * HWp), sizeof(T));
    if (!work) return 1;
    T *restrict A1 = work, *restrict A2 = work + HWp, *restrict A3 = work + 2 * HWp, *restrict A4 = work + 3 * HWp;
    T *restrict B5 = work + 4 * HWp, *restrict B6 = work + 5 * HWp, *restrict B7 = work + 6 * HWp;
    T *restrict B8 = work + 7 * HWp;
    for (int64_t i = nsteps - 1; i >= 0; i--) {
        const T *restrict sfx = saves + i * 5 * HW, *restrict sfz = sfx + HW, *restrict sexx = sfx + 2 * HW;
        const T *restrict sezz = sfx + 3 * HW, *restrict sexz = sfx + 4 * HW;
        if (fs) memset(lszz + 2 * M * Wp + M, 0, sizeof(T) * W);
        if (st_ == 0)
            for (int64_t s = 0; s < ns; s++) {
                const int64_t Q = IDX(src[s]);
                g_amp[s * nsteps + i] = lsxx[Q] + lszz[Q];
            }
        /* stress update: the moduli's gradients and the CPML of the velocity derivatives */
#define BODY_PA                                                                                 \
        const int64_t P = row + x, k = zi + x;                                                  \
        const T ax_ = lsxx[P], az_ = lszz[P], axz = lsxz[P];                                    \
        gl2mxx[k] += ax_ * sexx[k];                                                             \
        glxx[k] += ax_ * sezz[k];                                                               \
        glam[k] += az_ * sexx[k];                                                               \
        gl2m[k] += az_ * sezz[k];                                                               \
        gmuxz[k] += axz * sexz[k];                                                              \
        const T q1 = l2mxx[k] * ax_ + lam[k] * az_, q2 = lxx[k] * ax_ + l2m[k] * az_;           \
        const T q34 = muxz[k] * axz;                                                            \
        T a1 = q1, a2 = q2, a3 = q34, a4 = q34;                                                 \
        if (CX) {                                                                               \
            T t = l1[P] + q1; l1[P] = bx0[x] * t; a1 = q1 + ax0[x] * t;                         \
            t = l4[P] + q34; l4[P] = bxh[x] * t; a4 = q34 + axh[x] * t;                         \
        }                                                                                       \
        if (CZ) {                                                                               \
            T t = l2[P] + q2; l2[P] = bz0z * t; a2 = q2 + az0z * t;                             \
            t = l3[P] + q34; l3[P] = bzhz * t; a3 = q34 + azhz * t;                             \
        }                                                                                       \
        A1[P] = a1; A2[P] = a2; A3[P] = a3; A4[P] = a4;
        ROWLOOP(BODY_PA)
        if (rc != 2)
            for (int64_t r = 0; r < nr; r++) lrv[IDX(rec[r])] += (T)0.5 * g_data[r * nsteps + i];
        /* adjoint velocities, the buoyancies' gradients and the CPML of the stress derivatives */
#define BODY_PB                                                                                 \
        const int64_t P = row + x, k = zi + x;                                                  \
        const T lx = (lvx[P] - SFX(dp)(A1, P, 1, cc, M)) - SFX(dm)(A3, P, Wp, cc, M);           \
        const T lz = (lvz[P] - SFX(dp)(A2, P, Wp, cc, M)) - SFX(dm)(A4, P, 1, cc, M);           \
        lvx[P] = lx;                                                                            \
        lvz[P] = lz;                                                                            \
        gbx[k] += lx * sfx[k];                                                                  \
        gbz[k] += lz * sfz[k];                                                                  \
        const T rx = cbx[k] * lx, rz = cbz[k] * lz;                                             \
        T b5 = rx, b6 = rx, b7 = rz, b8 = rz;                                                   \
        if (CX) {                                                                               \
            T t = l5[P] + rx; l5[P] = bxh[x] * t; b5 = rx + axh[x] * t;                         \
            t = l7[P] + rz; l7[P] = bx0[x] * t; b7 = rz + ax0[x] * t;                           \
        }                                                                                       \
        if (CZ) {                                                                               \
            T t = l6[P] + rx; l6[P] = bz0z * t; b6 = rx + az0z * t;                             \
            t = l8[P] + rz; l8[P] = bzhz * t; b8 = rz + azhz * t;                               \
        }                                                                                       \
        B5[P] = b5; B6[P] = b6; B7[P] = b7; B8[P] = b8;
        ROWLOOP(BODY_PB)
        if (st_ != 0) {
            const T *f = st_ == 1 ? lvz : lvx;
            for (int64_t s = 0; s < ns; s++) g_amp[s * nsteps + i] = f[IDX(src[s])];
        }
        if (rc != 2)
            for (int64_t r = 0; r < nr; r++) lrv[IDX(rec[r])] += (T)0.5 * g_data[r * nsteps + i];
        /* adjoint stresses, with the transposed antisymmetric images of sxz (half rows) and szz (integer rows) */
        for (int64_t z = 0; z < H; z++) {
            const int64_t row = (z + 2 * M) * Wp + M, off1 = (2 * z + 1) * Wp, off2 = 2 * z * Wp;
            const int img1 = fs && z < M, img2 = fs && z >= 1 && z < M;
            _Pragma("GCC ivdep") for (int64_t x = 0; x < W; x++) {
                const int64_t P = row + x;
                lsxx[P] = lsxx[P] - SFX(dm)(B5, P, 1, cc, M);
                T s = lsxz[P] - SFX(dp)(B6, P, Wp, cc, M);
                if (img1) s += SFX(dp)(B6, P - off1, Wp, cc, M);
                lsxz[P] = s - SFX(dp)(B7, P, 1, cc, M);
                T q = lszz[P] - SFX(dm)(B8, P, Wp, cc, M);
                if (img2) q += SFX(dm)(B8, P - off2, Wp, cc, M);
                lszz[P] = q;
            }
        }
        if (rc == 2)
            for (int64_t r = 0; r < nr; r++) {
                const int64_t Q = IDX(rec[r]);
                lsxx[Q] -= (T)0.5 * g_data[r * nsteps + i];
                lszz[Q] -= (T)0.5 * g_data[r * nsteps + i];
            }
    }
    free(work);
    return 0;
}

#define PROBINV_DISPATCH(NAME, CALL1, CALL2, CALL4)             \
    static int SFX(NAME)(const void *arg, int64_t bs) {         \
        const ElArgs *a = arg;                                  \
        const int store = a->saves != NULL;                     \
        (void)store;                                            \
        switch (a->M) {                                         \
            case 1: return CALL1;                               \
            case 2: return CALL2;                               \
            default: return CALL4;                              \
        }                                                       \
    }
PROBINV_DISPATCH(sh_fwd_one, store ? SFX(sh_fwd_impl)(a, bs, 1, 1) : SFX(sh_fwd_impl)(a, bs, 1, 0),
                 store ? SFX(sh_fwd_impl)(a, bs, 2, 1) : SFX(sh_fwd_impl)(a, bs, 2, 0),
                 store ? SFX(sh_fwd_impl)(a, bs, 4, 1) : SFX(sh_fwd_impl)(a, bs, 4, 0))
PROBINV_DISPATCH(sh_bwd_one, SFX(sh_bwd_impl)(a, bs, 1), SFX(sh_bwd_impl)(a, bs, 2), SFX(sh_bwd_impl)(a, bs, 4))
PROBINV_DISPATCH(psv_fwd_one, store ? SFX(psv_fwd_impl)(a, bs, 1, 1) : SFX(psv_fwd_impl)(a, bs, 1, 0),
                 store ? SFX(psv_fwd_impl)(a, bs, 2, 1) : SFX(psv_fwd_impl)(a, bs, 2, 0),
                 store ? SFX(psv_fwd_impl)(a, bs, 4, 1) : SFX(psv_fwd_impl)(a, bs, 4, 0))
PROBINV_DISPATCH(psv_bwd_one, SFX(psv_bwd_impl)(a, bs, 1), SFX(psv_bwd_impl)(a, bs, 2),
                 SFX(psv_bwd_impl)(a, bs, 4))
#undef PROBINV_DISPATCH

/* Run a->nsteps steps of every (model, shot) pair in place (forward) or their transposes in reverse (backward). */
int SFX(probinv_sh_forward)(const ElArgs *a) {
    if (a->M != 1 && a->M != 2 && a->M != 4) return 2;
    return run_parallel(a, a->n_bs, a->n_threads, SFX(sh_fwd_one));
}

int SFX(probinv_sh_backward)(const ElArgs *a) {
    if (a->M != 1 && a->M != 2 && a->M != 4) return 2;
    return run_parallel(a, a->n_bs, a->n_threads, SFX(sh_bwd_one));
}

int SFX(probinv_psv_forward)(const ElArgs *a) {
    if (a->M != 1 && a->M != 2 && a->M != 4) return 2;
    return run_parallel(a, a->n_bs, a->n_threads, SFX(psv_fwd_one));
}

int SFX(probinv_psv_backward)(const ElArgs *a) {
    if (a->M != 1 && a->M != 2 && a->M != 4) return 2;
    return run_parallel(a, a->n_bs, a->n_threads, SFX(psv_bwd_one));
}
