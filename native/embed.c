/*
 * Text embedding by feature hashing (reference: convergiod/native_ref.py, embed()).
 *
 * Text -> code points (cv_utf8_next) -> each code point classified and folded:
 *   dropped   combining marks, zero-width joiners, variation selectors: ignored entirely
 *   separator whitespace, punctuation, invalid bytes: end the current word
 *   single    CJK ideographs, kana, emoji: a one-character word of their own
 *   word      everything else (letters, digits, other scripts): extend the current word
 * Folding: lower case and accents stripped (table below 0x500, fullwidth ASCII mapped).
 *
 * Features of each word w = c1..cn (folded), all hashed with 64-bit FNV-1a over code points
 * and finished by the splitmix64 mixer with a per-kind seed:
 *   unigram   weight 2   mix(fnv(c1..cn) ^ SEED_UNIGRAM)
 *   bigram    weight 1   mix((fnv(prev) * BIGRAM_MUL) ^ fnv(w) ^ SEED_BIGRAM), prev = the
 *                        previous word of the text (separators do not break the chain)
 *   trigrams  weight 1   mix(fnv(x_j, x_j+1, x_j+2) ^ SEED_TRIGRAM) over BEGIN c1..cn END
 *                        (n trigrams)
 * A feature with hash h adds +-weight to bucket (uint32)h % dim, minus when bit 63 is set.
 * Weights are small integers, so the float32 buckets are exact up to 2^24 in magnitude and
 * the result does not depend on the order of the additions. Then out /= ||out||_2, computed
 * in double in index order; all zeros when there was no feature.
 */
#include <math.h>
#include <string.h>

#include "convergio_core.h"
#include "cv_fold_table.h"
#include "cv_internal.h"

#define FNV_OFFSET 0xCBF29CE484222325ull
#define FNV_PRIME 0x100000001B3ull
#define BIGRAM_MUL 0x9E3779B97F4A7C15ull
#define SEED_UNIGRAM 0x756E6967726D3031ull
#define SEED_BIGRAM 0x62696772616D3032ull
#define SEED_TRIGRAM 0x63686172336733ull
#define BOUNDARY_BEGIN 0x110000u
#define BOUNDARY_END 0x110001u
#define WEIGHT_UNIGRAM 2.0f
#define WEIGHT_BIGRAM 1.0f
#define WEIGHT_TRIGRAM 1.0f

enum { CLS_SEP = 0, CLS_WORD = 1, CLS_SINGLE = 2, CLS_DROP = 3 };

typedef struct {
    uint32_t lo, hi;
} cv_range;

static const cv_range drop_ranges[] = {
    {0x1AB0, 0x1AFF}, {0x1DC0, 0x1DFF}, {0x200B, 0x200D}, {0x20D0, 0x20FF},
    {0xFE00, 0xFE0F}, {0xFE20, 0xFE2F}, {0xE0100, 0xE01EF},
};
static const cv_range sep_ranges[] = {
    {0x0589, 0x0589}, {0x05BE, 0x05BE}, {0x05C0, 0x05C0}, {0x05C3, 0x05C3},
    {0x05F3, 0x05F4}, {0x060C, 0x060C}, {0x061B, 0x061B}, {0x061F, 0x061F},
    {0x066A, 0x066D}, {0x06D4, 0x06D4}, {0x0964, 0x0965}, {0x0E5A, 0x0E5B},
    {0x2000, 0x206F}, {0x2E00, 0x2E7F}, {0x3000, 0x303F}, {0xFE10, 0xFE1F},
    {0xFE30, 0xFE4F}, {0xFE50, 0xFE6F}, {0xFF00, 0xFF0F}, {0xFF1A, 0xFF20},
    {0xFF3B, 0xFF40}, {0xFF5B, 0xFF65}, {0xFFF0, 0xFFFF},
};
static const cv_range single_ranges[] = {
    {0x2600, 0x27BF}, {0x2E80, 0x2FDF}, {0x3040, 0x30FF}, {0x3100, 0x312F},
    {0x31F0, 0x31FF}, {0x3400, 0x4DBF}, {0x4E00, 0x9FFF}, {0xF900, 0xFAFF},
    {0x1F000, 0x1FAFF}, {0x20000, 0x3FFFF},
};

static int in_ranges(uint32_t cp, const cv_range *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (cp >= r[i].lo && cp <= r[i].hi) return 1;
    }
    return 0;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int char_class(uint32_t cp)
{
    if (cp < CV_TABLE_LIMIT) return cv_class_table[cp];
    if (cp == CV_INVALID_CP) return CLS_SEP;
    if (in_ranges(cp, drop_ranges, COUNT(drop_ranges))) return CLS_DROP;
    if (in_ranges(cp, sep_ranges, COUNT(sep_ranges))) return CLS_SEP;
    if (in_ranges(cp, single_ranges, COUNT(single_ranges))) return CLS_SINGLE;
    return CLS_WORD;
}

/* Fold of a code point >= CV_TABLE_LIMIT that is not dropped. */
static uint32_t fold_high(uint32_t cp)
{
    if (cp >= 0xFF21u && cp <= 0xFF3Au) return cp - 0xFF21u + 0x61u;
    if (cp >= 0xFF41u && cp <= 0xFF5Au) return cp - 0xFF41u + 0x61u;
    if (cp >= 0xFF10u && cp <= 0xFF19u) return cp - 0xFF10u + 0x30u;
    return cp;
}

uint32_t cv_fold_codepoint(uint32_t cp)
{
    if (cp < CV_TABLE_LIMIT) {
        uint16_t f = cv_fold_table[cp];
        return f == 0xFFFFu ? CV_FOLD_DROP : f;
    }
    if (char_class(cp) == CLS_DROP) return CV_FOLD_DROP;
    return fold_high(cp);
}

int cv_char_class(uint32_t cp) { return char_class(cp); }

static inline uint64_t mix64(uint64_t z)
{
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z;
}

static inline uint64_t fnv_step(uint64_t h, uint32_t cp) { return (h ^ cp) * FNV_PRIME; }

typedef struct {
    unsigned char *out; /* dim floats, any alignment */
    size_t dim;
    uint64_t nfeatures;
} sink;

static inline void add_feature(sink *s, uint64_t h, float weight)
{
    size_t bucket = (size_t)((uint32_t)h % (uint64_t)s->dim);
    float v;
    memcpy(&v, s->out + 4 * bucket, 4);
    v += (h >> 63) ? -weight : weight;
    memcpy(s->out + 4 * bucket, &v, 4);
    s->nfeatures++;
}

typedef struct {
    uint64_t hash;       /* running FNV of the current word */
    size_t len;          /* code points in the current word (0: no word open) */
    uint32_t w0, w1;     /* the last two code points of the padded word */
    int have_prev;       /* a previous word exists */
    uint64_t prev_hash;  /* its FNV */
} word_state;

static inline void word_push(word_state *w, sink *s, uint32_t c)
{
    if (w->len == 0) {
        w->hash = FNV_OFFSET;
        w->w0 = BOUNDARY_BEGIN; /* w1 is unused until len >= 1 */
    }
    w->hash = fnv_step(w->hash, c);
    if (w->len >= 1) {
        uint64_t g = fnv_step(fnv_step(fnv_step(FNV_OFFSET, w->w0), w->w1), c);
        add_feature(s, mix64(g ^ SEED_TRIGRAM), WEIGHT_TRIGRAM);
        w->w0 = w->w1;
    }
    w->w1 = c;
    w->len++;
}

static inline void word_end(word_state *w, sink *s)
{
    if (w->len == 0) return;
    uint64_t g = fnv_step(fnv_step(fnv_step(FNV_OFFSET, w->w0), w->w1), BOUNDARY_END);
    add_feature(s, mix64(g ^ SEED_TRIGRAM), WEIGHT_TRIGRAM);
    add_feature(s, mix64(w->hash ^ SEED_UNIGRAM), WEIGHT_UNIGRAM);
    if (w->have_prev) {
        add_feature(s, mix64((w->prev_hash * BIGRAM_MUL) ^ w->hash ^ SEED_BIGRAM),
                    WEIGHT_BIGRAM);
    }
    w->have_prev = 1;
    w->prev_hash = w->hash;
    w->len = 0;
}

uint64_t cv_embed(const unsigned char *text, size_t len, void *out, size_t dim)
{
    if (out == NULL || dim == 0) return 0;
    if (text == NULL) len = 0;
    sink s = {(unsigned char *)out, dim, 0};
    memset(s.out, 0, 4 * dim);
    word_state w = {0};
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        unsigned b = text[i];
        /* ASCII fast path: the table lookups without the decoder call. */
        if (b < 0x80u) {
            cp = b;
            i++;
        } else {
            i += cv_utf8_next(text, len, i, &cp);
        }
        int cls = char_class(cp);
        if (cls == CLS_WORD) {
            uint32_t f = cp < CV_TABLE_LIMIT ? cv_fold_table[cp] : fold_high(cp);
            word_push(&w, &s, f);
        } else if (cls == CLS_SEP) {
            word_end(&w, &s);
        } else if (cls == CLS_SINGLE) {
            word_end(&w, &s);
            word_push(&w, &s, fold_high(cp));
            word_end(&w, &s);
        }
        /* CLS_DROP: nothing */
    }
    word_end(&w, &s);

    double sumsq = 0.0;
    for (size_t j = 0; j < dim; j++) {
        float v;
        memcpy(&v, s.out + 4 * j, 4);
        sumsq += (double)v * (double)v;
    }
    double norm = sqrt(sumsq);
    if (norm > 0.0) {
        for (size_t j = 0; j < dim; j++) {
            float v;
            memcpy(&v, s.out + 4 * j, 4);
            v = (float)((double)v / norm);
            memcpy(s.out + 4 * j, &v, 4);
        }
    }
    return s.nfeatures;
}
