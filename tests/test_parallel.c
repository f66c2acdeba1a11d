/* The data-parallel seam as one process sees it (tune/parallel.h): the
 * launcher's environment, the refusal of a build without MPI, the share of
 * a step, and the fold that one rank and N ranks both reduce to. The
 * several-rank paths run under mpirun in tests/e2e/train_parallel.sh. */
#include "testutil.h"
#include "tune/parallel.h"

static void clear_env(void)
{
    const char *names[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                           "PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) unsetenv(names[i]);
}

START_TEST(environment_of_the_launcher)
{
    clear_env();
    ck_assert_int_eq(tune_parallel_env_size(), 1);
    ck_assert_int_eq(tune_parallel_env_rank(), 0);
    setenv("PMI_SIZE", "4", 1);
    setenv("PMI_RANK", "3", 1);
    ck_assert_int_eq(tune_parallel_env_size(), 4);
    ck_assert_int_eq(tune_parallel_env_rank(), 3);
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1); /* Open MPI's wins */
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
    ck_assert_int_eq(tune_parallel_env_size(), 2);
    ck_assert_int_eq(tune_parallel_env_local_rank(), 1);
    setenv("OMPI_COMM_WORLD_SIZE", "two", 1); /* not a number: the next variable */
    ck_assert_int_eq(tune_parallel_env_size(), 4);
    setenv("PMI_SIZE", "0", 1);
    ck_assert_int_eq(tune_parallel_env_size(), 1);
    clear_env();
}
END_TEST

START_TEST(one_process_without_a_launcher)
{
    clear_env();
    tune_parallel *p;
    tune_error err;
    ck_assert_int_eq(tune_parallel_start(&p, &err), TUNE_OK);
    ck_assert_int_eq(tune_parallel_rank(p), 0);
    ck_assert_int_eq(tune_parallel_size(p), 1);
    ck_assert_int_eq(tune_parallel_agree(p, TUNE_OK, &err), TUNE_OK);
    tune_error_set(&err, TUNE_ERR_INPUT, NULL, 0, 0, "mine");
    ck_assert_int_eq(tune_parallel_agree(p, TUNE_ERR_INPUT, &err), TUNE_ERR_INPUT);
    ck_assert_str_eq(err.message, "mine");
    ck_assert_int_eq(tune_parallel_same(p, "x", "abc", &err), TUNE_OK);
    int any = -1;
    ck_assert_int_eq(tune_parallel_any(p, 1, &any, &err), TUNE_OK);
    ck_assert_int_eq(any, 1);
    tune_parallel_end(p, 0, 0);
}
END_TEST

/* A build without MPI started as one of several ranks says so (exit 2). */
START_TEST(no_mpi_refuses_several_ranks)
{
    if (tune_parallel_has_mpi()) return; /* it would join them: the e2e script's case */
    clear_env();
    setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
    setenv("OMPI_COMM_WORLD_RANK", "1", 1);
    tune_parallel *p = (tune_parallel *)&p;
    tune_error err;
    ck_assert_int_eq(tune_parallel_start(&p, &err), TUNE_ERR_INPUT);
    ck_assert_ptr_null(p);
    ck_assert_msg(strstr(err.message, "rank 1 of 3") && strstr(err.message, "built without MPI"), "%s", err.message);
    clear_env();
}
END_TEST

START_TEST(one_rank_takes_the_whole_step)
{
    long first, count;
    tune_parallel_share(NULL, 6, 6, &first, &count);
    ck_assert_int_eq(first, 0);
    ck_assert_int_eq(count, 6);
    tune_parallel_share(NULL, 6, 4, &first, &count); /* an epoch's short last step */
    ck_assert_int_eq(first, 0);
    ck_assert_int_eq(count, 4);
}
END_TEST

/* The fold adds the slots in order into acc: ((acc + s0) + s1) + s2, which
 * differs in the last bit from other orders on these values. */
START_TEST(fold_adds_in_order)
{
    const float s[3][2] = {{1.0f, 1e8f}, {1e-8f, -1e8f}, {3.0f, 1.0f}};
    float acc[2] = {0.5f, 0.0f};
    float want[2];
    for (int i = 0; i < 2; i++) want[i] = ((acc[i] + s[0][i]) + s[1][i]) + s[2][i];
    tune_error err;
    ck_assert_int_eq(tune_parallel_fold(NULL, tune_backend_cpu(), acc, &s[0][0], 3, 2, &err), TUNE_OK);
    ck_assert_mem_eq(acc, want, sizeof want);
    ck_assert_float_eq(acc[1], 1.0f); /* 1e8 − 1e8 first, then 1: not 0 as (1e8 + 1) − 1e8 would give */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("parallel");
    TCase *tc = tcase_create("one process");
    tcase_add_test(tc, environment_of_the_launcher);
    tcase_add_test(tc, one_process_without_a_launcher);
    tcase_add_test(tc, no_mpi_refuses_several_ranks);
    tcase_add_test(tc, one_rank_takes_the_whole_step);
    tcase_add_test(tc, fold_adds_in_order);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
