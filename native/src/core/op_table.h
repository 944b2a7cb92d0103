// The op table: every Backend<T> op, with the shapes it is checked and timed at, in one
// place (as ggml's test-backend-ops). Three drivers walk it:
//   grad   native/tests/test_ops_grad.cpp      CPU float64: forward against a float64
//          reference (op_table.cpp), backward against central finite differences, (=) and (+=)
//   test   native/tests/cuda/test_cuda_ops.cpp CUDA against the CPU backend (fp32|tf32|bf16)
//   perf   native/src/core/bench.cpp           `speed-train bench`'s per-op rows at a model's shapes
// and native/tests/test_cpu_ops.cpp runs the `threads` and `f32` cases (float32 CPU: bitwise
// the same for 1, 2, 3 threads; against the float64 reference).
//
// ADDING AN OP = ONE TABLE ENTRY: a builder in op_table.cpp that declares the op's tensors
// (inputs with their seeded fills, outputs, upstream gradients, input gradients), its forward
// and backward on any Backend<T> (one generic lambda each, instantiated for float and double),
// an optional float64 reference and its tolerances; then one line per shape in op_cases()
// (and in perf_cases() for a bench row). All drivers pick it up from there. A case's `modes`
// say which drivers run it: tiny shapes for the finite differences (kGrad), odd and DiT-sized
// ones for CUDA (kTest).
//
// It lives in the core, not in native/tests, because bench.cpp (the product's bench behind
// `speed-train bench`) times the same entries; the float64 references cost nothing at run time.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "speed/backend.h"
#include "speed/cuda.h"
#include "speed/dit.h"

namespace speed::ops {

// Which drivers run a case (a bit set).
enum Mode : unsigned {
  kGrad = 1u,     // test_ops_grad: float64 reference + finite differences
  kTest = 2u,     // test_cuda_ops: CUDA vs CPU
  kThreads = 4u,  // test_cpu_ops: float32 CPU, identical bits for 1, 2 and 3 threads
  kF32 = 8u,      // test_cpu_ops: float32 CPU against the float64 reference (TensorSpec::f32)
};

// CUDA math modes as bits (1 << int(CudaMath)), for OpCase::maths and OpCase::det_bwd.
constexpr unsigned kAllMaths = (1u << int(CudaMath::BF16)) | (1u << int(CudaMath::TF32)) | (1u << int(CudaMath::FP32));

// How a tensor is filled before a run; every random fill is seeded from the case's name.
struct Fill {
  enum Kind { Poison, Uniform, Normal, Const, Values } kind = Poison;
  double a = 0, b = 0;         // Uniform [a, b); Normal mean a, std b; Const a
  std::vector<double> values;  // Values (int32 tensors too)
  static Fill poison() { return {}; }
  static Fill uniform(double lo = -1, double hi = 1) { return {Uniform, lo, hi, {}}; }
  static Fill normal(double scale = 1, double mean = 0) { return {Normal, mean, scale, {}}; }
  static Fill constant(double v) { return {Const, v, 0, {}}; }
  static Fill of(std::vector<double> v) { return {Values, 0, 0, std::move(v)}; }
  static Fill ints(const std::vector<int32_t>& v) { return {Values, 0, 0, std::vector<double>(v.begin(), v.end())}; }
};

// Test mode: ||cuda - cpu|| / ||cpu|| per CUDA math mode; `elementwise`: every
// |cuda - cpu| <= tol max(1, |cpu|) instead.
struct Tol {
  double fp32 = 1e-5, tf32 = 1e-5, bf16 = 1e-5;
  bool elementwise = false;
  static Tol all(double t) { return {t, t, t, false}; }
  // matrix products: tf32 and bf16 operands
  static Tol gemm() { return {1e-5, 2e-3, 2e-2, false}; }
  double of(CudaMath m) const { return m == CudaMath::BF16 ? bf16 : m == CudaMath::TF32 ? tf32 : fp32; }
};

enum class Role {
  In,     // read by forward (and backward)
  InOut,  // read and written in place by forward (gated residual, add with y = a)
  Out,    // written by forward (poisoned with NaN first, so an unwritten element fails)
  DOut,   // upstream gradient of an Out/InOut, read by backward (the projection r of L = Σ r·out)
  DIn,    // gradient of an In/InOut, written by backward
};

struct TensorSpec {
  std::string name;
  size_t n = 0;
  Role role = Role::In;
  bool is_int = false;  // int32 (time steps, labels); never differentiated
  Fill fill;
  int of = -1;              // DOut: its Out/InOut; DIn: its In/InOut
  bool accum = false;       // DIn: follows backward's accum flag (= or +=); else always (=)
  bool bwd_writes = false;  // DOut that backward overwrites (linear's dy -> d(pre))
  // DIn: the elements backward writes (null: all); the others must keep the sentinel fill
  // (chunks of d(mod) that belong to other ops)
  std::function<bool(size_t)> region;
  Tol tol;           // test mode
  double f32 = 0;    // f32 mode: bound on the float32 output against the float64 reference (0: not compared)
};

// A run's tensors in backend memory, by the index the builder returned.
template <typename T>
struct Bufs {
  std::vector<void*> p;
  std::vector<double> scalars;  // results an op returns by value (optimizer: grad_norm, skipped)
  T* operator[](int i) const { return i < 0 ? nullptr : static_cast<T*>(p[i]); }
  const int32_t* idx(int i) const { return static_cast<const int32_t*>(p[i]); }
};

// Host float64 copies of a case's tensors for the reference (int32 tensors as doubles).
struct Host {
  std::vector<std::vector<double>> v;
  std::vector<char> set;  // outputs the reference computed
  const std::vector<double>& operator[](int i) const { return v[i]; }
  std::vector<double>& out(int i) {
    set[i] = 1;
    return v[i];
  }
};

// An output that forward computes as a gradient (iddpm_loss's dout): elements in `region`
// of tensor `out` against the central differences of `objective` (a function of the forward
// outputs) with respect to input `of`.
struct FwdGrad {
  std::string what;
  int out = -1, of = -1;
  std::function<double(const Host&)> objective;
  std::function<bool(size_t)> region;
};

template <typename T>
using FwdFn = std::function<void(Backend<T>&, Bufs<T>&)>;
template <typename T>
using BwdFn = std::function<void(Backend<T>&, Bufs<T>&, bool accum)>;

struct OpCase {
  std::string op;       // the Backend op (family) name
  std::string name;     // op + shape: what every check line starts with
  std::string section;  // test_cuda_ops' filter word (gpu-check runs sections on their own)
  unsigned modes = kGrad | kTest;
  std::vector<TensorSpec> t;
  FwdFn<float> fwd_f;
  FwdFn<double> fwd_d;
  BwdFn<float> bwd_f;  // null: the op has no gradient
  BwdFn<double> bwd_d;
  // grad mode: the forward outputs in float64 (sets the outputs it computes) ...
  std::function<void(Host&)> reference;
  double ref_tol = 1e-13, ref_floor = 1e-12;  // max|got - ref| / max(max|ref|, floor)
  // ... and the tensors backward overwrites besides the gradients (from inputs, outputs, douts)
  std::function<void(Host&)> reference_bwd;
  std::vector<FwdGrad> fwd_grads;
  double fd_tol = 1e-6;      // relative error of backward against finite differences
  double accum_tol = 1e-14;  // (+=) against (=) plus the initial value
  std::string throws;        // grad mode: forward + backward must throw a speed::Error saying this
  bool uses_gemm = false;    // grad and threads modes run it again with the other CPU GEMM
  bool f32_abs = false;      // f32 mode: absolute instead of relative bound
  unsigned det_bwd = 0;      // test mode: bit 1 << int(CudaMath): a second CUDA backward gives the same bits
  double scalar_tol = 1e-9;  // test mode: relative, for Bufs::scalars
  std::vector<int> optional_grads;  // test mode: DIn the CUDA backward may skip (null): run once more without each
  unsigned maths = kAllMaths;               // test mode: bit 1 << int(CudaMath) for each math mode that runs it
  std::vector<std::pair<std::string, std::string>> env;  // test mode: environment set around the case
  // test mode, bf16 only: also against a CUDA backend in float32 math (2e-2), and on the bf16
  // backend again with `fallback_env` set (the float32 kernels: the fp32 tolerance against the CPU)
  bool cross_fp32 = false;
  std::pair<std::string, std::string> fallback_env;
  // perf mode (bench rows): names ("" = not timed), FLOPs and bytes per call
  std::string perf_fwd, perf_bwd;
  double fwd_flops = 0, fwd_bytes = 0, bwd_flops = 0, bwd_bytes = 0;

  // ---- builders: each returns the tensor's index --------------------------------------
  int add(TensorSpec s) {
    t.push_back(std::move(s));
    return static_cast<int>(t.size()) - 1;
  }
  int in(const std::string& nm, size_t n, Fill f = Fill::uniform(), Tol tol = {}) {
    TensorSpec s;
    s.name = nm, s.n = n, s.fill = std::move(f), s.tol = tol;
    return add(std::move(s));
  }
  int ints(const std::string& nm, const std::vector<int32_t>& v) {
    int i = in(nm, v.size(), Fill::ints(v));
    t[i].is_int = true;
    return i;
  }
  int inout(const std::string& nm, size_t n, Fill f = Fill::uniform(), Tol tol = {}) {
    int i = in(nm, n, std::move(f), tol);
    t[i].role = Role::InOut;
    return i;
  }
  int out(const std::string& nm, size_t n, Tol tol = {}) {
    TensorSpec s;
    s.name = nm, s.n = n, s.role = Role::Out, s.tol = tol;
    return add(std::move(s));
  }
  int dout(int of, Fill f = Fill::uniform(), Tol tol = {}) {
    TensorSpec s;
    s.name = "d" + t[of].name, s.n = t[of].n, s.role = Role::DOut, s.of = of, s.fill = std::move(f), s.tol = tol;
    return add(std::move(s));
  }
  // accum: fill is the initial value of a (+=) run (a sentinel constant when `region` is set)
  int din(int of, bool accum = false, Tol tol = {}, Fill f = Fill::uniform()) {
    TensorSpec s;
    s.name = "d" + t[of].name, s.n = t[of].n, s.role = Role::DIn, s.of = of, s.accum = accum, s.tol = tol;
    s.fill = std::move(f);
    return add(std::move(s));
  }
  // the 8 IDDPM tables as inputs (first index returned); tables_view() reads them back
  int tables(const DiffusionTables& tb);
  template <class F>
  void forward(F f) {
    fwd_f = f;
    fwd_d = f;
  }
  template <class F>
  void backward(F f) {
    bwd_f = f;
    bwd_d = f;
  }
  bool has_grad() const { return static_cast<bool>(bwd_d); }
  template <typename T>
  const FwdFn<T>& fwd() const;
  template <typename T>
  const BwdFn<T>& bwd() const;
};
template <>
inline const FwdFn<float>& OpCase::fwd<float>() const { return fwd_f; }
template <>
inline const FwdFn<double>& OpCase::fwd<double>() const { return fwd_d; }
template <>
inline const BwdFn<float>& OpCase::bwd<float>() const { return bwd_f; }
template <>
inline const BwdFn<double>& OpCase::bwd<double>() const { return bwd_d; }

template <typename T>
DiffusionTablesView<T> tables_view(const Bufs<T>& b, int first, int steps) {
  DiffusionTablesView<T> v;
  v.steps = steps;
  v.sqrt_abar = b[first];
  v.sqrt_1m_abar = b[first + 1];
  v.sqrt_recip_abar = b[first + 2];
  v.sqrt_recipm1_abar = b[first + 3];
  v.coef1 = b[first + 4];
  v.coef2 = b[first + 5];
  v.log_beta = b[first + 6];
  v.post_log_var = b[first + 7];
  return v;
}

// The cases the grad, test, threads and f32 drivers run (built once).
const std::vector<OpCase>& op_cases();

// The bench's per-op cases at model `c`'s shapes for batch B (perf rows in bench order);
// `n_params`: the optimizer's parameter count, `t`: the batch's time steps.
std::vector<OpCase> perf_cases(const DiTConfig& c, int B, size_t n_params, const DiffusionTables& tabs,
                               const std::vector<int32_t>& t);

// ---- running a case ------------------------------------------------------------------------
// Host values of every tensor from its fill, seeded from the case name (Poison -> NaN).
Host make_host(const OpCase& c, uint64_t seed = 0);

// The case's buffers on one backend; frees them on destruction.
template <typename T>
class CaseRun {
 public:
  CaseRun(Backend<T>& be, const OpCase& c);
  ~CaseRun();
  CaseRun(const CaseRun&) = delete;
  CaseRun& operator=(const CaseRun&) = delete;
  void upload(int i, const std::vector<double>& v);
  void poison(int i);
  std::vector<double> download(int i) const;
  // upload the inputs (In, InOut, DOut) from `h`, poison the outputs
  void load_inputs(const Host& h);
  // fill every tensor on the backend without host data (be.normal, be.fill): for timing
  void fill_for_perf();
  void forward() { c_.fwd<T>()(be_, b_); }
  void backward(bool accum) { c_.bwd<T>()(be_, b_, accum); }
  Bufs<T>& bufs() { return b_; }
  Backend<T>& backend() { return be_; }

 private:
  Backend<T>& be_;
  const OpCase& c_;
  Bufs<T> b_;
};

}  // namespace speed::ops
