/* One counter-based generator for all randomness: Philox-4x32-10, the
 * generator cuRAND also implements. A value is addressed by (seed, stream,
 * index), so LoRA init, dropout masks and shuffles are reproducible and
 * independent of thread count, order of calls and backend. */
#ifndef TUNE_RNG_H
#define TUNE_RNG_H

#include <stdint.h>

#include "tune/kernels.h"

/* Well-known streams, so no two users draw the same numbers. */
enum {
    TUNE_STREAM_LORA_INIT = 1,
    TUNE_STREAM_DROPOUT = 2,
    TUNE_STREAM_SHUFFLE = 3,
    TUNE_STREAM_SPLIT = 4,
    TUNE_STREAM_SAMPLING = 5,
};

TUNE_HD static inline void tune_philox_round(uint32_t ctr[4], const uint32_t key[2])
{
    const uint64_t p0 = (uint64_t)0xD2511F53u * ctr[0];
    const uint64_t p1 = (uint64_t)0xCD9E8D57u * ctr[2];
    const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    const uint32_t c1 = ctr[1], c3 = ctr[3];
    ctr[0] = hi1 ^ c1 ^ key[0];
    ctr[1] = lo1;
    ctr[2] = hi0 ^ c3 ^ key[1];
    ctr[3] = lo0;
}

/* Philox-4x32-10 block function: 4 random words from a 128-bit counter and a 64-bit key. */
TUNE_HD static inline void tune_philox4x32_10(const uint32_t counter[4], const uint32_t key_in[2],
                                              uint32_t out[4])
{
    uint32_t ctr[4] = {counter[0], counter[1], counter[2], counter[3]};
    uint32_t key[2] = {key_in[0], key_in[1]};
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            key[0] += 0x9E3779B9u;
            key[1] += 0xBB67AE85u;
        }
        tune_philox_round(ctr, key);
    }
    out[0] = ctr[0]; out[1] = ctr[1]; out[2] = ctr[2]; out[3] = ctr[3];
}

/* The index-th 32-bit word of stream `stream` under `seed`: block index/4
 * of the counter (index/4 low, index/4 high, stream low, stream high). */
TUNE_HD static inline uint32_t tune_rng_u32(uint64_t seed, uint64_t stream, uint64_t index)
{
    const uint64_t block = index >> 2;
    const uint32_t counter[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                                 (uint32_t)(stream >> 32)};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t out[4];
    tune_philox4x32_10(counter, key, out);
    return out[index & 3];
}

/* Uniform in (0, 1], the convention of curand_uniform: u * 2^-32 + 2^-33. */
TUNE_HD static inline float tune_rng_word_to_uniform(uint32_t u)
{
    return (float)u * 2.3283064365386963e-10f + 1.1641532182693481e-10f;
}

TUNE_HD static inline float tune_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index)
{
    return tune_rng_word_to_uniform(tune_rng_u32(seed, stream, index));
}

#endif
