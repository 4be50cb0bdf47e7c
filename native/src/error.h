// Native errors: every failed check throws dalle::KernelError naming the op, what was wrong and the source line.
// The N-API layer (addon.cc) turns it into a JavaScript Error; nothing in the addon aborts the process.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace dalle {

struct KernelError : std::runtime_error {
  std::string op;
  KernelError(const std::string& op_, const std::string& message) : std::runtime_error(message), op(op_) {}
};

// printf-style; the message gets " [file:line]" appended.
[[noreturn]] void fail(const char* op, const char* file, int line, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));

// "(2, 3, 4)" for error messages.
std::string shape_str(const int64_t* dims, int rank);

}  // namespace dalle

#define DALLE_CHECK(cond, op, ...)                                   \
  do {                                                               \
    if (!(cond)) ::dalle::fail((op), __FILE__, __LINE__, __VA_ARGS__); \
  } while (0)
