// A restricted unpickler: Python's pickle protocols 2-5 as data, never as code. Every GLOBAL
// must be on the caller's list, REDUCE and BUILD and persistent ids go to the caller's hooks, and
// any opcode outside the data subset (INST, OBJ, NEWOBJ, EXT*, the text protocol 0 opcodes...) is
// refused by name. Private to formats/.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace quant::pickle {

struct Value;
using Ref = std::shared_ptr<Value>;

struct Value {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Object };
  Kind kind = Kind::None;
  int64_t i = 0;                 // Int, Bool
  double f = 0;                  // Float
  std::string s;                 // Str, Bytes, Global ("module.name"), Object (its type, for errors)
  std::vector<Ref> items;        // Tuple, List; Dict: key, value, key, value, ...
  std::shared_ptr<void> object;  // Object: what a hook built
};

const char* kind_name(Value::Kind k);

struct Hooks {
  std::set<std::string> globals;                                      // "module.name" allowed
  std::function<Ref(const std::string& global, const Ref& args)> reduce;  // GLOBAL(args)
  std::function<Ref(const Ref& pid)> persistent_load;                  // BINPERSID
  std::function<void(const Ref& obj, const Ref& state)> build;         // BUILD
};

// Runs the pickle in `data` and returns what STOP leaves. `source` names the input in errors.
Ref load(const uint8_t* data, uint64_t size, const std::string& source, const Hooks& hooks);

}  // namespace quant::pickle
