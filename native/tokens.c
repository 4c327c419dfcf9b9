/*
 * Token estimation (reference: convergiod/native_ref.py, token_features/estimate_tokens).
 *
 * A byte-level BPE tokenizer (GPT-2 family: SmolLM2, GPT-4o, Llama 3, ...) first splits text
 * into letter runs (with their leading space), digits, punctuation runs and whitespace, then
 * merges bytes inside each piece. This estimator scans the same pieces and charges each a
 * calibrated cost in milli-tokens: a base cost per letter run plus a cost per ASCII letter
 * beyond FREE (long or rare words split), per camelCase transition and per ALLCAPS letter,
 * a per-character cost for each non-ASCII script (accented Latin, Greek/Cyrillic, Han, kana,
 * Hangul, other two- and three-byte scripts), per digit, per punctuation run and extra
 * punctuation character, per symbol by UTF-8 length (emoji are four bytes), per whitespace
 * run that is not just the single space a following word absorbs, per newline and per other
 * whitespace character in such runs, and per invalid byte (byte-level BPE spends one token
 * on it). A word of ASCII letters that is a known word (a 64 KiB Bloom filter of the 31k
 * pure-letter tokens of the calibration vocabulary, lower-cased) costs the known-word cost;
 * in other words each pair of adjacent ASCII letters adds the measured probability that the
 * tokenizer splits such words there (a 26 x 26 table), so foreign words and identifiers
 * split while common English words stay whole. The total is round(sum / 1000), at least 1
 * for a non-empty text. Integer arithmetic throughout: the reference gives identical counts.
 *
 * Calibration: bench/calibrate_tokens.py fits the costs against the SmolLM2 tokenizer;
 * results in bench/results/token_calibration.md.
 */
#include "convergio_core.h"
#include "cv_internal.h"

enum {
    T_LOWER, T_UPPER, T_DIGIT, T_SPACE, T_NEWLINE, T_WS, T_PUNCT,
    T_LATIN, T_GRCYR, T_CJK, T_KANA, T_HANGUL, T_OTHER2, T_OTHER3,
    T_SYM2, T_SYM3, T_SYM4, T_INVALID
};

enum {
    F_RUN_ASCII, F_RUN_OTHER, F_LONG, F_CAMEL, F_CAPS, F_LATIN, F_GRCYR, F_CJK, F_KANA,
    F_HANGUL, F_OTHER2, F_OTHER3, F_DIGIT, F_PUNCT_RUN, F_PUNCT_MORE, F_SYM2, F_SYM3, F_SYM4,
    F_WS_RUN, F_NEWLINE, F_WS_CHAR, F_INVALID, F_BOUNDARY, F_KNOWN, N_FEATURES
};

#define MAX_KNOWN 24
#define BLOOM_BITS (1u << 19)
#define FNV_OFFSET 0xCBF29CE484222325ull
#define FNV_PRIME 0x100000001B3ull

/* Known-word Bloom filter (see native_ref.known_word). */
static const unsigned char token_bloom[BLOOM_BITS / 8] = {
#include "cv_token_bloom.h"
};

static inline uint64_t mix64(uint64_t z)
{
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z;
}

static inline int known_word(uint64_t fnv)
{
    uint64_t h = mix64(fnv);
    for (int i = 0; i < 3; i++) {
        uint32_t bit = (uint32_t)(h >> (21 * i)) & (BLOOM_BITS - 1);
        if (!((token_bloom[bit >> 3] >> (bit & 7)) & 1)) return 0;
    }
    return 1;
}

#define P_FREE N_FEATURES

_Static_assert(N_FEATURES + 1 == CV_TOKEN_NPARAMS, "parameter count");

/* Milli-tokens per feature unit, then FREE; keep equal to native_ref.TOKEN_PARAMS. */
static const int32_t params[CV_TOKEN_NPARAMS] = {
#include "cv_token_params.h"
};

/* Permille probability of a token boundary between adjacent ASCII letters a, b (folded):
 * bigram_boundary[26 * a + b]; keep equal to native_ref.BIGRAM_BOUNDARY. */
static const uint16_t bigram_boundary[26 * 26] = {
#include "cv_token_bigrams.h"
};

size_t cv_token_bigrams(uint16_t *out, size_t cap)
{
    for (size_t i = 0; i < cap && i < 26 * 26 && out != NULL; i++) out[i] = bigram_boundary[i];
    return 26 * 26;
}

size_t cv_token_params(int32_t *out, size_t cap)
{
    for (size_t i = 0; i < cap && i < CV_TOKEN_NPARAMS && out != NULL; i++) out[i] = params[i];
    return CV_TOKEN_NPARAMS;
}

/* Classes of ASCII bytes. */
static const unsigned char ascii_class[128] = {
#define P T_PUNCT
    P, P, P, P, P, P, P, P, P, T_WS, T_NEWLINE, T_WS, T_WS, T_WS, P, P,
    P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P,
    T_SPACE, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P,
#define D T_DIGIT
    D, D, D, D, D, D, D, D, D, D, P, P, P, P, P, P,
#define U T_UPPER
    P, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U,
    U, U, U, U, U, U, U, U, U, U, U, P, P, P, P, P,
#define L T_LOWER
    P, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L,
    L, L, L, L, L, L, L, L, L, L, L, P, P, P, P, P,
#undef P
#undef D
#undef U
#undef L
};

static inline int in(uint32_t cp, uint32_t lo, uint32_t hi) { return cp >= lo && cp <= hi; }

static int nonascii_class(uint32_t cp)
{
    if (cp == CV_INVALID_CP) return T_INVALID;
    if (cp < 0x800u) {
        if (cp < 0xC0u || cp == 0xD7u || cp == 0xF7u) return T_SYM2;
        if (cp <= 0x24Fu) return T_LATIN;
        if (in(cp, 0x370u, 0x52Fu)) return T_GRCYR;
        return T_OTHER2;
    }
    if (cp < 0x10000u) {
        if (in(cp, 0x1E00u, 0x1EFFu)) return T_LATIN;
        if (in(cp, 0x3400u, 0x4DBFu) || in(cp, 0x4E00u, 0x9FFFu) || in(cp, 0xF900u, 0xFAFFu))
            return T_CJK;
        if (in(cp, 0x3040u, 0x30FFu)) return T_KANA;
        if (in(cp, 0xAC00u, 0xD7AFu) || in(cp, 0x1100u, 0x11FFu) || in(cp, 0x3130u, 0x318Fu))
            return T_HANGUL;
        if (in(cp, 0x2000u, 0x2BFFu) || in(cp, 0x3000u, 0x303Fu) || in(cp, 0xFE00u, 0xFE6Fu) ||
            in(cp, 0xFF00u, 0xFFEFu))
            return T_SYM3;
        return T_OTHER3;
    }
    if (in(cp, 0x20000u, 0x3FFFFu)) return T_CJK;
    return T_SYM4;
}

static inline int is_letter(int t) { return t <= T_OTHER3 && (t <= T_UPPER || t >= T_LATIN); }
static inline int is_space(int t) { return t >= T_SPACE && t <= T_WS; }

/* Class of the code point at s[i]; *adv gets its length in bytes. */
static inline int class_at(const unsigned char *s, size_t len, size_t i, size_t *adv)
{
    unsigned b = s[i];
    if (b < 0x80u) {
        *adv = 1;
        return ascii_class[b];
    }
    uint32_t cp;
    *adv = cv_utf8_next(s, len, i, &cp);
    return nonascii_class(cp);
}

uint64_t cv_estimate_tokens(const unsigned char *text, size_t len)
{
    if (text == NULL || len == 0) return 0;
    uint64_t f[N_FEATURES] = {0};
    const uint64_t free_letters = (uint64_t)params[P_FREE];
    size_t i = 0, adv;
    int t = class_at(text, len, 0, &adv);
    /* Invariant: t is the class of the code point at i, adv its length. */
    while (i < len) {
        if (is_letter(t)) {
            uint64_t ascii_letters = 0, others = 0, boundary = 0;
            uint64_t fnv = FNV_OFFSET; /* of the lower-cased ASCII letters (first MAX_KNOWN+1) */
            int prev = -1;
            int prev_letter = -1; /* 0..25 when the previous code point is an ASCII letter */
            do {
                if (t <= T_UPPER) {
                    unsigned lower = text[i] | 0x20u;
                    int letter = (int)lower - 'a';
                    ascii_letters++;
                    if (ascii_letters <= MAX_KNOWN + 1) fnv = (fnv ^ lower) * FNV_PRIME;
                    if (prev_letter >= 0)
                        boundary += bigram_boundary[26 * prev_letter + letter];
                    if (t == T_UPPER) {
                        if (prev == T_LOWER) f[F_CAMEL]++;
                        else if (prev == T_UPPER) f[F_CAPS]++;
                    }
                    prev_letter = letter;
                } else {
                    f[F_LATIN + (t - T_LATIN)]++;
                    others++;
                    prev_letter = -1;
                }
                prev = t;
                i += adv;
                if (i < len) t = class_at(text, len, i, &adv);
            } while (i < len && is_letter(t));
            if (ascii_letters && !others &&
                (ascii_letters == 1 || (ascii_letters <= MAX_KNOWN && known_word(fnv)))) {
                f[F_KNOWN]++;
            } else if (ascii_letters) {
                f[F_RUN_ASCII]++;
                if (ascii_letters > free_letters) f[F_LONG] += ascii_letters - free_letters;
                f[F_BOUNDARY] += boundary;
            } else {
                f[F_RUN_OTHER]++;
            }
        } else if (t == T_DIGIT) {
            f[F_DIGIT]++;
            i += adv;
            if (i < len) t = class_at(text, len, i, &adv);
        } else if (t == T_PUNCT) {
            f[F_PUNCT_RUN]++;
            i += adv;
            while (i < len && (t = class_at(text, len, i, &adv)) == T_PUNCT) {
                f[F_PUNCT_MORE]++;
                i += adv;
            }
        } else if (is_space(t)) {
            uint64_t newlines = 0, others = 0;
            int last = t;
            do {
                if (t == T_NEWLINE) newlines++;
                else others++;
                last = t;
                i += adv;
                if (i < len) t = class_at(text, len, i, &adv);
            } while (i < len && is_space(t));
            /* a final space before a non-space goes with what follows */
            if (i < len && last == T_SPACE) others--;
            if (newlines + others > 0) {
                f[F_WS_RUN]++;
                f[F_NEWLINE] += newlines;
                f[F_WS_CHAR] += others;
            }
        } else {
            f[t == T_INVALID ? F_INVALID : F_SYM2 + (t - T_SYM2)]++;
            i += adv;
            if (i < len) t = class_at(text, len, i, &adv);
        }
    }
    /* micro-tokens: F_BOUNDARY counts thousandths, the others whole units */
    int64_t micro = 0;
    for (int k = 0; k < N_FEATURES; k++)
        micro += (int64_t)f[k] * params[k] * (k == F_BOUNDARY ? 1 : 1000);
    int64_t tokens = (micro + 500000) / 1000000;
    return tokens < 1 ? 1 : (uint64_t)tokens;
}
