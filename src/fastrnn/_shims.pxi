# The wrappers' calls into the kernels (included by _kernels.pyx): each k_<name> takes the
# kernel's arguments and calls the float32 or float64 version of <name> in the KernelTable
# (_table.pxi) of the hot module this call runs on.
#
# That is the module the wrapper module was bound to at import ($FASTRNN_ISA, else the best one
# the CPU runs), unless the call came through a kernels object bound to another one (bound(),
# _Bound below), which sets it for its calls on the calling thread. The kernels' own threads
# (OpenMP) only run inside the hot module, so the calling thread's setting is the one that
# counts.

from cpython.pycapsule cimport PyCapsule_GetPointer

cdef extern from *:
    """
    #if defined(_MSC_VER)
    #define FR_THREAD_LOCAL __declspec(thread)
    #else
    #define FR_THREAD_LOCAL __thread
    #endif
    static void *fr_default_table = 0;
    static FR_THREAD_LOCAL void *fr_call_table = 0;
    static void *fr_table(void) { return fr_call_table ? fr_call_table : fr_default_table; }
    static void fr_set_default_table(void *t) { fr_default_table = t; }
    static void *fr_swap_call_table(void *t) { void *old = fr_call_table; fr_call_table = t;
                                               return old; }
    """
    void* fr_table() noexcept nogil
    void fr_set_default_table(void* t) noexcept nogil
    void* fr_swap_call_table(void* t) noexcept nogil


cdef inline KernelTable* _table() noexcept nogil:
    return <KernelTable*>fr_table()


cdef inline double k_chunk(const floating* P, int H, int V, int B, int T, const int* X,
                           const int* Y, const floating* h, floating* work, floating* G,
                           floating* dh0, int parts, const UpdateConfig* cfg, floating* M,
                           floating* S, bint guarded, floating* U, int* bad) noexcept nogil:
    if floating is float:
        return _table().chunk_f(P, H, V, B, T, X, Y, h, work, G, dh0, parts, cfg, M, S,
                                guarded, U, bad)
    else:
        return _table().chunk_d(P, H, V, B, T, X, Y, h, work, G, dh0, parts, cfg, M, S,
                                guarded, U, bad)


cdef inline void k_last_state(const floating* work, int H, int V, int B, int T, int parts,
                              floating* h) noexcept nogil:
    if floating is float:
        _table().last_state_f(work, H, V, B, T, parts, h)
    else:
        _table().last_state_d(work, H, V, B, T, parts, h)


cdef inline double k_update(floating* P, const floating* G, floating* M, floating* S,
                            Py_ssize_t n, const UpdateConfig* cfg) noexcept nogil:
    if floating is float:
        return _table().update_f(P, G, M, S, n, cfg)
    else:
        return _table().update_d(P, G, M, S, n, cfg)


cdef inline bint k_update_guarded(floating* P, floating* G, floating* M, floating* S,
                                  Py_ssize_t n, const UpdateConfig* cfg,
                                  floating* U) noexcept nogil:
    if floating is float:
        return _table().update_guarded_f(P, G, M, S, n, cfg, U)
    else:
        return _table().update_guarded_d(P, G, M, S, n, cfg, U)


cdef inline bint k_update_split(floating* P, floating* G, floating* M, floating* S,
                                Py_ssize_t n, int H, int V, int B, int parts,
                                const UpdateConfig* cfg, bint guarded,
                                floating* U) noexcept nogil:
    if floating is float:
        return _table().update_split_f(P, G, M, S, n, H, V, B, parts, cfg, guarded, U)
    else:
        return _table().update_split_d(P, G, M, S, n, H, V, B, parts, cfg, guarded, U)


cdef inline Py_ssize_t k_generate(const floating* P, int H, int V, floating* h, Py_ssize_t n,
                                  const double* u, floating temperature, bint greedy,
                                  int top_k, double top_p, int* out, floating* work,
                                  int* order) noexcept nogil:
    if floating is float:
        return _table().generate_f(P, H, V, h, n, u, temperature, greedy, top_k, top_p, out,
                                   work, order)
    else:
        return _table().generate_d(P, H, V, h, n, u, temperature, greedy, top_k, top_p, out,
                                   work, order)


cdef inline double k_stack_chunk(const StackModel* m, const floating* P, int B, int T,
                                 const int* X, const int* Y, const floating* h0,
                                 const floating* c0, const floating* masks, floating* work,
                                 floating* G, floating* dh0, floating* dc0,
                                 int parts) noexcept nogil:
    if floating is float:
        return _table().stack_chunk_f(m, P, B, T, X, Y, h0, c0, masks, work, G, dh0, dc0,
                                      parts)
    else:
        return _table().stack_chunk_d(m, P, B, T, X, Y, h0, c0, masks, work, G, dh0, dc0,
                                      parts)


cdef inline void k_stack_last_state(const StackModel* m, const floating* work, int B, int T,
                                    int parts, floating* h, floating* c) noexcept nogil:
    if floating is float:
        _table().stack_last_state_f(m, work, B, T, parts, h, c)
    else:
        _table().stack_last_state_d(m, work, B, T, parts, h, c)


cdef inline bint k_stack_update(floating* P, floating* G, floating* M, floating* S,
                                Py_ssize_t n, const UpdateConfig* cfg, bint guarded,
                                floating* U, int parts) noexcept nogil:
    if floating is float:
        return _table().stack_update_f(P, G, M, S, n, cfg, guarded, U, parts)
    else:
        return _table().stack_update_d(P, G, M, S, n, cfg, guarded, U, parts)


cdef inline Py_ssize_t k_stack_generate(const StackModel* m, const floating* P, floating* h,
                                        floating* c, Py_ssize_t n, const double* u,
                                        floating temperature, bint greedy, int top_k,
                                        double top_p, int* out, floating* work, int* order,
                                        int threads) noexcept nogil:
    if floating is float:
        return _table().stack_generate_f(m, P, h, c, n, u, temperature, greedy, top_k, top_p,
                                         out, work, order, threads)
    else:
        return _table().stack_generate_d(m, P, h, c, n, u, temperature, greedy, top_k, top_p,
                                         out, work, order, threads)


cdef inline Py_ssize_t k_beam_search(const StackModel* m, const floating* P, Py_ssize_t n,
                                     int K, floating* states, floating* work, double* cand,
                                     double* scores, int* heap, int* ids, int* parents,
                                     int* out, double* score) noexcept nogil:
    if floating is float:
        return _table().beam_search_f(m, P, n, K, states, work, cand, scores, heap, ids,
                                      parents, out, score)
    else:
        return _table().beam_search_d(m, P, n, K, states, work, cand, scores, heap, ids,
                                      parents, out, score)


# ---------------------------------------------------------------------------------------------
# Binding to a hot module

cdef KernelTable* _table_of(object hot) except NULL:
    # the checked table of a hot module
    cdef KernelTable* t = <KernelTable*>PyCapsule_GetPointer(hot.TABLE,
                                                            "fastrnn._hot.KernelTable")
    if t.version != TABLE_VERSION or t.size != sizeof(KernelTable):
        raise ImportError(f"{hot.__name__} was built from other sources than "
                          f"fastrnn._kernels; rebuild the package")
    return t


cdef dict _facts(KernelTable* t):
    # the BUILD_* attributes of kernels bound to this table
    return {"BUILD_ISA": t.isa.decode(), "BUILD_NATIVE": bool(t.native),
            "BUILD_DEBUG": bool(t.debug), "BUILD_ASAN": bool(t.asan),
            "BUILD_OPENMP": bool(t.openmp)}  # False: threads > 1 runs the parts in turn


cdef class _Call:
    # one wrapper function, run on the hot module of a _Bound
    cdef object fn
    cdef void* table

    def __call__(self, *args, **kwargs):
        cdef void* before = fr_swap_call_table(self.table)
        try:
            return self.fn(*args, **kwargs)
        finally:
            fr_swap_call_table(before)

    def __getitem__(self, key):  # one type's version of a fused function: train_step["float"]
        cdef _Call call = _Call.__new__(_Call)
        call.fn, call.table = self.fn[key], self.table
        return call

    def __repr__(self):
        return f"<{self.fn!r} on {(<KernelTable*>self.table).isa.decode()}>"


class _Bound:
    """fastrnn._kernels' functions and constants, run on another hot module than the one the
    module was bound to at import (bound(hot_module))."""

    def __init__(self, hot):
        cdef _Call call
        cdef KernelTable* t = _table_of(hot)
        self.__name__ = f"fastrnn._kernels on {hot.__name__}"
        self.HOT = hot
        self.__dict__.update(_facts(t))
        for name, value in globals().items():
            if name.startswith("_") or name in self.__dict__:
                continue
            if callable(value) and not isinstance(value, type):
                call = _Call.__new__(_Call)
                call.fn, call.table = value, <void*>t
                value = call
            self.__dict__[name] = value

    def __repr__(self):
        return f"<{self.__name__}>"


HOT = None  # the hot module bound at import (_bind_default)


def bound(hot):
    """These kernels on the hot module `hot` (fastrnn._hot, _hot_avx2 or _hot_avx512): this
    module itself when it is the one it was bound to at import, else an object with the same
    functions and constants whose calls run on `hot` (its BUILD_* and bf16 path are that
    module's)."""
    if hot is HOT:
        import sys
        return sys.modules[__name__]
    return _Bound(hot)


def _bind_default(hot):
    # at import: the hot module every call runs on unless it comes through a _Bound
    cdef KernelTable* t = _table_of(hot)
    fr_set_default_table(<void*>t)
    globals().update(_facts(t))
    globals()["HOT"] = hot
