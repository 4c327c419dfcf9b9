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

#define CV_ABI_VERSION 2

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

#endif
