// bastion_fastcheck: proves a JSON document valid against a compiled *check program*.
//
// simdjson (Debian's libsimdjson) parses the body into its tape, validating the JSON text and
// its UTF-8; the program is then checked on that tape, with RE2 (Debian's libre2) for
// patterns. No Python object is built. The program is made in Python
// (bastion.openapi.fastcheck) from a JSON Schema that jsonschema-rs enforces, keeping only
// keywords whose meaning this file reproduces exactly.
//
// The answer is one-sided: True means the document is valid under that schema (the caller
// may forward it untouched); False means *not proven* (malformed, invalid, deeper than the
// limit, past the work budget, or something not decided here, such as a `format`), and the
// caller runs the full path: orjson and jsonschema-rs, which also write the error message.
// Every shortcut taken here must make the answer stricter, never laxer.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <re2/re2.h>
#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

constexpr uint8_t T_NULL = 1, T_BOOL = 2, T_INT = 4, T_NUM = 8, T_STR = 16, T_ARR = 32,
                  T_OBJ = 64, T_ALL = 127;
constexpr int NONE = -2;   // no keyword: anything is allowed
constexpr int FALSE_ = -1; // the false schema: nothing is allowed
// Node visits allowed per body: VISIT_FACTOR x its length + VISIT_FLOOR (allOf/anyOf visit a
// value again per member; nested combinations would otherwise cost exponential time).
constexpr size_t VISIT_FACTOR = 8, VISIT_FLOOR = 4096;
// A string or key scanned (regex, code points, map key) costs one visit per this many bytes:
// a value visited again through allOf/anyOf is charged for the bytes read each time.
constexpr size_t BYTES_PER_VISIT = 64;
// Nested check() calls at most: document depth x same-value allOf/anyOf chains, whatever the
// visit budget (a 1 MiB body allows 8M visits, far past any thread's stack).
constexpr size_t MAX_FRAMES = 4096;
// Bodies up to this size reuse the Checker's parser and buffer; larger ones get their own,
// freed after the call (simdjson keeps ~13 bytes per input byte of capacity).
constexpr size_t REUSE_MAX = 256 << 10;
constexpr __int128 EXACT_F64 = (__int128)1 << 53;

struct Num {
  bool is_int;
  __int128 i;
  double f;
};

// -1, 0, 1, or 2 when the comparison could be inexact (or NaN).
int compare(const Num &a, const Num &b) {
  if (a.is_int && b.is_int) return a.i < b.i ? -1 : (a.i > b.i ? 1 : 0);
  double x, y;
  if (a.is_int) {
    if (a.i > EXACT_F64 || a.i < -EXACT_F64) return 2;
    x = (double)a.i;
  } else {
    x = a.f;
  }
  if (b.is_int) {
    if (b.i > EXACT_F64 || b.i < -EXACT_F64) return 2;
    y = (double)b.i;
  } else {
    y = b.f;
  }
  if (x < y) return -1;
  if (x > y) return 1;
  if (x == y) return 0;
  return 2;
}

enum class ScalarKind { Null, Bool, Int, Str };
struct Scalar {
  ScalarKind kind;
  bool b = false;
  __int128 i = 0;
  std::string s;
};

struct KeyInfo {
  bool declared;
  int child;
  bool required;
  uint32_t slot = UINT32_MAX;  // among the node's names, the first 64 (every required one)
};

// Keys an object repeats. RFC 8259 leaves their meaning open: orjson keeps the last value,
// other parsers the first, so a body with a repeated key means different things to the
// gateway and to the upstream (a mass-assignment or ownership check made on one value, the
// other one used). Such a body is never proven; the Python side refuses or de-duplicates it.
// keys[mark:] are one object's names; true when no two are equal.
bool distinct(std::vector<std::string_view> &keys, size_t mark) {
  size_t n = keys.size() - mark;
  if (n < 2) return true;
  auto first = keys.begin() + (std::ptrdiff_t)mark;
  if (n <= 8) {
    for (auto a = first; a != keys.end(); ++a)
      for (auto b = a + 1; b != keys.end(); ++b)
        if (*a == *b) return false;
    return true;
  }
  std::sort(first, keys.end());
  return std::adjacent_find(first, keys.end()) == keys.end();
}

// Truncates a key list back to where an object's names started, however the object's check
// ends (a failed anyOf member leaves nothing behind for its parent's list).
struct KeysMark {
  std::vector<std::string_view> &keys;
  size_t mark;
  explicit KeysMark(std::vector<std::string_view> &k) : keys(k), mark(k.size()) {}
  ~KeysMark() {
    if (keys.size() != mark) keys.resize(mark);
  }
};

// True when some object in the document repeats a key (depth bounded by simdjson's parser).
bool repeats_a_key(element e, std::vector<std::string_view> &keys) {
  element_type t = e.type();
  if (t == element_type::ARRAY) {
    simdjson::dom::array items = e.get_array().value_unsafe();  // a copy: not a temporary's
    for (element item : items)
      if (repeats_a_key(item, keys)) return true;
    return false;
  }
  if (t != element_type::OBJECT) return false;
  simdjson::dom::object fields = e.get_object().value_unsafe();
  {
    KeysMark guard(keys);
    for (auto field : fields) keys.push_back(field.key);
    if (!distinct(keys, guard.mark)) return true;
  }
  for (auto field : fields)
    if (repeats_a_key(field.value, keys)) return true;
  return false;
}

struct Node {
  bool never = false;
  bool plain = true;  // neither never nor all_of/any_of: a scalar is decided without a frame
  uint8_t types = T_ALL;
  std::vector<std::pair<std::string, KeyInfo>> keys;
  std::unordered_map<std::string, KeyInfo> key_map;  // used when there are many keys
  bool use_map = false;
  uint64_t required_slots = 0;  // the slot bits of the required names
  int additional = NONE;
  std::unique_ptr<RE2> key_not;
  std::optional<size_t> max_props;
  int items = NONE;
  std::vector<int> prefix;
  std::optional<size_t> min_items, max_items, min_len, max_len;
  std::unique_ptr<RE2> pattern;
  std::unique_ptr<RE2> not_str;
  size_t not_str_min_len = 0;
  bool unproven_strings = false;
  std::optional<Num> min, max, xmin, xmax;
  std::optional<__int128> multiple_of;
  std::optional<std::vector<Scalar>> enumeration;
  std::vector<int> all_of, any_of;
};

struct Program {
  std::vector<Node> nodes;
  Node any;  // what NONE stands for: any value, still walked so that its depth is bounded
  int root = 0;
  size_t max_depth = 0;
};

// ---------------------------------------------------------------------------------------------
// Building a program from its JSON description. Errors are messages (Python raises them).

struct BuildError {
  std::string message;
};

[[noreturn]] void fail_build(std::string message) { throw BuildError{std::move(message)}; }

int64_t as_int(element v, const char *what) {
  int64_t i;
  if (v.get_int64().get(i)) fail_build(std::string(what) + ": not an integer");
  return i;
}

int as_index(element v, size_t count, const char *what) {
  int64_t i = as_int(v, what);
  if (i == FALSE_ || i == NONE || (i >= 0 && (uint64_t)i < count)) return (int)i;
  fail_build(std::string(what) + ": index out of range");
}

bool as_bool(element v, const char *what) {
  bool b;
  if (v.get_bool().get(b)) fail_build(std::string(what) + ": not a boolean");
  return b;
}

size_t as_count(element v, const char *what) {
  uint64_t u;
  if (v.get_uint64().get(u)) fail_build(std::string(what) + ": not a count");
  return (size_t)u;
}

Num as_num(element v, const char *what) {
  int64_t i;
  uint64_t u;
  double f;
  if (!v.get_int64().get(i)) return Num{true, i, 0};
  if (!v.get_uint64().get(u)) return Num{true, u, 0};
  if (!v.get_double().get(f) && std::isfinite(f)) return Num{false, 0, f};
  fail_build(std::string(what) + ": not a number");
}

std::string_view as_str(element v, const char *what) {
  std::string_view s;
  if (v.get_string().get(s)) fail_build(std::string(what) + ": not a string");
  return s;
}

std::unique_ptr<RE2> regex(element v, const char *what) {
  std::string_view text = as_str(v, what);
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(8 << 20);
  auto re = std::make_unique<RE2>(re2::StringPiece(text.data(), text.size()), options);
  if (!re->ok()) fail_build(std::string(what) + ": " + re->error());
  return re;
}

std::vector<int> indices(element v, size_t count, const char *what) {
  simdjson::dom::array arr;
  if (v.get_array().get(arr)) fail_build(std::string(what) + ": not a list");
  std::vector<int> out;
  for (element x : arr) out.push_back(as_index(x, count, what));
  return out;
}

Scalar scalar(element v) {
  Scalar s;
  int64_t i;
  uint64_t u;
  bool b;
  std::string_view text;
  if (v.is_null()) {
    s.kind = ScalarKind::Null;
  } else if (!v.get_bool().get(b)) {
    s.kind = ScalarKind::Bool;
    s.b = b;
  } else if (!v.get_int64().get(i)) {
    s.kind = ScalarKind::Int;
    s.i = i;
  } else if (!v.get_uint64().get(u)) {
    s.kind = ScalarKind::Int;
    s.i = u;
  } else if (!v.get_string().get(text)) {
    s.kind = ScalarKind::Str;
    s.s = std::string(text);
  } else {
    fail_build("enum: only integers, strings, booleans and null");
  }
  return s;
}

void build_node(Node &n, element d, size_t count) {
  simdjson::dom::object obj;
  if (d.get_object().get(obj)) fail_build("a node must be an object");
  std::vector<std::string> required;
  std::vector<std::pair<std::string, int>> props;
  for (auto field : obj) {
    std::string_view key = field.key;
    element v = field.value;
    if (key == "never") {
      n.never = as_bool(v, "never");
    } else if (key == "types") {
      uint64_t t;
      if (v.get_uint64().get(t) || t > T_ALL) fail_build("types: not a bit mask");
      n.types = (uint8_t)t;
    } else if (key == "props") {
      simdjson::dom::array arr;
      if (v.get_array().get(arr)) fail_build("props: not a list");
      for (element pair : arr) {
        simdjson::dom::array p;
        if (pair.get_array().get(p) || p.size() != 2) fail_build("props: pairs");
        props.emplace_back(std::string(as_str(p.at(0).value_unsafe(), "props")),
                           as_index(p.at(1).value_unsafe(), count, "props"));
      }
    } else if (key == "required") {
      simdjson::dom::array arr;
      if (v.get_array().get(arr)) fail_build("required: not a list");
      for (element r : arr) {
        std::string name(as_str(r, "required"));
        bool seen = false;
        for (auto &x : required) seen = seen || x == name;
        if (!seen) required.push_back(std::move(name));
      }
      if (required.size() > 64) fail_build("required: more than 64 names");
    } else if (key == "additional") {
      n.additional = as_index(v, count, "additional");
    } else if (key == "key_not") {
      n.key_not = regex(v, "key_not");
    } else if (key == "max_props") {
      n.max_props = as_count(v, "max_props");
    } else if (key == "items") {
      n.items = as_index(v, count, "items");
    } else if (key == "prefix") {
      n.prefix = indices(v, count, "prefix");
    } else if (key == "min_items") {
      n.min_items = as_count(v, "min_items");
    } else if (key == "max_items") {
      n.max_items = as_count(v, "max_items");
    } else if (key == "min_len") {
      n.min_len = as_count(v, "min_len");
    } else if (key == "max_len") {
      n.max_len = as_count(v, "max_len");
    } else if (key == "pattern") {
      n.pattern = regex(v, "pattern");
    } else if (key == "not_str") {
      simdjson::dom::object g;
      if (v.get_object().get(g)) fail_build("not_str: not an object");
      bool has_pattern = false;
      for (auto gf : g) {
        if (gf.key == "min_len") {
          n.not_str_min_len = as_count(gf.value, "not_str.min_len");
        } else if (gf.key == "pattern") {
          n.not_str = regex(gf.value, "not_str");
          has_pattern = true;
        } else {
          fail_build("not_str: unknown fields");
        }
      }
      if (!has_pattern) fail_build("not_str: no pattern");
    } else if (key == "unproven_strings") {
      n.unproven_strings = as_bool(v, "unproven_strings");
    } else if (key == "min") {
      n.min = as_num(v, "min");
    } else if (key == "max") {
      n.max = as_num(v, "max");
    } else if (key == "xmin") {
      n.xmin = as_num(v, "xmin");
    } else if (key == "xmax") {
      n.xmax = as_num(v, "xmax");
    } else if (key == "multiple_of") {
      int64_t m = as_int(v, "multiple_of");
      if (m <= 0) fail_build("multiple_of: a positive integer");
      n.multiple_of = m;
    } else if (key == "enum") {
      simdjson::dom::array arr;
      if (v.get_array().get(arr)) fail_build("enum: not a list");
      std::vector<Scalar> options;
      for (element x : arr) options.push_back(scalar(x));
      n.enumeration = std::move(options);
    } else if (key == "all_of") {
      n.all_of = indices(v, count, "all_of");
    } else if (key == "any_of") {
      n.any_of = indices(v, count, "any_of");
    } else {
      fail_build("unknown field " + std::string(key));
    }
  }
  if ((!n.all_of.empty() || !n.any_of.empty()) &&
      (n.types != T_ALL || !props.empty() || !required.empty() || n.additional != NONE ||
       n.key_not || n.max_props || n.items != NONE || !n.prefix.empty() || n.min_items ||
       n.max_items || n.min_len || n.max_len || n.pattern || n.not_str || n.unproven_strings ||
       n.min || n.max || n.xmin || n.xmax || n.multiple_of || n.enumeration))
    fail_build("all_of/any_of with other fields");
  n.plain = !n.never && n.all_of.empty() && n.any_of.empty();
  std::vector<std::pair<std::string, KeyInfo>> infos;
  for (auto &[name, child] : props) {
    for (auto &x : infos)
      if (x.first == name) fail_build("props: " + name + " twice");
    infos.emplace_back(name, KeyInfo{true, child, false});
  }
  for (auto &name : required) {
    bool found = false;
    for (auto &x : infos) {
      if (x.first == name) {
        x.second.required = true;
        found = true;
      }
    }
    if (!found) infos.emplace_back(name, KeyInfo{false, NONE, true});
  }
  // Slots for the first 64 names, the required ones (at most 64) among them: beyond 64 names
  // they move first (the names' order only serves lookup's guess of the next key).
  if (infos.size() > 64)
    std::stable_partition(infos.begin(), infos.end(),
                          [](const auto &x) { return x.second.required; });
  for (size_t i = 0; i < infos.size() && i < 64; i++) {
    infos[i].second.slot = (uint32_t)i;
    if (infos[i].second.required) n.required_slots |= (uint64_t)1 << i;
  }
  if (infos.size() > 16) {
    n.use_map = true;
    for (auto &x : infos) n.key_map.emplace(x.first, x.second);
  } else {
    n.keys = std::move(infos);
  }
}

std::unique_ptr<Program> build_program(std::string_view text, size_t max_depth) {
  simdjson::dom::parser parser;
  element doc;
  if (parser.parse(text.data(), text.size()).get(doc)) fail_build("not JSON");
  simdjson::dom::array nodes;
  if (doc["nodes"].get_array().get(nodes)) fail_build("no nodes");
  auto prog = std::make_unique<Program>();
  size_t count = nodes.size();
  prog->nodes.resize(count);
  size_t i = 0;
  for (element d : nodes) build_node(prog->nodes[i++], d, count);
  element root;
  if (doc["root"].get(root)) fail_build("no root");
  prog->root = as_index(root, count, "root");
  // all_of/any_of edges read no input: a cycle among them would recurse without bound.
  std::vector<uint8_t> state(count, 0);  // 0 unseen, 1 on the path, 2 done
  std::vector<std::pair<size_t, size_t>> stack;
  for (size_t start = 0; start < count; start++) {
    if (state[start]) continue;
    state[start] = 1;
    stack.emplace_back(start, 0);
    while (!stack.empty()) {
      auto [at, next] = stack.back();
      const Node &n = prog->nodes[at];
      size_t members = n.all_of.size() + n.any_of.size();
      if (next == members) {
        state[at] = 2;
        stack.pop_back();
        continue;
      }
      stack.back().second++;
      int m = next < n.all_of.size() ? n.all_of[next] : n.any_of[next - n.all_of.size()];
      if (m < 0) continue;
      if (state[(size_t)m] == 1) fail_build("all_of/any_of: a cycle");
      if (state[(size_t)m] == 0) {
        state[(size_t)m] = 1;
        stack.emplace_back((size_t)m, 0);
      }
    }
  }
  prog->max_depth = max_depth;
  return prog;
}

// ---------------------------------------------------------------------------------------------
// Checking

struct Checking {
  const Program &prog;
  size_t visits;  // left
  size_t frames = 0;  // check() calls in progress
  std::vector<std::string_view> &keys;  // names without a slot of the objects being checked

  bool charge(size_t bytes) {
    size_t cost = bytes / BYTES_PER_VISIT;
    if (cost > visits) {
      visits = 0;
      return false;
    }
    visits -= cost;
    return true;
  }

  const Node &node(int index) const {
    return index == NONE ? prog.any : prog.nodes[(size_t)index];
  }

  bool number(const Node &n, const Num &value, bool integral) const {
    uint8_t allowed = integral ? (T_INT | T_NUM) : T_NUM;
    if (!(n.types & allowed)) return false;
    if (n.min && !(compare(value, *n.min) == 0 || compare(value, *n.min) == 1)) return false;
    if (n.max && !(compare(value, *n.max) == 0 || compare(value, *n.max) == -1)) return false;
    if (n.xmin && compare(value, *n.xmin) != 1) return false;
    if (n.xmax && compare(value, *n.xmax) != -1) return false;
    if (n.multiple_of && !(value.is_int && value.i % *n.multiple_of == 0)) return false;
    if (n.enumeration) {
      if (!value.is_int) return false;
      bool found = false;
      for (auto &o : *n.enumeration) found = found || (o.kind == ScalarKind::Int && o.i == value.i);
      if (!found) return false;
    }
    return true;
  }

  // Code points, as jsonschema-rs counts them (simdjson validated the UTF-8: count the bytes
  // that start a code point). Never more than the bytes, equal for ASCII.
  static size_t code_points(std::string_view s) {
    size_t i = 0, n = s.size();
    for (; i + 8 <= n; i += 8) {  // ASCII runs, a word at a time
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ULL) break;
    }
    size_t count = i;
    for (; i < n; i++) count += ((unsigned char)s[i] & 0xC0) != 0x80;
    return count;
  }

  bool string(const Node &n, std::string_view s) {
    if (!(n.types & T_STR) || n.unproven_strings) return false;
    if ((n.min_len || n.max_len || n.not_str || n.pattern) && !charge(s.size())) return false;
    // The byte length bounds the code points from above: count only when it could matter.
    size_t bytes = s.size();
    if (n.min_len && (bytes < *n.min_len || code_points(s) < *n.min_len)) return false;
    if (n.max_len && bytes > *n.max_len && code_points(s) > *n.max_len) return false;
    if (n.not_str && bytes >= n.not_str_min_len &&
        (n.not_str_min_len == 0 || code_points(s) >= n.not_str_min_len) &&
        RE2::PartialMatch(re2::StringPiece(s.data(), s.size()), *n.not_str))
      return false;
    if (n.pattern && !RE2::PartialMatch(re2::StringPiece(s.data(), s.size()), *n.pattern))
      return false;
    if (n.enumeration) {
      bool found = false;
      for (auto &o : *n.enumeration) found = found || (o.kind == ScalarKind::Str && o.s == s);
      if (!found) return false;
    }
    return true;
  }

  bool simple(const Node &n, uint8_t t, ScalarKind kind, bool b) const {
    if (!(n.types & t)) return false;
    if (n.enumeration) {
      bool found = false;
      for (auto &o : *n.enumeration)
        found = found || (o.kind == kind && (kind != ScalarKind::Bool || o.b == b));
      if (!found) return false;
    }
    return true;
  }

  // a[0:n] == b[0:n] for sizeof(W) <= n <= 2 * sizeof(W): the first and the last word (they
  // overlap when n < 2 * sizeof(W)); every load stays within [0, n).
  template <typename W>
  static bool same_words(const char *a, const char *b, size_t n) {
    W x, y, u, v;
    std::memcpy(&x, a, sizeof(W));
    std::memcpy(&y, b, sizeof(W));
    std::memcpy(&u, a + n - sizeof(W), sizeof(W));
    std::memcpy(&v, b + n - sizeof(W), sizeof(W));
    return x == y && u == v;
  }

  // Equal bytes, compared inline: keys are short, and a call to memcmp costs more than the
  // comparison.
  static bool same(const std::string &name, std::string_view key) {
    size_t n = key.size();
    if (name.size() != n) return false;
    const char *a = name.data(), *b = key.data();
    if (n > 16) return std::memcmp(a, b, n) == 0;
    if (n >= 8) return same_words<uint64_t>(a, b, n);
    if (n >= 4) return same_words<uint32_t>(a, b, n);
    for (size_t i = 0; i < n; i++)
      if (a[i] != b[i]) return false;
    return true;
  }

  // `next` is where the previous key of this object was found plus one: objects usually list
  // their keys in the order the schema declares them, so that slot is tried first.
  bool lookup(const Node &n, std::string_view key, KeyInfo &out, size_t &next) const {
    if (n.use_map) {
      auto it = n.key_map.find(std::string(key));
      if (it == n.key_map.end()) return false;
      out = it->second;
      return true;
    }
    size_t count = n.keys.size();
    if (next < count && same(n.keys[next].first, key)) {
      out = n.keys[next++].second;
      return true;
    }
    for (size_t i = 0; i < count; i++) {
      if (same(n.keys[i].first, key)) {
        out = n.keys[i].second;
        next = i + 1;
        return true;
      }
    }
    return false;
  }

  // A scalar of type t (never an array or object) against a node without all_of/any_of.
  bool scalar(const Node &n, element e, element_type t) {
    switch (t) {
      case element_type::NULL_VALUE:
        return simple(n, T_NULL, ScalarKind::Null, false);
      case element_type::BOOL:
        return simple(n, T_BOOL, ScalarKind::Bool, e.get_bool().value_unsafe());
      case element_type::INT64:
        return number(n, Num{true, e.get_int64().value_unsafe(), 0}, true);
      case element_type::UINT64:
        return number(n, Num{true, e.get_uint64().value_unsafe(), 0}, true);
      case element_type::DOUBLE:
        return number(n, Num{false, 0, e.get_double().value_unsafe()}, false);
      case element_type::STRING:
        return string(n, e.get_string().value_unsafe());
      default:
        return false;  // big integers and anything else: not proven
    }
  }

  // A member or item: a scalar against a plain node is decided here (one visit, no frame:
  // it nests nothing); anything else goes through check().
  bool descend(int index, element e, size_t depth) {
    element_type t = e.type();
    if (index != FALSE_ && t != element_type::ARRAY && t != element_type::OBJECT) {
      const Node &n = node(index);
      if (n.plain) {
        if (visits == 0) return false;
        visits--;
        return scalar(n, e, t);
      }
    }
    return check(index, e, depth);
  }

  bool check(int index, element e, size_t depth) {
    if (index == FALSE_) return false;
    if (visits == 0 || frames >= MAX_FRAMES) return false;
    visits--;
    struct Frame {
      size_t &count;
      explicit Frame(size_t &c) : count(c) { ++count; }
      ~Frame() { --count; }
    } frame(frames);
    const Node &n = node(index);
    if (n.never) return false;
    if (!n.all_of.empty() || !n.any_of.empty()) {
      for (int member : n.all_of)
        if (!check(member, e, depth)) return false;
      if (!n.any_of.empty()) {
        bool any = false;
        for (int member : n.any_of) {
          if (check(member, e, depth)) {
            any = true;
            break;
          }
        }
        if (!any) return false;
      }
      return true;
    }
    element_type t = e.type();
    switch (t) {
      case element_type::ARRAY: {
        size_t d = depth + 1;
        if (!(n.types & T_ARR) || d > prog.max_depth || n.enumeration) return false;
        size_t count = 0;
        simdjson::dom::array items = e.get_array().value_unsafe();
        for (element item : items) {
          int child = count < n.prefix.size() ? n.prefix[count] : n.items;
          if (!descend(child, item, d)) return false;
          count++;
          if (n.max_items && count > *n.max_items) return false;
        }
        return !(n.min_items && count < *n.min_items);
      }
      case element_type::OBJECT: {
        size_t d = depth + 1;
        if (!(n.types & T_OBJ) || d > prog.max_depth || n.enumeration) return false;
        uint64_t present = 0;  // the slots of the names seen
        size_t count = 0, next = 0;
        KeysMark others(keys);  // names without a slot, checked for repeats at the end
        simdjson::dom::object fields = e.get_object().value_unsafe();
        for (auto field : fields) {
          count++;
          if (n.max_props && count > *n.max_props) return false;
          std::string_view key = field.key;
          if ((n.key_not || n.use_map) && !charge(key.size())) return false;
          if (n.key_not && RE2::PartialMatch(re2::StringPiece(key.data(), key.size()), *n.key_not))
            return false;
          KeyInfo info;
          int child = n.additional;
          if (lookup(n, key, info, next)) {
            if (info.declared) child = info.child;
            if (info.slot != UINT32_MAX) {
              uint64_t b = (uint64_t)1 << info.slot;
              if (present & b) return false;  // a repeated key
              present |= b;
            } else {
              keys.push_back(key);
            }
          } else {
            keys.push_back(key);
          }
          if (!descend(child, field.value, d)) return false;
        }
        return (present & n.required_slots) == n.required_slots &&
               (keys.size() - others.mark < 2 || distinct(keys, others.mark));
      }
      default:
        return scalar(n, e, t);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// The Python type: Checker(program_json: str, max_depth: int); check(body: bytes) -> bool

struct CheckerObject {
  PyObject_HEAD
  Program *prog;
  simdjson::dom::parser *parser;
  std::string *buffer;  // the body with simdjson's padding, reused
  std::vector<std::string_view> *keys;  // Checking::keys, reused
};

void Checker_dealloc(CheckerObject *self) {
  delete self->prog;
  delete self->parser;
  delete self->buffer;
  delete self->keys;
  Py_TYPE(self)->tp_free((PyObject *)self);
}

PyObject *Checker_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
  static const char *names[] = {"program", "max_depth", nullptr};
  const char *text;
  Py_ssize_t text_len;
  Py_ssize_t max_depth;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s#n", const_cast<char **>(names), &text,
                                   &text_len, &max_depth))
    return nullptr;
  if (max_depth < 0) {
    PyErr_SetString(PyExc_ValueError, "max_depth must not be negative");
    return nullptr;
  }
  std::unique_ptr<Program> prog;
  try {
    prog = build_program(std::string_view(text, (size_t)text_len), (size_t)max_depth);
  } catch (const BuildError &e) {
    PyErr_SetString(PyExc_ValueError, e.message.c_str());
    return nullptr;
  } catch (const std::exception &e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
  auto *self = (CheckerObject *)type->tp_alloc(type, 0);
  if (self == nullptr) return nullptr;
  try {
    self->parser = new simdjson::dom::parser();
    self->buffer = new std::string();
    self->keys = new std::vector<std::string_view>();
  } catch (const std::bad_alloc &) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  self->prog = prog.release();
  return (PyObject *)self;
}

// A large body's own parser and buffer, freed when the call ends.
struct Scratch {
  std::unique_ptr<simdjson::dom::parser> parser;
  std::string buffer;
};

// Parses data[0:len] with simdjson's padding: into `reused` (and its buffer) up to REUSE_MAX
// bytes, into a parser of `own` above. False: not JSON (or too deep for simdjson).
bool parse_padded(simdjson::dom::parser &reused, std::string &reused_buffer, const char *data,
                  size_t len, Scratch &own, element &doc) {
  simdjson::dom::parser *parser = &reused;
  std::string *bufp = &reused_buffer;
  if (len > REUSE_MAX) {
    own.parser = std::make_unique<simdjson::dom::parser>();
    parser = own.parser.get();
    bufp = &own.buffer;
  }
  std::string &buf = *bufp;
  buf.resize(len + simdjson::SIMDJSON_PADDING);
  std::memcpy(buf.data(), data, len);
  std::memset(buf.data() + len, 0, simdjson::SIMDJSON_PADDING);
  return !parser->parse(buf.data(), len, false).get(doc);
}

PyObject *Checker_check(CheckerObject *self, PyObject *body) {
  if (!PyBytes_Check(body)) {
    PyErr_SetString(PyExc_TypeError, "check() takes bytes");
    return nullptr;
  }
  const char *data = PyBytes_AS_STRING(body);
  size_t len = (size_t)PyBytes_GET_SIZE(body);
  bool ok = false;
  try {
    Scratch own;
    element doc;
    if (parse_padded(*self->parser, *self->buffer, data, len, own, doc)) {
      self->keys->clear();
      Checking c{*self->prog, VISIT_FACTOR * len + VISIT_FLOOR, 0, *self->keys};
      ok = c.check(self->prog->root, doc, 0);
    }
  } catch (const std::bad_alloc &) {
    return PyErr_NoMemory();
  } catch (...) {
    ok = false;  // not proven: the full path decides
  }
  if (ok) Py_RETURN_TRUE;
  Py_RETURN_FALSE;
}

PyMethodDef Checker_methods[] = {
    {"check", (PyCFunction)Checker_check, METH_O,
     "check(body: bytes) -> bool: True when the body is proven valid; False: not proven."},
    {nullptr, nullptr, 0, nullptr}};

PyTypeObject CheckerType = {PyVarObject_HEAD_INIT(nullptr, 0)};

// repeats_a_key(body: bytes) -> bool. The parser is shared: every call holds the GIL.
PyObject *repeats_a_key_py(PyObject *, PyObject *body) {
  if (!PyBytes_Check(body)) {
    PyErr_SetString(PyExc_TypeError, "repeats_a_key() takes bytes");
    return nullptr;
  }
  bool found;
  try {
    // Function-local statics: built once, on first use (a constructor that throws is retried
    // on the next call); never freed (the module is never unloaded).
    static simdjson::dom::parser shared_parser;
    static std::string shared_buffer;
    Scratch own;
    element doc;
    if (!parse_padded(shared_parser, shared_buffer, PyBytes_AS_STRING(body),
                      (size_t)PyBytes_GET_SIZE(body), own, doc)) {
      PyErr_SetString(PyExc_ValueError, "not a JSON document simdjson accepts");
      return nullptr;
    }
    std::vector<std::string_view> keys;
    found = repeats_a_key(doc, keys);
  } catch (const std::bad_alloc &) {
    return PyErr_NoMemory();
  }
  if (found) Py_RETURN_TRUE;
  Py_RETURN_FALSE;
}

PyMethodDef module_methods[] = {
    {"repeats_a_key", (PyCFunction)repeats_a_key_py, METH_O,
     "repeats_a_key(body: bytes) -> bool: True when an object of the JSON body repeats a key; "
     "ValueError when the body is not JSON."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "bastion_fastcheck",
                          "Proves a JSON body valid against a compiled check program.", -1,
                          module_methods};

}  // namespace

PyMODINIT_FUNC PyInit_bastion_fastcheck(void) {
  CheckerType.tp_name = "bastion_fastcheck.Checker";
  CheckerType.tp_basicsize = sizeof(CheckerObject);
  CheckerType.tp_dealloc = (destructor)Checker_dealloc;
  CheckerType.tp_flags = Py_TPFLAGS_DEFAULT;
  CheckerType.tp_doc = "Checker(program: str, max_depth: int): a compiled check program.";
  CheckerType.tp_methods = Checker_methods;
  CheckerType.tp_new = Checker_new;
  if (PyType_Ready(&CheckerType) < 0) return nullptr;
  PyObject *m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
  Py_INCREF(&CheckerType);
  if (PyModule_AddObject(m, "Checker", (PyObject *)&CheckerType) < 0) {
    Py_DECREF(&CheckerType);
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
