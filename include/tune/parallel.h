/* Data parallelism: N processes (ranks) started by mpirun train one adapter.
 * Each rank computes the gradients of its share of every step's
 * micro-batches; tune_parallel_fold sums them in global micro-batch order,
 * the order one process sums them in, so N ranks write the bytes one
 * process writes (docs/parallel.md). Built with MPI (make MPI=1: MPI moves
 * host buffers, NCCL device buffers when CUDA is built too) or without,
 * where the same interface is one rank and refuses a launch of more. */
#ifndef TUNE_PARALLEL_H
#define TUNE_PARALLEL_H

#include <stddef.h>

#include "tune/backend.h"
#include "tune/error.h"

typedef struct tune_parallel tune_parallel;

/* The launcher's world size, rank and node-local rank, from its environment
 * (Open MPI's OMPI_COMM_WORLD_SIZE, _RANK, _LOCAL_RANK, else PMI_SIZE,
 * PMI_RANK, MPI_LOCALRANKID); 1, 0 and 0 when no launcher started tune. */
int tune_parallel_env_size(void);
int tune_parallel_env_rank(void);
int tune_parallel_env_local_rank(void);

/* 1 when this build has MPI. */
int tune_parallel_has_mpi(void);
/* The MPI library's version line, or that this build has none (for `tune --version`). */
void tune_parallel_describe(char *buf, size_t size);

/* Joins the ranks: with a launcher's world size above 1, MPI_Init (errors
 * returned, not fatal) and, with CUDA, the GPU of the node-local rank for
 * tune_backend_cuda. Without a launcher, one rank and no MPI. A build
 * without MPI launched as several ranks is TUNE_ERR_INPUT. */
tune_status tune_parallel_start(tune_parallel **out, tune_error *err);

/* Leaves and frees p. failed: this rank ends with an error. A failure every
 * rank agreed on (tune_parallel_agree, a shared stop) leaves as a success
 * does (MPI_Finalize); any other ends every rank at once (MPI_Abort with
 * code), so no rank waits on one that stopped. */
void tune_parallel_end(tune_parallel *p, int failed, int code);

int tune_parallel_rank(const tune_parallel *p); /* 0 for NULL */
int tune_parallel_size(const tune_parallel *p); /* 1 for NULL */
/* 1 when the failure last returned was one every rank returned (rank 0
 * reports it; the others need not). */
int tune_parallel_agreed(const tune_parallel *p);

/* Every call below is collective: every rank makes it, in the same order.
 * p may be NULL (one rank): then they do what one rank would. */

/* TUNE_OK when every rank's st is; else this rank's own error where it
 * failed, and on the others that of the first rank that did (its code and
 * message, prefixed "rank R: "). */
tune_status tune_parallel_agree(tune_parallel *p, tune_status st, tune_error *err);

/* TUNE_ERR_INPUT on every rank when some rank's value (text) differs from
 * rank 0's: names `what`, the first such rank and both values. */
tune_status tune_parallel_same(tune_parallel *p, const char *what, const char *value, tune_error *err);

/* *any = the largest of every rank's `mine`. */
tune_status tune_parallel_any(tune_parallel *p, int mine, int *any, tune_error *err);

/* all (size × bytes) = every rank's `mine` (bytes), in rank order. */
tune_status tune_parallel_gather(tune_parallel *p, const void *mine, void *all, size_t bytes, tune_error *err);

/* buf (bytes) = rank 0's. */
tune_status tune_parallel_bcast(tune_parallel *p, void *buf, size_t bytes, tune_error *err);

/* The share of a step of n micro-batches (of at most `accum`) that this
 * rank computes: [*first, *first + *count), blocks of ⌈accum / size⌉ in rank
 * order (the last ranks' may be short or empty). */
void tune_parallel_share(const tune_parallel *p, long accum, long n, long *first, long *count);

/* The step's gradient: the fold (from 0, adding one micro-batch's gradient
 * at a time in global order) over every rank's share. On rank 0 acc holds
 * the fold of its own share; a rank r > 0 receives rank r − 1's fold into
 * acc, adds its n_slots gradients (slots: (n_slots, n)) in order and passes
 * it on; the last rank's acc goes to every rank. acc and slots are buffers
 * of be (NCCL moves device buffers). */
tune_status tune_parallel_fold(tune_parallel *p, const tune_backend *be, float *acc, const float *slots, int n_slots,
                               size_t n, tune_error *err);

#endif
