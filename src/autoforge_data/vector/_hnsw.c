/* HNSW search over a faiss IndexHNSWFlat's own arrays (see ann.py: Ann.search).
 *
 * search(matrix, neighbors, offsets, levels, cum, entry, max_level, query, k, ef, l2,
 *        allowed, out_ids, out_dist) -> int
 *
 *   matrix     float32, n x d, C-contiguous: the graph's vectors (row i = graph id i)
 *   neighbors  int32: faiss HNSW.neighbors (-1 pads a short list)
 *   offsets    uint64 (size_t), n + 1 items: node i's links start at neighbors[offsets[i]]
 *   levels     int32, n items: how many levels node i is on (>= 1)
 *   cum        int32: cum_nneighbor_per_level; level l of node i is
 *              neighbors[offsets[i] + cum[l] .. offsets[i] + cum[l + 1])
 *   entry, max_level   the graph's entry point and top level
 *   query      float32, d values
 *   k, ef      results wanted, beam width on the base level (ef >= k)
 *   l2         false: inner product (higher is better), true: squared L2 (lower is better)
 *   allowed    None, or n bytes (bit 0 read): only rows whose byte is 1 are returned; the
 *              beam still holds and walks through the others, exactly as unfiltered (faiss's
 *              IDSelector semantics: the best k allowed rows among those the search visits)
 *   out_ids    int64, k items; out_dist float32, k items: best first, -1 ids pad
 *
 * Returns how many results were found. The classic HNSW search (Malkov & Yashunin): greedy
 * descent on the upper levels, then a beam of ef on level 0, with the neighbours of each
 * expanded node prefetched before their distances are computed. Every index read from the
 * graph arrays is bounds-checked; a malformed graph raises ValueError, never reads outside.
 * The GIL is released during the search.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_pybuf.h"
#include "_simd.h"

/* ---- heaps of (distance, id) ------------------------------------------------------------ */

typedef struct {
    float d;
    int32_t id;
} item;

typedef struct {
    item *a;
    Py_ssize_t size, cap;
} heap;

/* max-heap (worst of the results on top) when sign = 1, min-heap when sign = -1 */
static inline int above(const item *x, const item *y, int sign) {
    return sign > 0 ? x->d > y->d : x->d < y->d;
}

static inline int heap_push(heap *h, float d, int32_t id, int sign) {
    if (h->size == h->cap) {
        Py_ssize_t cap = h->cap * 2;
        item *a = realloc(h->a, (size_t)cap * sizeof(item));
        if (a == NULL) return -1;
        h->a = a;
        h->cap = cap;
    }
    Py_ssize_t i = h->size++;
    item x = {d, id};
    while (i > 0) {
        Py_ssize_t p = (i - 1) / 2;
        if (!above(&x, &h->a[p], sign)) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = x;
    return 0;
}

static inline item heap_pop(heap *h, int sign) {
    item top = h->a[0], x = h->a[--h->size];
    Py_ssize_t i = 0, n = h->size;
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && above(&h->a[c + 1], &h->a[c], sign)) c++;
        if (!above(&h->a[c], &x, sign)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (n) h->a[i] = x;
    return top;
}

/* ---- the search ------------------------------------------------------------------------- */

typedef struct {
    const float *x;
    const int32_t *nb;
    const uint64_t *off;
    const int32_t *lev;
    const int32_t *cum;
    Py_ssize_t n, d, n_nb, n_cum;
    dist_fn dist;
    dist4_fn dist4;
} graph;

/* neighbours of node i on level l: [*lo, *hi) in g->nb; 0 if the node's record is malformed */
static inline int links(const graph *g, int32_t i, int l, Py_ssize_t *lo, Py_ssize_t *hi) {
    if (l + 1 >= g->n_cum || l >= g->lev[i]) return 0;
    uint64_t a = g->off[i] + (uint64_t)g->cum[l], b = g->off[i] + (uint64_t)g->cum[l + 1];
    if (b < a || b > (uint64_t)g->n_nb) return 0;
    *lo = (Py_ssize_t)a;
    *hi = (Py_ssize_t)b;
    return 1;
}

#define BAD_GRAPH (-2)
#define NO_MEMORY (-1)

static Py_ssize_t run(const graph *g, const float *q, int32_t entry, int max_level,
                      Py_ssize_t k, Py_ssize_t ef, const uint8_t *allowed, int64_t *out_ids,
                      float *out_dist) {
    Py_ssize_t lo, hi, found = 0;
    int32_t ep = entry;
    float d_ep = g->dist(q, g->x + (Py_ssize_t)ep * g->d, g->d);
    for (int l = max_level; l >= 1; l--) { /* greedy descent */
        int moved = 1;
        while (moved) {
            moved = 0;
            if (!links(g, ep, l, &lo, &hi)) return BAD_GRAPH;
            for (Py_ssize_t j = lo; j < hi; j++) {
                int32_t v = g->nb[j];
                if (v < 0) break;
                if (v >= g->n) return BAD_GRAPH;
                float dv = g->dist(q, g->x + (Py_ssize_t)v * g->d, g->d);
                if (dv < d_ep) {
                    d_ep = dv;
                    ep = v;
                    moved = 1;
                }
            }
        }
    }
    uint8_t *seen = calloc((size_t)(g->n + 7) / 8, 1);
    heap cand = {malloc(sizeof(item) * 256), 0, 256};
    heap res = {malloc(sizeof(item) * (size_t)(ef + 1)), 0, ef + 1};
    /* filtered: the beam (res) holds every node, as unfiltered; the allowed ones visited also
     * go to best, the k results (faiss's semantics: the same work as an unfiltered search of
     * the same ef, so IndexOptions' filter rule, calibrated with faiss, holds) */
    heap best = {allowed ? malloc(sizeof(item) * (size_t)(k + 1)) : NULL, 0, k + 1};
    heap *out_heap = allowed ? &best : &res;
    Py_ssize_t status = 0;
    if (seen == NULL || cand.a == NULL || res.a == NULL || (allowed && best.a == NULL)) {
        status = NO_MEMORY;
        goto out;
    }
    seen[ep >> 3] |= (uint8_t)(1u << (ep & 7));
    if (heap_push(&cand, d_ep, ep, -1) < 0) {
        status = NO_MEMORY;
        goto out;
    }
    heap_push(&res, d_ep, ep, 1);
    if (allowed && (allowed[ep] & 1)) heap_push(&best, d_ep, ep, 1);
    int32_t fresh[512];
    while (cand.size) {
        item c = heap_pop(&cand, -1);
        if (res.size >= ef && c.d > res.a[0].d) break;
        if (!links(g, c.id, 0, &lo, &hi) || hi - lo > 512) {
            status = BAD_GRAPH;
            goto out;
        }
        Py_ssize_t m = 0;
        for (Py_ssize_t j = lo; j < hi; j++) { /* unseen neighbours, their vectors prefetched */
            int32_t v = g->nb[j];
            if (v < 0) break;
            if (v >= g->n) {
                status = BAD_GRAPH;
                goto out;
            }
            uint8_t bit = (uint8_t)(1u << (v & 7));
            if (seen[v >> 3] & bit) continue;
            seen[v >> 3] |= bit;
            const char *row = (const char *)(g->x + (Py_ssize_t)v * g->d);
            __builtin_prefetch(row);
            __builtin_prefetch(row + 64);
            fresh[m++] = v;
        }
        float dists[512];
        Py_ssize_t j = 0;
        for (; j + 4 <= m; j += 4) {
            const float *r4[4];
            for (int t = 0; t < 4; t++) r4[t] = g->x + (Py_ssize_t)fresh[j + t] * g->d;
            g->dist4(q, r4, g->d, dists + j);
        }
        for (; j < m; j++) dists[j] = g->dist(q, g->x + (Py_ssize_t)fresh[j] * g->d, g->d);
        for (j = 0; j < m; j++) {
            int32_t v = fresh[j];
            float dv = dists[j];
            if (res.size < ef || dv < res.a[0].d) {
                if (heap_push(&cand, dv, v, -1) < 0) {
                    status = NO_MEMORY;
                    goto out;
                }
                heap_push(&res, dv, v, 1); /* capacity ef + 1: never grows */
                if (res.size > ef) heap_pop(&res, 1);
            }
            if (allowed && (allowed[v] & 1) && (best.size < k || dv < best.a[0].d)) {
                heap_push(&best, dv, v, 1); /* capacity k + 1: never grows */
                if (best.size > k) heap_pop(&best, 1);
            }
        }
    }
    while (out_heap->size > k) heap_pop(out_heap, 1);
    found = out_heap->size;
    for (Py_ssize_t j = found - 1; j >= 0; j--) { /* worst first off the max-heap */
        item it = heap_pop(out_heap, 1);
        out_ids[j] = it.id;
        out_dist[j] = it.d;
    }
    for (Py_ssize_t j = found; j < k; j++) {
        out_ids[j] = -1;
        out_dist[j] = 0.0f;
    }
    status = found;
out:
    free(seen);
    free(cand.a);
    free(res.a);
    free(best.a);
    return status;
}

/* ---- the Python entry point ------------------------------------------------------------- */

#define NBUF 9

static PyObject *search(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 14) {
        PyErr_SetString(PyExc_TypeError, "search takes 14 arguments");
        return NULL;
    }
    long entry = PyLong_AsLong(args[5]), max_level = PyLong_AsLong(args[6]);
    Py_ssize_t k = PyLong_AsSsize_t(args[8]), ef = PyLong_AsSsize_t(args[9]);
    int is_l2 = PyObject_IsTrue(args[10]);
    if (PyErr_Occurred() || is_l2 < 0) return NULL;
    int filtered = args[11] != Py_None;
    /* matrix, neighbors, offsets, levels, cum, query, allowed, out_ids, out_dist */
    PyObject *objs[NBUF] = {args[0], args[1], args[2], args[3], args[4],
                            args[7], filtered ? args[11] : args[7], args[12], args[13]};
    static const int writable[NBUF] = {0, 0, 0, 0, 0, 0, 0, 1, 1};
    static const char *const what[NBUF] = {"matrix", "neighbors", "offsets", "levels", "cum",
                                           "query", "allowed", "out_ids", "out_dist"};
    Py_buffer b[NBUF];
    PyObject *result = NULL;
    if (acquire_buffers(objs, b, writable, what, NBUF) < 0) return NULL;
    graph g;
    g.d = b[5].len / 4;
    g.n = g.d ? b[0].len / 4 / g.d : 0;
    g.x = b[0].buf;
    g.nb = b[1].buf;
    g.n_nb = b[1].len / 4;
    g.off = b[2].buf;
    g.lev = b[3].buf;
    g.cum = b[4].buf;
    g.n_cum = b[4].len / 4;
    g.dist = is_l2 ? l2 : neg_dot;
    g.dist4 = is_l2 ? l2_4 : neg_dot4;
    if (b[5].len % 4 || g.d < 1 || b[0].len != g.n * g.d * 4 || g.n < 1 || g.n > INT32_MAX ||
        b[2].len < (g.n + 1) * 8 || b[3].len < g.n * 4 || b[1].len % 4 || b[4].len % 4 ||
        entry < 0 || entry >= g.n || max_level < 0 || max_level + 1 >= g.n_cum ||
        (filtered && b[6].len < g.n)) {
        PyErr_SetString(PyExc_ValueError, "search: inconsistent graph, query or mask sizes");
        goto done;
    }
    if (k < 1 || ef < k || (size_t)b[7].len < (size_t)k * 8 || (size_t)b[8].len < (size_t)k * 4) {
        PyErr_SetString(PyExc_ValueError, "search: need 1 <= k <= ef and outputs of k items");
        goto done;
    }
    Py_ssize_t found;
    Py_BEGIN_ALLOW_THREADS;
    found = run(&g, b[5].buf, (int32_t)entry, (int)max_level, k, ef,
                filtered ? (const uint8_t *)b[6].buf : NULL, b[7].buf, b[8].buf);
    Py_END_ALLOW_THREADS;
    if (found == NO_MEMORY)
        PyErr_NoMemory();
    else if (found == BAD_GRAPH)
        PyErr_SetString(PyExc_ValueError, "search: the graph links outside its nodes");
    else
        result = PyLong_FromSsize_t(found);
done:
    release_buffers(b, NBUF);
    return result;
}

static PyMethodDef methods[] = {
    {"search", (PyCFunction)(void (*)(void))search, METH_FASTCALL,
     "search(matrix, neighbors, offsets, levels, cum, entry, max_level, query, k, ef, l2, "
     "allowed, out_ids, out_dist) -> int: HNSW search of a faiss graph's arrays."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hnsw", "HNSW search over a faiss graph's arrays.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hnsw(void) {
    simd_init();
    return PyModule_Create(&module);
}
