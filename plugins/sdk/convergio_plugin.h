/* convergio_plugin.h: a single-header helper for writing Convergio plugins in C.
 *
 * The ABI (docs/plugins.md): the plugin is a WASI preview 1 command. The daemon writes one
 * call as JSON on stdin, {"tool": "...", "args": {...}}; the plugin writes one JSON value on
 * stdout and exits 0. A failure is a non-zero exit status (sysexits: 64/65 bad request,
 * 66 not found, 77 permission denied, anything else internal) with a one-line reason as the
 * last line of stderr.
 *
 * This header reads the call and gives small, allocation-light accessors to the JSON:
 *
 *   cvg_call call;
 *   if (cvg_read_call(&call) != 0) return cvg_fail(65, "input is not a JSON call");
 *   cvg_span text;
 *   if (!cvg_get(call.args, "text", &text)) return cvg_fail(64, "missing argument: text");
 *
 * Values are spans into the input buffer; cvg_string() decodes a JSON string (it allocates).
 * Outputs: cvg_put_string() writes a JSON string with escaping.
 */
#ifndef CONVERGIO_PLUGIN_H
#define CONVERGIO_PLUGIN_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p;
    size_t n;
} cvg_span;

typedef struct {
    char *input;     /* the whole of stdin, NUL-terminated */
    size_t length;
    cvg_span tool;   /* the JSON string value of "tool" (with quotes) */
    cvg_span args;   /* the JSON object value of "args" */
} cvg_call;

static int cvg_fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return status;
}

static inline const char *cvg__ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* Skips one JSON value starting at *p (after whitespace); returns 0 on success. */
static int cvg__skip(const char **pp, const char *end, int depth) {
    const char *p = cvg__ws(*pp, end);
    if (p >= end || depth > 64) return -1;
    if (*p == '"') {
        for (p++; p < end && *p != '"'; p++)
            if (*p == '\\') p++;
        if (p >= end) return -1;
        *pp = p + 1;
        return 0;
    }
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        int is_obj = *p == '{';
        p = cvg__ws(p + 1, end);
        if (p < end && *p == close) {
            *pp = p + 1;
            return 0;
        }
        for (;;) {
            if (is_obj) {
                p = cvg__ws(p, end);
                if (p >= end || *p != '"') return -1;
                if (cvg__skip(&p, end, depth + 1)) return -1;
                p = cvg__ws(p, end);
                if (p >= end || *p != ':') return -1;
                p++;
            }
            if (cvg__skip(&p, end, depth + 1)) return -1;
            p = cvg__ws(p, end);
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == close) {
                *pp = p + 1;
                return 0;
            }
            return -1;
        }
    }
    const char *start = p;
    while (p < end && (strchr("+-.eE", *p) || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z')))
        p++;
    if (p == start) return -1;
    *pp = p;
    return 0;
}

/* Finds `key` in the JSON object `obj`; returns 1 and sets *out when present. */
static int cvg_get(cvg_span obj, const char *key, cvg_span *out) {
    const char *p = obj.p, *end = obj.p + obj.n;
    size_t klen = strlen(key);
    p = cvg__ws(p, end);
    if (p >= end || *p != '{') return 0;
    p = cvg__ws(p + 1, end);
    while (p < end && *p == '"') {
        const char *kstart = p + 1;
        if (cvg__skip(&p, end, 0)) return 0;
        size_t kn = (size_t)(p - kstart - 1);
        p = cvg__ws(p, end);
        if (p >= end || *p != ':') return 0;
        p = cvg__ws(p + 1, end);
        const char *vstart = p;
        if (cvg__skip(&p, end, 0)) return 0;
        if (kn == klen && memcmp(kstart, key, klen) == 0) {
            out->p = vstart;
            out->n = (size_t)(p - vstart);
            return 1;
        }
        p = cvg__ws(p, end);
        if (p < end && *p == ',') p = cvg__ws(p + 1, end);
    }
    return 0;
}

static int cvg__hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes a JSON string value into a new NUL-terminated UTF-8 buffer (free it). NULL when the
 * value is not a string. */
static inline char *cvg_string(cvg_span v, size_t *len_out) {
    if (v.n < 2 || v.p[0] != '"') return NULL;
    char *out = malloc(v.n);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 1; i + 1 < v.n; i++) {
        char c = v.p[i];
        if (c != '\\') {
            out[o++] = c;
            continue;
        }
        c = v.p[++i];
        switch (c) {
        case 'n': out[o++] = '\n'; break;
        case 't': out[o++] = '\t'; break;
        case 'r': out[o++] = '\r'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'u': {
            unsigned cp = 0;
            for (int k = 0; k < 4 && i + 1 < v.n; k++) {
                int h = cvg__hex(v.p[++i]);
                if (h < 0) { free(out); return NULL; }
                cp = cp * 16 + (unsigned)h;
            }
            if (cp >= 0xD800 && cp < 0xDC00 && i + 6 < v.n && v.p[i + 1] == '\\' && v.p[i + 2] == 'u') {
                unsigned lo = 0;
                for (int k = 0; k < 4; k++) {
                    int h = cvg__hex(v.p[i + 3 + k]);
                    if (h < 0) { free(out); return NULL; }
                    lo = lo * 16 + (unsigned)h;
                }
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            if (cp < 0x80) out[o++] = (char)cp;
            else if (cp < 0x800) {
                out[o++] = (char)(0xC0 | (cp >> 6));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[o++] = (char)(0xE0 | (cp >> 12));
                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[o++] = (char)(0xF0 | (cp >> 18));
                out[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: out[o++] = c; break; /* \" \\ \/ */
        }
    }
    out[o] = 0;
    if (len_out) *len_out = o;
    return out;
}

/* Parses a JSON number value; returns 1 on success. */
static int cvg_number(cvg_span v, double *out) {
    if (v.n == 0 || v.n > 63) return 0;
    char buf[64];
    memcpy(buf, v.p, v.n);
    buf[v.n] = 0;
    char *end;
    *out = strtod(buf, &end);
    return end == buf + v.n;
}

/* 1 when the span is the JSON string `s` (no escapes in s). */
static int cvg_is(cvg_span v, const char *s) {
    size_t n = strlen(s);
    return v.n == n + 2 && v.p[0] == '"' && memcmp(v.p + 1, s, n) == 0;
}

/* Writes `s` (n bytes of UTF-8) as a JSON string. */
static void cvg_put_string(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        default:
            if (c < 0x20) printf("\\u%04x", c);
            else putchar(c);
        }
    }
    putchar('"');
}

/* Reads the whole of stdin and finds "tool" and "args"; 0 on success. */
static int cvg_read_call(cvg_call *call) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) return -1;
    for (;;) {
        if (n + 1 >= cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) { free(buf); return -1; }
            buf = bigger;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, stdin);
        if (got == 0) break;
        n += got;
    }
    buf[n] = 0;
    call->input = buf;
    call->length = n;
    cvg_span all = {buf, n};
    if (!cvg_get(all, "tool", &call->tool)) return -1;
    if (!cvg_get(all, "args", &call->args)) {
        call->args.p = "{}";
        call->args.n = 2;
    }
    return 0;
}

#endif
