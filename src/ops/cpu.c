/* ops/cpu: run-time detection of x86 instruction sets (cpuid + xgetbv through the compiler's
 * builtins); on other processors only the scalar ISA is reported. */
#include "ops/cpu.h"

bool kvx_cpu_has_isa(enum kvx_isa isa)
{
    switch (isa) {
    case KVX_ISA_SCALAR:
        return true;
#if defined(__x86_64__) || defined(__i386__)
    case KVX_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case KVX_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("fma");
#endif
    default:
        return false;
    }
}

bool kvx_cpu_has_avx512_vnni(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return kvx_cpu_has_isa(KVX_ISA_AVX512) && __builtin_cpu_supports("avx512vnni");
#else
    return false;
#endif
}

enum kvx_isa kvx_cpu_best_isa(void)
{
    if (kvx_cpu_has_isa(KVX_ISA_AVX512))
        return KVX_ISA_AVX512;
    if (kvx_cpu_has_isa(KVX_ISA_AVX2))
        return KVX_ISA_AVX2;
    return KVX_ISA_SCALAR;
}

const char *kvx_isa_name(enum kvx_isa isa)
{
    switch (isa) {
    case KVX_ISA_SCALAR: return "scalar";
    case KVX_ISA_AVX2: return "avx2";
    case KVX_ISA_AVX512: return "avx512";
    default: return "unknown";
    }
}
