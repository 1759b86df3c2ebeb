// User input quoted in an error message, bounded. Every message that repeats what the
// user gave (a config value, a path, a command-line word) passes it through clip(), so
// a 100 KB value cannot turn one error line into 100 KB of output, and a value holding
// a newline cannot turn it into two lines.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace furnace::io {

// Longest quote kept, in bytes of the input.
inline constexpr std::size_t kClipBytes = 160;

// `s` with control characters escaped (\n, \t, \xNN) and, when longer than `max`
// bytes, cut to its first `max` bytes followed by "...(N bytes)".
inline std::string clip(std::string_view s, std::size_t max = kClipBytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) out += std::string("\\x") + kHex[c >> 4] + kHex[c & 15];
    else out += char(c);
  }
  if (s.size() > max) out += "...(" + std::to_string(s.size()) + " bytes)";
  return out;
}

}  // namespace furnace::io
