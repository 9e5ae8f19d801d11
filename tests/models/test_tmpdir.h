/* SPDX-License-Identifier: MIT */
/** @brief A fresh temporary directory per test (`tmp`), removed with its files afterwards. */
#ifndef APB_TEST_TMPDIR_H
#define APB_TEST_TMPDIR_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmp[PATH_MAX];

static void setup(void)
{
    snprintf(tmp, sizeof tmp, "%s/apb_test_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    cr_assert(mkdtemp(tmp), "mkdtemp failed");
}

static void teardown(void)
{
    DIR *d = opendir(tmp);
    if (!d)
        return;
    struct dirent *e;
    char p[PATH_MAX + 256];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", tmp, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(tmp);
}

#endif
