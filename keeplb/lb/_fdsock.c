/* Socket calls on bare file descriptors for the relay (keeplb/lb/fdsock.py).
 *
 * Why C: through Python's socket module a relayed connection pays for two
 * socket objects (each one validated with a getsockname() call), a method
 * lookup and argument parsing per call, and an exception for every EAGAIN.
 * These wrappers take and return plain ints: -errno on failure, never an
 * exception for a failed system call. They do not release the GIL: every
 * socket here is non-blocking, so no call waits.
 *
 * fdsock.py has the same functions in Python, used when this is not built;
 * the two must behave alike (tests/unit/test_fdsock.py runs both).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static PyObject *
make_addr(const struct sockaddr *sa, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];
    switch (sa->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        if (!inet_ntop(AF_INET, &a->sin_addr, host, sizeof host))
            Py_RETURN_NONE;
        return Py_BuildValue("(si)", host, ntohs(a->sin_port));
    }
    case AF_INET6: {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        if (!inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host))
            Py_RETURN_NONE;
        return Py_BuildValue("(siII)", host, ntohs(a->sin6_port),
                             (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned int)a->sin6_scope_id);
    }
    case AF_UNIX: {
        const struct sockaddr_un *a = (const struct sockaddr_un *)sa;
        size_t n = len > offsetof(struct sockaddr_un, sun_path)
                       ? (size_t)len - offsetof(struct sockaddr_un, sun_path) : 0;
        if (n && a->sun_path[0] == '\0')  /* abstract: bytes, as Python gives */
            return PyBytes_FromStringAndSize(a->sun_path, (Py_ssize_t)n);
        return PyUnicode_DecodeFSDefaultAndSize(a->sun_path,
                                                (Py_ssize_t)strnlen(a->sun_path, n));
    }
    default:
        Py_RETURN_NONE;
    }
}

static int
as_int(PyObject *o, int *out)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = (int)v;
    return 0;
}

static int
check_nargs(Py_ssize_t got, Py_ssize_t lo, Py_ssize_t hi, const char *name)
{
    if (got < lo || got > hi) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd arguments (%zd given)",
                     name, lo, hi, got);
        return -1;
    }
    return 0;
}

static int
nodelay(int fd)
{
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int
keepalive(int fd)
{
    int one = 1;
    return setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
}

static int
nolinger(int fd)
{
    struct linger lg = {1, 0};  /* on, 0 s: close() sends a RST */
    return setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

/* accept(listen_fd) -> (fd, address) or (-errno, None); the new socket is
 * non-blocking and close-on-exec, with TCP_NODELAY for TCP. */
static PyObject *
fd_accept(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int lfd, fd;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    PyObject *addr, *res;

    if (check_nargs(nargs, 1, 1, "accept") || as_int(args[0], &lfd))
        return NULL;
    fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return Py_BuildValue("(iO)", -errno, Py_None);
    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
        (void)nodelay(fd);
    addr = make_addr((struct sockaddr *)&ss, len);
    if (!addr) {
        close(fd);
        return NULL;
    }
    res = Py_BuildValue("(iN)", fd, addr);
    if (!res)
        close(fd);
    return res;
}

/* recv_into(fd, bytearray, flags) -> count (0: end of stream) or -errno */
static PyObject *
fd_recv_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int fd, flags;
    ssize_t n;

    if (check_nargs(nargs, 3, 3, "recv_into") || as_int(args[0], &fd) ||
        as_int(args[2], &flags))
        return NULL;
    if (!PyByteArray_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "recv_into() needs a bytearray");
        return NULL;
    }
    n = recv(fd, PyByteArray_AS_STRING(args[1]), (size_t)PyByteArray_GET_SIZE(args[1]),
             flags);
    return PyLong_FromSsize_t(n < 0 ? -errno : n);
}

/* send(fd, data, flags) -> count sent or -errno (never SIGPIPE) */
static PyObject *
fd_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int fd, flags;
    ssize_t n;
    Py_buffer view;

    if (check_nargs(nargs, 3, 3, "send") || as_int(args[0], &fd) || as_int(args[2], &flags))
        return NULL;
    if (PyBytes_CheckExact(args[1])) {
        n = send(fd, PyBytes_AS_STRING(args[1]), (size_t)PyBytes_GET_SIZE(args[1]),
                 flags | MSG_NOSIGNAL);
    } else if (PyByteArray_CheckExact(args[1])) {
        n = send(fd, PyByteArray_AS_STRING(args[1]), (size_t)PyByteArray_GET_SIZE(args[1]),
                 flags | MSG_NOSIGNAL);
    } else {
        if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
            return NULL;
        n = send(fd, view.buf, (size_t)view.len, flags | MSG_NOSIGNAL);
        PyBuffer_Release(&view);
    }
    return PyLong_FromSsize_t(n < 0 ? -errno : n);
}

/* connect(family, host, port, scope_id) -> fd (connected or in progress) or
 * -errno. A non-blocking, close-on-exec stream socket; TCP_NODELAY for TCP.
 * host: a numeric address, or the path for AF_UNIX (port ignored). */
static PyObject *
fd_connect(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int family, port = 0, scope = 0, fd, rc, err;
    const char *host;
    Py_ssize_t hlen;
    struct sockaddr_storage ss;
    socklen_t len;

    if (check_nargs(nargs, 4, 4, "connect") || as_int(args[0], &family) ||
        as_int(args[2], &port) || as_int(args[3], &scope))
        return NULL;
    host = PyUnicode_AsUTF8AndSize(args[1], &hlen);
    if (!host)
        return NULL;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            return PyLong_FromLong(-EINVAL);
        len = sizeof *a;
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_scope_id = (uint32_t)scope;
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            return PyLong_FromLong(-EINVAL);
        len = sizeof *a;
    } else if (family == AF_UNIX) {
        struct sockaddr_un *a = (struct sockaddr_un *)&ss;
        if ((size_t)hlen >= sizeof a->sun_path)
            return PyLong_FromLong(-ENAMETOOLONG);
        a->sun_family = AF_UNIX;
        memcpy(a->sun_path, host, (size_t)hlen);
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)hlen);
    } else {
        return PyLong_FromLong(-EAFNOSUPPORT);
    }
    fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return PyLong_FromLong(-errno);
    if (family != AF_UNIX)
        (void)nodelay(fd);
    rc = connect(fd, (struct sockaddr *)&ss, len);
    if (rc < 0 && errno != EINPROGRESS && errno != EAGAIN) {
        err = errno;
        close(fd);
        return PyLong_FromLong(-err);
    }
    return PyLong_FromLong(fd);
}

static PyObject *
one_int_call(PyObject *const *args, Py_ssize_t nargs, const char *name, int (*fn)(int))
{
    int fd;

    if (check_nargs(nargs, 1, 1, name) || as_int(args[0], &fd))
        return NULL;
    return PyLong_FromLong(fn(fd) < 0 ? -errno : 0);
}

static int do_close(int fd) { return close(fd); }
static int do_shutdown_wr(int fd) { return shutdown(fd, SHUT_WR); }

/* close(fd) -> 0 or -errno */
static PyObject *
fd_close(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return one_int_call(args, nargs, "close", do_close);
}

/* shutdown_wr(fd) -> 0 or -errno */
static PyObject *
fd_shutdown_wr(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return one_int_call(args, nargs, "shutdown_wr", do_shutdown_wr);
}

/* set_nodelay(fd) -> 0 or -errno: also sends what MSG_MORE held back */
static PyObject *
fd_set_nodelay(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return one_int_call(args, nargs, "set_nodelay", nodelay);
}

/* set_keepalive(fd) -> 0 or -errno: SO_KEEPALIVE on */
static PyObject *
fd_set_keepalive(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return one_int_call(args, nargs, "set_keepalive", keepalive);
}

/* set_nolinger(fd) -> 0 or -errno: SO_LINGER on, 0 s (close() sends a RST) */
static PyObject *
fd_set_nolinger(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return one_int_call(args, nargs, "set_nolinger", nolinger);
}

/* so_error(fd) -> the pending error (SO_ERROR, 0 if none) */
static PyObject *
fd_so_error(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int fd, err = 0;
    socklen_t len = sizeof err;

    if (check_nargs(nargs, 1, 1, "so_error") || as_int(args[0], &fd))
        return NULL;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    return PyLong_FromLong(err);
}

static PyObject *
name_call(PyObject *const *args, Py_ssize_t nargs, const char *name,
          int (*fn)(int, struct sockaddr *, socklen_t *))
{
    int fd;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;

    if (check_nargs(nargs, 1, 1, name) || as_int(args[0], &fd))
        return NULL;
    if (fn(fd, (struct sockaddr *)&ss, &len) < 0)
        Py_RETURN_NONE;
    return make_addr((struct sockaddr *)&ss, len);
}

/* getsockname(fd) -> address or None */
static PyObject *
fd_getsockname(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return name_call(args, nargs, "getsockname", getsockname);
}

/* getpeername(fd) -> address or None */
static PyObject *
fd_getpeername(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return name_call(args, nargs, "getpeername", getpeername);
}

static PyMethodDef methods[] = {
    {"accept", (PyCFunction)(void (*)(void))fd_accept, METH_FASTCALL, NULL},
    {"recv_into", (PyCFunction)(void (*)(void))fd_recv_into, METH_FASTCALL, NULL},
    {"send", (PyCFunction)(void (*)(void))fd_send, METH_FASTCALL, NULL},
    {"connect", (PyCFunction)(void (*)(void))fd_connect, METH_FASTCALL, NULL},
    {"close", (PyCFunction)(void (*)(void))fd_close, METH_FASTCALL, NULL},
    {"shutdown_wr", (PyCFunction)(void (*)(void))fd_shutdown_wr, METH_FASTCALL, NULL},
    {"set_nodelay", (PyCFunction)(void (*)(void))fd_set_nodelay, METH_FASTCALL, NULL},
    {"set_keepalive", (PyCFunction)(void (*)(void))fd_set_keepalive, METH_FASTCALL, NULL},
    {"set_nolinger", (PyCFunction)(void (*)(void))fd_set_nolinger, METH_FASTCALL, NULL},
    {"so_error", (PyCFunction)(void (*)(void))fd_so_error, METH_FASTCALL, NULL},
    {"getsockname", (PyCFunction)(void (*)(void))fd_getsockname, METH_FASTCALL, NULL},
    {"getpeername", (PyCFunction)(void (*)(void))fd_getpeername, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fdsock", "Socket calls on bare file descriptors.", -1, methods,
};

PyMODINIT_FUNC
PyInit__fdsock(void)
{
    return PyModule_Create(&module);
}
