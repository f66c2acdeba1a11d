/* SHA-256 for the run manifest and data caches: OpenSSL's, which uses the
 * CPU's SHA instructions (a run hashes its whole model file; FIPS 180-4 in
 * plain C took 0.36 s of a launch for a 98 MB file, OpenSSL 0.07 s). Its
 * SHA256_* calls keep the state in the caller's struct, so hashing allocates
 * nothing and a caller that returns early has nothing to release; OpenSSL 3
 * marks them deprecated in favour of EVP, which allocates. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "tune/util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void tune_sha256_init(tune_sha256 *s) { SHA256_Init(&s->ctx); }

void tune_sha256_update(tune_sha256 *s, const void *data, size_t len) { SHA256_Update(&s->ctx, data, len); }

void tune_sha256_final(tune_sha256 *s, uint8_t digest[32]) { SHA256_Final(digest, &s->ctx); }

static void to_hex(const uint8_t digest[32], char hex[65])
{
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

void tune_sha256_hex(const void *data, size_t len, char hex[65])
{
    tune_sha256 s;
    uint8_t digest[32];
    tune_sha256_init(&s);
    tune_sha256_update(&s, data, len);
    tune_sha256_final(&s, digest);
    to_hex(digest, hex);
}

tune_status tune_sha256_file_hex(const char *path, char hex[65], tune_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return tune_fail_input(err, path, "cannot open: %s", strerror(errno));
    tune_sha256 s;
    tune_sha256_init(&s);
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) tune_sha256_update(&s, buf, n);
    int failed = ferror(f);
    fclose(f);
    if (failed) return tune_fail_run(err, path, "read error while hashing");
    uint8_t digest[32];
    tune_sha256_final(&s, digest);
    to_hex(digest, hex);
    return TUNE_OK;
}
