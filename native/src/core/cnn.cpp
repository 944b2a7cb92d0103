// speed::CNNClassifier<T>: the convolutional feature network's graph against Backend<T>.
//
// Owned data (backend memory): the flat params/grads/Adam moments (one layout)
// and one activation arena that keeps every layer's post-ReLU output for the
// backward (re-allocated only when the batch grows). ReLU runs in place on the
// conv and fc1 outputs: its backward needs only the output (dx = dy where y > 0).
// The cross-entropy runs on the host (classifier.h) on the downloaded logits.
#include "speed/cnn.h"

#include <algorithm>
#include <utility>

#include "classifier.h"
#include "layout.h"  // ParamLayout, torch_default_uniform

namespace speed {

int CNNConfig::size_after(int s) const {
  int S = input_size;
  for (int i = 0; i < s; ++i) S = (S + 1) / 2;  // (S + 2 - 3) / 2 + 1
  return S;
}

int CNNConfig::flat_size() const { return channels.back() * size_after(stages()) * size_after(stages()); }

void CNNConfig::validate() const {
  auto bad = [](const std::string& key, const std::string& msg) { throw Error("CNNConfig." + key + ": " + msg); };
  if (input_size < 1 || input_size > 4096)
    bad("input_size", "must be in [1, 4096], got " + std::to_string(input_size));
  if (in_channels < 1 || in_channels > 4096)
    bad("in_channels", "must be in [1, 4096], got " + std::to_string(in_channels));
  if (channels.empty() || channels.size() > 8)
    bad("channels", "must list 1 to 8 stage widths, got " + std::to_string(channels.size()));
  for (size_t i = 0; i < channels.size(); ++i)
    if (channels[i] < 1 || channels[i] > 4096)
      bad("channels", "channels[" + std::to_string(i) + "] must be in [1, 4096], got " + std::to_string(channels[i]));
  if (fc_hidden < 1 || fc_hidden > (1 << 16))
    bad("fc_hidden", "must be in [1, 65536], got " + std::to_string(fc_hidden));
  if (num_classes < 2 || num_classes > (1 << 20))
    bad("num_classes", "must be >= 2 for a classifier, got " + std::to_string(num_classes));
  if (static_cast<int64_t>(flat_size()) * fc_hidden > (int64_t(1) << 31))
    bad("fc_hidden", "fc1 would have " + std::to_string(static_cast<int64_t>(flat_size()) * fc_hidden) +
                         " weights (flattened " + std::to_string(flat_size()) + " x fc_hidden " +
                         std::to_string(fc_hidden) + "); at most 2^31");
}

namespace {

struct CnnLayout : ParamLayout {
  std::vector<size_t> conv_w, conv_b;  // per conv layer (2 per stage)
  size_t fc1_w = 0, fc1_b = 0, fc2_w = 0, fc2_b = 0;
};

// Conv layer i = 2 s + j of stage s: j = 0 keeps the size, j = 1 halves it (stride 2).
Conv2dShape conv_shape(const CNNConfig& c, int i, int N) {
  const int s = i / 2, j = i % 2;
  Conv2dShape sh;
  sh.N = N;
  sh.Ci = j == 1 ? c.channels[s] : (s == 0 ? c.in_channels : c.channels[s - 1]);
  sh.H = sh.W = c.size_after(s);
  sh.Co = c.channels[s];
  sh.kh = sh.kw = 3;
  sh.stride = j == 1 ? 2 : 1;
  sh.pad_t = sh.pad_l = sh.pad_b = sh.pad_r = 1;
  return sh;
}

CnnLayout make_cnn_layout(const CNNConfig& c) {
  CnnLayout lay;
  for (int i = 0; i < 2 * c.stages(); ++i) {
    const Conv2dShape sh = conv_shape(c, i, 0);
    const std::string name = "features." + std::to_string(2 * i) + ".";  // ReLUs take the odd indices
    lay.conv_w.push_back(lay.add(name + "weight", {sh.Co, sh.Ci, 3, 3}));
    lay.conv_b.push_back(lay.add(name + "bias", {sh.Co}));
  }
  lay.fc1_w = lay.add("fc1.weight", {c.fc_hidden, c.flat_size()});
  lay.fc1_b = lay.add("fc1.bias", {c.fc_hidden});
  lay.fc2_w = lay.add("fc2.weight", {c.num_classes, c.fc_hidden});
  lay.fc2_b = lay.add("fc2.bias", {c.num_classes});
  return lay;
}

// InitRng counter word 3 of the CNN's init, distinct from the DiT's and the ViT's.
constexpr uint32_t kCnnInitTag = 0xC44Eu;

}  // namespace

template <typename T>
struct CNNClassifier<T>::Impl {
  CNNConfig cfg;
  std::shared_ptr<Backend<T>> be_ptr;
  Backend<T>* be;
  CnnLayout lay;
  ClassifierBuffers<T> buf;  // params, grads, Adam moments
  int64_t step = 0;
  int layers = 0;  // conv layers

  // ---- the activation arena --------------------------------------------------
  int cap = 0;
  std::vector<void*> owned;
  T *img = nullptr, *h = nullptr, *z = nullptr, *dz = nullptr, *dh = nullptr, *losses = nullptr;
  T *d0 = nullptr, *d1 = nullptr;  // ping-pong gradients of the conv outputs
  std::vector<T*> act;             // post-ReLU output of each conv layer

  Impl(const CNNConfig& c, std::shared_ptr<Backend<T>> b) : cfg(c), be_ptr(std::move(b)) {
    if (!be_ptr) throw Error("CNNClassifier: backend is null");
    cfg.validate();
    be = be_ptr.get();
    lay = make_cnn_layout(cfg);
    layers = 2 * cfg.stages();
    buf.allocate(*be, lay.num_trainable);
  }
  ~Impl() {
    release_arena();
    buf.release(*be);
  }

  T* alloc(size_t n) { return static_cast<T*>(be->alloc_bytes(std::max<size_t>(n, 1) * sizeof(T))); }
  void release_arena() {
    for (void* p : owned) be->free_bytes(p);
    owned.clear();
    act.clear();
    cap = 0;
  }
  T* A(size_t n) {
    T* p = alloc(n);
    owned.push_back(p);
    return p;
  }
  size_t act_size(int i, int N) const {
    const Conv2dShape s = conv_shape(cfg, i, N);
    return size_t(N) * s.Co * s.Ho() * s.Wo();
  }
  void ensure(int N) {
    if (N <= cap) return;
    release_arena();
    const size_t B = N, S = cfg.input_size;
    try {
      img = A(B * cfg.in_channels * S * S);
      size_t biggest = 0;
      for (int i = 0; i < layers; ++i) {
        act.push_back(A(act_size(i, N)));
        biggest = std::max(biggest, act_size(i, N));
      }
      h = A(B * cfg.fc_hidden);
      z = A(B * cfg.num_classes);
      dz = A(B * cfg.num_classes);
      dh = A(B * cfg.fc_hidden);
      losses = A(B);
      d0 = A(biggest);
      d1 = A(biggest);
    } catch (...) {
      release_arena();
      throw;
    }
    cap = N;
  }

  // ---- forward: img -> h (and, with `head`, the logits z) ----------------------
  void forward(int N, bool head) {
    Backend<T>& b = *be;
    const T* W = buf.params;
    const T* in = img;
    for (int i = 0; i < layers; ++i) {
      b.conv2d_forward(in, W + lay.conv_w[i], W + lay.conv_b[i], act[i], conv_shape(cfg, i, N), false);
      b.relu_forward(act[i], act[i], act_size(i, N));
      in = act[i];
    }
    // flatten: [N, C, S, S] is already [N, C*S*S] row-major, torch.flatten's order
    b.linear_forward(in, W + lay.fc1_w, W + lay.fc1_b, h, nullptr, N, cfg.flat_size(), cfg.fc_hidden, Act::None);
    b.relu_forward(h, h, size_t(N) * cfg.fc_hidden);
    if (head) b.linear_forward(h, W + lay.fc2_w, W + lay.fc2_b, z, nullptr, N, cfg.fc_hidden, cfg.num_classes, Act::None);
  }

  // ---- backward: dz -> grads -----------------------------------------------------
  void backward(int N) {
    Backend<T>& b = *be;
    const T* W = buf.params;
    T* G = buf.grads;
    const int F = cfg.flat_size(), H1 = cfg.fc_hidden;
    b.linear_backward(h, W + lay.fc2_w, dz, nullptr, dh, G + lay.fc2_w, G + lay.fc2_b, N, H1, cfg.num_classes,
                      Act::None, false);
    b.relu_backward(h, dh, dh, size_t(N) * H1);
    T* d = d0;
    T* other = d1;
    b.linear_backward(act[layers - 1], W + lay.fc1_w, dh, nullptr, d, G + lay.fc1_w, G + lay.fc1_b, N, F, H1,
                      Act::None, false);
    for (int i = layers - 1; i >= 0; --i) {
      b.relu_backward(act[i], d, d, act_size(i, N));
      // the first layer's input is the image: no gradient for it
      b.conv2d_backward(i > 0 ? act[i - 1] : img, W + lay.conv_w[i], d, i > 0 ? other : nullptr, G + lay.conv_w[i],
                        G + lay.conv_b[i], conv_shape(cfg, i, N));
      std::swap(d, other);
    }
  }

  void upload_images(const T* x, int N) {
    ensure(N);
    const size_t n = size_t(N) * cfg.in_channels * cfg.input_size * cfg.input_size;
    be->to_device(img, x, n * sizeof(T));
  }

  std::vector<double> download_logits(int N) {
    std::vector<T> zz(size_t(N) * cfg.num_classes);
    be->to_host(zz.data(), z, zz.size() * sizeof(T));
    return std::vector<double>(zz.begin(), zz.end());
  }

  ClassifierStepResult loss_and_grad(const T* x, const int32_t* y, int N, const char* what) {
    check_classifier_input(x, N, what);
    check_classifier_labels(y, N, cfg.num_classes, what);
    upload_images(x, N);
    forward(N, true);
    ClassifierStepResult r;
    std::vector<double> d = softmax_cross_entropy(download_logits(N), y, N, cfg.num_classes, r);
    std::vector<T> dt(d.begin(), d.end());
    be->to_device(dz, dt.data(), dt.size() * sizeof(T));
    backward(N);
    return r;
  }

  const ParamInfo& find(const std::string& name) const { return find_classifier_param(lay.params, name, "CNN"); }
  T* slot_ptr(const ParamInfo& p, Slot s, bool writing) const { return buf.slot(p, s, writing, "CNN"); }
};

template <typename T>
CNNClassifier<T>::CNNClassifier(const CNNConfig& cfg, std::shared_ptr<Backend<T>> backend)
    : impl_(new Impl(cfg, std::move(backend))) {}
template <typename T>
CNNClassifier<T>::~CNNClassifier() = default;

template <typename T>
const CNNConfig& CNNClassifier<T>::config() const { return impl_->cfg; }
template <typename T>
Backend<T>& CNNClassifier<T>::backend() { return *impl_->be; }
template <typename T>
const std::vector<ParamInfo>& CNNClassifier<T>::params() const { return impl_->lay.params; }
template <typename T>
size_t CNNClassifier<T>::num_trainable() const { return impl_->lay.num_trainable; }
template <typename T>
int64_t CNNClassifier<T>::step() const { return impl_->step; }
template <typename T>
void CNNClassifier<T>::set_step(int64_t s) {
  if (s < 0) throw Error("set_step: step must be >= 0, got " + std::to_string(s));
  impl_->step = s;
}

template <typename T>
void CNNClassifier<T>::init(uint64_t seed) {
  Impl& I = *impl_;
  std::vector<T> host(I.lay.num_trainable, T(0));
  const std::vector<ParamInfo>& ps = I.lay.params;
  for (size_t k = 0; k < ps.size(); ++k) {
    // a bias takes the fan-in of the weight listed just before it
    const ParamInfo& wp = ps[k].shape.size() >= 2 ? ps[k] : ps[k - 1];
    const double fan_in = static_cast<double>(wp.numel) / static_cast<double>(wp.shape[0]);
    torch_default_uniform(host.data() + ps[k].offset, ps[k].numel, fan_in, seed, static_cast<uint32_t>(k + 1),
                          kCnnInitTag);
  }
  I.be->to_device(I.buf.params, host.data(), host.size() * sizeof(T));
  for (T* p : {I.buf.grads, I.buf.m, I.buf.v}) I.be->fill(p, T(0), host.size());
  I.step = 0;
}

template <typename T>
void CNNClassifier<T>::read_param(const std::string& name, Slot slot, T* host) const {
  read_param_of(*impl_, name, slot, host);
}

template <typename T>
void CNNClassifier<T>::write_param(const std::string& name, Slot slot, const T* host) {
  write_param_of(*impl_, name, slot, host);
}

template <typename T>
ClassifierStepResult CNNClassifier<T>::loss_and_grad(const T* x, const int32_t* y, int N) {
  ClassifierStepResult r = impl_->loss_and_grad(x, y, N, "loss_and_grad");
  r.step = impl_->step;
  return r;
}

template <typename T>
ClassifierStepResult CNNClassifier<T>::train_step(const T* x, const int32_t* y, int N, const OptimHyper& hp) {
  Impl& I = *impl_;
  ClassifierStepResult r = I.loss_and_grad(x, y, N, "train_step");
  I.buf.optimizer_step(*I.be, I.lay.num_trainable, I.losses, hp, I.step, r);
  return r;
}

template <typename T>
void CNNClassifier<T>::logits(const T* x, int N, T* out) {
  Impl& I = *impl_;
  check_classifier_input(x, N, "logits");
  if (!out) throw Error("logits: out is null");
  I.upload_images(x, N);
  I.forward(N, true);
  I.be->to_host(out, I.z, size_t(N) * I.cfg.num_classes * sizeof(T));
}

template <typename T>
void CNNClassifier<T>::features(const T* x, int N, T* out) {
  Impl& I = *impl_;
  check_classifier_input(x, N, "features");
  if (!out) throw Error("features: out is null");
  I.upload_images(x, N);
  I.forward(N, false);
  I.be->to_host(out, I.h, size_t(N) * I.cfg.fc_hidden * sizeof(T));
}

template class CNNClassifier<float>;
template class CNNClassifier<double>;

}  // namespace speed
