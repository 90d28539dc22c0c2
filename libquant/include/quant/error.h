// Error reporting: the library throws quant::Error with context; only cli/ catches.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace quant {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace quant

// Checks a condition that depends on input data; throws quant::Error with the formatted message.
#define QUANT_CHECK(cond, ...)          \
  do {                                  \
    if (!(cond)) ::quant::fail(__VA_ARGS__); \
  } while (0)
