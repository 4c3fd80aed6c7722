/* Inner products and squared L2 distances of float32 vectors, shared by _hnsw.c and _bits.c:
 * AVX2/FMA versions picked at module init when the CPU has them (simd_init), portable C
 * otherwise. Every function here is static: each extension gets its own copy. */
#ifndef AFDB_SIMD_H
#define AFDB_SIMD_H
#include <Python.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

typedef float (*dist_fn)(const float *, const float *, Py_ssize_t);

static float neg_dot_scalar(const float *a, const float *b, Py_ssize_t d) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    Py_ssize_t i = 0;
    for (; i + 4 <= d; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < d; i++) s0 += a[i] * b[i];
    return -((s0 + s1) + (s2 + s3));
}

static float l2_scalar(const float *a, const float *b, Py_ssize_t d) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    Py_ssize_t i = 0;
    for (; i + 4 <= d; i += 4) {
        float e0 = a[i] - b[i], e1 = a[i + 1] - b[i + 1];
        float e2 = a[i + 2] - b[i + 2], e3 = a[i + 3] - b[i + 3];
        s0 += e0 * e0;
        s1 += e1 * e1;
        s2 += e2 * e2;
        s3 += e3 * e3;
    }
    for (; i < d; i++) s0 += (a[i] - b[i]) * (a[i] - b[i]);
    return (s0 + s1) + (s2 + s3);
}

#ifdef HAVE_X86
__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static float neg_dot_avx2(const float *a, const float *b,
                                                              Py_ssize_t d) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    Py_ssize_t i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= d; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < d; i++) s += a[i] * b[i];
    return -s;
}

__attribute__((target("avx2,fma"))) static float l2_avx2(const float *a, const float *b,
                                                         Py_ssize_t d) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    Py_ssize_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m256 e0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 e1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        s0 = _mm256_fmadd_ps(e0, e0, s0);
        s1 = _mm256_fmadd_ps(e1, e1, s1);
    }
    for (; i + 8 <= d; i += 8) {
        __m256 e = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        s0 = _mm256_fmadd_ps(e, e, s0);
    }
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < d; i++) s += (a[i] - b[i]) * (a[i] - b[i]);
    return s;
}
#endif

#ifdef HAVE_X86
/* four inner products sharing the query's loads (more independent work per cycle) */
__attribute__((target("avx2,fma"))) static void neg_dot4_avx2(const float *q, const float *const r[4],
                                                              Py_ssize_t d, float out[4]) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    Py_ssize_t i = 0;
    for (; i + 8 <= d; i += 8) {
        __m256 v = _mm256_loadu_ps(q + i);
        s0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(r[0] + i), s0);
        s1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(r[1] + i), s1);
        s2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(r[2] + i), s2);
        s3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(r[3] + i), s3);
    }
    float t[4] = {hsum256(s0), hsum256(s1), hsum256(s2), hsum256(s3)};
    for (; i < d; i++)
        for (int j = 0; j < 4; j++) t[j] += q[i] * r[j][i];
    for (int j = 0; j < 4; j++) out[j] = -t[j];
}
#endif

static void neg_dot4_scalar(const float *q, const float *const r[4], Py_ssize_t d, float out[4]) {
    for (int j = 0; j < 4; j++) out[j] = neg_dot_scalar(q, r[j], d);
}

static void l2_4_scalar(const float *q, const float *const r[4], Py_ssize_t d, float out[4]) {
    for (int j = 0; j < 4; j++) out[j] = l2_scalar(q, r[j], d);
}

typedef void (*dist4_fn)(const float *, const float *const[4], Py_ssize_t, float[4]);
#define UNUSED_OK __attribute__((unused)) /* each extension uses some of these */
static UNUSED_OK dist_fn neg_dot = neg_dot_scalar, l2 = l2_scalar;
static UNUSED_OK dist4_fn neg_dot4 = neg_dot4_scalar, l2_4 = l2_4_scalar;

static void simd_init(void) {
#ifdef HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        neg_dot = neg_dot_avx2;
        neg_dot4 = neg_dot4_avx2;
        l2 = l2_avx2;
    }
#endif
}

#endif
