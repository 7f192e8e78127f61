// A tiny assertion helper for the ctest executables: each test_*.cpp is one executable, exit code 0 = pass.
#pragma once
#include <cstdio>
#include <cstdlib>

inline int& tcclCheckFailures() { static int failures = 0; return failures; }

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
      ++tcclCheckFailures();                                                         \
    }                                                                                \
  } while (0)

#define CHECK_MSG(cond, ...)                                                         \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);  \
      std::fprintf(stderr, __VA_ARGS__);                                             \
      std::fprintf(stderr, "\n");                                                    \
      ++tcclCheckFailures();                                                         \
    }                                                                                \
  } while (0)

#define TEST_MAIN_RESULT()                                                           \
  (tcclCheckFailures() == 0 ? (std::printf("ok\n"), 0)                               \
                            : (std::fprintf(stderr, "%d check(s) failed\n", tcclCheckFailures()), 1))
