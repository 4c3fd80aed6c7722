/* Hamming top-r over sign-bit codes: the memory index's filtered shortlist (see codes.py).
 *
 * hamming_top(codes, center, query, r, out, allowed, is_mask) -> int
 *
 *   codes    C-contiguous uint64 buffer of n * w words (row i = words i*w .. i*w+w-1)
 *   center   C-contiguous float32 buffer of d values, w = ceil(d / 64)
 *   query    C-contiguous float32 buffer of d values; its code is bit j = query[j] > center[j]
 *            (bit j of word j / 64, as codes.py packs the rows' codes)
 *   r        how many rows to return
 *   out      writable int64 buffer of at least r items: receives the rows, unordered
 *   allowed  is_mask true: a buffer of n bytes, each 0 or 1 (a numpy bool mask; bit 0 of
 *            each byte is what is read)
 *            is_mask false: an int64 buffer of row numbers (each checked to lie in [0, n))
 *
 * Returns how many rows were written: the r allowed rows of smallest Hamming distance to the
 * query's code (ties at the cut broken by position in `allowed`), or every allowed row if
 * fewer. Selection is by a histogram of the distances (0 .. 64*w): one pass computes them,
 * one pass over the compact list picks; no sort, no heap, no Python objects per row.
 *
 * Every buffer's size is checked before any read; a bad argument raises ValueError (a row out
 * of range IndexError). The GIL is released while the rows are read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_pybuf.h"
#include "_simd.h"

#define MAX_WORDS 64 /* 4,096 dimensions */

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define POPCNT_CLONES __attribute__((target_clones("popcnt", "default")))
#else
#define POPCNT_CLONES
#endif

static inline unsigned distance(const uint64_t *a, const uint64_t *q, Py_ssize_t w) {
    unsigned d = 0;
    for (Py_ssize_t j = 0; j < w; j++) d += (unsigned)__builtin_popcountll(a[j] ^ q[j]);
    return d;
}

/* Rows of a 0/1 byte mask, in order, into rows[]; returns how many. Eight bytes at a time:
 * a multiply gathers their low bits into one byte, whose set bits are then visited. */
static Py_ssize_t mask_rows(const uint8_t *mask, Py_ssize_t n, int32_t *rows) {
    Py_ssize_t m = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t eight;
        memcpy(&eight, mask + i, 8);
        if (!eight) continue;
        unsigned bits = (unsigned)(((eight & 0x0101010101010101ULL) * 0x0102040810204080ULL) >> 56);
        while (bits) {
            rows[m++] = (int32_t)(i + __builtin_ctz(bits));
            bits &= bits - 1;
        }
    }
    for (; i < n; i++)
        if (mask[i] & 1) rows[m++] = (int32_t)i;
    return m;
}

POPCNT_CLONES
static Py_ssize_t mask_count(const uint8_t *mask, Py_ssize_t n) {
    Py_ssize_t m = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t eight;
        memcpy(&eight, mask + i, 8);
        m += (Py_ssize_t)__builtin_popcountll(eight & 0x0101010101010101ULL);
    }
    for (; i < n; i++) m += mask[i] & 1;
    return m;
}

/* Distances of the listed rows and their histogram (rows are int32 or int64); returns -1 if a
 * row is out of range. */
POPCNT_CLONES
static int distances32(const uint64_t *codes, const uint64_t *q, Py_ssize_t w,
                       const int32_t *rows, Py_ssize_t m, uint16_t *dist, Py_ssize_t *hist) {
    for (Py_ssize_t j = 0; j < m; j++) {
        if (j + 8 < m) __builtin_prefetch(codes + (Py_ssize_t)rows[j + 8] * w);
        unsigned d = distance(codes + (Py_ssize_t)rows[j] * w, q, w);
        dist[j] = (uint16_t)d;
        hist[d]++;
    }
    return 0;
}

POPCNT_CLONES
static int distances64(const uint64_t *codes, const uint64_t *q, Py_ssize_t n, Py_ssize_t w,
                       const int64_t *rows, Py_ssize_t m, uint16_t *dist, Py_ssize_t *hist) {
    for (Py_ssize_t j = 0; j < m; j++) {
        int64_t i = rows[j];
        if (i < 0 || i >= n) return -1;
        if (j + 8 < m && rows[j + 8] >= 0 && rows[j + 8] < n)
            __builtin_prefetch(codes + rows[j + 8] * w);
        unsigned d = distance(codes + i * w, q, w);
        dist[j] = (uint16_t)d;
        hist[d]++;
    }
    return 0;
}


/* Validated arguments of one call. */
typedef struct {
    const uint64_t *codes;
    Py_ssize_t n, w, d;
    const float *center, *query;
    const uint8_t *mask;   /* is_mask */
    const int64_t *listed; /* !is_mask */
    Py_ssize_t m_listed;
    int is_mask;
} args_t;

#define BAD_ROW (-1)
#define NO_MEMORY (-2)

/* The r nearest allowed rows into out (unordered); returns how many, or BAD_ROW / NO_MEMORY.
 * Runs without the GIL. */
static Py_ssize_t shortlist(const args_t *a, Py_ssize_t r, int64_t *out) {
    uint64_t q[MAX_WORDS] = {0};
    for (Py_ssize_t j = 0; j < a->d; j++)
        q[j / 64] |= (uint64_t)(a->query[j] > a->center[j]) << (j % 64);
    Py_ssize_t m = a->is_mask ? mask_count(a->mask, a->n) : a->m_listed;
    uint16_t *dist = malloc((size_t)(m ? m : 1) * sizeof(uint16_t));
    int32_t *rows = a->is_mask ? malloc((size_t)(m ? m : 1) * sizeof(int32_t)) : NULL;
    Py_ssize_t written = 0;
    if (dist == NULL || (a->is_mask && rows == NULL)) {
        written = NO_MEMORY;
        goto out;
    }
    Py_ssize_t hist[MAX_WORDS * 64 + 1];
    memset(hist, 0, (size_t)(64 * a->w + 1) * sizeof hist[0]);
    if (a->is_mask) {
        mask_rows(a->mask, a->n, rows);
        distances32(a->codes, q, a->w, rows, m, dist, hist);
    } else if (distances64(a->codes, q, a->n, a->w, a->listed, m, dist, hist) < 0) {
        written = BAD_ROW;
        goto out;
    }
    if (r > m) r = m;
    /* the cut: every row closer than t is taken, then rows at distance t until r */
    Py_ssize_t below = 0, t = 0;
    while (t <= 64 * a->w && below + hist[t] < r) below += hist[t++];
    Py_ssize_t ties = r - below;
    for (Py_ssize_t j = 0; j < m && written < r; j++) {
        Py_ssize_t dj = dist[j];
        if (dj < t || (dj == t && ties > 0 && ties--))
            out[written++] = a->is_mask ? (int64_t)rows[j] : a->listed[j];
    }
out:
    free(dist);
    free(rows);
    return written;
}

typedef struct {
    float s;
    int64_t id;
} scored;

/* min-heap on the score: the worst of the best k on top */
static void sift_down(scored *h, Py_ssize_t n, Py_ssize_t i) {
    scored x = h[i];
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1].s < h[c].s) c++;
        if (h[c].s >= x.s) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Checks codes (b[0]), center (b[1]), query (b[2]) and allowed (ab) into a; -1 with an error. */
static int check(Py_buffer *b, Py_buffer *ab, int is_mask, args_t *a) {
    Py_ssize_t d = b[1].len / 4, w = (d + 63) / 64;
    if (b[1].len % 4 || d < 1 || w > MAX_WORDS || b[2].len != b[1].len) {
        PyErr_SetString(PyExc_ValueError, "center and query must be float32 of one dimension");
        return -1;
    }
    if (b[0].len % (w * 8)) {
        PyErr_SetString(PyExc_ValueError, "codes must be whole rows of uint64 words");
        return -1;
    }
    Py_ssize_t n = b[0].len / (w * 8);
    if (n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many rows");
        return -1;
    }
    if (is_mask ? ab->len < n : ab->len % 8 != 0) {
        PyErr_SetString(PyExc_ValueError,
                        is_mask ? "the mask is shorter than the codes" : "rows must be int64");
        return -1;
    }
    a->codes = b[0].buf;
    a->n = n;
    a->w = w;
    a->d = d;
    a->center = b[1].buf;
    a->query = b[2].buf;
    a->mask = ab->buf;
    a->listed = ab->buf;
    a->m_listed = ab->len / 8;
    a->is_mask = is_mask;
    return 0;
}

static int raise_status(Py_ssize_t status) {
    if (status == NO_MEMORY) {
        PyErr_NoMemory();
        return -1;
    }
    if (status == BAD_ROW) {
        PyErr_SetString(PyExc_IndexError, "row index out of range");
        return -1;
    }
    return 0;
}

#define NBUF 5

static PyObject *hamming_top(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "hamming_top takes 7 arguments");
        return NULL;
    }
    Py_ssize_t r = PyLong_AsSsize_t(args[3]);
    if (r == -1 && PyErr_Occurred()) return NULL;
    int is_mask = PyObject_IsTrue(args[6]);
    if (is_mask < 0) return NULL;

    PyObject *result = NULL;
    Py_buffer b[NBUF]; /* codes, center, query, allowed, out */
    static const int writable[NBUF] = {0, 0, 0, 0, 1};
    static const char *const what[NBUF] = {"codes", "center", "query", "allowed", "out"};
    PyObject *objs[NBUF] = {args[0], args[1], args[2], args[5], args[4]};
    args_t a;
    if (acquire_buffers(objs, b, writable, what, NBUF) < 0) return NULL;
    if (check(b, &b[3], is_mask, &a) < 0) goto done;
    if (r < 0 || (size_t)b[4].len < (size_t)r * sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "out is smaller than r");
        goto done;
    }
    Py_ssize_t written;
    Py_BEGIN_ALLOW_THREADS;
    written = shortlist(&a, r, b[4].buf);
    Py_END_ALLOW_THREADS;
    if (raise_status(written) == 0) result = PyLong_FromSsize_t(written);
done:
    release_buffers(b, NBUF);
    return result;
}

#define NBUF2 7

static PyObject *codes_search(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "codes_search takes 10 arguments");
        return NULL;
    }
    Py_ssize_t r = PyLong_AsSsize_t(args[4]), k = PyLong_AsSsize_t(args[5]);
    if (PyErr_Occurred()) return NULL;
    int is_mask = PyObject_IsTrue(args[7]);
    if (is_mask < 0) return NULL;

    PyObject *result = NULL;
    Py_buffer b[NBUF2]; /* codes, center, query, allowed, matrix, out_ids, out_scores */
    static const int writable[NBUF2] = {0, 0, 0, 0, 0, 1, 1};
    static const char *const what[NBUF2] = {"codes", "center", "query", "allowed",
                                            "matrix", "out_ids", "out_scores"};
    PyObject *objs[NBUF2] = {args[0], args[1], args[2], args[6], args[3], args[8], args[9]};
    args_t a;
    if (acquire_buffers(objs, b, writable, what, NBUF2) < 0) return NULL;
    if (check(b, &b[3], is_mask, &a) < 0) goto done;
    if ((size_t)b[4].len < (size_t)a.n * (size_t)a.d * sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "the matrix has fewer rows than the codes");
        goto done;
    }
    if (k < 1 || r < k || (size_t)b[5].len < (size_t)k * 8 || (size_t)b[6].len < (size_t)k * 4) {
        PyErr_SetString(PyExc_ValueError, "codes_search: need 1 <= k <= r and outputs of k items");
        goto done;
    }
    const float *matrix = b[4].buf;
    int64_t *out_ids = b[5].buf;
    float *out_scores = b[6].buf;
    Py_ssize_t status;
    Py_BEGIN_ALLOW_THREADS;
    int64_t *short_ = malloc((size_t)r * sizeof(int64_t));
    scored *heap = malloc((size_t)k * sizeof(scored));
    if (short_ == NULL || heap == NULL) {
        status = NO_MEMORY;
    } else {
        status = shortlist(&a, r, short_);
    }
    if (status >= 0) { /* exact scores of the shortlist; the best k by a min-heap */
        Py_ssize_t size = 0;
        for (Py_ssize_t j = 0; j < 3 && j < status; j++) {
            const char *row = (const char *)(matrix + short_[j] * a.d);
            for (Py_ssize_t byte = 0; byte < a.d * 4; byte += 64) __builtin_prefetch(row + byte);
        }
        for (Py_ssize_t j = 0; j < status; j++) {
            const float *row = matrix + short_[j] * a.d;
            if (j + 3 < status) { /* a whole row ahead: the rows are scattered, memory bound */
                const char *next = (const char *)(matrix + short_[j + 3] * a.d);
                for (Py_ssize_t byte = 0; byte < a.d * 4; byte += 64) __builtin_prefetch(next + byte);
            }
            float score = -neg_dot(a.query, row, a.d);
            if (size < k) {
                heap[size] = (scored){score, short_[j]};
                if (++size == k)
                    for (Py_ssize_t i = k / 2; i-- > 0;) sift_down(heap, k, i);
            } else if (score > heap[0].s) {
                heap[0] = (scored){score, short_[j]};
                sift_down(heap, k, 0);
            }
        }
        if (size < k)
            for (Py_ssize_t i = size / 2; i-- > 0;) sift_down(heap, size, i);
        status = size;
        for (Py_ssize_t j = size - 1; j >= 0; j--) { /* worst off the top: best first */
            out_ids[j] = heap[0].id;
            out_scores[j] = heap[0].s;
            heap[0] = heap[--size];
            sift_down(heap, size, 0);
        }
    }
    free(short_);
    free(heap);
    Py_END_ALLOW_THREADS;
    if (raise_status(status) == 0) result = PyLong_FromSsize_t(status);
done:
    release_buffers(b, NBUF2);
    return result;
}

static PyMethodDef methods[] = {
    {"codes_search", (PyCFunction)(void (*)(void))codes_search, METH_FASTCALL,
     "codes_search(codes, center, query, matrix, r, k, allowed, is_mask, out_ids, out_scores) "
     "-> int: the k rows of highest inner product with the query among the r allowed rows "
     "whose codes are nearest the query's, best first."},
    {"hamming_top", (PyCFunction)(void (*)(void))hamming_top, METH_FASTCALL,
     "hamming_top(codes, center, query, r, out, allowed, is_mask) -> int: the r allowed rows "
     "whose codes are nearest the query's in Hamming distance, written to out (unordered)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_bits", "Hamming top-r over sign-bit codes.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__bits(void) {
    simd_init();
    return PyModule_Create(&module);
}
