/*
 * Quantized top-k preselection (reference: convergiod/native_ref.py, quantize_i8(),
 * quantize_i16() and top_k_i8()).
 *
 * A float32 matrix scan reads 4 bytes per value; an int8 copy of the matrix reads 1. The
 * int8 scan ranks the rows approximately; the exact float32 kernel (cv_topk_rows) then
 * re-ranks the few thousand best of them. Everything here is integer arithmetic plus a few
 * double operations in a fixed order, so the reference reproduces it exactly.
 *
 * Quantization of a vector x of d floats to `limit` (127 for int8 rows, 32767 for the int16
 * query): m = max |x_j|;
 *   any x_j NaN or +-inf   -> scale NaN, all values 0 (the row is never selected);
 *   m == 0                 -> scale 0, all values 0;
 *   otherwise              -> v_j = (double)x_j * ((double)limit / (double)m) rounded to
 *                             the nearest integer, ties to even, clamped to [-limit, limit];
 *                             scale = (float)((double)m / (double)limit).
 * So x_j ~ v_j * scale, with an error of at most scale / 2 per value.
 *
 * Score of row i: dot_i = the exact integer sum of q_j * r_ij (int32 partial sums small
 * enough never to overflow, since |q_j| <= 32767 and |r_ij| <= 127, added into an int64),
 * score_i = (float)(((double)dot_i * (double)scale_i) * (double)query_scale).
 * Rows whose allow[i] == 0 or whose score is NaN are skipped; selection as in topk.c (higher
 * score first, ties to the lower row index).
 *
 * On x86-64 the dot product uses AVX2 when the CPU (and OS) support it, checked at run time
 * (the library is built for the baseline x86-64); otherwise plain C that compilers vectorize
 * with SSE2. Both compute the same exact integer. -DCV_NO_VECTOR forces plain C.
 * Buffers may have any alignment: multi-byte values are loaded through memcpy / unaligned
 * loads.
 */
#include <math.h>
#include <string.h>

#include "convergio_core.h"
#include "cv_heap.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(CV_NO_VECTOR)
#define CV_X86_AVX2 1
#include <immintrin.h>
#endif

/* Products per int32 partial sum. Plain C: one sum, 512 * 32767 * 127 < 2^31. AVX2: 16
 * lanes (8 per accumulator) of at most 4096 / 16 products each. Multiples of 32. */
#define CV_PLAIN_CHUNK 512
#define CV_AVX2_CHUNK 4096
/* Rows ahead of the one being scored that the scan asks the memory system for. */
#define CV_AHEAD 8

static inline float loadf(const unsigned char *p)
{
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Round to the nearest integer, ties to even (what nearbyint does in the default rounding
 * mode, without a libm call per value): exact for |v| < 2^51, and |v| <= 32767.x here. */
static inline double round_even(double v)
{
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    return copysign((fabs(v) + magic) - magic, v);
}

/* max |x_j|, or -1 when some x_j is NaN or infinite */
static float max_abs(const unsigned char *x, size_t d)
{
    float m = 0.0f;
    for (size_t j = 0; j < d; j++) {
        float a = fabsf(loadf(x + 4 * j));
        if (!(a <= 3.40282347e+38f)) return -1.0f; /* NaN or inf */
        if (a > m) m = a;
    }
    return m;
}

/* Quantizes one vector; writes int8 (wide == 0) or int16 values; returns the scale. */
static float quantize_one(const unsigned char *x, size_t d, int limit, void *out, int wide)
{
    float m = max_abs(x, d);
    if (m <= 0.0f) { /* all zeros, or not finite */
        memset(out, 0, wide ? 2 * d : d);
        return m < 0.0f ? NAN : 0.0f;
    }
    const double inv = (double)limit / (double)m;
    for (size_t j = 0; j < d; j++) {
        double v = round_even((double)loadf(x + 4 * j) * inv);
        if (v > limit) v = limit;
        if (v < -limit) v = -limit;
        if (wide) {
            int16_t s = (int16_t)v;
            memcpy((unsigned char *)out + 2 * j, &s, 2);
        } else {
            ((int8_t *)out)[j] = (int8_t)v;
        }
    }
    return (float)((double)m / (double)limit);
}

int cv_quantize_i8(const void *matrix, size_t n, size_t d, int8_t *out, void *out_scale)
{
    if (d == 0) return CV_EINVAL;
    if (n > 0 && (matrix == NULL || out == NULL || out_scale == NULL)) return CV_EINVAL;
    const unsigned char *m = matrix;
    unsigned char *scales = out_scale;
    for (size_t i = 0; i < n; i++) {
        float s = quantize_one(m + 4 * d * i, d, 127, out + d * i, 0);
        memcpy(scales + 4 * i, &s, 4);
    }
    return CV_OK;
}

int cv_quantize_i16(const void *vector, size_t d, int16_t *out, float *out_scale)
{
    if (d == 0 || vector == NULL || out == NULL || out_scale == NULL) return CV_EINVAL;
    *out_scale = quantize_one(vector, d, 32767, out, 1);
    return CV_OK;
}

/* ---- the integer dot product ----------------------------------------------------------- */

static int64_t dot_i8_plain(const unsigned char *q, const int8_t *r, size_t d)
{
    int64_t total = 0;
    for (size_t start = 0; start < d; start += CV_PLAIN_CHUNK) {
        size_t end = d - start < CV_PLAIN_CHUNK ? d : start + CV_PLAIN_CHUNK;
        int32_t acc = 0;
        for (size_t j = start; j < end; j++) {
            int16_t qv;
            memcpy(&qv, q + 2 * j, 2);
            acc += (int32_t)qv * (int32_t)r[j];
        }
        total += acc;
    }
    return total;
}

#ifdef CV_X86_AVX2
__attribute__((target("avx2"))) static inline int64_t hsum_i32x8(__m256i v)
{
    int32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, v);
    int64_t s = 0;
    for (int l = 0; l < 8; l++) s += lanes[l];
    return s;
}

/* 16 values per step: sign-extend 16 int8 to int16, multiply by 16 int16 and add pairs into
 * 8 int32 lanes (vpmaddwd). Two accumulators for two independent dependency chains; each
 * lane takes at most CV_AVX2_CHUNK / 32 pair sums (each |.| <= 2 * 32767 * 127) per chunk:
 * below 2^31. */
__attribute__((target("avx2"))) static int64_t dot_i8_avx2(const unsigned char *q,
                                                          const int8_t *r, size_t d)
{
    const size_t body = d - d % 16;
    int64_t total = 0;
    for (size_t start = 0; start < body; start += CV_AVX2_CHUNK) {
        size_t end = body - start < CV_AVX2_CHUNK ? body : start + CV_AVX2_CHUNK;
        __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
        size_t j = start;
        for (; j + 32 <= end; j += 32) {
            __m256i r0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r + j)));
            __m256i r1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r + j + 16)));
            __m256i q0 = _mm256_loadu_si256((const __m256i *)(q + 2 * j));
            __m256i q1 = _mm256_loadu_si256((const __m256i *)(q + 2 * j + 32));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(q0, r0));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(q1, r1));
        }
        if (j < end) { /* 16 left */
            __m256i r0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r + j)));
            __m256i q0 = _mm256_loadu_si256((const __m256i *)(q + 2 * j));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(q0, r0));
        }
        total += hsum_i32x8(acc0) + hsum_i32x8(acc1);
    }
    if (body < d) total += dot_i8_plain(q + 2 * body, r + body, d - body);
    return total;
}
#endif

int cv_topk_i8(const void *query, float query_scale, const int8_t *matrix, const void *scale,
               size_t n, size_t d, const unsigned char *allow, size_t k, int64_t *out_idx,
               float *out_score, size_t *out_count)
{
    if (out_count == NULL) return CV_EINVAL;
    *out_count = 0;
    if (d == 0) return CV_EINVAL;
    if (k > 0 && (out_idx == NULL || out_score == NULL)) return CV_EINVAL;
    if (n > 0 && (query == NULL || matrix == NULL || scale == NULL)) return CV_EINVAL;
    if (k == 0 || n == 0) return CV_OK;

    int64_t (*dot)(const unsigned char *, const int8_t *, size_t) = dot_i8_plain;
#ifdef CV_X86_AVX2
    if (__builtin_cpu_supports("avx2")) dot = dot_i8_avx2;
#endif
    const unsigned char *q = query, *scales = scale;
    const double qs = (double)query_scale;
    cv_heap h = {out_idx, out_score, k, 0};
    for (size_t i = 0; i < n; i++) {
        if (allow != NULL && allow[i] == 0) continue;
        float s = loadf(scales + 4 * i);
        if (s != s) continue; /* a row that was not finite */
#if defined(__GNUC__) || defined(__clang__)
        /* a hint for the rows ahead (never faults, harmless past the end) */
        if (i + CV_AHEAD < n) {
            const int8_t *ahead = matrix + d * (i + CV_AHEAD);
            for (size_t off = 0; off < d; off += 64) __builtin_prefetch(ahead + off);
        }
#endif
        int64_t dt = dot(q, matrix + d * i, d);
        cv_offer(&h, (float)(((double)dt * (double)s) * qs), (int64_t)i);
    }
    *out_count = cv_heap_sort(&h);
    return CV_OK;
}
