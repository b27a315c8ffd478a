/* tests/test_ops.c: ops/ops, the SIMD SwiGLU against the reference.
 *
 *   - kvx_swiglu_isa for every ISA this CPU has equals kvx_swiglu (expf) within 1e-6 relative
 *     (plus 1e-30 absolute) on lengths 1..70 and 1536, gates in [-100, 100] (both ends of the
 *     exp clamps, and 0), in place (h = g) as the forward passes call it, writing nothing past
 *     n. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops/cpu.h"
#include "ops/ops.h"
#include "test.h"

KVX_TEST(ops_swiglu_simd_matches_reference)
{
    uint32_t seed = 7;
    const int64_t lens[] = {1, 7, 8, 15, 16, 17, 31, 33, 64, 70, 1536};
    int tried = 0;
    for (int isa = KVX_ISA_AVX2; isa < KVX_ISA_COUNT; isa++) {
        if (!kvx_cpu_has_isa((enum kvx_isa)isa))
            continue;
        tried++;
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const int64_t n = lens[li];
            float *g = malloc((size_t)(n + 4) * sizeof *g), *u = malloc((size_t)n * sizeof *u);
            float *want = malloc((size_t)n * sizeof *want);
            for (int64_t i = 0; i < n; i++) {
                seed = seed * 1664525u + 1013904223u;
                g[i] = (float)((double)(seed >> 8) / (double)(1u << 24) * 200.0 - 100.0);
                if (i % 5 == 0)
                    g[i] /= 50.0f;   /* many gates near 0, where silu bends */
                seed = seed * 1664525u + 1013904223u;
                u[i] = (float)((double)(seed >> 8) / (double)(1u << 24) * 4.0 - 2.0);
            }
            g[0] = n > 1 ? 0.0f : g[0];
            for (int i = 0; i < 4; i++)
                g[n + i] = 12345.0f;
            kvx_swiglu(want, g, u, n);
            kvx_swiglu_isa((enum kvx_isa)isa, g, g, u, n);
            for (int64_t i = 0; i < n; i++) {
                const double tol = 1e-6 * fabs((double)want[i]) + 1e-30;
                if (!(fabs((double)g[i] - want[i]) <= tol))
                    kvx_test_fail(__FILE__, __LINE__, "%s n=%lld i=%lld: %.9g vs %.9g",
                                  kvx_isa_name((enum kvx_isa)isa), (long long)n, (long long)i,
                                  (double)g[i], (double)want[i]);
            }
            for (int i = 0; i < 4; i++)
                KVX_CHECK(g[n + i] == 12345.0f);
            free(g), free(u), free(want);
        }
    }
    if (!tried)
        kvx_test_skip("no SIMD ISA on this CPU");
}
