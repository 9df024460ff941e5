# The kernels one hot module (fastrnn._hot, _hot_avx2, _hot_avx512: _hot.pyx built per
# instruction set) hands to the wrapper module (fastrnn._kernels, built once): the float32 and
# float64 versions of every kernel the wrappers call inside their nogil blocks, the bf16 path
# setting of that module, and how it was built. Included by both modules: the layout must be the
# same on both sides, so the wrapper refuses a table whose size or version differs (a hot module
# left from an older build).

cdef enum:
    TABLE_VERSION = 1

ctypedef double (*chunk_f_t)(const float*, int, int, int, int, const int*, const int*,
                           const float*, float*, float*, float*, int, const UpdateConfig*,
                           float*, float*, bint, float*, int*) noexcept nogil
ctypedef double (*chunk_d_t)(const double*, int, int, int, int, const int*, const int*,
                           const double*, double*, double*, double*, int, const UpdateConfig*,
                           double*, double*, bint, double*, int*) noexcept nogil
ctypedef void (*last_state_f_t)(const float*, int, int, int, int, int, float*) noexcept nogil
ctypedef void (*last_state_d_t)(const double*, int, int, int, int, int, double*) noexcept nogil
ctypedef double (*update_f_t)(float*, const float*, float*, float*, Py_ssize_t,
                            const UpdateConfig*) noexcept nogil
ctypedef double (*update_d_t)(double*, const double*, double*, double*, Py_ssize_t,
                            const UpdateConfig*) noexcept nogil
ctypedef bint (*update_guarded_f_t)(float*, float*, float*, float*, Py_ssize_t,
                                  const UpdateConfig*, float*) noexcept nogil
ctypedef bint (*update_guarded_d_t)(double*, double*, double*, double*, Py_ssize_t,
                                  const UpdateConfig*, double*) noexcept nogil
ctypedef bint (*update_split_f_t)(float*, float*, float*, float*, Py_ssize_t, int, int, int, int,
                                const UpdateConfig*, bint, float*) noexcept nogil
ctypedef bint (*update_split_d_t)(double*, double*, double*, double*, Py_ssize_t, int, int, int,
                                int, const UpdateConfig*, bint, double*) noexcept nogil
ctypedef Py_ssize_t (*generate_f_t)(const float*, int, int, float*, Py_ssize_t, const double*,
                                  float, bint, int, double, int*, float*, int*) noexcept nogil
ctypedef Py_ssize_t (*generate_d_t)(const double*, int, int, double*, Py_ssize_t, const double*,
                                  double, bint, int, double, int*, double*, int*) noexcept nogil
ctypedef double (*stack_chunk_f_t)(const StackModel*, const float*, int, int, const int*,
                                 const int*, const float*, const float*, const float*, float*,
                                 float*, float*, float*, int) noexcept nogil
ctypedef double (*stack_chunk_d_t)(const StackModel*, const double*, int, int, const int*,
                                 const int*, const double*, const double*, const double*,
                                 double*, double*, double*, double*, int) noexcept nogil
ctypedef void (*stack_last_state_f_t)(const StackModel*, const float*, int, int, int, float*,
                                    float*) noexcept nogil
ctypedef void (*stack_last_state_d_t)(const StackModel*, const double*, int, int, int, double*,
                                    double*) noexcept nogil
ctypedef bint (*stack_update_f_t)(float*, float*, float*, float*, Py_ssize_t, const UpdateConfig*,
                                bint, float*, int) noexcept nogil
ctypedef bint (*stack_update_d_t)(double*, double*, double*, double*, Py_ssize_t,
                                const UpdateConfig*, bint, double*, int) noexcept nogil
ctypedef Py_ssize_t (*stack_generate_f_t)(const StackModel*, const float*, float*, float*,
                                        Py_ssize_t, const double*, float, bint, int, double,
                                        int*, float*, int*, int) noexcept nogil
ctypedef Py_ssize_t (*stack_generate_d_t)(const StackModel*, const double*, double*, double*,
                                        Py_ssize_t, const double*, double, bint, int, double,
                                        int*, double*, int*, int) noexcept nogil
ctypedef Py_ssize_t (*beam_search_f_t)(const StackModel*, const float*, Py_ssize_t, int, float*,
                                     float*, double*, double*, int*, int*, int*, int*,
                                     double*) noexcept nogil
ctypedef Py_ssize_t (*beam_search_d_t)(const StackModel*, const double*, Py_ssize_t, int, double*,
                                     double*, double*, double*, int*, int*, int*, int*,
                                     double*) noexcept nogil
ctypedef void (*bf16_matmul_f_t)(Py_ssize_t, Py_ssize_t, Py_ssize_t, float*, float*, float*,
                               bint) noexcept nogil


cdef struct KernelTable:
    int version                  # TABLE_VERSION
    Py_ssize_t size              # sizeof(KernelTable)
    const char* isa              # "baseline", "avx2", "avx512"
    int native, debug, asan, openmp
    bint bf16_as_fp32            # set_bf16_path("fp32"): bf16 mode runs float32 products
    chunk_f_t chunk_f
    chunk_d_t chunk_d
    last_state_f_t last_state_f
    last_state_d_t last_state_d
    update_f_t update_f
    update_d_t update_d
    update_guarded_f_t update_guarded_f
    update_guarded_d_t update_guarded_d
    update_split_f_t update_split_f
    update_split_d_t update_split_d
    generate_f_t generate_f
    generate_d_t generate_d
    stack_chunk_f_t stack_chunk_f
    stack_chunk_d_t stack_chunk_d
    stack_last_state_f_t stack_last_state_f
    stack_last_state_d_t stack_last_state_d
    stack_update_f_t stack_update_f
    stack_update_d_t stack_update_d
    stack_generate_f_t stack_generate_f
    stack_generate_d_t stack_generate_d
    beam_search_f_t beam_search_f
    beam_search_d_t beam_search_d
    bf16_matmul_f_t bf16_matmul    # A (M,K) @ B (K,N) into C, rounding A and B in place first
