/*
 * strcodes.h - small integer codes for the values of an Arrow string column.
 *
 * A column with few distinct values (node names, stages, clock names) is
 * read once, row by row, and each row gets the code of its value: codes are
 * given in order of first appearance, and for each code the row where its
 * value was first met is kept, so the caller reads the values themselves
 * from the column (no strings are copied here). A null row gets a code of
 * its own (null_code). The dictionary lives in caller-provided buffers, so
 * one column can be encoded in pieces on several threads, each piece with
 * its own dictionary, and the pieces' codes unified afterwards with
 * skw_strcodes_remap.
 *
 * Every function returns 0 or a negative errno; nothing prints or allocates.
 */
#ifndef SKW_STRCODES_H
#define SKW_STRCODES_H

#include <stdint.h>

/* one entry of the hash table: the value's length and first 8 bytes (all
 * of it when it is that short, so short values compare as one word) */
struct skw_strcodes_slot {
    uint64_t word;
    int32_t len;
    int32_t code1;      /* code + 1; 0 = empty */
};

/* the values met so far; the caller provides the buffers and zeroes slots */
struct skw_strcodes {
    int64_t *first;     /* [cap]: row where each code's value was first met */
    struct skw_strcodes_slot *slots;   /* [nslots] */
    int32_t cap;        /* most distinct values (nulls included) */
    int32_t nslots;     /* a power of two, at least 2 * cap */
    int32_t n;          /* codes given so far; start at 0 */
    int32_t null_code;  /* the code of null, -1 until a null is met; start at -1 */
};

/* Codes of rows [lo, hi) of a string column: offsets and data (data_len
 * bytes) are the column's buffers (offsets already advanced by the array's
 * offset), valid its validity bitmap or NULL, valid_off the bit of row 0 in
 * it. Writes
 * codes[i - lo]. -E2BIG: more than cap distinct values (codes then partial);
 * -EINVAL: bad sizes. */
int skw_strcodes_encode(struct skw_strcodes *d, const int32_t *offsets, const uint8_t *data,
                        int64_t data_len, const uint8_t *valid, int64_t valid_off, int64_t lo,
                        int64_t hi, int32_t *codes);

/* codes[i] = lut[codes[i]] for i in [0, n); codes outside [0, nlut) -> -EINVAL
 * (those before it are already mapped). */
int skw_strcodes_remap(int32_t *codes, int64_t n, const int32_t *lut, int32_t nlut);

/* counts[a[i] * nb + b[i]] += 1 for i in [0, n) (a joint histogram of two
 * code columns); codes out of [0, na) x [0, nb) -> -EINVAL. */
int skw_strcodes_cross(const int32_t *a, const int32_t *b, int64_t n, int32_t na, int32_t nb,
                       int64_t *counts);

#endif
