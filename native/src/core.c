/* ABI version, status strings, CPU feature detection, thread control. */
#include "internal.h"

int ma_abi_version(void) { return MA_ABI_VERSION; }

const char *ma_strerror(int status)
{
    switch (status) {
    case MA_OK: return "ok";
    case MA_ERR_NULL: return "a required pointer argument is NULL";
    case MA_ERR_SIZE: return "a size or stride argument is negative";
    case MA_ERR_OVERFLOW: return "a product of size arguments overflows int64";
    case MA_ERR_NOMEM: return "out of memory allocating scratch space";
    case MA_ERR_ARG: return "an enum value, segment table or adapter index is invalid";
    case MA_ERR_ISA: return "the requested instruction set is not supported by this CPU";
    default: return "unknown status code";
    }
}

int ma_cpu_features(void)
{
    int f = 0;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        f |= 1;
    if ((f & 1) && __builtin_cpu_supports("avx512f"))
        f |= 2;
#endif
#ifdef _OPENMP
    f |= 4;
#endif
    return f;
}

int ma_best_isa(void)
{
    int f = ma_cpu_features();
    if (f & 2)
        return MA_ISA_AVX512;
    if (f & 1)
        return MA_ISA_AVX2;
    return MA_ISA_PORTABLE;
}

int ma__resolve_isa(int requested, int *isa)
{
    int f = ma_cpu_features();
    switch (requested) {
    case MA_ISA_AUTO: *isa = ma_best_isa(); return MA_OK;
    case MA_ISA_PORTABLE: *isa = MA_ISA_PORTABLE; return MA_OK;
    case MA_ISA_AVX2: *isa = MA_ISA_AVX2; return (f & 1) ? MA_OK : MA_ERR_ISA;
    case MA_ISA_AVX512: *isa = MA_ISA_AVX512; return (f & 2) ? MA_OK : MA_ERR_ISA;
    default: return MA_ERR_ARG;
    }
}

int ma__mul(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0)
        return MA_ERR_SIZE;
    if (a != 0 && b > INT64_MAX / a)
        return MA_ERR_OVERFLOW;
    *out = a * b;
    return MA_OK;
}

int ma_get_num_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int ma_set_num_threads(int n)
{
    if (n < 1)
        return MA_ERR_SIZE;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    return MA_OK;
}
