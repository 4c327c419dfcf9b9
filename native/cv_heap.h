/* The bounded top-k heap shared by the selection kernels (topk.c, quant.c; not part of the
 * API). It lives in the caller's output arrays (no allocation), worst entry at the root;
 * "better" means a higher score, or an equal score and a lower row index (-0.0 == 0.0).
 * NaN scores are never offered. cv_heap_sort() leaves the entries best first. */
#ifndef CV_HEAP_H
#define CV_HEAP_H

#include <stddef.h>
#include <stdint.h>

static inline int cv_better(float sa, int64_t ia, float sb, int64_t ib)
{
    return sa > sb || (sa == sb && ia < ib);
}

/* Restore the heap (worst at the root) below position i. */
static inline void cv_sift_down(int64_t *idx, float *sc, size_t count, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < count && cv_better(sc[w], idx[w], sc[l], idx[l])) w = l;
        if (r < count && cv_better(sc[w], idx[w], sc[r], idx[r])) w = r;
        if (w == i) return;
        float ts = sc[i];
        sc[i] = sc[w];
        sc[w] = ts;
        int64_t ti = idx[i];
        idx[i] = idx[w];
        idx[w] = ti;
        i = w;
    }
}

static inline void cv_sift_up(int64_t *idx, float *sc, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        /* parent must be worse than (or equal to) the child */
        if (!cv_better(sc[p], idx[p], sc[i], idx[i])) return;
        float ts = sc[i];
        sc[i] = sc[p];
        sc[p] = ts;
        int64_t ti = idx[i];
        idx[i] = idx[p];
        idx[p] = ti;
        i = p;
    }
}

typedef struct {
    int64_t *idx;
    float *sc;
    size_t k, count;
} cv_heap;

static inline void cv_offer(cv_heap *h, float s, int64_t i)
{
    if (s != s) return; /* NaN */
    if (h->count < h->k) {
        h->idx[h->count] = i;
        h->sc[h->count] = s;
        cv_sift_up(h->idx, h->sc, h->count);
        h->count++;
    } else if (cv_better(s, i, h->sc[0], h->idx[0])) {
        h->idx[0] = i;
        h->sc[0] = s;
        cv_sift_down(h->idx, h->sc, h->count, 0);
    }
}

/* Heap sort: move the worst to the end repeatedly -> best first. Returns the count. */
static inline size_t cv_heap_sort(cv_heap *h)
{
    int64_t *idx = h->idx;
    float *sc = h->sc;
    for (size_t end = h->count; end > 1; end--) {
        float ts = sc[0];
        sc[0] = sc[end - 1];
        sc[end - 1] = ts;
        int64_t ti = idx[0];
        idx[0] = idx[end - 1];
        idx[end - 1] = ti;
        cv_sift_down(idx, sc, end - 1, 0);
    }
    return h->count;
}

#endif
