/* SPDX-License-Identifier: MIT */
/**
 * @brief The APB_* on/off switches read from the environment (docs/DESIGN.md and README list
 * them): "0" turns a switch off, "1" on, anything else (or unset) leaves its default. Each call
 * site reads its variable once, through a cache it owns (initialized to -1); the switches are
 * meant for comparisons between runs, not for changes inside one.
 */
#ifndef APB_ENV_H
#define APB_ENV_H

#include <stdlib.h>
#include <string.h>

static inline int apb_env_switch(const char *name, int dflt, int *cache)
{
    if (*cache < 0) {
        const char *e = getenv(name);
        *cache = e && !strcmp(e, "0") ? 0 : e && !strcmp(e, "1") ? 1 : dflt;
    }
    return *cache;
}

#endif
