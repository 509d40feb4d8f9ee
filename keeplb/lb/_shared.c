/* Atomic counts in the nbthread workers' shared table (keeplb/lb/shared.py).
 *
 * Why C: Python has no atomic operation on shared memory; shared.py's own
 * version holds an fcntl lock around each change (two system calls), about
 * 5.9 us per take + release + read on this machine, against 0.6 us here.
 * Each function takes the table (any writable buffer: the mmap), the byte
 * offset of a process-wide total and of this worker's cell for it; offsets
 * are checked (inside the buffer, 8-byte aligned). The total changes with
 * one compare-and-swap or fetch-add, the cell (which only its worker
 * writes, and the master once that worker is dead) with a fetch-add.
 *
 * shared.py falls back to its locked version when this is not built; the
 * two must agree (tests/unit/lb/test_shared.py runs both).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

typedef struct {
    Py_buffer view;
    int64_t *total;
    int64_t *cell;
} counts;

static int
open_counts(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *name,
            counts *c)
{
    Py_ssize_t offs[2];

    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        offs[i] = PyLong_AsSsize_t(args[1 + i]);
        if (offs[i] == -1 && PyErr_Occurred())
            return -1;
    }
    if (PyObject_GetBuffer(args[0], &c->view, PyBUF_WRITABLE) < 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        if (offs[i] < 0 || offs[i] % 8 || offs[i] + 8 > c->view.len) {
            PyBuffer_Release(&c->view);
            PyErr_Format(PyExc_ValueError, "%s(): offset %zd outside the table", name, offs[i]);
            return -1;
        }
    }
    c->total = (int64_t *)((char *)c->view.buf + offs[0]);
    c->cell = (int64_t *)((char *)c->view.buf + offs[1]);
    return 0;
}

/* take(table, total_offset, cell_offset, limit) -> True if the total was
 * below `limit` (or limit <= 0) and is now one more; False: unchanged. */
static PyObject *
shm_take(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    counts c;
    long long limit = 0;
    int64_t cur;
    int taken = 0;

    if (nargs == 4) {
        limit = PyLong_AsLongLong(args[3]);
        if (limit == -1 && PyErr_Occurred())
            return NULL;
    }
    if (open_counts(args, nargs, 4, "take", &c) < 0)
        return NULL;
    cur = __atomic_load_n(c.total, __ATOMIC_SEQ_CST);
    while (limit <= 0 || cur < limit) {
        if (__atomic_compare_exchange_n(c.total, &cur, cur + 1, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            __atomic_add_fetch(c.cell, 1, __ATOMIC_SEQ_CST);
            taken = 1;
            break;
        }
    }
    PyBuffer_Release(&c.view);
    return PyBool_FromLong(taken);
}

/* add(table, total_offset, cell_offset, delta) -> the new total */
static PyObject *
shm_add(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    counts c;
    long long delta = 0;
    int64_t total;

    if (nargs == 4) {
        delta = PyLong_AsLongLong(args[3]);
        if (delta == -1 && PyErr_Occurred())
            return NULL;
    }
    if (open_counts(args, nargs, 4, "add", &c) < 0)
        return NULL;
    __atomic_add_fetch(c.cell, delta, __ATOMIC_SEQ_CST);
    total = __atomic_add_fetch(c.total, delta, __ATOMIC_SEQ_CST);
    PyBuffer_Release(&c.view);
    return PyLong_FromLongLong(total);
}

/* reclaim(table, total_offset, cell_offset) -> what the cell held, now taken
 * out of the total and the cell zeroed (the master's, its worker dead) */
static PyObject *
shm_reclaim(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    counts c;
    int64_t held;

    if (open_counts(args, nargs, 3, "reclaim", &c) < 0)
        return NULL;
    held = __atomic_exchange_n(c.cell, 0, __ATOMIC_SEQ_CST);
    __atomic_sub_fetch(c.total, held, __ATOMIC_SEQ_CST);
    PyBuffer_Release(&c.view);
    return PyLong_FromLongLong(held);
}

static PyMethodDef methods[] = {
    {"take", (PyCFunction)(void (*)(void))shm_take, METH_FASTCALL, NULL},
    {"add", (PyCFunction)(void (*)(void))shm_add, METH_FASTCALL, NULL},
    {"reclaim", (PyCFunction)(void (*)(void))shm_reclaim, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_shared", "Atomic counts in the workers' shared table.", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__shared(void)
{
    return PyModule_Create(&module);
}
