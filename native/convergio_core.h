/*
 * convergio_core: the C17 core of Convergio.
 *
 * Pure functions over caller-owned buffers. No global mutable state, no allocation, no I/O:
 * every function is safe to call from many threads at once (the caller must not mutate a
 * buffer while a call reads it). Built by cffi in API mode as `convergiod._native`; the
 * Python wrapper is `convergiod.native`, the pure-Python oracle `convergiod.native_ref`.
 *
 * Text is UTF-8 bytes of any content: invalid sequences are decoded one byte at a time
 * (see "UTF-8 decoding" in core.c) and never cause a failure.
 *
 * Float buffers (query, matrix) may have ANY alignment: the kernels read them through
 * memcpy, so a `float` view starting at an odd address is fine.
 */
#ifndef CONVERGIO_CORE_H
#define CONVERGIO_CORE_H

#include <stddef.h>
#include <stdint.h>

#define CV_ABI_VERSION 3

#define CV_OK 0
#define CV_EINVAL (-1)

#define CV_METRIC_DOT 0
#define CV_METRIC_COSINE 1

/* Number of entries cv_token_params() reports. */
#define CV_TOKEN_NPARAMS 25

int cv_abi_version(void);

/* ---- token estimation ------------------------------------------------------------------ */

/* Estimated number of BPE tokens the UTF-8 `text` of `len` bytes costs (0 for len == 0).
 * `text` may be NULL when len == 0. */
uint64_t cv_estimate_tokens(const unsigned char *text, size_t len);

/* Copies the calibrated cost table (milli-tokens, see core.c) into out[0..cap) and returns
 * CV_TOKEN_NPARAMS. Lets the tests check that the reference uses the same numbers. */
size_t cv_token_params(int32_t *out, size_t cap);

/* Copies the 26 x 26 letter-bigram boundary table (permille) into out[0..cap); returns 676. */
size_t cv_token_bigrams(uint16_t *out, size_t cap);

/* ---- embedding by feature hashing ------------------------------------------------------ */

#define CV_FOLD_DROP 0xFFFFFFFEu

/* Case- and accent-folded form of one code point as the embedding sees it: lower case,
 * accents stripped, fullwidth ASCII mapped to ASCII; CV_FOLD_DROP for code points the
 * embedding ignores (combining marks, zero-width joiners, variation selectors). */
uint32_t cv_fold_codepoint(uint32_t cp);

/* How the embedding treats a code point (0xFFFFFFFF = an invalid byte): 0 separator,
 * 1 part of a word, 2 a one-character word (CJK, kana, emoji), 3 ignored. */
int cv_char_class(uint32_t cp);

/* Embeds the UTF-8 `text` into `dim` float32 buckets at `out` (any alignment; overwritten),
 * L2-normalised; an all-zero vector when the text has no word. Returns the number of hashed
 * features, or 0 for dim == 0 / out == NULL (nothing written). */
uint64_t cv_embed(const unsigned char *text, size_t len, void *out, size_t dim);

/* ---- top-k similarity ------------------------------------------------------------------ */

/* Scores the `n` rows of the row-major n x d float32 `matrix` against the d-float `query`
 * (metric CV_METRIC_DOT or CV_METRIC_COSINE), skips rows whose allow[i] == 0 (allow may be
 * NULL: all rows) and rows whose score is NaN, and writes the best min(k, eligible) rows to
 * out_idx/out_score sorted by score descending, ties by row index ascending. *out_count gets
 * the number written. Returns CV_OK, or CV_EINVAL for a bad metric, d == 0, or a NULL
 * pointer that is needed (query/matrix when n > 0, outputs when k > 0, out_count). */
int cv_topk(const void *query, const void *matrix, size_t n, size_t d,
            const unsigned char *allow, int metric, size_t k, int64_t *out_idx,
            float *out_score, size_t *out_count);

/* The score cv_topk gives one row (same arithmetic, same order). NaN for a bad metric. */
float cv_score(const void *query, const void *row, size_t d, int metric);

/* cv_topk over the m listed rows of the matrix only (indices in [0, n), distinct; in any
 * order): the same scores, NaN rule, selection and order as cv_topk with an allow mask
 * holding exactly those rows. CV_EINVAL also for an index out of range. */
int cv_topk_rows(const void *query, const void *matrix, size_t n, size_t d,
                 const int64_t *rows, size_t m, int metric, size_t k, int64_t *out_idx,
                 float *out_score, size_t *out_count);

/* ---- quantized (int8) preselection (quant.c) ------------------------------------------- */

/* Quantizes each of the n rows of the row-major n x d float32 `matrix` to int8 with one
 * float32 scale per row (out: n x d int8; out_scale: n floats, any alignment): a row is
 * approximately out[i*d..] * out_scale[i]. A row of zeros gets scale 0; a row holding a NaN
 * or an infinity gets scale NaN (and zeros), so cv_topk_i8 never selects it. See quant.c for
 * the exact rounding. CV_EINVAL for d == 0 or a NULL pointer when n > 0. */
int cv_quantize_i8(const void *matrix, size_t n, size_t d, int8_t *out, void *out_scale);

/* The same for one query vector of d floats, to int16 (|value| <= 32767). */
int cv_quantize_i16(const void *vector, size_t d, int16_t *out, float *out_scale);

/* Approximate top-k by inner product over the int8 rows: the exact integer dot product of
 * the int16 `query` (d values, any alignment) with each row, times the row's scale, times
 * `query_scale`, rounded to float32. Rows with allow[i] == 0 (allow may be NULL) or a NaN
 * scale are skipped. Output, count and order as cv_topk. Meant to preselect candidates for
 * cv_topk_rows. */
int cv_topk_i8(const void *query, float query_scale, const int8_t *matrix, const void *scale,
               size_t n, size_t d, const unsigned char *allow, size_t k, int64_t *out_idx,
               float *out_score, size_t *out_count);

#endif
