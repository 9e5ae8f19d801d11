/* SPDX-License-Identifier: MIT */
/** @brief Memory-mapped safetensors files (single file or sharded with an index json). */
#ifndef APB_SAFETENSORS_H
#define APB_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/apb_error.h"

enum apb_dtype { APB_F32 = 0, APB_F16 = 1, APB_BF16 = 2, APB_F64 = 3, APB_I32 = 4, APB_I64 = 5,
                 APB_U8 = 6, APB_I8 = 7, APB_BOOL = 8, APB_I16 = 9, APB_U16 = 10 };

size_t apb_dtype_size(enum apb_dtype t);
const char *apb_dtype_name(enum apb_dtype t);

#define APB_ST_MAX_DIMS 8

typedef struct apb_st_tensor {
    char *name;
    enum apb_dtype dtype;
    int ndim;
    int64_t shape[APB_ST_MAX_DIMS];
    const void *data;      /* into the mapping; NOT necessarily aligned */
    size_t nbytes;         /* == product(shape) * dtype size, checked */
    int file;              /* index into the set's files */
} apb_st_tensor;

typedef struct apb_st_set apb_st_set;

/* Opens <dir>/model.safetensors.index.json (sharded) or else <dir>/model.safetensors,
 * or every *.safetensors in dir when neither exists. */
int apb_st_open_dir(const char *dir, apb_st_set **out, apb_err *err);
int apb_st_open_file(const char *path, apb_st_set **out, apb_err *err);

/* Parses a whole file image held in memory (no copy; buf must outlive the result).
 * Every header field is validated against len: offsets in range, no overlap, sizes
 * consistent with dtype and shape, no overflow. Used by the loader and the fuzzer. */
int apb_st_parse(const uint8_t *buf, size_t len, const char *what, apb_st_set **out, apb_err *err);

size_t apb_st_count(const apb_st_set *s);
const apb_st_tensor *apb_st_at(const apb_st_set *s, size_t i);
const apb_st_tensor *apb_st_find(const apb_st_set *s, const char *name); /* NULL if absent */
void apb_st_close(apb_st_set *s);

/* Converts n elements of src (F32, F16 or BF16) to float. */
int apb_to_f32(float *dst, const void *src, enum apb_dtype t, size_t n, apb_err *err);

#endif
