/*
 * Top-k similarity (reference: convergiod/native_ref.py, score() and top_k()).
 *
 * Scores are float32 computed in ONE fixed order, so the reference reproduces them bit for
 * bit (the build uses -ffp-contract=off: no fused multiply-add):
 *   8 lane accumulators: lane l sums q[j]*r[j] for j = l, l+8, ... below d - d % 8;
 *   reduction ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)); then s += q[j]*r[j] for the tail.
 *   dot    = that sum;
 *   cosine = dot / (sqrtf(q.q) * sqrtf(r.r)), 0 when that denominator is 0.
 * NaN: a row whose score is NaN (a NaN in the row or the query, inf - inf, inf / inf) is
 * never returned, exactly like a row the allow-mask excludes. +-inf scores are kept.
 * Selection: the bounded heap of cv_heap.h in the caller's output arrays (no allocation):
 * a higher score wins, an equal score goes to the lower row index (-0.0 == 0.0).
 * Buffers may have any alignment: every load goes through memcpy.
 */
#include <math.h>
#include <string.h>

#include "convergio_core.h"
#include "cv_heap.h"

/* GCC/Clang vector extensions (SSE2 / NEON); -DCV_NO_VECTOR forces the scalar path. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(CV_NO_VECTOR)
#define CV_VECTOR 1
typedef float v4f __attribute__((vector_size(16)));

static inline v4f load4(const unsigned char *p)
{
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}
#endif

static inline float loadf(const unsigned char *p)
{
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)) */
static inline float reduce8(const float l[8])
{
    float t0 = l[0] + l[4], t1 = l[1] + l[5], t2 = l[2] + l[6], t3 = l[3] + l[7];
    return (t0 + t2) + (t1 + t3);
}

/* Dot products of one query with two rows at once (shares the query loads); b may equal a. */
static void dot2(const unsigned char *q, const unsigned char *a, const unsigned char *b,
                 size_t d, float *out_a, float *out_b)
{
    size_t body = d - d % 8;
    float la[8], lb[8];
#ifdef CV_VECTOR
    v4f a0 = {0, 0, 0, 0}, a1 = a0, b0 = a0, b1 = a0;
    for (size_t j = 0; j < body; j += 8) {
        v4f q0 = load4(q + 4 * j), q1 = load4(q + 4 * j + 16);
        a0 += q0 * load4(a + 4 * j);
        a1 += q1 * load4(a + 4 * j + 16);
        b0 += q0 * load4(b + 4 * j);
        b1 += q1 * load4(b + 4 * j + 16);
    }
    memcpy(la, &a0, 16);
    memcpy(la + 4, &a1, 16);
    memcpy(lb, &b0, 16);
    memcpy(lb + 4, &b1, 16);
#else
    for (int l = 0; l < 8; l++) la[l] = lb[l] = 0.0f;
    for (size_t j = 0; j < body; j += 8) {
        for (size_t l = 0; l < 8; l++) {
            float qv = loadf(q + 4 * (j + l));
            la[l] += qv * loadf(a + 4 * (j + l));
            lb[l] += qv * loadf(b + 4 * (j + l));
        }
    }
#endif
    float sa = reduce8(la), sb = reduce8(lb);
    for (size_t j = body; j < d; j++) {
        float qv = loadf(q + 4 * j);
        sa += qv * loadf(a + 4 * j);
        sb += qv * loadf(b + 4 * j);
    }
    *out_a = sa;
    *out_b = sb;
}

/* Cosine pieces for two rows in one pass: q.a, a.a, q.b, b.b (same lanes and order as dot2,
 * so each equals the corresponding dot2/dot1 result bit for bit). */
static void dotnorm2(const unsigned char *q, const unsigned char *a, const unsigned char *b,
                     size_t d, float out[4])
{
    size_t body = d - d % 8;
    float l[4][8];
#ifdef CV_VECTOR
    v4f z = {0, 0, 0, 0};
    v4f qa0 = z, qa1 = z, aa0 = z, aa1 = z, qb0 = z, qb1 = z, bb0 = z, bb1 = z;
    for (size_t j = 0; j < body; j += 8) {
        v4f q0 = load4(q + 4 * j), q1 = load4(q + 4 * j + 16);
        v4f a0 = load4(a + 4 * j), a1 = load4(a + 4 * j + 16);
        v4f b0 = load4(b + 4 * j), b1 = load4(b + 4 * j + 16);
        qa0 += q0 * a0;
        qa1 += q1 * a1;
        aa0 += a0 * a0;
        aa1 += a1 * a1;
        qb0 += q0 * b0;
        qb1 += q1 * b1;
        bb0 += b0 * b0;
        bb1 += b1 * b1;
    }
    memcpy(l[0], &qa0, 16);
    memcpy(l[0] + 4, &qa1, 16);
    memcpy(l[1], &aa0, 16);
    memcpy(l[1] + 4, &aa1, 16);
    memcpy(l[2], &qb0, 16);
    memcpy(l[2] + 4, &qb1, 16);
    memcpy(l[3], &bb0, 16);
    memcpy(l[3] + 4, &bb1, 16);
#else
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 8; i++) l[r][i] = 0.0f;
    for (size_t j = 0; j < body; j += 8) {
        for (size_t i = 0; i < 8; i++) {
            float qv = loadf(q + 4 * (j + i)), av = loadf(a + 4 * (j + i));
            float bv = loadf(b + 4 * (j + i));
            l[0][i] += qv * av;
            l[1][i] += av * av;
            l[2][i] += qv * bv;
            l[3][i] += bv * bv;
        }
    }
#endif
    for (int r = 0; r < 4; r++) out[r] = reduce8(l[r]);
    for (size_t j = body; j < d; j++) {
        float qv = loadf(q + 4 * j), av = loadf(a + 4 * j), bv = loadf(b + 4 * j);
        out[0] += qv * av;
        out[1] += av * av;
        out[2] += qv * bv;
        out[3] += bv * bv;
    }
}

static inline float dot1(const unsigned char *x, const unsigned char *y, size_t d)
{
    float s, unused;
    dot2(x, y, y, d, &s, &unused);
    return s;
}

static inline float cosine_from(float dot, float qn, float rr)
{
    float den = qn * sqrtf(rr);
    return den == 0.0f ? 0.0f : dot / den;
}

float cv_score(const void *query, const void *row, size_t d, int metric)
{
    const unsigned char *q = query, *r = row;
    if (metric != CV_METRIC_DOT && metric != CV_METRIC_COSINE) return NAN;
    float dot = dot1(q, r, d);
    if (metric == CV_METRIC_DOT) return dot;
    return cosine_from(dot, sqrtf(dot1(q, q, d)), dot1(r, r, d));
}

int cv_topk(const void *query, const void *matrix, size_t n, size_t d,
            const unsigned char *allow, int metric, size_t k, int64_t *out_idx,
            float *out_score, size_t *out_count)
{
    if (out_count == NULL) return CV_EINVAL;
    *out_count = 0;
    if (metric != CV_METRIC_DOT && metric != CV_METRIC_COSINE) return CV_EINVAL;
    if (d == 0) return CV_EINVAL;
    if (k > 0 && (out_idx == NULL || out_score == NULL)) return CV_EINVAL;
    if (n > 0 && (query == NULL || matrix == NULL)) return CV_EINVAL;
    if (k == 0 || n == 0) return CV_OK;

    const unsigned char *q = query, *m = matrix;
    const size_t row_bytes = 4 * d;
    const int cosine = metric == CV_METRIC_COSINE;
    const float qn = cosine ? sqrtf(dot1(q, q, d)) : 0.0f;
    cv_heap h = {out_idx, out_score, k, 0};

    size_t i = 0;
    while (i < n) {
        /* the next allowed row, and the one after it when there is one */
        while (i < n && allow != NULL && allow[i] == 0) i++;
        if (i >= n) break;
        size_t j = i + 1;
        while (j < n && allow != NULL && allow[j] == 0) j++;
        const unsigned char *ra = m + i * row_bytes;
        const unsigned char *rb = j < n ? m + j * row_bytes : ra;
#if defined(__GNUC__) || defined(__clang__)
        /* the hardware prefetcher follows one or two streams; ask for the rows after these
         * (a hint only: never faults, harmless past the end of the matrix) */
        if (j + 4 < n) {
            const unsigned char *ahead = m + (j + 3) * row_bytes;
            for (size_t off = 0; off < 2 * row_bytes; off += 64) __builtin_prefetch(ahead + off);
        }
#endif
        float da, db;
        if (cosine) {
            float p[4];
            dotnorm2(q, ra, rb, d, p);
            da = cosine_from(p[0], qn, p[1]);
            db = cosine_from(p[2], qn, p[3]);
        } else {
            dot2(q, ra, rb, d, &da, &db);
        }
        cv_offer(&h, da, (int64_t)i);
        if (j < n) cv_offer(&h, db, (int64_t)j);
        i = j + 1;
    }

    size_t count = cv_heap_sort(&h);
    *out_count = count;
    return CV_OK;
}

int cv_topk_rows(const void *query, const void *matrix, size_t n, size_t d,
                 const int64_t *rows, size_t m, int metric, size_t k, int64_t *out_idx,
                 float *out_score, size_t *out_count)
{
    if (out_count == NULL) return CV_EINVAL;
    *out_count = 0;
    if (metric != CV_METRIC_DOT && metric != CV_METRIC_COSINE) return CV_EINVAL;
    if (d == 0) return CV_EINVAL;
    if (k > 0 && (out_idx == NULL || out_score == NULL)) return CV_EINVAL;
    if (m > 0 && (query == NULL || matrix == NULL || rows == NULL)) return CV_EINVAL;
    for (size_t i = 0; i < m; i++) {
        if (rows[i] < 0 || (uint64_t)rows[i] >= (uint64_t)n) return CV_EINVAL;
    }
    if (k == 0 || m == 0) return CV_OK;

    const unsigned char *q = query, *mat = matrix;
    const size_t row_bytes = 4 * d;
    const int cosine = metric == CV_METRIC_COSINE;
    const float qn = cosine ? sqrtf(dot1(q, q, d)) : 0.0f;
    cv_heap h = {out_idx, out_score, k, 0};

    for (size_t i = 0; i < m; i += 2) {
        const size_t ia = (size_t)rows[i];
        const size_t ib = i + 1 < m ? (size_t)rows[i + 1] : ia;
#if defined(__GNUC__) || defined(__clang__)
        /* the rows are scattered: fetch the next pair while this one is scored */
        if (i + 3 < m) {
            const unsigned char *na = mat + (size_t)rows[i + 2] * row_bytes;
            const unsigned char *nb = mat + (size_t)rows[i + 3] * row_bytes;
            for (size_t off = 0; off < row_bytes; off += 64) {
                __builtin_prefetch(na + off);
                __builtin_prefetch(nb + off);
            }
        }
#endif
        const unsigned char *ra = mat + ia * row_bytes, *rb = mat + ib * row_bytes;
        float da, db;
        if (cosine) {
            float p[4];
            dotnorm2(q, ra, rb, d, p);
            da = cosine_from(p[0], qn, p[1]);
            db = cosine_from(p[2], qn, p[3]);
        } else {
            dot2(q, ra, rb, d, &da, &db);
        }
        cv_offer(&h, da, (int64_t)ia);
        if (i + 1 < m) cv_offer(&h, db, (int64_t)ib);
    }
    *out_count = cv_heap_sort(&h);
    return CV_OK;
}
