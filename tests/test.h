/* tests/test.h: the in-tree test runner.
 *
 *   KVX_TEST(name) { ... KVX_CHECK(cond); KVX_CHECK_NEAR(a, b, tol); ... }
 *
 * Tests register themselves at load time; `build/kvx-tests [substring]` runs those whose name
 * contains the substring and ends with the line "N passed, M failed".  A check that fails
 * prints file:line and the values, and marks the test failed (the test continues). */
#ifndef KVX_TESTS_TEST_H
#define KVX_TESTS_TEST_H

#include <math.h>
#include <stdio.h>

typedef void (*kvx_test_fn)(void);
void kvx_test_register(const char *name, const char *file, kvx_test_fn fn);
void kvx_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Path of a file under tests/fixtures (the runner is started from the repository root or
 * with KVX_FIXTURES set). */
const char *kvx_test_fixture(const char *name);
/* Path of the default model, or NULL when it is not there (tests that need it are skipped). */
const char *kvx_test_model_path(void);
void kvx_test_skip(const char *why);

#define KVX_TEST(name)                                                                     \
    static void name(void);                                                                \
    __attribute__((constructor)) static void name##_register(void)                         \
    {                                                                                      \
        kvx_test_register(#name, __FILE__, name);                                          \
    }                                                                                      \
    static void name(void)

#define KVX_CHECK(cond)                                                                    \
    do {                                                                                   \
        if (!(cond))                                                                       \
            kvx_test_fail(__FILE__, __LINE__, "check failed: %s", #cond);                  \
    } while (0)

#define KVX_CHECK_EQ_INT(a, b)                                                             \
    do {                                                                                   \
        long long kvx_a_ = (long long)(a), kvx_b_ = (long long)(b);                        \
        if (kvx_a_ != kvx_b_)                                                              \
            kvx_test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, kvx_a_,    \
                          kvx_b_);                                                         \
    } while (0)

#define KVX_CHECK_NEAR(a, b, tol)                                                          \
    do {                                                                                   \
        double kvx_a_ = (double)(a), kvx_b_ = (double)(b), kvx_t_ = (double)(tol);         \
        if (!(fabs(kvx_a_ - kvx_b_) <= kvx_t_))                                            \
            kvx_test_fail(__FILE__, __LINE__, "%s ~ %s: %.9g vs %.9g (tol %.3g)", #a, #b,  \
                          kvx_a_, kvx_b_, kvx_t_);                                         \
    } while (0)

#endif
