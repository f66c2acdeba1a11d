/* Data parallelism (tune/parallel.h): MPI for host buffers and the small
 * agreements, NCCL for device buffers; without MPI, one rank. Every MPI
 * call returns its error (MPI_ERRORS_RETURN) so a rank whose peer died
 * reports it; mpirun ends the job's other ranks soon after one dies. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/parallel.h"

#ifdef TUNE_MPI
#include <mpi.h>
#ifdef TUNE_CUDA
#include <nccl.h>
#endif
#endif

struct tune_parallel {
    int rank, size, local_rank;
    int mpi;    /* MPI_Init was called */
    int agreed; /* the failure last returned is one every rank returned */
#if defined(TUNE_MPI) && defined(TUNE_CUDA)
    ncclComm_t nccl; /* made at the first fold of device buffers */
    int have_nccl;
#endif
};

/* The first of two environment variables that holds a number >= lo, else dflt. */
static int env_int(const char *a, const char *b, int lo, int dflt)
{
    const char *names[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        const char *s = getenv(names[i]);
        if (!s || !*s) continue;
        char *end;
        const long v = strtol(s, &end, 10);
        if (!*end && v >= lo && v <= INT_MAX) return (int)v;
    }
    return dflt;
}

int tune_parallel_env_size(void) { return env_int("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", 1, 1); }
int tune_parallel_env_rank(void) { return env_int("OMPI_COMM_WORLD_RANK", "PMI_RANK", 0, 0); }
int tune_parallel_env_local_rank(void) { return env_int("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", 0, 0); }

int tune_parallel_rank(const tune_parallel *p) { return p ? p->rank : 0; }
int tune_parallel_size(const tune_parallel *p) { return p ? p->size : 1; }
int tune_parallel_agreed(const tune_parallel *p) { return p && p->agreed; }

/* acc += each slot in order: the fold's steps that need no other rank. */
static void add_slots(const tune_backend *be, float *acc, const float *slots, int n_slots, size_t n)
{
    for (int i = 0; i < n_slots; i++) be->add(acc, slots + (size_t)i * n, n);
}

void tune_parallel_share(const tune_parallel *p, long accum, long n, long *first, long *count)
{
    const long size = tune_parallel_size(p), k = (accum + size - 1) / size;
    *first = tune_parallel_rank(p) * k;
    const long left = n - *first;
    *count = left <= 0 ? 0 : left < k ? left : k;
}

#ifdef TUNE_MPI

int tune_parallel_has_mpi(void) { return 1; }

void tune_parallel_describe(char *buf, size_t size)
{
    char version[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    MPI_Get_library_version(version, &len);
    version[strcspn(version, ",\n")] = 0; /* the first part of its first line */
#ifdef TUNE_CUDA
    snprintf(buf, size, "%s; NCCL %d.%d.%d for GPU ranks", version, NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH);
#else
    snprintf(buf, size, "%s", version);
#endif
}

/* A failed MPI call: most often a rank that died or stopped. */
static tune_status mpi_failed(const tune_parallel *p, const char *call, int rc, tune_error *err)
{
    char why[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, why, &len);
    return tune_fail_run(err, NULL, "rank %d of %d: %s failed: %s (did another rank stop or die? its message, "
                                    "or mpirun's, says why)",
                         p->rank, p->size, call, why);
}

tune_status tune_parallel_start(tune_parallel **out, tune_error *err)
{
    *out = NULL;
    tune_parallel *p = calloc(1, sizeof *p);
    if (!p) return tune_fail_run(err, NULL, "out of memory");
    p->size = 1;
    if (tune_parallel_env_size() > 1) {
        int rc = MPI_Init(NULL, NULL);
        if (rc != MPI_SUCCESS) {
            free(p);
            return tune_fail_run(err, NULL, "MPI_Init failed (error %d): cannot join the other ranks", rc);
        }
        p->mpi = 1;
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        MPI_Comm_rank(MPI_COMM_WORLD, &p->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &p->size);
        p->local_rank = tune_parallel_env_local_rank();
        tune_backend_cuda_pick(p->local_rank);
    }
    *out = p;
    return TUNE_OK;
}

void tune_parallel_end(tune_parallel *p, int failed, int code)
{
    if (!p) return;
    if (p->mpi) {
        if (failed && !p->agreed) MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
#ifdef TUNE_CUDA
        if (p->have_nccl) ncclCommDestroy(p->nccl);
#endif
        MPI_Finalize();
    }
    free(p);
}

/* One rank's status and message, as tune_parallel_agree exchanges them. */
typedef struct status_msg {
    int code;
    char message[1536];
} status_msg;

tune_status tune_parallel_agree(tune_parallel *p, tune_status st, tune_error *err)
{
    if (!p || p->size == 1) return st;
    status_msg mine = {.code = (int)st};
    if (st) tune_error_format(err, mine.message, sizeof mine.message);
    status_msg *all = malloc((size_t)p->size * sizeof *all);
    if (!all) return tune_fail_run(err, NULL, "out of memory");
    const int rc = MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
        free(all);
        return mpi_failed(p, "MPI_Allgather (agreeing on a status)", rc, err);
    }
    int first = -1;
    for (int r = 0; r < p->size && first < 0; r++)
        if (all[r].code) first = r;
    if (first >= 0) {
        p->agreed = 1;
        if (!st) tune_error_set(err, (tune_status)all[first].code, NULL, 0, 0, "rank %d: %s", first, all[first].message);
    }
    st = first < 0 ? TUNE_OK : st ? st : (tune_status)all[first].code;
    free(all);
    return st;
}

tune_status tune_parallel_same(tune_parallel *p, const char *what, const char *value, tune_error *err)
{
    if (!p || p->size == 1) return TUNE_OK;
    enum { W = 72 };
    char mine[W] = "";
    snprintf(mine, sizeof mine, "%s", value);
    char *all = malloc((size_t)p->size * W);
    if (!all) return tune_fail_run(err, NULL, "out of memory");
    const int rc = MPI_Allgather(mine, W, MPI_CHAR, all, W, MPI_CHAR, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
        free(all);
        return mpi_failed(p, "MPI_Allgather (comparing the ranks' inputs)", rc, err);
    }
    tune_status st = TUNE_OK;
    for (int r = 1; r < p->size && !st; r++)
        if (memcmp(all, all + (size_t)r * W, W)) {
            p->agreed = 1;
            st = tune_fail_input(err, NULL,
                                 "the ranks differ in %s: rank %d has %.*s, rank 0 has %.*s; every rank must run "
                                 "the same config on the same data",
                                 what, r, W, all + (size_t)r * W, W, all);
        }
    free(all);
    return st;
}

tune_status tune_parallel_any(tune_parallel *p, int mine, int *any, tune_error *err)
{
    *any = mine;
    if (!p || p->size == 1) return TUNE_OK;
    const int rc = MPI_Allreduce(&mine, any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? TUNE_OK : mpi_failed(p, "MPI_Allreduce (a stop request)", rc, err);
}

tune_status tune_parallel_gather(tune_parallel *p, const void *mine, void *all, size_t bytes, tune_error *err)
{
    if (!p || p->size == 1) {
        memmove(all, mine, bytes);
        return TUNE_OK;
    }
    if (bytes > INT_MAX) return tune_fail_run(err, NULL, "internal error: a gather of %zu bytes", bytes);
    const int rc = MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? TUNE_OK : mpi_failed(p, "MPI_Allgather", rc, err);
}

tune_status tune_parallel_bcast(tune_parallel *p, void *buf, size_t bytes, tune_error *err)
{
    if (!p || p->size == 1) return TUNE_OK;
    if (bytes > INT_MAX) return tune_fail_run(err, NULL, "internal error: a broadcast of %zu bytes", bytes);
    const int rc = MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? TUNE_OK : mpi_failed(p, "MPI_Bcast", rc, err);
}

/* MPI counts are ints: host floats move in pieces of at most this many. */
#define PIECE ((size_t)1 << 28)

/* acc: rank − 1's fold in, this rank's out to rank + 1, the last's to all. */
static tune_status fold_host(tune_parallel *p, const tune_backend *be, float *acc, const float *slots, int n_slots,
                             size_t n, tune_error *err)
{
    int rc = MPI_SUCCESS;
    for (size_t o = 0; p->rank > 0 && rc == MPI_SUCCESS && o < n; o += PIECE)
        rc = MPI_Recv(acc + o, (int)(n - o < PIECE ? n - o : PIECE), MPI_FLOAT, p->rank - 1, 0, MPI_COMM_WORLD,
                      MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return mpi_failed(p, "MPI_Recv (the gradient of the ranks before)", rc, err);
    add_slots(be, acc, slots, n_slots, n);
    for (size_t o = 0; p->rank + 1 < p->size && rc == MPI_SUCCESS && o < n; o += PIECE)
        rc = MPI_Send(acc + o, (int)(n - o < PIECE ? n - o : PIECE), MPI_FLOAT, p->rank + 1, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_failed(p, "MPI_Send (the gradient to the next rank)", rc, err);
    for (size_t o = 0; rc == MPI_SUCCESS && o < n; o += PIECE)
        rc = MPI_Bcast(acc + o, (int)(n - o < PIECE ? n - o : PIECE), MPI_FLOAT, p->size - 1, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? TUNE_OK : mpi_failed(p, "MPI_Bcast (the step's gradient)", rc, err);
}

#ifdef TUNE_CUDA
static tune_status nccl_failed(const tune_parallel *p, const char *call, ncclResult_t r, tune_error *err)
{
    return tune_fail_run(err, NULL, "rank %d of %d: %s failed: %s", p->rank, p->size, call, ncclGetErrorString(r));
}

/* The communicator, from an id rank 0 makes and MPI broadcasts (as llm.c). */
static tune_status nccl_start(tune_parallel *p, tune_error *err)
{
    if (p->have_nccl) return TUNE_OK;
    ncclUniqueId id;
    ncclResult_t r = p->rank == 0 ? ncclGetUniqueId(&id) : ncclSuccess;
    if (r != ncclSuccess) return nccl_failed(p, "ncclGetUniqueId", r, err);
    const int rc = MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_failed(p, "MPI_Bcast (the NCCL id)", rc, err);
    if ((r = ncclCommInitRank(&p->nccl, p->size, id, p->rank)) != ncclSuccess)
        return nccl_failed(p, "ncclCommInitRank", r, err);
    p->have_nccl = 1;
    return TUNE_OK;
}

/* fold_host's chain with NCCL on the backend's stream (the default one),
 * queued in order with the adds. */
static tune_status fold_device(tune_parallel *p, const tune_backend *be, float *acc, const float *slots, int n_slots,
                               size_t n, tune_error *err)
{
    tune_status st = nccl_start(p, err);
    if (st) return st;
    ncclResult_t r = p->rank > 0 ? ncclRecv(acc, n, ncclFloat, p->rank - 1, p->nccl, 0) : ncclSuccess;
    if (r != ncclSuccess) return nccl_failed(p, "ncclRecv (the gradient of the ranks before)", r, err);
    add_slots(be, acc, slots, n_slots, n);
    if (p->rank + 1 < p->size && (r = ncclSend(acc, n, ncclFloat, p->rank + 1, p->nccl, 0)) != ncclSuccess)
        return nccl_failed(p, "ncclSend (the gradient to the next rank)", r, err);
    if ((r = ncclBroadcast(acc, acc, n, ncclFloat, p->size - 1, p->nccl, 0)) != ncclSuccess)
        return nccl_failed(p, "ncclBroadcast (the step's gradient)", r, err);
    return TUNE_OK;
}
#else
static tune_status fold_device(tune_parallel *p, const tune_backend *be, float *acc, const float *slots, int n_slots,
                               size_t n, tune_error *err)
{
    (void)be, (void)acc, (void)slots, (void)n_slots, (void)n;
    return tune_fail_run(err, NULL, "rank %d: device gradients need NCCL: build with `make CUDA=1 MPI=1`", p->rank);
}
#endif

tune_status tune_parallel_fold(tune_parallel *p, const tune_backend *be, float *acc, const float *slots, int n_slots,
                               size_t n, tune_error *err)
{
    if (p && p->size > 1)
        return be->device ? fold_device(p, be, acc, slots, n_slots, n, err)
                          : fold_host(p, be, acc, slots, n_slots, n, err);
    add_slots(be, acc, slots, n_slots, n);
    return TUNE_OK;
}

#else /* one rank: the same interface without MPI */

int tune_parallel_has_mpi(void) { return 0; }

void tune_parallel_describe(char *buf, size_t size)
{
    snprintf(buf, size, "this tune was built without MPI (rebuild with `make MPI=1` to train on several ranks)");
}

tune_status tune_parallel_start(tune_parallel **out, tune_error *err)
{
    *out = NULL;
    const int size = tune_parallel_env_size();
    if (size > 1)
        return tune_fail_input(err, NULL,
                               "started as rank %d of %d (by mpirun), but this tune was built without MPI and runs "
                               "as one process only: rebuild with `make MPI=1`, or run it without mpirun",
                               tune_parallel_env_rank(), size);
    tune_parallel *p = calloc(1, sizeof *p);
    if (!p) return tune_fail_run(err, NULL, "out of memory");
    p->size = 1;
    *out = p;
    return TUNE_OK;
}

void tune_parallel_end(tune_parallel *p, int failed, int code)
{
    (void)failed, (void)code;
    free(p);
}

tune_status tune_parallel_agree(tune_parallel *p, tune_status st, tune_error *err)
{
    (void)p, (void)err;
    return st;
}

tune_status tune_parallel_same(tune_parallel *p, const char *what, const char *value, tune_error *err)
{
    (void)p, (void)what, (void)value, (void)err;
    return TUNE_OK;
}

tune_status tune_parallel_any(tune_parallel *p, int mine, int *any, tune_error *err)
{
    (void)p, (void)err;
    *any = mine;
    return TUNE_OK;
}

tune_status tune_parallel_gather(tune_parallel *p, const void *mine, void *all, size_t bytes, tune_error *err)
{
    (void)p, (void)err;
    memmove(all, mine, bytes);
    return TUNE_OK;
}

tune_status tune_parallel_bcast(tune_parallel *p, void *buf, size_t bytes, tune_error *err)
{
    (void)p, (void)buf, (void)bytes, (void)err;
    return TUNE_OK;
}

tune_status tune_parallel_fold(tune_parallel *p, const tune_backend *be, float *acc, const float *slots, int n_slots,
                               size_t n, tune_error *err)
{
    (void)p, (void)err;
    add_slots(be, acc, slots, n_slots, n);
    return TUNE_OK;
}

#endif
