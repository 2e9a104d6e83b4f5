/* Compiled time stepping of probinv's SH and P-SV solvers (probinv/physics/elastic.py) and their exact transposes.
 *
 * The same discrete operators as the PyTorch reference (elastic.sh / elastic.psv with _elastic_ops): staggered
 * derivatives of order 2M with zero values outside the padded grid, free-surface images above row 0, CPML memory
 * variables (psi <- b psi + a d, d <- d + psi), leapfrog velocity-stress updates with the medium coefficients as
 * pointwise multipliers. The adjoint loops are the hand-written transposes of the forward steps, in the order of
 * the reference's adjoint closures, and accumulate the gradients of the coefficients. Bodies in elastic_impl.h,
 * compiled once per floating type.
 *
 * Layout: every (model, shot) pair ("bs") owns its wavefield buffers of (H + 3M) x (W + 2M) values: a zero halo of
 * 2M rows on top (M for the forward stencils, M more for the transposed free-surface images, which evaluate the
 * transposed stencil on the image rows), M rows below and M columns left and right. Memory variables are full-grid
 * arrays that stay exactly zero outside the layers (there a = 0, b = 1), and are only updated inside them. Threads
 * run whole time loops of different (model, shot) pairs (POSIX threads started per call, as in acoustic.c).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t n_bs, shots, H, W, M, nsteps, ns, nr, free_surface, src_type, rec_comp, xl, xr, zt, zb, n_threads;
    double dt;
    /* co: coefficients [n_models, n_co, H, W]; px: x-profiles [n_models, 4, W] (a0, b0, ah, bh); pz: [n_models, 4, H];
       cc: stencil weights c_k / dx [M] */
    void *co, *px, *pz, *cc;
    /* state [n_bs, n_state, Hp, Wp]; src/rec int64 flat indices into H x W [n_bs, ns] / [n_bs, nr] */
    void *state, *src, *rec;
    /* amp [n_bs, ns, nsteps], data [n_bs, nr, nsteps], saves [n_bs, nsteps, n_save, H, W] (NULL: not stored) */
    void *amp, *data, *saves;
    /* backward: adjoint state (like state), g_data [n_bs, nr, nsteps], g_co [n_bs, n_co, H, W] (accumulated),
       g_amp [n_bs, ns, nsteps] */
    void *lam, *g_data, *g_co, *g_amp;
} ElArgs;

#include "pool.h"

#if !defined(PROBINV_PART) || PROBINV_PART == 1
#define T float
#define SFX(name) name##_f32
#include "elastic_impl.h"
#undef T
#undef SFX
#endif

#if !defined(PROBINV_PART) || PROBINV_PART == 2
#define T double
#define SFX(name) name##_f64
#include "elastic_impl.h"
#undef T
#undef SFX
#endif

#if !defined(PROBINV_PART) || PROBINV_PART == 1
int probinv_elastic_abi_version(void) { return 1; }
#endif
