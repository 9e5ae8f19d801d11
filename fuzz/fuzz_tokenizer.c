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
/* Bytes whose byte-level symbol the vocabulary lacks (SmolLM2's lacks 0x04, 0x06, 0x13, ...): text
 * holding them cannot round-trip, with `tokenizers` as with us; found by this fuzzer. */
static unsigned char lossy[256];

static void find_lossy_bytes(void)
{
    apb_err err = {0};
    for (int b = 1; b < 0x80; b++) { /* single-byte characters: encode + decode must give b back */
        char c = (char)b;
        int32_t *ids = NULL;
        size_t n = 0;
        char *s = NULL;
        if (apb_tokenizer_encode(real, &c, 1, 0, &ids, &n, &err) == APB_OK)
            s = apb_tokenizer_decode(real, ids, n, 0);
        lossy[b] = !s || strlen(s) != 1 || s[0] != c;
        free(s);
        free(ids);
    }
    /* lead bytes of multi-byte characters: judged by a character that starts with each */
    for (int b = 0xc2; b <= 0xf4; b++) {
        char ch[4] = {(char)b, (char)0x80, (char)0x80, (char)0x80};
        size_t len = b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
        if (b == 0xe0 || b == 0xf0)
            ch[1] = (char)0xa0 + (b == 0xf0 ? -0x10 : 0); /* avoid overlong forms */
        int32_t *ids = NULL;
        size_t n = 0;
        char *s = NULL;
        if (apb_tokenizer_encode(real, ch, len, 0, &ids, &n, &err) == APB_OK)
            s = apb_tokenizer_decode(real, ids, n, 0);
        lossy[b] = !s || strlen(s) != len || memcmp(s, ch, len) != 0;
        free(s);
        free(ids);
    }
}

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
        find_lossy_bytes();
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if (apb_tokenizer_encode(real, (const char *)data + 1, size - 1, 0, &ids, &n, &err) == APB_OK) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= apb_tokenizer_vocab_size(real))
                __builtin_trap();
        char *s = apb_tokenizer_decode(real, ids, n, 0);
        /* valid UTF-8 input must round-trip exactly through byte-level BPE, unless it holds a
         * byte the vocabulary cannot represent (or a NUL, which ends the C string) */
        int check = !memchr(data + 1, 0, size - 1);
        for (size_t i = 1; i < size && check; i++)
            if (lossy[data[i]])
                check = 0;
        if (s && check && (strlen(s) != size - 1 || memcmp(s, data + 1, size - 1) != 0))
            __builtin_trap();
        free(s);
    }
    free(ids);
    return 0;
}
