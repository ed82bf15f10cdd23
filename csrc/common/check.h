// Argument checks for the kernels. They are a backstop: the Python layer validates first and
// names the argument; these keep a bad call from ever reaching undefined behaviour.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace xmodal {

// std::invalid_argument becomes ValueError in Python (nanobind's exception translation).
template <typename... Parts>
[[noreturn]] void fail_argument(Parts&&... parts) {
  std::ostringstream message;
  (message << ... << std::forward<Parts>(parts));
  throw std::invalid_argument(message.str());
}

}  // namespace xmodal

#define XMODAL_CHECK(condition, ...)                        \
  do {                                                      \
    if (!(condition)) ::xmodal::fail_argument(__VA_ARGS__); \
  } while (0)
