/* Compiled time stepping of probinv's 2D acoustic solver (probinv/physics/acoustic.py) and its exact transpose.
 *
 * The same discrete operator as the PyTorch reference (_acoustic_kernels._step / _step_transpose): leapfrog
 * p^{n+1} = 2 p^n - p^{n-1} + v^2 dt^2 q^n, q^n = L p^n + s^n, central differences of order 2M with zero values
 * outside the padded grid plus the free-surface odd-mirror correction matrices on top, CPML memory variables after
 * Pasalic & McGarry (2010). The kernel body lives in acoustic_impl.h and is compiled once per floating type.
 *
 * Layout: every (model, shot) pair ("bs") owns its wavefield buffers of (H + 2M) x (W + 2M) values whose M-cell halo
 * stays zero (the zero-halo stencil needs no bounds checks); model arrays (v^2 dt^2, density gradients) are H x W
 * per model; bs = model * shots + shot. Threads run whole time loops of different (model, shot) pairs, so there is
 * no synchronisation inside the time loop. They are plain POSIX threads started per call (~20 us each), not an
 * OpenMP pool: a pool that outlives the call hangs forked children (multiprocessing's default start method on Linux
 * forks), and libgomp is not everywhere (macOS clang).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t n_bs, shots, H, W, M, nsteps, n0, ns, nr;
    int64_t left, right, top, bottom, free_surface;
    int64_t snap_every, crop_top, crop_left, crop_nz, crop_nx;
    int64_t n_threads;
    /* model arrays and coefficients (T*) */
    void *v2dt2, *gx, *gz, *ax, *bx, *az, *bz, *w1, *w2, *c1, *c2;
    /* forward state, padded, [n_bs, Hp, Wp] */
    void *p, *pp, *psx, *psz, *zx, *zz;
    /* geometry: int64 flat indices into the H x W grid, [n_bs, ns] and [n_bs, nr] */
    void *src, *rec;
    /* amplitudes [n_bs, ns, nsteps] (already / dx^2), data [n_bs, nr, nsteps], stored q^n and p^n
       [n_bs, nsteps, H, W] (NULL: not stored), snapshots [n_bs, n_snap, crop_nz, crop_nx] */
    void *amp, *data, *qs, *ps, *snaps;
    /* backward: adjoint state (padded, like the forward state), adjoints of data / snapshots, and the outputs:
       g_v, g_gx, g_gz per (model, shot) [n_bs, H, W] (accumulated), g_amp [n_bs, ns, nsteps] */
    void *a1, *a0, *psxb, *pszb, *zxb, *zzb, *g_data, *g_snap, *g_v, *g_gx, *g_gz, *g_amp;
} AcArgs;

#include "pool.h"

/* PROBINV_PART=1 / 2 compiles only the float32 / float64 half (the loader builds both halves in parallel) */
#if !defined(PROBINV_PART) || PROBINV_PART == 1
#define T float
#define SFX(name) name##_f32
#include "acoustic_impl.h"
#undef T
#undef SFX
#endif

#if !defined(PROBINV_PART) || PROBINV_PART == 2
#define T double
#define SFX(name) name##_f64
#include "acoustic_impl.h"
#undef T
#undef SFX
#endif

#if !defined(PROBINV_PART) || PROBINV_PART == 1
int probinv_acoustic_abi_version(void) { return 1; }
#endif
