/* Internal helpers shared by the kernels (not part of the API). */
#ifndef CV_INTERNAL_H
#define CV_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Marker the decoder returns for one byte that does not start a valid UTF-8 sequence. */
#define CV_INVALID_CP 0xFFFFFFFFu

/*
 * UTF-8 decoding (the same rule in convergiod/native_ref.py):
 * at s[i], a byte < 0x80 is one code point. A lead byte C2..DF, E0..EF or F0..F4 followed by
 * the right number of continuation bytes (80..BF, narrowed to A0..BF after E0, 80..9F after
 * ED, 90..BF after F0, 80..8F after F4: no overlongs, no surrogates, nothing past U+10FFFF)
 * is one code point. Anything else is ONE invalid byte (CV_INVALID_CP), and decoding resumes
 * at the next byte. Returns the number of bytes consumed (always >= 1 when i < len).
 */
static inline size_t cv_utf8_next(const unsigned char *s, size_t len, size_t i, uint32_t *cp)
{
    unsigned b0 = s[i];
    if (b0 < 0x80u) {
        *cp = b0;
        return 1;
    }
    size_t avail = len - i;
    if (b0 >= 0xC2u && b0 <= 0xDFu) {
        if (avail >= 2 && (s[i + 1] & 0xC0u) == 0x80u) {
            *cp = ((b0 & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu);
            return 2;
        }
    } else if (b0 >= 0xE0u && b0 <= 0xEFu) {
        if (avail >= 3) {
            unsigned b1 = s[i + 1], b2 = s[i + 2];
            unsigned lo = (b0 == 0xE0u) ? 0xA0u : 0x80u;
            unsigned hi = (b0 == 0xEDu) ? 0x9Fu : 0xBFu;
            if (b1 >= lo && b1 <= hi && (b2 & 0xC0u) == 0x80u) {
                *cp = ((b0 & 0x0Fu) << 12) | ((b1 & 0x3Fu) << 6) | (b2 & 0x3Fu);
                return 3;
            }
        }
    } else if (b0 >= 0xF0u && b0 <= 0xF4u) {
        if (avail >= 4) {
            unsigned b1 = s[i + 1], b2 = s[i + 2], b3 = s[i + 3];
            unsigned lo = (b0 == 0xF0u) ? 0x90u : 0x80u;
            unsigned hi = (b0 == 0xF4u) ? 0x8Fu : 0xBFu;
            if (b1 >= lo && b1 <= hi && (b2 & 0xC0u) == 0x80u && (b3 & 0xC0u) == 0x80u) {
                *cp = ((b0 & 0x07u) << 18) | ((b1 & 0x3Fu) << 12) | ((b2 & 0x3Fu) << 6) |
                      (b3 & 0x3Fu);
                return 4;
            }
        }
    }
    *cp = CV_INVALID_CP;
    return 1;
}

#endif
