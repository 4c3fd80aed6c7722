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
#include <string.h>

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
        unsigned d = distance(codes + i * w, q, w);
        dist[j] = (uint16_t)d;
        hist[d]++;
    }
    return 0;
}

static int get(PyObject *obj, Py_buffer *view, int writable, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Format(PyExc_ValueError, "%s: a C-contiguous%s buffer is needed", what,
                     writable ? " writable" : "");
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
    Py_buffer b[NBUF]; /* codes, center, query, out, allowed */
    static const int writable[NBUF] = {0, 0, 0, 1, 0};
    static const char *what[NBUF] = {"codes", "center", "query", "out", "allowed"};
    PyObject *objs[NBUF] = {args[0], args[1], args[2], args[4], args[5]};
    int got = 0;
    for (; got < NBUF; got++)
        if (get(objs[got], &b[got], writable[got], what[got]) < 0) goto done;

    Py_ssize_t d = b[1].len / 4, w = (d + 63) / 64;
    if (b[1].len % 4 || d < 1 || w > MAX_WORDS || b[2].len != b[1].len) {
        PyErr_SetString(PyExc_ValueError, "center and query must be float32 of one dimension");
        goto done;
    }
    if (b[0].len % (w * 8)) {
        PyErr_SetString(PyExc_ValueError, "codes must be whole rows of uint64 words");
        goto done;
    }
    Py_ssize_t n = b[0].len / (w * 8);
    if (n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many rows");
        goto done;
    }
    if (r < 0 || (size_t)b[3].len < (size_t)r * sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "out is smaller than r");
        goto done;
    }
    if (is_mask ? b[4].len < n : b[4].len % 8 != 0) {
        PyErr_SetString(PyExc_ValueError,
                        is_mask ? "the mask is shorter than the codes" : "rows must be int64");
        goto done;
    }

    uint64_t q[MAX_WORDS] = {0};
    const float *center = b[1].buf, *query = b[2].buf;
    for (Py_ssize_t j = 0; j < d; j++)
        q[j / 64] |= (uint64_t)(query[j] > center[j]) << (j % 64);

    const uint64_t *codes = b[0].buf;
    const uint8_t *mask = b[4].buf;
    const int64_t *listed = b[4].buf;
    int64_t *out = b[3].buf;
    Py_ssize_t m = is_mask ? mask_count(mask, n) : b[4].len / 8;
    uint16_t *dist = PyMem_RawMalloc((size_t)(m ? m : 1) * sizeof(uint16_t));
    int32_t *rows = is_mask ? PyMem_RawMalloc((size_t)(m ? m : 1) * sizeof(int32_t)) : NULL;
    if (dist == NULL || (is_mask && rows == NULL)) {
        PyMem_RawFree(dist);
        PyMem_RawFree(rows);
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t hist[MAX_WORDS * 64 + 1];
    memset(hist, 0, (size_t)(64 * w + 1) * sizeof hist[0]);
    int bad = 0;
    Py_ssize_t written = 0;
    Py_BEGIN_ALLOW_THREADS;
    if (is_mask) {
        mask_rows(mask, n, rows);
        distances32(codes, q, w, rows, m, dist, hist);
    } else {
        bad = distances64(codes, q, n, w, listed, m, dist, hist);
    }
    if (!bad) {
        if (r > m) r = m;
        /* the cut: every row closer than t is taken, then rows at distance t until r */
        Py_ssize_t below = 0, t = 0;
        while (t <= 64 * w && below + hist[t] < r) below += hist[t++];
        Py_ssize_t ties = r - below;
        for (Py_ssize_t j = 0; j < m && written < r; j++) {
            Py_ssize_t dj = dist[j];
            if (dj < t || (dj == t && ties > 0 && ties--))
                out[written++] = is_mask ? (int64_t)rows[j] : listed[j];
        }
    }
    Py_END_ALLOW_THREADS;
    PyMem_RawFree(dist);
    PyMem_RawFree(rows);
    if (bad) {
        PyErr_SetString(PyExc_IndexError, "row index out of range");
        goto done;
    }
    result = PyLong_FromSsize_t(written);
done:
    for (int i = 0; i < got; i++) PyBuffer_Release(&b[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"hamming_top", (PyCFunction)(void (*)(void))hamming_top, METH_FASTCALL,
     "hamming_top(codes, center, query, r, out, allowed, is_mask) -> int: the r allowed rows "
     "whose codes are nearest the query's in Hamming distance, written to out (unordered)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_bits", "Hamming top-r over sign-bit codes.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__bits(void) { return PyModule_Create(&module); }
