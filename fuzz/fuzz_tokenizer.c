/* SPDX-License-Identifier: MIT */
/**
 * @brief libFuzzer target: tokenizer.json loading, and encoding arbitrary bytes with the bundled
 * model's tokenizer. Input byte 0 selects the mode: even = parse the rest as tokenizer.json;
 * odd = encode the rest with the tokenizer at $APB_FUZZ_TOKENIZER (loaded once), then decode.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "models/tokenizer.h"

static apb_tokenizer *real;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    apb_err err = {0};
    if (!(data[0] & 1)) {
        apb_tokenizer *t = NULL;
        if (apb_tokenizer_parse((const char *)data + 1, size - 1, "fuzz", &t, &err) == APB_OK) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (apb_tokenizer_encode(t, "Hello world 123 <|x|>", 21, 1, &ids, &n, &err) == APB_OK) {
                char *s = apb_tokenizer_decode(t, ids, n, 0);
                free(s);
            }
            free(ids);
            apb_tokenizer_free(t);
        }
        return 0;
    }
    if (!real) {
        const char *path = getenv("APB_FUZZ_TOKENIZER");
        if (!path || apb_tokenizer_load(path, &real, &err) != APB_OK)
            abort(); /* the harness is misconfigured, not a finding */
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if (apb_tokenizer_encode(real, (const char *)data + 1, size - 1, 0, &ids, &n, &err) == APB_OK) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= apb_tokenizer_vocab_size(real))
                __builtin_trap();
        char *s = apb_tokenizer_decode(real, ids, n, 0);
        /* valid UTF-8 input must round-trip exactly through byte-level BPE */
        if (s && (strlen(s) != size - 1 || memcmp(s, data + 1, size - 1) != 0) &&
            !memchr(data + 1, 0, size - 1))
            __builtin_trap();
        free(s);
    }
    free(ids);
    return 0;
}
