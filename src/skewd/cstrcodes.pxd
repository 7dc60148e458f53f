# Declarations of csrc/strcodes.h.
from libc.stdint cimport int64_t, int32_t, uint8_t, uint64_t

cdef extern from "strcodes.h" nogil:
    struct skw_strcodes_slot:
        uint64_t word
        int32_t len
        int32_t code1

    struct skw_strcodes:
        int64_t *first
        skw_strcodes_slot *slots
        int32_t cap
        int32_t nslots
        int32_t n
        int32_t null_code

    int skw_strcodes_encode(skw_strcodes *d, const int32_t *offsets, const uint8_t *data,
                            int64_t data_len, const uint8_t *valid, int64_t valid_off, int64_t lo,
                            int64_t hi, int32_t *codes)
    int skw_strcodes_remap(int32_t *codes, int64_t n, const int32_t *lut, int32_t nlut)
    int skw_strcodes_cross(const int32_t *a, const int32_t *b, int64_t n, int32_t na, int32_t nb,
                           int64_t *counts)
