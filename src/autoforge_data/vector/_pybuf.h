/* Buffer arguments of the C kernels (_bits.c, _hnsw.c): acquire a list of C-contiguous
 * buffers (some writable) all or nothing, release them on every path. */
#ifndef AFDB_PYBUF_H
#define AFDB_PYBUF_H
#include <Python.h>

/* Acquires objs[0..n) into views; on failure releases what it took, sets ValueError naming
 * the argument (what[i]) and returns -1. */
static int acquire_buffers(PyObject *const *objs, Py_buffer *views, const int *writable,
                           const char *const *what, int n) {
    for (int i = 0; i < n; i++) {
        int flags = PyBUF_C_CONTIGUOUS | (writable[i] ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(objs[i], &views[i], flags) < 0) {
            PyErr_Format(PyExc_ValueError, "%s: a C-contiguous%s buffer is needed", what[i],
                         writable[i] ? " writable" : "");
            while (i-- > 0) PyBuffer_Release(&views[i]);
            return -1;
        }
    }
    return 0;
}

static void release_buffers(Py_buffer *views, int n) {
    for (int i = 0; i < n; i++) PyBuffer_Release(&views[i]);
}

#endif
