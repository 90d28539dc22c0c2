// Restricted unpickler (CPython's Lib/pickle.py opcodes, protocol 2 and later as torch.save
// writes them). The stack machine holds data only: nothing named in the pickle is called except
// through the hooks, which accept only the globals listed.
#include "pickle.h"

#include <bit>
#include <cstring>
#include <map>

#include "quant/error.h"
#include "quant/formats/mmap.h"

namespace quant::pickle {

const char* kind_name(Value::Kind k) {
  static const char* names[] = {"None", "bool", "int", "float", "str", "bytes", "tuple", "list", "dict", "global", "object"};
  return names[static_cast<int>(k)];
}

namespace {

Ref make(Value::Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}
Ref make_int(int64_t i) {
  auto v = make(Value::Kind::Int);
  v->i = i;
  return v;
}
Ref make_str(Value::Kind k, std::string_view s) {
  auto v = make(k);
  v->s = std::string(s);
  return v;
}

class Machine {
 public:
  Machine(const uint8_t* data, uint64_t size, const std::string& source, const Hooks& hooks)
      : cur_(data, size, source), source_(source), hooks_(hooks) {}

  Ref run() {
    for (;;) {
      const uint64_t at = cur_.pos();
      const uint8_t op = cur_.read<uint8_t>("opcode");
      if (op == '.') {
        QUANT_CHECK(stack_.size() == 1 && marks_.empty(), "{}: STOP at byte {} with {} values on the stack", source_, at,
                    stack_.size());
        return stack_.back();
      }
      step(op, at);
    }
  }

 private:
  Ref pop(uint64_t at) {
    QUANT_CHECK(stack_.size() > floor(), "{}: pickle stack underflow at byte {}", source_, at);
    Ref v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Ref& top(uint64_t at) {
    QUANT_CHECK(stack_.size() > floor(), "{}: pickle stack underflow at byte {}", source_, at);
    return stack_.back();
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  std::vector<Ref> pop_mark(uint64_t at) {
    QUANT_CHECK(!marks_.empty(), "{}: pickle pops a MARK that was never pushed at byte {}", source_, at);
    std::vector<Ref> items(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  Ref tuple(std::vector<Ref> items) {
    auto t = make(Value::Kind::Tuple);
    t->items = std::move(items);
    return t;
  }
  void put(uint64_t idx) {
    QUANT_CHECK(!stack_.empty(), "{}: memo put on an empty stack", source_);
    memo_[idx] = stack_.back();
  }
  Ref get(uint64_t idx, uint64_t at) {
    auto it = memo_.find(idx);
    QUANT_CHECK(it != memo_.end(), "{}: pickle memo {} read before it was written at byte {}", source_, idx, at);
    return it->second;
  }
  void set_items(Ref& dict, const std::vector<Ref>& kv, uint64_t at) {
    QUANT_CHECK(dict->kind == Value::Kind::Dict, "{}: SETITEM(S) on a {} at byte {}", source_, kind_name(dict->kind), at);
    QUANT_CHECK(kv.size() % 2 == 0, "{}: SETITEMS with an odd number of values at byte {}", source_, at);
    dict->items.insert(dict->items.end(), kv.begin(), kv.end());
  }
  void append(Ref& list, const std::vector<Ref>& v, uint64_t at) {
    QUANT_CHECK(list->kind == Value::Kind::List, "{}: APPEND(S) on a {} at byte {}", source_, kind_name(list->kind), at);
    list->items.insert(list->items.end(), v.begin(), v.end());
  }
  void global(const std::string& module, const std::string& name, uint64_t at) {
    const std::string full = module + "." + name;
    QUANT_CHECK(hooks_.globals.count(full),
                "{}: the pickle names the global {} at byte {}, which a state_dict never needs; refused (a pickle "
                "is a program: only tensors, storages and OrderedDict are accepted)",
                source_, full, at);
    stack_.push_back(make_str(Value::Kind::Global, full));
  }
  std::string line(const char* what) {
    std::string s;
    for (char ch; (ch = static_cast<char>(cur_.read<uint8_t>(what))) != '\n';) s += ch;
    return s;
  }

  void step(uint8_t op, uint64_t at);

  ByteCursor cur_;
  std::string source_;
  const Hooks& hooks_;
  std::vector<Ref> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, Ref> memo_;
};

void Machine::step(uint8_t op, uint64_t at) {
  using K = Value::Kind;
  switch (op) {
    case 0x80: {  // PROTO
      const uint8_t v = cur_.read<uint8_t>("protocol");
      QUANT_CHECK(v >= 2 && v <= 5, "{}: pickle protocol {} (2 to 5 are read)", source_, v);
      return;
    }
    case 0x95: cur_.read<uint64_t>("frame length"); return;  // FRAME: a hint only
    case '(': marks_.push_back(stack_.size()); return;
    case '}': stack_.push_back(make(K::Dict)); return;
    case ']': stack_.push_back(make(K::List)); return;
    case ')': stack_.push_back(make(K::Tuple)); return;
    case 'N': stack_.push_back(make(K::None)); return;
    case 0x88: case 0x89: {  // NEWTRUE, NEWFALSE
      auto b = make(K::Bool);
      b->i = op == 0x88;
      stack_.push_back(b);
      return;
    }
    case 'K': stack_.push_back(make_int(cur_.read<uint8_t>("BININT1"))); return;
    case 'M': stack_.push_back(make_int(cur_.read<uint16_t>("BININT2"))); return;
    case 'J': stack_.push_back(make_int(cur_.read<int32_t>("BININT"))); return;
    case 0x8a: {  // LONG1: n little-endian two's-complement bytes
      const uint8_t n = cur_.read<uint8_t>("LONG1 length");
      QUANT_CHECK(n <= 8, "{}: LONG1 of {} bytes at byte {} (at most 8 are read)", source_, n, at);
      const std::string_view b = cur_.bytes(n, "LONG1");
      uint64_t u = 0;
      for (int k = n - 1; k >= 0; --k) u = (u << 8) | static_cast<uint8_t>(b[static_cast<size_t>(k)]);
      if (n > 0 && n < 8 && (static_cast<uint8_t>(b[n - 1]) & 0x80)) u |= ~uint64_t{0} << (8 * n);
      stack_.push_back(make_int(static_cast<int64_t>(u)));
      return;
    }
    case 'G': {  // BINFLOAT: big-endian double
      uint64_t u = cur_.read<uint64_t>("BINFLOAT");
      if constexpr (std::endian::native == std::endian::little) u = __builtin_bswap64(u);
      auto f = make(K::Float);
      std::memcpy(&f->f, &u, 8);
      stack_.push_back(f);
      return;
    }
    case 'X': stack_.push_back(make_str(K::Str, cur_.bytes(cur_.read<uint32_t>("BINUNICODE length"), "BINUNICODE"))); return;
    case 0x8c: stack_.push_back(make_str(K::Str, cur_.bytes(cur_.read<uint8_t>("SHORT_BINUNICODE length"), "SHORT_BINUNICODE"))); return;
    case 0x8d: stack_.push_back(make_str(K::Str, cur_.bytes(cur_.read<uint64_t>("BINUNICODE8 length"), "BINUNICODE8"))); return;
    case 'U': stack_.push_back(make_str(K::Str, cur_.bytes(cur_.read<uint8_t>("SHORT_BINSTRING length"), "SHORT_BINSTRING"))); return;
    case 'T': stack_.push_back(make_str(K::Str, cur_.bytes(cur_.read<uint32_t>("BINSTRING length"), "BINSTRING"))); return;
    case 'C': stack_.push_back(make_str(K::Bytes, cur_.bytes(cur_.read<uint8_t>("SHORT_BINBYTES length"), "SHORT_BINBYTES"))); return;
    case 'B': stack_.push_back(make_str(K::Bytes, cur_.bytes(cur_.read<uint32_t>("BINBYTES length"), "BINBYTES"))); return;
    case 'q': put(cur_.read<uint8_t>("BINPUT")); return;
    case 'r': put(cur_.read<uint32_t>("LONG_BINPUT")); return;
    case 0x94: put(memo_.size()); return;  // MEMOIZE
    case 'h': stack_.push_back(get(cur_.read<uint8_t>("BINGET"), at)); return;
    case 'j': stack_.push_back(get(cur_.read<uint32_t>("LONG_BINGET"), at)); return;
    case 't': stack_.push_back(tuple(pop_mark(at))); return;
    case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
      std::vector<Ref> items(op - 0x84);
      for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop(at);
      stack_.push_back(tuple(std::move(items)));
      return;
    }
    case 's': {
      Ref v = pop(at), k = pop(at);
      set_items(top(at), {k, v}, at);
      return;
    }
    case 'u': {
      std::vector<Ref> kv = pop_mark(at);
      set_items(top(at), kv, at);
      return;
    }
    case 'a': {
      Ref v = pop(at);
      append(top(at), {v}, at);
      return;
    }
    case 'e': {
      std::vector<Ref> v = pop_mark(at);
      append(top(at), v, at);
      return;
    }
    case 'c': {  // GLOBAL "module\nname\n"
      const std::string module = line("GLOBAL module");
      global(module, line("GLOBAL name"), at);
      return;
    }
    case 0x93: {  // STACK_GLOBAL
      Ref name = pop(at), module = pop(at);
      QUANT_CHECK(name->kind == K::Str && module->kind == K::Str, "{}: STACK_GLOBAL of non-strings at byte {}", source_, at);
      global(module->s, name->s, at);
      return;
    }
    case 'R': {  // REDUCE: callable(*args), through the hook
      Ref args = pop(at), fn = pop(at);
      QUANT_CHECK(fn->kind == K::Global && args->kind == K::Tuple, "{}: REDUCE of a {} with {} at byte {}", source_,
                  kind_name(fn->kind), kind_name(args->kind), at);
      Ref out = hooks_.reduce(fn->s, args);
      QUANT_CHECK(out != nullptr, "{}: {} cannot be called at byte {}", source_, fn->s, at);
      stack_.push_back(out);
      return;
    }
    case 'b': {  // BUILD: obj.__setstate__(state), through the hook
      Ref state = pop(at);
      hooks_.build(top(at), state);
      return;
    }
    case 'Q': {  // BINPERSID
      Ref pid = pop(at);
      stack_.push_back(hooks_.persistent_load(pid));
      return;
    }
    default:
      fail("{}: pickle opcode 0x{:02x} ('{}') at byte {} is not accepted (only the data opcodes a state_dict uses are)",
           source_, op, op >= 32 && op < 127 ? static_cast<char>(op) : '?', at);
  }
}

}  // namespace

Ref load(const uint8_t* data, uint64_t size, const std::string& source, const Hooks& hooks) {
  return Machine(data, size, source, hooks).run();
}

}  // namespace quant::pickle
