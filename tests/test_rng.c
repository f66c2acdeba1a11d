#include "testutil.h"
#include "tune/rng.h"

/* Known-answer vectors published with Random123 (kat_vectors, philox4x32_10). */
START_TEST(philox_known_answers)
{
    static const struct { uint32_t ctr[4], key[2], out[4]; } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        tune_philox4x32_10(kat[i].ctr, kat[i].key, out);
        for (int j = 0; j < 4; j++) ck_assert_uint_eq(out[j], kat[i].out[j]);
    }
}
END_TEST

START_TEST(streams_are_addressed_not_sequential)
{
    /* The same address gives the same value; streams and seeds differ. */
    ck_assert_uint_eq(tune_rng_u32(42, 1, 12345), tune_rng_u32(42, 1, 12345));
    ck_assert_uint_ne(tune_rng_u32(42, 1, 0), tune_rng_u32(42, 2, 0));
    ck_assert_uint_ne(tune_rng_u32(42, 1, 0), tune_rng_u32(43, 1, 0));
    ck_assert_uint_ne(tune_rng_u32(42, 1, 0), tune_rng_u32(42, 1, 1));
    for (uint64_t i = 0; i < 10000; i++) {
        float u = tune_rng_uniform(7, 3, i);
        ck_assert(u > 0.0f && u <= 1.0f);
    }
}
END_TEST

#ifdef TUNE_CUDA
#include <curand.h>

/* cuRAND's host Philox generator (it runs without a GPU) emits block k of
 * its output from counter (0, 0, k): our (seed, stream = k, index 0..3). The
 * CUDA kernels' curand_init(seed, subsequence, offset) addresses the same way. */
START_TEST(philox_matches_curand_host_generator)
{
    enum { BLOCKS = 4096 };
    static unsigned int out[BLOCKS * 4];
    const unsigned long long seed = 1234567890123ULL;
    curandGenerator_t gen;
    ck_assert_int_eq(curandCreateGeneratorHost(&gen, CURAND_RNG_PSEUDO_PHILOX4_32_10), CURAND_STATUS_SUCCESS);
    ck_assert_int_eq(curandSetPseudoRandomGeneratorSeed(gen, seed), CURAND_STATUS_SUCCESS);
    ck_assert_int_eq(curandGenerate(gen, out, BLOCKS * 4), CURAND_STATUS_SUCCESS);
    curandDestroyGenerator(gen);
    for (int k = 0; k < BLOCKS; k++)
        for (int j = 0; j < 4; j++) ck_assert_uint_eq(out[4 * k + j], tune_rng_u32(seed, (uint64_t)k, (uint64_t)j));
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("rng");
    TCase *tc = tcase_create("philox");
    tcase_add_test(tc, philox_known_answers);
    tcase_add_test(tc, streams_are_addressed_not_sequential);
#ifdef TUNE_CUDA
    tcase_add_test(tc, philox_matches_curand_host_generator);
#endif
    suite_add_tcase(s, tc);
    return run_suite(s);
}
