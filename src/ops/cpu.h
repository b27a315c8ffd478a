/* ops/cpu: which instruction sets this processor offers, detected once.
 *
 * The only process-wide state in kvx is the answer to that question (read-only after the first
 * call).  Kernels are picked per ISA through the tables in ops/quant.h; the scalar ISA is the
 * reference every SIMD kernel is tested against. */
#ifndef KVX_OPS_CPU_H
#define KVX_OPS_CPU_H

#include <stdbool.h>

enum kvx_isa {
    KVX_ISA_SCALAR = 0,
    KVX_ISA_AVX2,        /* AVX2 + FMA + F16C */
    KVX_ISA_AVX512,      /* AVX-512 F/BW/DQ/VL (+VNNI when present) */
    KVX_ISA_COUNT,
};

/* Best ISA the running CPU supports. */
enum kvx_isa kvx_cpu_best_isa(void);
/* True when the running CPU can execute kernels of `isa`. */
bool kvx_cpu_has_isa(enum kvx_isa isa);
/* True when the CPU has AVX512-VNNI (vpdpbusd). */
bool kvx_cpu_has_avx512_vnni(void);
const char *kvx_isa_name(enum kvx_isa isa);

#endif
