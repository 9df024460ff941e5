/* The OpenMP team of a parallel region, for the kernels that split one sequence's time steps
 * over threads (see _one_sequence in _kernels.pyx): the team's size, this thread's rank in it,
 * and a barrier every thread of the team must reach before any goes on. Built without OpenMP,
 * a team is one thread and a barrier does nothing, so the same code runs its parts in turn.
 *
 * fr_barrier is an orphaned OpenMP barrier: it binds to the innermost parallel region the
 * calling thread is in, which is what the Cython `with parallel()` block opens. */
#ifndef FASTRNN_TEAM_H
#define FASTRNN_TEAM_H

#ifdef _OPENMP
#include <omp.h>
static inline int fr_team_size(void) { return omp_get_num_threads(); }
static inline int fr_team_rank(void) { return omp_get_thread_num(); }
static inline void fr_barrier(void)
{
#pragma omp barrier
}
#else
static inline int fr_team_size(void) { return 1; }
static inline int fr_team_rank(void) { return 0; }
static inline void fr_barrier(void) {}
#endif

#endif
