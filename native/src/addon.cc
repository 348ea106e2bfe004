// SPDX-License-Identifier: MIT
// kpiflow's native layer: a handful of primitives over the system libbpf (open an object, set
// read-only data, load, attach, map operations, ring buffer consumption driven by libuv, BPF
// iterators, close). Every decision (what to attach, fallbacks, defaults) lives in TypeScript
// (native/index.ts). No C++ exceptions: arguments are checked and errors returned early as the
// TypeScript error class handed to init(), constructed here with errno, libbpf's messages and
// the verifier log.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <napi.h>
#include <sched.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

// ---- libbpf messages -------------------------------------------------------------------------
// libbpf reports details (and the verifier log) only through its print callback: keep what it
// prints during one call so the error can carry it. Node runs this on its main thread only.
std::string g_log;
bool g_debug = false;
constexpr size_t kMaxLog = 4 << 20;

int PrintFn(enum libbpf_print_level level, const char *fmt, va_list args) {
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n <= 0) return 0;
  std::string line(static_cast<size_t>(n) + 1, '\0');
  vsnprintf(&line[0], line.size(), fmt, args);
  line.resize(static_cast<size_t>(n));
  if (g_debug) fputs(line.c_str(), stderr);
  if (level == LIBBPF_DEBUG) return n;
  if (g_log.size() + line.size() <= kMaxLog) g_log += line;
  return n;
}

// Splits what libbpf printed into its own lines and the verifier's.
void SplitLog(std::vector<std::string> *libbpf, std::vector<std::string> *verifier) {
  bool inVerifier = false;
  size_t pos = 0;
  while (pos < g_log.size()) {
    size_t end = g_log.find('\n', pos);
    if (end == std::string::npos) end = g_log.size();
    std::string line = g_log.substr(pos, end - pos);
    pos = end + 1;
    size_t begin = line.find("-- BEGIN PROG LOAD LOG --");
    if (begin != std::string::npos) {
      inVerifier = true;
      libbpf->push_back(line);
      continue;
    }
    size_t stop = line.find("-- END PROG LOAD LOG --");
    if (stop != std::string::npos) {
      if (stop > 0) verifier->push_back(line.substr(0, stop));
      inVerifier = false;
      libbpf->push_back(line.substr(stop));
      continue;
    }
    if (inVerifier) {
      verifier->push_back(line);
    } else if (!line.empty()) {
      libbpf->push_back(line);
    }
  }
}

struct AddonData;
class BpfObject;

struct AddonData {
  Napi::FunctionReference errorClass;
  Napi::FunctionReference objectClass;
  std::set<BpfObject *> live;
};

Napi::Array ToArray(Napi::Env env, const std::vector<std::string> &lines) {
  Napi::Array a = Napi::Array::New(env, lines.size());
  for (size_t i = 0; i < lines.size(); i++) a.Set(static_cast<uint32_t>(i), lines[i]);
  return a;
}

// Throws the TypeScript error class (code, message, errno, verifierLog, libbpfLog); the log is
// what libbpf printed since the last ClearLog().
void Throw(Napi::Env env, const char *code, const std::string &message, int err) {
  std::vector<std::string> libbpf, verifier;
  SplitLog(&libbpf, &verifier);
  g_log.clear();
  std::string text = message;
  if (err != 0) text += std::string(": ") + strerror(err);
  AddonData *data = env.GetInstanceData<AddonData>();
  napi_value error;
  if (data != nullptr && !data->errorClass.IsEmpty()) {
    error = data->errorClass.New({Napi::String::New(env, code), Napi::String::New(env, text),
                                  Napi::Number::New(env, err), ToArray(env, verifier),
                                  ToArray(env, libbpf)});
    if (env.IsExceptionPending()) return;
  } else {
    Napi::Error e = Napi::Error::New(env, std::string(code) + ": " + text);
    e.Set("code", code);
    e.Set("errno", Napi::Number::New(env, err));
    error = e.Value();
  }
  napi_throw(env, error);
}

void ClearLog() { g_log.clear(); }

// ---- ring buffers ----------------------------------------------------------------------------
constexpr size_t kMaxBatch = 1 << 20;

struct Ring {
  Napi::Env env;
  ring_buffer *rb = nullptr;
  uv_poll_t *poll = nullptr;
  Napi::FunctionReference callback;
  std::unique_ptr<Napi::AsyncContext> context;
  uint32_t recordSize = 0;
  std::vector<uint8_t> batch;
  double wrongSize = 0;
  explicit Ring(Napi::Env e) : env(e) {}
};

int OnSample(void *ctx, void *data, size_t size) {
  Ring *r = static_cast<Ring *>(ctx);
  if (r->recordSize != 0 && size != r->recordSize) {
    r->wrongSize++;
    return 0;
  }
  const uint8_t *p = static_cast<const uint8_t *>(data);
  r->batch.insert(r->batch.end(), p, p + size);
  // A full batch stops this round (the sample is kept); the fd stays readable for the next one.
  return r->batch.size() >= kMaxBatch ? -1 : 0;
}

void OnPoll(uv_poll_t *handle, int status, int events) {
  Ring *r = static_cast<Ring *>(handle->data);
  if (r == nullptr || status < 0) return;
  r->batch.clear();
  ring_buffer__consume(r->rb);
  if (r->batch.empty()) return;
  Napi::Env env = r->env;
  Napi::HandleScope scope(env);
  Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::Copy(env, r->batch.data(), r->batch.size());
  r->batch.clear();
  // The callback may close the ring: nothing below may touch r.
  r->callback.MakeCallback(env.Global(), {buf, Napi::Number::New(env, r->wrongSize)}, *r->context);
  if (env.IsExceptionPending()) {
    Napi::Error e = env.GetAndClearPendingException();
    napi_fatal_exception(env, e.Value());
  }
}

// teardown: the Node environment is going away. Its references must not be touched any more
// (napi_delete_reference or async-destroy would crash), and a worker's loop runs its closing
// handles after this addon is unloaded, so no close callback of ours may be left pending: the
// handle is closed without one and its few bytes are left behind.
void CloseRing(Ring *r, bool teardown) {
  if (teardown) {
    r->callback.SuppressDestruct();
    r->context.release();
    if (r->poll != nullptr) {
      uv_poll_stop(r->poll);
      r->poll->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t *>(r->poll), nullptr);
    }
    ring_buffer__free(r->rb);
    delete r;
    return;
  }
  if (r->poll != nullptr) {
    // uv_poll_stop guarantees OnPoll no longer runs; the ring is freed once libuv lets go.
    uv_poll_stop(r->poll);
    r->poll->data = r;
    uv_close(reinterpret_cast<uv_handle_t *>(r->poll), [](uv_handle_t *h) {
      Ring *ring = static_cast<Ring *>(h->data);
      ring_buffer__free(ring->rb);
      delete reinterpret_cast<uv_poll_t *>(h);
      delete ring;
    });
    return;
  }
  ring_buffer__free(r->rb);
  delete r;
}

// ---- the object ------------------------------------------------------------------------------
class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BpfObject",
                       {
                           InstanceMethod("programs", &BpfObject::Programs),
                           InstanceMethod("maps", &BpfObject::Maps),
                           InstanceMethod("setAutoload", &BpfObject::SetAutoload),
                           InstanceMethod("initialValue", &BpfObject::InitialValue),
                           InstanceMethod("setInitialValue", &BpfObject::SetInitialValue),
                           InstanceMethod("setMaxEntries", &BpfObject::SetMaxEntries),
                           InstanceMethod("load", &BpfObject::Load),
                           InstanceMethod("attach", &BpfObject::Attach),
                           InstanceMethod("detach", &BpfObject::Detach),
                           InstanceMethod("mapLookup", &BpfObject::MapLookup),
                           InstanceMethod("mapUpdate", &BpfObject::MapUpdate),
                           InstanceMethod("mapDelete", &BpfObject::MapDelete),
                           InstanceMethod("mapKeys", &BpfObject::MapKeys),
                           InstanceMethod("ringSubscribe", &BpfObject::RingSubscribe),
                           InstanceMethod("ringUnsubscribe", &BpfObject::RingUnsubscribe),
                           InstanceMethod("iterRead", &BpfObject::IterRead),
                           InstanceMethod("close", &BpfObject::Close),
                       });
  }

  explicit BpfObject(const Napi::CallbackInfo &info) : Napi::ObjectWrap<BpfObject>(info) {
    Napi::Env env = info.Env();
    data_ = env.GetInstanceData<AddonData>();
    if (info.Length() < 1 || !info[0].IsString()) {
      Throw(env, "NAT_ERR_ARGUMENT", "open(path): path must be a string", 0);
      return;
    }
    path_ = info[0].As<Napi::String>().Utf8Value();
    ClearLog();
    obj_ = bpf_object__open_file(path_.c_str(), nullptr);
    if (obj_ == nullptr) {
      Throw(env, "NAT_ERR_OPEN", "cannot open " + path_, errno);
      return;
    }
    if (data_ != nullptr) data_->live.insert(this);
  }

  ~BpfObject() override { Release(false); }

  // Frees everything without calling JavaScript: close(), GC and (teardown) the environment's
  // cleanup hook.
  void Release(bool teardown) {
    for (auto &it : rings_) CloseRing(it.second, teardown);
    rings_.clear();
    for (auto &it : links_) bpf_link__destroy(it.second);
    links_.clear();
    for (auto &it : iterLinks_) bpf_link__destroy(it.second);
    iterLinks_.clear();
    if (obj_ != nullptr) bpf_object__close(obj_);
    obj_ = nullptr;
    if (data_ != nullptr) data_->live.erase(this);
    data_ = nullptr;
  }

 private:
  bpf_object *obj_ = nullptr;
  AddonData *data_ = nullptr;
  std::string path_;
  bool loaded_ = false;
  int nextId_ = 1;
  std::map<int, bpf_link *> links_;
  std::map<int, Ring *> rings_;
  std::map<std::string, bpf_link *> iterLinks_;

  bool Alive(Napi::Env env) {
    if (obj_ != nullptr) return true;
    Throw(env, "NAT_ERR_CLOSED", "object is closed", 0);
    return false;
  }

  bool Loaded(Napi::Env env, bool want) {
    if (!Alive(env)) return false;
    if (loaded_ == want) return true;
    Throw(env, "NAT_ERR_ARGUMENT", want ? "object is not loaded yet" : "object is already loaded", 0);
    return false;
  }

  bool StringArg(const Napi::CallbackInfo &info, size_t i, std::string *out, const char *what) {
    if (info.Length() > i && info[i].IsString()) {
      *out = info[i].As<Napi::String>().Utf8Value();
      return true;
    }
    Throw(info.Env(), "NAT_ERR_ARGUMENT", std::string(what) + " must be a string", 0);
    return false;
  }

  bool BufferArg(const Napi::CallbackInfo &info, size_t i, Napi::Buffer<uint8_t> *out, const char *what) {
    if (info.Length() > i && info[i].IsBuffer()) {
      *out = info[i].As<Napi::Buffer<uint8_t>>();
      return true;
    }
    Throw(info.Env(), "NAT_ERR_ARGUMENT", std::string(what) + " must be a Buffer", 0);
    return false;
  }

  bpf_program *Program(const Napi::CallbackInfo &info, size_t i) {
    std::string name;
    if (!StringArg(info, i, &name, "program name")) return nullptr;
    bpf_program *p = bpf_object__find_program_by_name(obj_, name.c_str());
    if (p == nullptr) Throw(info.Env(), "NAT_ERR_ARGUMENT", "no program named " + name, ENOENT);
    return p;
  }

  bpf_map *Map(const Napi::CallbackInfo &info, size_t i) {
    std::string name;
    if (!StringArg(info, i, &name, "map name")) return nullptr;
    bpf_map *m = bpf_object__find_map_by_name(obj_, name.c_str());
    if (m == nullptr) Throw(info.Env(), "NAT_ERR_ARGUMENT", "no map named " + name, ENOENT);
    return m;
  }

  static size_t ValueSize(const bpf_map *m) {
    size_t size = bpf_map__value_size(m);
    switch (bpf_map__type(m)) {
      case BPF_MAP_TYPE_PERCPU_ARRAY:
      case BPF_MAP_TYPE_PERCPU_HASH:
      case BPF_MAP_TYPE_LRU_PERCPU_HASH:
      case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
        return ((size + 7) / 8) * 8 * static_cast<size_t>(libbpf_num_possible_cpus());
      default:
        return size;
    }
  }

  Napi::Value Programs(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    Napi::Array out = Napi::Array::New(env);
    bpf_program *p;
    uint32_t i = 0;
    bpf_object__for_each_program(p, obj_) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", bpf_program__name(p));
      o.Set("section", bpf_program__section_name(p));
      o.Set("autoload", bpf_program__autoload(p));
      o.Set("fd", loaded_ ? bpf_program__fd(p) : -1);
      out.Set(i++, o);
    }
    return out;
  }

  Napi::Value Maps(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    Napi::Array out = Napi::Array::New(env);
    bpf_map *m;
    uint32_t i = 0;
    bpf_object__for_each_map(m, obj_) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", bpf_map__name(m));
      o.Set("type", static_cast<double>(bpf_map__type(m)));
      o.Set("keySize", static_cast<double>(bpf_map__key_size(m)));
      o.Set("valueSize", static_cast<double>(bpf_map__value_size(m)));
      o.Set("maxEntries", static_cast<double>(bpf_map__max_entries(m)));
      o.Set("fd", loaded_ ? bpf_map__fd(m) : -1);
      out.Set(i++, o);
    }
    return out;
  }

  Napi::Value SetAutoload(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Loaded(env, false)) return env.Undefined();
    bpf_program *p = Program(info, 0);
    if (p == nullptr) return env.Undefined();
    int err = bpf_program__set_autoload(p, info.Length() > 1 && info[1].ToBoolean().Value());
    if (err != 0) Throw(env, "NAT_ERR_ARGUMENT", "cannot change autoload", -err);
    return env.Undefined();
  }

  Napi::Value InitialValue(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    bpf_map *m = Map(info, 0);
    if (m == nullptr) return env.Undefined();
    size_t size = 0;
    const void *v = bpf_map__initial_value(m, &size);
    if (v == nullptr) return env.Null();
    return Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t *>(v), size);
  }

  // Read-only data (`const volatile` knobs) can only change before load.
  Napi::Value SetInitialValue(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Loaded(env, false)) return env.Undefined();
    bpf_map *m = Map(info, 0);
    Napi::Buffer<uint8_t> buf;
    if (m == nullptr || !BufferArg(info, 1, &buf, "value")) return env.Undefined();
    ClearLog();
    int err = bpf_map__set_initial_value(m, buf.Data(), buf.Length());
    if (err != 0) Throw(env, "NAT_ERR_ARGUMENT", "cannot set the initial value of " + std::string(bpf_map__name(m)), -err);
    return env.Undefined();
  }

  Napi::Value SetMaxEntries(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Loaded(env, false)) return env.Undefined();
    bpf_map *m = Map(info, 0);
    if (m == nullptr) return env.Undefined();
    if (info.Length() < 2 || !info[1].IsNumber()) {
      Throw(env, "NAT_ERR_ARGUMENT", "maxEntries must be a number", 0);
      return env.Undefined();
    }
    int err = bpf_map__set_max_entries(m, info[1].As<Napi::Number>().Uint32Value());
    if (err != 0) Throw(env, "NAT_ERR_ARGUMENT", "cannot resize " + std::string(bpf_map__name(m)), -err);
    return env.Undefined();
  }

  Napi::Value Load(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Loaded(env, false)) return env.Undefined();
    ClearLog();
    int err = bpf_object__load(obj_);
    if (err != 0) {
      Throw(env, "NAT_ERR_LOAD", "cannot load " + path_, -err);
      return env.Undefined();
    }
    loaded_ = true;
    ClearLog();
    return env.Undefined();
  }

  // attach(program, kind, target?) -> link id. Kinds: tracepoint (target "category/name"),
  // raw_tp (target name), tp_btf | fentry | fexit (BTF target from the section), cgroup (target:
  // cgroup v2 directory; sockops and other cgroup programs), auto (libbpf's section rules).
  Napi::Value Attach(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Loaded(env, true)) return env.Undefined();
    bpf_program *p = Program(info, 0);
    std::string kind, target;
    if (p == nullptr || !StringArg(info, 1, &kind, "attach kind")) return env.Undefined();
    if (info.Length() > 2 && info[2].IsString()) target = info[2].As<Napi::String>().Utf8Value();
    ClearLog();
    bpf_link *link = nullptr;
    errno = 0;
    if (kind == "tracepoint") {
      size_t slash = target.find('/');
      if (slash == std::string::npos) {
        Throw(env, "NAT_ERR_ARGUMENT", "tracepoint target must be category/name", EINVAL);
        return env.Undefined();
      }
      link = bpf_program__attach_tracepoint(p, target.substr(0, slash).c_str(), target.substr(slash + 1).c_str());
    } else if (kind == "raw_tp") {
      link = bpf_program__attach_raw_tracepoint(p, target.c_str());
    } else if (kind == "tp_btf" || kind == "fentry" || kind == "fexit") {
      link = bpf_program__attach_trace(p);
    } else if (kind == "cgroup") {
      int fd = open(target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) {
        Throw(env, "NAT_ERR_ATTACH", "cannot open cgroup " + target, errno);
        return env.Undefined();
      }
      link = bpf_program__attach_cgroup(p, fd);
      int saved = errno;
      close(fd);
      errno = saved;
    } else if (kind == "auto") {
      link = bpf_program__attach(p);
    } else {
      Throw(env, "NAT_ERR_ARGUMENT", "unknown attach kind " + kind, EINVAL);
      return env.Undefined();
    }
    if (link == nullptr) {
      int err = errno != 0 ? errno : EINVAL;
      Throw(env, "NAT_ERR_ATTACH", "cannot attach " + std::string(bpf_program__name(p)) + " (" + kind + ")", err);
      return env.Undefined();
    }
    int id = nextId_++;
    links_[id] = link;
    return Napi::Number::New(env, id);
  }

  Napi::Value Detach(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (obj_ == nullptr || info.Length() < 1 || !info[0].IsNumber()) return env.Undefined();
    auto it = links_.find(info[0].As<Napi::Number>().Int32Value());
    if (it == links_.end()) return Napi::Boolean::New(env, false);
    bpf_link__destroy(it->second);
    links_.erase(it);
    return Napi::Boolean::New(env, true);
  }

  Napi::Value MapLookup(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Loaded(env, true)) return env.Undefined();
    bpf_map *m = Map(info, 0);
    Napi::Buffer<uint8_t> key;
    if (m == nullptr || !BufferArg(info, 1, &key, "key")) return env.Undefined();
    std::vector<uint8_t> value(ValueSize(m));
    int err = bpf_map__lookup_elem(m, key.Data(), key.Length(), value.data(), value.size(), 0);
    if (err == -ENOENT) return env.Null();
    if (err != 0) {
      Throw(env, "NAT_ERR_MAP", "lookup in " + std::string(bpf_map__name(m)) + " failed", -err);
      return env.Undefined();
    }
    return Napi::Buffer<uint8_t>::Copy(env, value.data(), value.size());
  }

  Napi::Value MapUpdate(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Loaded(env, true)) return env.Undefined();
    bpf_map *m = Map(info, 0);
    Napi::Buffer<uint8_t> key, value;
    if (m == nullptr || !BufferArg(info, 1, &key, "key") || !BufferArg(info, 2, &value, "value")) return env.Undefined();
    uint64_t flags = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : static_cast<int64_t>(BPF_ANY);
    int err = bpf_map__update_elem(m, key.Data(), key.Length(), value.Data(), value.Length(), flags);
    if (err != 0) Throw(env, "NAT_ERR_MAP", "update of " + std::string(bpf_map__name(m)) + " failed", -err);
    return env.Undefined();
  }

  Napi::Value MapDelete(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Loaded(env, true)) return env.Undefined();
    bpf_map *m = Map(info, 0);
    Napi::Buffer<uint8_t> key;
    if (m == nullptr || !BufferArg(info, 1, &key, "key")) return env.Undefined();
    int err = bpf_map__delete_elem(m, key.Data(), key.Length(), 0);
    if (err == -ENOENT) return Napi::Boolean::New(env, false);
    if (err != 0) {
      Throw(env, "NAT_ERR_MAP", "delete from " + std::string(bpf_map__name(m)) + " failed", -err);
      return env.Undefined();
    }
    return Napi::Boolean::New(env, true);
  }

  Napi::Value MapKeys(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Loaded(env, true)) return env.Undefined();
    bpf_map *m = Map(info, 0);
    if (m == nullptr) return env.Undefined();
    size_t ks = bpf_map__key_size(m);
    std::vector<uint8_t> prev(ks), next(ks);
    Napi::Array out = Napi::Array::New(env);
    uint32_t n = 0;
    bool first = true;
    // Bounded: a hash map being changed meanwhile can restart the walk.
    uint64_t limit = 2ULL * bpf_map__max_entries(m) + 16;
    while (n < limit) {
      int err = bpf_map__get_next_key(m, first ? nullptr : prev.data(), next.data(), ks);
      if (err == -ENOENT) break;
      if (err != 0) {
        Throw(env, "NAT_ERR_MAP", "walk of " + std::string(bpf_map__name(m)) + " failed", -err);
        return env.Undefined();
      }
      out.Set(n++, Napi::Buffer<uint8_t>::Copy(env, next.data(), ks));
      prev.swap(next);
      first = false;
    }
    return out;
  }

  // ringSubscribe(map, recordSize, callback(batch, wrongSizeCount)) -> id. Records of another
  // size than recordSize (0 accepts any) are counted and skipped, so a batch is records of
  // recordSize bytes back to back.
  Napi::Value RingSubscribe(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Loaded(env, true)) return env.Undefined();
    bpf_map *m = Map(info, 0);
    if (m == nullptr) return env.Undefined();
    if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsFunction()) {
      Throw(env, "NAT_ERR_ARGUMENT", "ringSubscribe(map, recordSize, callback)", EINVAL);
      return env.Undefined();
    }
    Ring *r = new Ring(env);
    r->recordSize = info[1].As<Napi::Number>().Uint32Value();
    ClearLog();
    r->rb = ring_buffer__new(bpf_map__fd(m), OnSample, r, nullptr);
    if (r->rb == nullptr) {
      int err = errno;
      delete r;
      Throw(env, "NAT_ERR_RINGBUF", "cannot open ring buffer " + std::string(bpf_map__name(m)), err);
      return env.Undefined();
    }
    uv_loop_t *loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    r->poll = new uv_poll_t;
    int err = uv_poll_init(loop, r->poll, ring_buffer__epoll_fd(r->rb));
    if (err == 0) {
      r->poll->data = r;
      err = uv_poll_start(r->poll, UV_READABLE, OnPoll);
    }
    if (err != 0) {
      delete r->poll;
      r->poll = nullptr;
      CloseRing(r, false);
      Throw(env, "NAT_ERR_RINGBUF", "cannot poll ring buffer", -err);
      return env.Undefined();
    }
    r->callback = Napi::Persistent(info[2].As<Napi::Function>());
    r->context = std::make_unique<Napi::AsyncContext>(env, "kpiflow:ringbuf");
    int id = nextId_++;
    rings_[id] = r;
    return Napi::Number::New(env, id);
  }

  Napi::Value RingUnsubscribe(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) return env.Undefined();
    auto it = rings_.find(info[0].As<Napi::Number>().Int32Value());
    if (it == rings_.end()) return Napi::Boolean::New(env, false);
    CloseRing(it->second, false);
    rings_.erase(it);
    return Napi::Boolean::New(env, true);
  }

  // iterRead(program, netnsPath?) -> Buffer: everything one run of the iterator wrote. A
  // namespace-aware iterator (iter/tcp) walks the namespace it is opened in, so the open happens
  // on a short-lived thread that joined netnsPath (the rest of the process stays where it is).
  Napi::Value IterRead(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Loaded(env, true)) return env.Undefined();
    bpf_program *p = Program(info, 0);
    if (p == nullptr) return env.Undefined();
    std::string netns;
    if (info.Length() > 1 && info[1].IsString()) netns = info[1].As<Napi::String>().Utf8Value();
    std::string name = bpf_program__name(p);
    ClearLog();
    bpf_link *link = iterLinks_[name];
    if (link == nullptr) {
      link = bpf_program__attach_iter(p, nullptr);
      if (link == nullptr) {
        int err = errno;
        iterLinks_.erase(name);
        Throw(env, "NAT_ERR_ITER", "cannot attach iterator " + name, err);
        return env.Undefined();
      }
      iterLinks_[name] = link;
    }
    int fd = -1, err = 0;
    int linkFd = bpf_link__fd(link);
    if (netns.empty()) {
      fd = bpf_iter_create(linkFd);
      if (fd < 0) err = errno;
    } else {
      std::thread t([&]() {
        int ns = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
        if (ns < 0) {
          err = errno;
          return;
        }
        if (setns(ns, CLONE_NEWNET) != 0) {
          err = errno;
          close(ns);
          return;
        }
        close(ns);
        fd = bpf_iter_create(linkFd);
        if (fd < 0) err = errno;
      });
      t.join();
    }
    if (fd < 0) {
      Throw(env, "NAT_ERR_ITER", "cannot start iterator " + name + (netns.empty() ? "" : " in " + netns), err);
      return env.Undefined();
    }
    std::vector<uint8_t> out;
    uint8_t chunk[65536];
    int retries = 0;
    for (;;) {
      ssize_t n = read(fd, chunk, sizeof chunk);
      if (n > 0) {
        out.insert(out.end(), chunk, chunk + n);
        continue;
      }
      if (n == 0) break;
      if ((errno == EINTR || errno == EAGAIN) && retries++ < 100) continue;
      err = errno;
      close(fd);
      Throw(env, "NAT_ERR_ITER", "iterator " + name + " failed", err);
      return env.Undefined();
    }
    close(fd);
    return Napi::Buffer<uint8_t>::Copy(env, out.data(), out.size());
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    Release(false);
    return info.Env().Undefined();
  }
};

// ---- module ----------------------------------------------------------------------------------
void Cleanup(void *arg) {
  AddonData *data = static_cast<AddonData *>(arg);
  // Release() erases itself from the set: copy first.
  std::vector<BpfObject *> live(data->live.begin(), data->live.end());
  for (BpfObject *o : live) o->Release(true);
}

Napi::Value InitErrors(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    Napi::TypeError::New(env, "init(ErrorClass): ErrorClass must be a constructor").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  env.GetInstanceData<AddonData>()->errorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

Napi::Value LibbpfVersion(const Napi::CallbackInfo &info) {
  return Napi::String::New(info.Env(), std::to_string(libbpf_major_version()) + "." + std::to_string(libbpf_minor_version()));
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), libbpf_num_possible_cpus());
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  g_debug = getenv("KPIFLOW_LIBBPF_DEBUG") != nullptr;
  libbpf_set_print(PrintFn);
  AddonData *data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  napi_add_env_cleanup_hook(env, Cleanup, data);
  Napi::Function cls = BpfObject::Define(env);
  data->objectClass = Napi::Persistent(cls);
  exports.Set("BpfObject", cls);
  exports.Set("init", Napi::Function::New(env, InitErrors));
  exports.Set("libbpfVersion", Napi::Function::New(env, LibbpfVersion));
  exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus));
  return exports;
}

}  // namespace

NODE_API_MODULE(kpiflow_bpf, Init)
