/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), for the C probe
 * responder, which authenticates requests without calling back into Python.
 * Short messages only matter here; nothing is tuned. */
#ifndef SKW_SHA256_H
#define SKW_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SKW_SHA256_LEN 32
#define SKW_SHA256_BLOCK 64

struct skw_sha256 {
    uint32_t h[8];
    uint64_t bytes;                  /* message length so far */
    unsigned char buf[SKW_SHA256_BLOCK];
    size_t nbuf;
};

void skw_sha256_init(struct skw_sha256 *c);
void skw_sha256_update(struct skw_sha256 *c, const void *data, size_t len);
void skw_sha256_final(struct skw_sha256 *c, unsigned char out[SKW_SHA256_LEN]);
void skw_sha256(const void *data, size_t len, unsigned char out[SKW_SHA256_LEN]);

/* HMAC-SHA256 with a key of any length (longer than a block: hashed first). */
void skw_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
                     unsigned char out[SKW_SHA256_LEN]);

/* 1 when the two MACs are equal, in time that does not depend on where
 * they differ. */
int skw_mac_equal(const unsigned char *a, const unsigned char *b, size_t len);

#endif
