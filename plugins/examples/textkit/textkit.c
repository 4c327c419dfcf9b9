/* textkit: text utilities for agents, as a Convergio plugin (WASI preview 1 command).
 *
 * Tools:
 *   word_count {text}            -> {"words", "lines", "chars", "bytes", "sentences"}
 *   slugify    {text, max_length} -> {"slug"}   (Latin-1 accents folded, ASCII only)
 *   top_words  {text, limit}      -> {"words": [{"word", "count"}...]} most frequent first
 */
#include "../../sdk/convergio_plugin.h"

#include <ctype.h>

static int is_word_byte(unsigned char c) { return isalnum(c) || c == '\'' || c >= 0x80; }

static int word_count(cvg_span args) {
    cvg_span v;
    if (!cvg_get(args, "text", &v)) return cvg_fail(64, "missing argument: text");
    size_t n;
    char *s = cvg_string(v, &n);
    if (!s) return cvg_fail(65, "text must be a string");
    long words = 0, lines = n ? 1 : 0, chars = 0, sentences = 0;
    int in_word = 0, in_sentence = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c & 0xC0) != 0x80) chars++;
        if (c == '\n' && i + 1 < n) lines++;
        if (is_word_byte(c)) {
            if (!in_word) words++;
            in_word = 1;
            in_sentence = 1;
        } else {
            in_word = 0;
        }
        if ((c == '.' || c == '!' || c == '?') && in_sentence) {
            sentences++;
            in_sentence = 0;
        }
    }
    if (in_sentence) sentences++;
    printf("{\"words\":%ld,\"lines\":%ld,\"chars\":%ld,\"bytes\":%zu,\"sentences\":%ld}", words,
           lines, chars, n, sentences);
    free(s);
    return 0;
}

/* Latin-1 supplement letters U+00C0..U+00FF folded to ASCII ("" = dropped). */
static const char *const LATIN1[64] = {
    "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i", "i",
    "d", "n", "o", "o", "o", "o", "o", "",  "o", "u", "u", "u", "u", "y", "th", "ss",
    "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i", "i",
    "d", "n", "o", "o", "o", "o", "o", "",  "o", "u", "u", "u", "u", "y", "th", "y"};

static int slugify(cvg_span args) {
    cvg_span v;
    if (!cvg_get(args, "text", &v)) return cvg_fail(64, "missing argument: text");
    size_t n;
    char *s = cvg_string(v, &n);
    if (!s) return cvg_fail(65, "text must be a string");
    double max_length = 80;
    if (cvg_get(args, "max_length", &v) && !cvg_number(v, &max_length))
        return cvg_fail(65, "max_length must be a number");
    char *out = malloc(2 * n + 1);
    size_t o = 0;
    int dash = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *add = NULL;
        char one[2] = {0, 0};
        if (isalnum(c)) {
            one[0] = (char)tolower(c);
            add = one;
        } else if (c == 0xC3 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
                   (unsigned char)s[i + 1] < 0xC0) {
            add = LATIN1[(unsigned char)s[++i] - 0x80];
        } else if (c >= 0x80) {
            while (i + 1 < n && ((unsigned char)s[i + 1] & 0xC0) == 0x80) i++;
        }
        if (add && *add) {
            if (dash && o) out[o++] = '-';
            dash = 0;
            for (; *add; add++) out[o++] = *add;
        } else {
            dash = 1;
        }
    }
    if (max_length >= 1 && o > (size_t)max_length) {
        o = (size_t)max_length;
        while (o && out[o - 1] == '-') o--;
    }
    fputs("{\"slug\":", stdout);
    cvg_put_string(out, o);
    putchar('}');
    free(out);
    free(s);
    return 0;
}

typedef struct {
    char *word;
    long count;
} entry;

static int by_count(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->count != y->count) return x->count < y->count ? 1 : -1;
    return strcmp(x->word, y->word);
}

static int top_words(cvg_span args) {
    cvg_span v;
    if (!cvg_get(args, "text", &v)) return cvg_fail(64, "missing argument: text");
    size_t n;
    char *s = cvg_string(v, &n);
    if (!s) return cvg_fail(65, "text must be a string");
    double limit = 10;
    if (cvg_get(args, "limit", &v) && !cvg_number(v, &limit))
        return cvg_fail(65, "limit must be a number");
    /* Open addressing over lower-cased words; the table grows when half full. */
    size_t cap = 256, used = 0;
    entry *table = calloc(cap, sizeof *table);
    for (size_t i = 0; i < n;) {
        while (i < n && !is_word_byte((unsigned char)s[i])) i++;
        size_t start = i;
        while (i < n && is_word_byte((unsigned char)s[i])) {
            s[i] = (char)tolower((unsigned char)s[i]);
            i++;
        }
        if (i == start) break;
        char saved = s[i];
        s[i] = 0;
        if (2 * (used + 1) > cap) {
            entry *old = table;
            size_t old_cap = cap;
            cap *= 2;
            table = calloc(cap, sizeof *table);
            for (size_t k = 0; k < old_cap; k++) {
                if (!old[k].word) continue;
                unsigned long h = 5381;
                for (const char *p = old[k].word; *p; p++) h = h * 33 + (unsigned char)*p;
                size_t j = h & (cap - 1);
                while (table[j].word) j = (j + 1) & (cap - 1);
                table[j] = old[k];
            }
            free(old);
        }
        unsigned long h = 5381;
        for (const char *p = s + start; *p; p++) h = h * 33 + (unsigned char)*p;
        size_t j = h & (cap - 1);
        while (table[j].word && strcmp(table[j].word, s + start)) j = (j + 1) & (cap - 1);
        if (!table[j].word) {
            table[j].word = strdup(s + start);
            used++;
        }
        table[j].count++;
        s[i] = saved;
    }
    entry *list = malloc((used + 1) * sizeof *list);
    size_t m = 0;
    for (size_t k = 0; k < cap; k++)
        if (table[k].word) list[m++] = table[k];
    qsort(list, m, sizeof *list, by_count);
    fputs("{\"words\":[", stdout);
    for (size_t k = 0; k < m && k < (size_t)limit; k++) {
        if (k) putchar(',');
        fputs("{\"word\":", stdout);
        cvg_put_string(list[k].word, strlen(list[k].word));
        printf(",\"count\":%ld}", list[k].count);
    }
    printf("],\"distinct\":%zu}", m);
    return 0;
}

int main(void) {
    cvg_call call;
    if (cvg_read_call(&call) != 0) return cvg_fail(65, "input is not a JSON call");
    if (cvg_is(call.tool, "word_count")) return word_count(call.args);
    if (cvg_is(call.tool, "slugify")) return slugify(call.args);
    if (cvg_is(call.tool, "top_words")) return top_words(call.args);
    return cvg_fail(66, "unknown tool");
}
