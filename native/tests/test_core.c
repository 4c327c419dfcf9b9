/*
 * C unit tests of the core, with a tiny runner. Run by `make ctest` under valgrind:
 *   cc -std=c17 -g -Inative native/[a-z]*.c native/tests/test_core.c -lm, then valgrind
 * Prints "N passed, N failed" and exits non-zero on any failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convergio_core.h"

static int g_failed_checks;
static int g_current_failed;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            g_failed_checks++;                                                         \
            g_current_failed = 1;                                                      \
        }                                                                              \
    } while (0)

/* xorshift64*: deterministic test data without global state in the library */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

static float rng_float(uint64_t *s)
{
    return (float)((double)(rng_next(s) >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

static uint64_t est(const char *s)
{
    return cv_estimate_tokens((const unsigned char *)s, strlen(s));
}

/* ---- token estimation ------------------------------------------------------------------ */

static void test_tokens_basic(void)
{
    CHECK(cv_estimate_tokens(NULL, 0) == 0);
    CHECK(est("") == 0);
    CHECK(est("a") == 1);
    CHECK(est(" ") >= 1);
    CHECK(est("hello") >= 1 && est("hello") <= 2);
    CHECK(est("the") == 1);                      /* a known word */
    CHECK(est("internationalization") > 1);      /* not one token */
    CHECK(est("getUserNameFromHTTPRequest") >= 4);
    uint64_t one = est("The quick brown fox jumps over the lazy dog.");
    CHECK(one >= 8 && one <= 14);
    /* additive over repeated paragraphs (no hidden state) */
    const char *p = "The quick brown fox jumps over the lazy dog.\n";
    char buf[46 * 4 + 1] = {0};
    for (int i = 0; i < 4; i++) strcat(buf, p);
    uint64_t four = est(buf);
    CHECK(four >= 3 * est(p) && four <= 5 * est(p));
}

static void test_tokens_invalid_utf8(void)
{
    const unsigned char bad[] = {0xFF, 0xFE, 0xC0, 0x80, 0xED, 0xA0, 0x80, 0xF5, 0x80};
    uint64_t n = cv_estimate_tokens(bad, sizeof bad);
    CHECK(n >= sizeof bad / 2);
    /* truncated sequences at the very end must not read past the buffer (valgrind/asan) */
    for (size_t cut = 1; cut <= 4; cut++) {
        unsigned char *heap = malloc(cut);
        const unsigned char emoji[4] = {0xF0, 0x9F, 0x98, 0x80};
        memcpy(heap, emoji, cut);
        uint64_t t = cv_estimate_tokens(heap, cut);
        CHECK(t >= 1);
        free(heap);
    }
}

static void test_tokens_params(void)
{
    int32_t p[CV_TOKEN_NPARAMS + 2];
    memset(p, 0x7F, sizeof p);
    CHECK(cv_token_params(p, CV_TOKEN_NPARAMS) == CV_TOKEN_NPARAMS);
    CHECK(p[CV_TOKEN_NPARAMS] == 0x7F7F7F7F); /* nothing written past cap */
    for (int i = 0; i < CV_TOKEN_NPARAMS; i++) CHECK(p[i] >= 0);
    CHECK(cv_token_params(NULL, 0) == CV_TOKEN_NPARAMS);
}

static void test_tokens_random_bytes(void)
{
    uint64_t s = 42;
    for (int round = 0; round < 200; round++) {
        size_t len = (size_t)(rng_next(&s) % 300);
        unsigned char *buf = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++) buf[i] = (unsigned char)rng_next(&s);
        uint64_t n = cv_estimate_tokens(buf, len);
        CHECK(len == 0 ? n == 0 : n >= 1);
        float *v = malloc(16 * sizeof(float));
        cv_embed(buf, len, v, 16);
        for (int i = 0; i < 16; i++) CHECK(isfinite(v[i]));
        free(v);
        free(buf);
    }
}

/* ---- embedding ------------------------------------------------------------------------- */

static double norm2(const float *v, size_t d)
{
    double s = 0;
    for (size_t i = 0; i < d; i++) s += (double)v[i] * v[i];
    return s;
}

static void embed_str(const char *s, float *out, size_t dim)
{
    cv_embed((const unsigned char *)s, strlen(s), out, dim);
}

static void test_embed_basic(void)
{
    float a[384], b[384];
    CHECK(cv_embed((const unsigned char *)"x", 1, NULL, 384) == 0);
    CHECK(cv_embed((const unsigned char *)"x", 1, a, 0) == 0);
    /* empty and word-less texts: all zeros */
    for (int i = 0; i < 384; i++) a[i] = 1.0f;
    CHECK(cv_embed(NULL, 0, a, 384) == 0);
    for (int i = 0; i < 384; i++) CHECK(a[i] == 0.0f);
    CHECK(cv_embed((const unsigned char *)" ,.;!? ", 7, a, 384) == 0);
    CHECK(norm2(a, 384) == 0.0);
    /* one word: trigrams <he, hel, ell, llo, lo> + unigram = 6 features */
    CHECK(cv_embed((const unsigned char *)"hello", 5, a, 384) == 6);
    CHECK(fabs(norm2(a, 384) - 1.0) < 1e-6);
    /* two words: 2*(n trigrams + unigram) + one bigram */
    CHECK(cv_embed((const unsigned char *)"hello world", 11, a, 384) == 13);
    /* case and accent folding: identical vectors */
    embed_str("Crème Brûlée", a, 384);
    embed_str("CREME BRULEE", b, 384);
    CHECK(memcmp(a, b, sizeof a) == 0);
    embed_str("cre\xcc\x80me", a, 384); /* e + combining grave accent */
    embed_str("creme", b, 384);
    CHECK(memcmp(a, b, sizeof a) == 0);
    /* different texts: different vectors, similar texts: closer */
    float c[384];
    embed_str("the cat sat on the mat", a, 384);
    embed_str("the cat sat on a mat", b, 384);
    embed_str("quarterly revenue grew by four percent", c, 384);
    double ab = 0, ac = 0;
    for (int i = 0; i < 384; i++) {
        ab += (double)a[i] * b[i];
        ac += (double)a[i] * c[i];
    }
    CHECK(ab > 0.5 && ab > ac + 0.3);
}

static void test_embed_misaligned(void)
{
    unsigned char raw[4 * 64 + 3];
    float ref[64], got[64];
    embed_str("misaligned output buffers work", ref, 64);
    cv_embed((const unsigned char *)"misaligned output buffers work", 30, raw + 1, 64);
    memcpy(got, raw + 1, sizeof got);
    CHECK(memcmp(ref, got, sizeof ref) == 0);
}

static void test_fold(void)
{
    CHECK(cv_fold_codepoint('A') == 'a');
    CHECK(cv_fold_codepoint(0xC9) == 'e');   /* É */
    CHECK(cv_fold_codepoint(0x130) == 'i');  /* İ */
    CHECK(cv_fold_codepoint(0x3A3) == 0x3C3); /* Σ -> σ */
    CHECK(cv_fold_codepoint(0x3C2) == 0x3C3); /* ς -> σ */
    CHECK(cv_fold_codepoint(0x410) == 0x430); /* А -> а */
    CHECK(cv_fold_codepoint(0x301) == CV_FOLD_DROP);
    CHECK(cv_fold_codepoint(0xFF21) == 'a');
    CHECK(cv_fold_codepoint(0x4E2D) == 0x4E2D);
    CHECK(cv_char_class(' ') == 0 && cv_char_class('a') == 1);
    CHECK(cv_char_class(0x4E2D) == 2 && cv_char_class(0x1F600) == 2);
    CHECK(cv_char_class(0x200D) == 3 && cv_char_class(0xFFFFFFFFu) == 0);
}

/* ---- top-k ----------------------------------------------------------------------------- */

static void test_topk_args(void)
{
    float q[3] = {1, 0, 0}, m[6] = {1, 0, 0, 0, 1, 0};
    int64_t idx[4];
    float sc[4];
    size_t count = 99;
    CHECK(cv_topk(q, m, 2, 3, NULL, 7, 1, idx, sc, &count) == CV_EINVAL);
    CHECK(cv_topk(q, m, 2, 0, NULL, CV_METRIC_DOT, 1, idx, sc, &count) == CV_EINVAL);
    CHECK(cv_topk(q, m, 2, 3, NULL, CV_METRIC_DOT, 1, NULL, sc, &count) == CV_EINVAL);
    CHECK(cv_topk(NULL, m, 2, 3, NULL, CV_METRIC_DOT, 1, idx, sc, &count) == CV_EINVAL);
    CHECK(cv_topk(q, m, 2, 3, NULL, CV_METRIC_DOT, 1, idx, sc, NULL) == CV_EINVAL);
    CHECK(cv_topk(q, m, 2, 3, NULL, CV_METRIC_DOT, 0, NULL, NULL, &count) == CV_OK);
    CHECK(count == 0);
    CHECK(cv_topk(q, NULL, 0, 3, NULL, CV_METRIC_DOT, 4, idx, sc, &count) == CV_OK);
    CHECK(count == 0);
    /* k > n */
    CHECK(cv_topk(q, m, 2, 3, NULL, CV_METRIC_DOT, 4, idx, sc, &count) == CV_OK);
    CHECK(count == 2 && idx[0] == 0 && idx[1] == 1 && sc[0] == 1.0f && sc[1] == 0.0f);
    CHECK(isnan(cv_score(q, m, 3, 9)));
}

static void test_topk_ties_nan_mask(void)
{
    /* rows: 0 -> 1, 1 -> NaN, 2 -> 1, 3 -> 2, 4 -> 1 (masked out), 5 -> -inf */
    float q[2] = {1, 0};
    float m[12] = {1, 5, NAN, 0, 1, -3, 2, 0, 1, 1, -INFINITY, 0};
    unsigned char allow[6] = {1, 1, 1, 1, 0, 1};
    int64_t idx[6];
    float sc[6];
    size_t count;
    CHECK(cv_topk(q, m, 6, 2, allow, CV_METRIC_DOT, 6, idx, sc, &count) == CV_OK);
    CHECK(count == 4);
    CHECK(idx[0] == 3 && sc[0] == 2.0f);
    CHECK(idx[1] == 0 && idx[2] == 2 && sc[1] == 1.0f && sc[2] == 1.0f);
    CHECK(idx[3] == 5 && isinf(sc[3]) && sc[3] < 0);
    CHECK(cv_topk(q, m, 6, 2, allow, CV_METRIC_DOT, 2, idx, sc, &count) == CV_OK);
    CHECK(count == 2 && idx[0] == 3 && idx[1] == 0);
    /* NaN query: nothing */
    float qn[2] = {NAN, 1};
    CHECK(cv_topk(qn, m, 6, 2, NULL, CV_METRIC_DOT, 6, idx, sc, &count) == CV_OK);
    CHECK(count == 0);
    /* cosine with a zero row and a zero query: score 0 */
    float z[4] = {0, 0, 3, 4};
    float qc[2] = {3, 4};
    CHECK(cv_topk(qc, z, 2, 2, NULL, CV_METRIC_COSINE, 2, idx, sc, &count) == CV_OK);
    CHECK(count == 2 && idx[0] == 1 && sc[0] == 1.0f && idx[1] == 0 && sc[1] == 0.0f);
    float q0[2] = {0, 0};
    CHECK(cv_topk(q0, z, 2, 2, NULL, CV_METRIC_COSINE, 2, idx, sc, &count) == CV_OK);
    CHECK(count == 2 && idx[0] == 0 && idx[1] == 1 && sc[0] == 0.0f && sc[1] == 0.0f);
}

/* brute force: score every row with cv_score, select by repeated scans */
static void brute_topk(const float *q, const unsigned char *m, size_t n, size_t d, int metric,
                       const unsigned char *allow, size_t k, int64_t *idx, float *sc,
                       size_t *count)
{
    float *all = malloc(n * sizeof *all);
    unsigned char *used = calloc(n, 1);
    for (size_t i = 0; i < n; i++) all[i] = cv_score(q, m + 4 * d * i, d, metric);
    *count = 0;
    while (*count < k) {
        size_t best = n;
        for (size_t i = 0; i < n; i++) {
            if (used[i] || isnan(all[i]) || (allow && !allow[i])) continue;
            if (best == n || all[i] > all[best]) best = i;
        }
        if (best == n) break;
        used[best] = 1;
        idx[*count] = (int64_t)best;
        sc[*count] = all[best];
        (*count)++;
    }
    free(all);
    free(used);
}

static void test_topk_random(void)
{
    uint64_t s = 7;
    for (int round = 0; round < 300; round++) {
        size_t n = (size_t)(rng_next(&s) % 60);
        size_t d = 1 + (size_t)(rng_next(&s) % 40);
        size_t k = (size_t)(rng_next(&s) % 70);
        int metric = (int)(rng_next(&s) % 2);
        size_t off = (size_t)(rng_next(&s) % 4); /* misalign the matrix by 0..3 bytes */
        unsigned char *raw = malloc(4 * n * d + off + 1);
        unsigned char *m = raw + off;
        float *q = malloc(d * sizeof *q);
        unsigned char *allow = malloc(n + 1);
        for (size_t i = 0; i < d; i++) q[i] = rng_float(&s);
        for (size_t i = 0; i < n * d; i++) {
            /* few distinct values -> many ties; sometimes NaN */
            float v = (float)(int)(rng_float(&s) * 3.0f);
            if (rng_next(&s) % 97 == 0) v = NAN;
            memcpy(m + 4 * i, &v, 4);
        }
        for (size_t i = 0; i < n; i++) allow[i] = (unsigned char)(rng_next(&s) % 4 != 0);
        int use_allow = (int)(rng_next(&s) % 2);
        size_t kk = k ? k : 1;
        int64_t *idx = malloc(kk * sizeof *idx), *bidx = malloc(kk * sizeof *bidx);
        float *sc = malloc(kk * sizeof *sc), *bsc = malloc(kk * sizeof *bsc);
        size_t count, bcount;
        CHECK(cv_topk(q, m, n, d, use_allow ? allow : NULL, metric, k, idx, sc, &count) ==
              CV_OK);
        brute_topk(q, m, n, d, metric, use_allow ? allow : NULL, k, bidx, bsc, &bcount);
        CHECK(count == bcount);
        for (size_t i = 0; i < count && i < bcount; i++) {
            CHECK(idx[i] == bidx[i]);
            CHECK(memcmp(&sc[i], &bsc[i], 4) == 0);
        }
        free(raw);
        free(q);
        free(allow);
        free(idx);
        free(bidx);
        free(sc);
        free(bsc);
    }
}

/* ---- quantized preselection -------------------------------------------------------------- */

static void test_quant_args(void)
{
    float m[4] = {1, 2, 3, 4}, sc[2];
    int8_t q8[4];
    int16_t q16[2];
    int64_t idx[2];
    float out[2];
    size_t count = 99;
    CHECK(cv_quantize_i8(m, 2, 0, q8, sc) == CV_EINVAL);
    CHECK(cv_quantize_i8(NULL, 2, 2, q8, sc) == CV_EINVAL);
    CHECK(cv_quantize_i8(m, 2, 2, NULL, sc) == CV_EINVAL);
    CHECK(cv_quantize_i8(m, 2, 2, q8, NULL) == CV_EINVAL);
    CHECK(cv_quantize_i8(NULL, 0, 2, NULL, NULL) == CV_OK);
    CHECK(cv_quantize_i16(m, 0, q16, sc) == CV_EINVAL);
    CHECK(cv_quantize_i16(NULL, 2, q16, sc) == CV_EINVAL);
    CHECK(cv_topk_i8(q16, 1.0f, q8, sc, 2, 2, NULL, 1, idx, out, NULL) == CV_EINVAL);
    CHECK(cv_topk_i8(q16, 1.0f, q8, sc, 2, 0, NULL, 1, idx, out, &count) == CV_EINVAL);
    CHECK(cv_topk_i8(q16, 1.0f, q8, sc, 2, 2, NULL, 1, NULL, out, &count) == CV_EINVAL);
    CHECK(cv_topk_i8(q16, 1.0f, q8, NULL, 2, 2, NULL, 1, idx, out, &count) == CV_EINVAL);
    CHECK(cv_topk_i8(q16, 1.0f, NULL, NULL, 0, 2, NULL, 1, idx, out, &count) == CV_OK);
    CHECK(count == 0);
    int64_t rows[2] = {0, 2};
    CHECK(cv_topk_rows(m, m, 2, 2, rows, 2, CV_METRIC_DOT, 2, idx, out, &count) == CV_EINVAL);
    rows[1] = -1;
    CHECK(cv_topk_rows(m, m, 2, 2, rows, 2, CV_METRIC_DOT, 2, idx, out, &count) == CV_EINVAL);
    rows[1] = 1;
    CHECK(cv_topk_rows(m, m, 2, 2, rows, 2, 5, 2, idx, out, &count) == CV_EINVAL);
    CHECK(cv_topk_rows(m, m, 2, 2, NULL, 2, CV_METRIC_DOT, 2, idx, out, &count) == CV_EINVAL);
    CHECK(cv_topk_rows(m, m, 2, 2, rows, 2, CV_METRIC_DOT, 2, idx, out, &count) == CV_OK);
    CHECK(count == 2 && idx[0] == 1 && idx[1] == 0 && out[0] == 11.0f && out[1] == 5.0f);
}

static void test_quant_examples(void)
{
    /* max 127: the scale is 1 and the values are rounded half to even */
    float m[12] = {127, 2.5f, 3.5f, -2.5f, 0, 0, 0, 0, 1, NAN, 2, 3};
    int8_t q8[12];
    float sc[3];
    CHECK(cv_quantize_i8(m, 3, 4, q8, sc) == CV_OK);
    CHECK(sc[0] == 1.0f && q8[0] == 127 && q8[1] == 2 && q8[2] == 4 && q8[3] == -2);
    CHECK(sc[1] == 0.0f && q8[4] == 0 && q8[7] == 0);
    CHECK(isnan(sc[2]) && q8[8] == 0 && q8[11] == 0);
    float inf_row[2] = {INFINITY, 1};
    CHECK(cv_quantize_i8(inf_row, 1, 2, q8, sc) == CV_OK && isnan(sc[0]));
    /* the query side: int16 */
    float qv[3] = {-1.0f, 0.5f, 0.25f};
    int16_t q16[3];
    float qs;
    CHECK(cv_quantize_i16(qv, 3, q16, &qs) == CV_OK);
    CHECK(q16[0] == -32767 && q16[1] == 16384 && q16[2] == 8192); /* 16383.5 -> 16384 */
    CHECK(qs == (float)(1.0 / 32767.0));
    /* selection: rows 0 (scale 1), 1 (zeros: score 0), 2 (NaN: never) */
    float mm[12] = {127, 2.5f, 3.5f, -2.5f, 0, 0, 0, 0, 1, NAN, 2, 3};
    CHECK(cv_quantize_i8(mm, 3, 4, q8, sc) == CV_OK);
    int16_t q[4] = {1, 0, 0, 0};
    int64_t idx[3];
    float out[3];
    size_t count;
    CHECK(cv_topk_i8(q, 2.0f, q8, sc, 3, 4, NULL, 3, idx, out, &count) == CV_OK);
    CHECK(count == 2 && idx[0] == 0 && out[0] == 254.0f && idx[1] == 1 && out[1] == 0.0f);
    unsigned char allow[3] = {0, 1, 1};
    CHECK(cv_topk_i8(q, 2.0f, q8, sc, 3, 4, allow, 3, idx, out, &count) == CV_OK);
    CHECK(count == 1 && idx[0] == 1);
}

/* the same scores in plain integer and double arithmetic */
static void brute_topk_i8(const int16_t *q, float qs, const int8_t *m, const float *sc, size_t n,
                          size_t d, const unsigned char *allow, size_t k, int64_t *idx,
                          float *out, size_t *count)
{
    float *all = malloc((n ? n : 1) * sizeof *all);
    unsigned char *used = calloc(n ? n : 1, 1);
    for (size_t i = 0; i < n; i++) {
        int64_t dot = 0;
        for (size_t j = 0; j < d; j++) dot += (int64_t)q[j] * m[i * d + j];
        all[i] = (float)(((double)dot * (double)sc[i]) * (double)qs);
    }
    *count = 0;
    while (*count < k) {
        size_t best = n;
        for (size_t i = 0; i < n; i++) {
            if (used[i] || isnan(all[i]) || (allow && !allow[i])) continue;
            if (best == n || all[i] > all[best]) best = i;
        }
        if (best == n) break;
        used[best] = 1;
        idx[*count] = (int64_t)best;
        out[*count] = all[best];
        (*count)++;
    }
    free(all);
    free(used);
}

static void test_topk_i8_random(void)
{
    uint64_t s = 11;
    for (int round = 0; round < 200; round++) {
        size_t n = (size_t)(rng_next(&s) % 40);
        /* sizes around the vector widths, and a few past the 4096-value partial sums */
        size_t d = round % 25 == 0 ? 4090 + (size_t)(rng_next(&s) % 4200)
                                   : 1 + (size_t)(rng_next(&s) % 100);
        size_t k = (size_t)(rng_next(&s) % 45);
        size_t off = (size_t)(rng_next(&s) % 4);
        int extreme = round % 7 == 0; /* every value at the limits: overflow would show */
        float *m = malloc((n * d + 1) * sizeof *m);
        float *qf = malloc(d * sizeof *qf);
        for (size_t i = 0; i < n * d; i++) {
            m[i] = extreme ? (rng_next(&s) % 2 ? 1.0f : -1.0f) : (float)(int)(rng_float(&s) * 5);
            if (!extreme && rng_next(&s) % 211 == 0) m[i] = NAN;
        }
        for (size_t j = 0; j < d; j++) qf[j] = extreme ? 1.0f : rng_float(&s);
        /* int8 rows and scales at odd addresses */
        unsigned char *raw8 = malloc(n * d + off + 1), *rawsc = malloc(4 * n + off + 1);
        int8_t *q8 = (int8_t *)(raw8 + off);
        float *sc = malloc((n + 1) * sizeof *sc);
        CHECK(cv_quantize_i8(m, n, d, q8, rawsc + off) == CV_OK);
        memcpy(sc, rawsc + off, 4 * n);
        unsigned char *rawq = malloc(2 * d + off + 1);
        int16_t *q16 = malloc(d * sizeof *q16);
        float qs;
        CHECK(cv_quantize_i16(qf, d, q16, &qs) == CV_OK);
        memcpy(rawq + off, q16, 2 * d);
        unsigned char *allow = malloc(n + 1);
        for (size_t i = 0; i < n; i++) allow[i] = (unsigned char)(rng_next(&s) % 3 != 0);
        int use_allow = (int)(rng_next(&s) % 2);
        size_t kk = k ? k : 1;
        int64_t *idx = malloc(kk * sizeof *idx), *bidx = malloc(kk * sizeof *bidx);
        float *out = malloc(kk * sizeof *out), *bout = malloc(kk * sizeof *bout);
        size_t count, bcount;
        CHECK(cv_topk_i8(rawq + off, qs, q8, rawsc + off, n, d, use_allow ? allow : NULL, k, idx,
                         out, &count) == CV_OK);
        brute_topk_i8(q16, qs, q8, sc, n, d, use_allow ? allow : NULL, k, bidx, bout, &bcount);
        CHECK(count == bcount);
        for (size_t i = 0; i < count && i < bcount; i++) {
            CHECK(idx[i] == bidx[i]);
            CHECK(memcmp(&out[i], &bout[i], 4) == 0);
        }
        /* exact re-rank of every candidate equals cv_topk over the same rows */
        if (count > 0) {
            size_t k2 = 1 + (size_t)(rng_next(&s) % count);
            int64_t *ridx = malloc(k2 * sizeof *ridx), *tidx = malloc(k2 * sizeof *tidx);
            float *rsc = malloc(k2 * sizeof *rsc), *tsc = malloc(k2 * sizeof *tsc);
            unsigned char *mask = calloc(n, 1);
            for (size_t i = 0; i < count; i++) mask[idx[i]] = 1;
            size_t rc, tc;
            int metric = (int)(rng_next(&s) % 2);
            CHECK(cv_topk_rows(qf, m, n, d, idx, count, metric, k2, ridx, rsc, &rc) == CV_OK);
            CHECK(cv_topk(qf, m, n, d, mask, metric, k2, tidx, tsc, &tc) == CV_OK);
            CHECK(rc == tc);
            for (size_t i = 0; i < rc && i < tc; i++) {
                CHECK(ridx[i] == tidx[i]);
                CHECK(memcmp(&rsc[i], &tsc[i], 4) == 0);
            }
            free(ridx);
            free(tidx);
            free(rsc);
            free(tsc);
            free(mask);
        }
        free(m);
        free(qf);
        free(raw8);
        free(rawsc);
        free(sc);
        free(rawq);
        free(q16);
        free(allow);
        free(idx);
        free(bidx);
        free(out);
        free(bout);
    }
}

/* ---- runner ---------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    void (*fn)(void);
} test_case;

static const test_case tests[] = {
    {"tokens_basic", test_tokens_basic},
    {"tokens_invalid_utf8", test_tokens_invalid_utf8},
    {"tokens_params", test_tokens_params},
    {"tokens_random_bytes", test_tokens_random_bytes},
    {"embed_basic", test_embed_basic},
    {"embed_misaligned", test_embed_misaligned},
    {"fold", test_fold},
    {"topk_args", test_topk_args},
    {"topk_ties_nan_mask", test_topk_ties_nan_mask},
    {"topk_random", test_topk_random},
    {"quant_args", test_quant_args},
    {"quant_examples", test_quant_examples},
    {"topk_i8_random", test_topk_i8_random},
};

int main(void)
{
    int passed = 0, failed = 0;
    CHECK(cv_abi_version() == CV_ABI_VERSION);
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        g_current_failed = 0;
        tests[i].fn();
        printf("%s %s\n", g_current_failed ? "FAIL" : "ok  ", tests[i].name);
        if (g_current_failed) failed++;
        else passed++;
    }
    if (g_failed_checks && !failed) failed++;
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
