/* SPDX-License-Identifier: MIT */
/** @brief Suite fixture for the graph tests: the bundled model, loaded and registered once. */
#ifndef APB_TEST_MODEL_H
#define APB_TEST_MODEL_H

#include <criterion/criterion.h>

#include "graph/apb_graph.h"
#include "tests/test_util.h"

static apb_model model;

static void up(void)
{
    apb_err err = {0};
    if (apb_model_load(t_model_dir(), &model, &err))
        cr_assert_fail("loading %s: %s (run scripts/setup.sh)", t_model_dir(), err.msg);
    t_runtime_up();
    if (apb_model_register(&model, &err))
        cr_assert_fail("%s", err.msg);
}

static void down(void)
{
    apb_model_free(&model);
    apb_runtime_shutdown();
}

#endif
