#include "error.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace dalle {

void fail(const char* op, const char* file, int line, const char* fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  vsnprintf(buf, sizeof(buf), fmt, args);
  va_end(args);
  // Keep the path from the repository root (native/...), not the build machine's absolute path.
  const char* rel = strstr(file, "native/");
  std::string message = std::string(op) + ": " + buf + " [" + (rel ? rel : file) + ":" + std::to_string(line) + "]";
  throw KernelError(op, message);
}

std::string shape_str(const int64_t* dims, int rank) {
  std::string s = "(";
  for (int i = 0; i < rank; i++) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + ")";
}

}  // namespace dalle
