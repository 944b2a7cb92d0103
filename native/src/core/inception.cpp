// speed::InceptionV3<T>: pytorch-fid's FID Inception-v3 against Backend<T> (see inception.h).
//
// As in vae.cpp, one walker (run_graph) serves two purposes: with a Plan in "count" mode
// it runs no op and only sums FLOPs and the largest activation of a chunk; in "run" mode
// it executes. So the FLOP figure of the bench, the arena size and the executed graph
// cannot drift apart.
//
// Activations live in four equal slots. A block reads its input X from one slot, writes
// its concatenated output Y into another and uses the other two (T1, T2) for its branch
// chains: each branch's last conv goes to a temporary and channel_copy applies the ReLU
// while writing it into its channel range of Y (torch.cat(dim=1) order).
#include "speed/inception.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace speed {

namespace {

constexpr double kBnEps = 1e-3;  // torchvision's BasicConv2d: BatchNorm2d(eps=0.001)

// One BasicConv2d (conv without bias, BatchNorm, ReLU); after prepare() a conv with bias.
struct ConvL {
  int ci = 0, co = 0, kh = 1, kw = 1, stride = 1, ph = 0, pw = 0;
  size_t param = 0;       // index of <prefix>.conv.weight in the parameter list (bn.* follow)
  size_t w = 0, b = 0;    // offsets of the folded weight [co, ci, kh, kw] and bias [co]
  size_t K() const { return static_cast<size_t>(ci) * kh * kw; }
};

struct Layout {
  std::vector<ParamInfo> params;
  size_t raw_numel = 0;     // host copies of every parameter as written
  size_t folded_numel = 0;  // folded convs + fc
  std::vector<ConvL> convs;
  size_t fc_param = 0, fc_w = 0, fc_b = 0;

  size_t add(const std::string& name, std::vector<int64_t> shape) {
    ParamInfo p;
    p.name = name;
    p.shape = std::move(shape);
    p.numel = 1;
    for (int64_t d : p.shape) p.numel *= static_cast<size_t>(d);
    p.offset = raw_numel;
    raw_numel += p.numel;
    params.push_back(std::move(p));
    return params.size() - 1;
  }
  // A BasicConv2d named `prefix`; returns its index in convs.
  int conv(const std::string& prefix, int ci, int co, int kh, int kw, int stride = 1, int ph = 0, int pw = 0) {
    ConvL c;
    c.ci = ci;
    c.co = co;
    c.kh = kh;
    c.kw = kw;
    c.stride = stride;
    c.ph = ph;
    c.pw = pw;
    c.param = add(prefix + ".conv.weight", {co, ci, kh, kw});
    add(prefix + ".bn.weight", {co});
    add(prefix + ".bn.bias", {co});
    add(prefix + ".bn.running_mean", {co});
    add(prefix + ".bn.running_var", {co});
    c.w = folded_numel;
    folded_numel += static_cast<size_t>(co) * c.K();
    c.b = folded_numel;
    folded_numel += co;
    convs.push_back(c);
    return static_cast<int>(convs.size()) - 1;
  }
};

// The blocks hold the index of their first conv; the others follow in the order the
// constructors below add them (torchvision's registration order, hence the state dict's).
enum class Kind { A, B, C, D, E1, E2 };
struct Block {
  Kind kind;
  int first;
  int in;
};

struct Net {
  Layout lay;
  int stem = 0;  // Conv2d_1a_3x3 .. Conv2d_4a_3x3: five convs
  std::vector<Block> blocks;
  int spatial_block = -1;  // Mixed_6d
};

// FIDInceptionA: branch1x1 64 | branch5x5 48 -> 64 | branch3x3dbl 64 -> 96 -> 96 |
// avg pool (count_include_pad=False) -> branch_pool `pool_features`
Block add_a(Layout& L, const std::string& p, int in, int pool_features) {
  Block b{Kind::A, L.conv(p + ".branch1x1", in, 64, 1, 1), in};
  L.conv(p + ".branch5x5_1", in, 48, 1, 1);
  L.conv(p + ".branch5x5_2", 48, 64, 5, 5, 1, 2, 2);
  L.conv(p + ".branch3x3dbl_1", in, 64, 1, 1);
  L.conv(p + ".branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
  L.conv(p + ".branch3x3dbl_3", 96, 96, 3, 3, 1, 1, 1);
  L.conv(p + ".branch_pool", in, pool_features, 1, 1);
  return b;
}
// InceptionB (Mixed_6a): branch3x3 384 stride 2 | branch3x3dbl 64 -> 96 -> 96 stride 2 |
// max pool 3x3 stride 2
Block add_b(Layout& L, const std::string& p, int in) {
  Block b{Kind::B, L.conv(p + ".branch3x3", in, 384, 3, 3, 2), in};
  L.conv(p + ".branch3x3dbl_1", in, 64, 1, 1);
  L.conv(p + ".branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
  L.conv(p + ".branch3x3dbl_3", 96, 96, 3, 3, 2);
  return b;
}
// FIDInceptionC: branch1x1 192 | branch7x7 c7 -> 1x7 c7 -> 7x1 192 |
// branch7x7dbl c7 -> 7x1 -> 1x7 -> 7x1 -> 1x7 192 | avg pool (exclude pad) -> 192
Block add_c(Layout& L, const std::string& p, int in, int c7) {
  Block b{Kind::C, L.conv(p + ".branch1x1", in, 192, 1, 1), in};
  L.conv(p + ".branch7x7_1", in, c7, 1, 1);
  L.conv(p + ".branch7x7_2", c7, c7, 1, 7, 1, 0, 3);
  L.conv(p + ".branch7x7_3", c7, 192, 7, 1, 1, 3, 0);
  L.conv(p + ".branch7x7dbl_1", in, c7, 1, 1);
  L.conv(p + ".branch7x7dbl_2", c7, c7, 7, 1, 1, 3, 0);
  L.conv(p + ".branch7x7dbl_3", c7, c7, 1, 7, 1, 0, 3);
  L.conv(p + ".branch7x7dbl_4", c7, c7, 7, 1, 1, 3, 0);
  L.conv(p + ".branch7x7dbl_5", c7, 192, 1, 7, 1, 0, 3);
  L.conv(p + ".branch_pool", in, 192, 1, 1);
  return b;
}
// InceptionD (Mixed_7a): branch3x3 192 -> 320 stride 2 | branch7x7x3 192 -> 1x7 -> 7x1 ->
// 3x3 stride 2 | max pool 3x3 stride 2
Block add_d(Layout& L, const std::string& p, int in) {
  Block b{Kind::D, L.conv(p + ".branch3x3_1", in, 192, 1, 1), in};
  L.conv(p + ".branch3x3_2", 192, 320, 3, 3, 2);
  L.conv(p + ".branch7x7x3_1", in, 192, 1, 1);
  L.conv(p + ".branch7x7x3_2", 192, 192, 1, 7, 1, 0, 3);
  L.conv(p + ".branch7x7x3_3", 192, 192, 7, 1, 1, 3, 0);
  L.conv(p + ".branch7x7x3_4", 192, 192, 3, 3, 2);
  return b;
}
// FIDInceptionE_1 / _2: branch1x1 320 | branch3x3 384 -> [1x3 384, 3x1 384] |
// branch3x3dbl 448 -> 3x3 384 -> [1x3 384, 3x1 384] | pool -> 192, the pool an average
// (exclude pad) in E_1 and a 3x3 stride-1 max pool in E_2 (the TF graph's quirk that
// pytorch-fid reproduces).
Block add_e(Layout& L, const std::string& p, int in, bool max_pool) {
  Block b{max_pool ? Kind::E2 : Kind::E1, L.conv(p + ".branch1x1", in, 320, 1, 1), in};
  L.conv(p + ".branch3x3_1", in, 384, 1, 1);
  L.conv(p + ".branch3x3_2a", 384, 384, 1, 3, 1, 0, 1);
  L.conv(p + ".branch3x3_2b", 384, 384, 3, 1, 1, 1, 0);
  L.conv(p + ".branch3x3dbl_1", in, 448, 1, 1);
  L.conv(p + ".branch3x3dbl_2", 448, 384, 3, 3, 1, 1, 1);
  L.conv(p + ".branch3x3dbl_3a", 384, 384, 1, 3, 1, 0, 1);
  L.conv(p + ".branch3x3dbl_3b", 384, 384, 3, 1, 1, 1, 0);
  L.conv(p + ".branch_pool", in, 192, 1, 1);
  return b;
}

Net make_net() {
  Net n;
  Layout& L = n.lay;
  n.stem = L.conv("Conv2d_1a_3x3", 3, 32, 3, 3, 2);
  L.conv("Conv2d_2a_3x3", 32, 32, 3, 3);
  L.conv("Conv2d_2b_3x3", 32, 64, 3, 3, 1, 1, 1);
  L.conv("Conv2d_3b_1x1", 64, 80, 1, 1);
  L.conv("Conv2d_4a_3x3", 80, 192, 3, 3);
  n.blocks.push_back(add_a(L, "Mixed_5b", 192, 32));
  n.blocks.push_back(add_a(L, "Mixed_5c", 256, 64));
  n.blocks.push_back(add_a(L, "Mixed_5d", 288, 64));
  n.blocks.push_back(add_b(L, "Mixed_6a", 288));
  n.blocks.push_back(add_c(L, "Mixed_6b", 768, 128));
  n.blocks.push_back(add_c(L, "Mixed_6c", 768, 160));
  n.blocks.push_back(add_c(L, "Mixed_6d", 768, 160));
  n.spatial_block = static_cast<int>(n.blocks.size()) - 1;
  n.blocks.push_back(add_c(L, "Mixed_6e", 768, 192));
  n.blocks.push_back(add_d(L, "Mixed_7a", 768));
  n.blocks.push_back(add_e(L, "Mixed_7b", 1280, false));
  n.blocks.push_back(add_e(L, "Mixed_7c", 2048, true));
  n.lay.fc_param = L.add("fc.weight", {InceptionV3<float>::kLogits, InceptionV3<float>::kPool3});
  L.add("fc.bias", {InceptionV3<float>::kLogits});
  n.lay.fc_w = L.folded_numel;
  L.folded_numel += static_cast<size_t>(InceptionV3<float>::kLogits) * InceptionV3<float>::kPool3;
  n.lay.fc_b = L.folded_numel;
  L.folded_numel += InceptionV3<float>::kLogits;
  return n;
}

}  // namespace

template <typename T>
struct InceptionV3<T>::Impl {
  std::shared_ptr<Backend<T>> be_ptr;
  Backend<T>* be;
  Net net;
  std::map<std::string, size_t> index;
  std::vector<T> raw;  // host copies until prepare()
  std::vector<bool> written;
  T* folded = nullptr;  // backend memory, after prepare()

  T* slot[4] = {nullptr, nullptr, nullptr, nullptr};
  T* pooled = nullptr;  // [chunk, 2048]
  T* logit = nullptr;   // [chunk, 1008]
  size_t slot_cap = 0, row_cap = 0;

  struct Plan {
    bool run = true;
    double flops = 0;
    size_t max_act = 0;
    void act(size_t n) { max_act = std::max(max_act, n); }
  };

  explicit Impl(std::shared_ptr<Backend<T>> b) : be_ptr(std::move(b)) {
    if (!be_ptr) throw Error("InceptionV3: backend is null");
    be = be_ptr.get();
    net = make_net();
    raw.assign(net.lay.raw_numel, T(0));
    written.assign(net.lay.params.size(), false);
    for (size_t i = 0; i < net.lay.params.size(); ++i) index[net.lay.params[i].name] = i;
  }
  ~Impl() {
    release();
    be->free_bytes(folded);
  }
  void release() {
    for (T*& s : slot) {
      be->free_bytes(s);
      s = nullptr;
    }
    be->free_bytes(pooled);
    be->free_bytes(logit);
    pooled = logit = nullptr;
    slot_cap = row_cap = 0;
  }
  T* alloc(size_t n) { return static_cast<T*>(be->alloc_bytes(std::max<size_t>(n, 1) * sizeof(T))); }
  void ensure(size_t act, size_t rows) {
    if (act <= slot_cap && rows <= row_cap) return;
    const size_t a = std::max(act, slot_cap), r = std::max(rows, row_cap);
    release();
    try {
      for (T*& s : slot) s = alloc(a);
      pooled = alloc(r * kPool3);
      logit = alloc(r * kLogits);
    } catch (...) {
      release();
      throw;
    }
    slot_cap = a;
    row_cap = r;
  }

  // ---- ops (skipped in count mode) --------------------------------------------------------
  // y = conv(x) + b with the folded BatchNorm, before the ReLU; H, W become the output's.
  void conv(Plan& pl, int ci, const T* x, T* y, int N, int& H, int& W) {
    const ConvL& c = net.lay.convs[ci];
    Conv2dShape s;
    s.N = N;
    s.Ci = c.ci;
    s.H = H;
    s.W = W;
    s.Co = c.co;
    s.kh = c.kh;
    s.kw = c.kw;
    s.stride = c.stride;
    s.pad_t = s.pad_b = c.ph;
    s.pad_l = s.pad_r = c.pw;
    const int Ho = s.Ho(), Wo = s.Wo();
    const double out = double(N) * c.co * Ho * Wo;
    pl.flops += 2.0 * out * static_cast<double>(c.K());
    pl.act(static_cast<size_t>(out));
    if (pl.run) be->conv2d_forward(x, folded + c.w, folded + c.b, y, s, false);
    H = Ho;
    W = Wo;
  }
  // relu(x [N, C, HW]) into channels [off, off + C) of y [N, Ctot, HW]
  void put(Plan& pl, const T* x, T* y, int N, int C, int HW, int Ctot, int off, bool relu = true) {
    pl.act(size_t(N) * Ctot * HW);
    if (pl.run) be->channel_copy(x, y, N, C, HW, Ctot, off, relu);
  }
  // conv then ReLU in place: a branch's inner layer
  void conv_relu(Plan& pl, int ci, const T* x, T* y, int N, int& H, int& W) {
    conv(pl, ci, x, y, N, H, W);
    const int C = net.lay.convs[ci].co;
    put(pl, y, y, N, C, H * W, C, 0);
  }
  // a branch's last conv: into tmp, then ReLU into channels [off, off + co) of Y
  int conv_out(Plan& pl, int ci, const T* x, T* tmp, T* Y, int N, int H, int W, int Ctot, int off) {
    conv(pl, ci, x, tmp, N, H, W);
    const int C = net.lay.convs[ci].co;
    put(pl, tmp, Y, N, C, H * W, Ctot, off);
    return off + C;
  }
  void pool(Plan& pl, const T* x, T* y, int N, int C, int& H, int& W, int k, int stride, int pad, PoolMode m) {
    const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
    pl.act(size_t(N) * C * Ho * Wo);
    if (pl.run) be->pool2d_forward(x, y, N, C, H, W, k, stride, pad, m);
    H = Ho;
    W = Wo;
  }
  int out_channels(const Block& b) const {
    switch (b.kind) {
      case Kind::A: return 224 + net.lay.convs[b.first + 6].co;
      case Kind::B: return 480 + b.in;
      case Kind::C: return 768;
      case Kind::D: return 512 + b.in;
      default: return 2048;
    }
  }

  // X [N, in, H, W] -> Y [N, out_channels, H', W']; T1, T2 scratch.
  void block(Plan& pl, const Block& b, T* X, T* Y, T* T1, T* T2, int N, int& H, int& W) {
    const int f = b.first, Ct = out_channels(b);
    int off = 0;
    switch (b.kind) {
      case Kind::A: {
        off = conv_out(pl, f, X, T1, Y, N, H, W, Ct, off);
        int h = H, w = W;
        conv_relu(pl, f + 1, X, T1, N, h, w);
        off = conv_out(pl, f + 2, T1, T2, Y, N, h, w, Ct, off);
        h = H, w = W;
        conv_relu(pl, f + 3, X, T1, N, h, w);
        conv_relu(pl, f + 4, T1, T2, N, h, w);
        off = conv_out(pl, f + 5, T2, T1, Y, N, h, w, Ct, off);
        h = H, w = W;
        pool(pl, X, T1, N, b.in, h, w, 3, 1, 1, PoolMode::AvgExcludePad);
        conv_out(pl, f + 6, T1, T2, Y, N, h, w, Ct, off);
        return;
      }
      case Kind::B: {
        int h = H, w = W;
        conv(pl, f, X, T1, N, h, w);
        put(pl, T1, Y, N, 384, h * w, Ct, 0);
        int h2 = H, w2 = W;
        conv_relu(pl, f + 1, X, T1, N, h2, w2);
        conv_relu(pl, f + 2, T1, T2, N, h2, w2);
        conv(pl, f + 3, T2, T1, N, h2, w2);
        put(pl, T1, Y, N, 96, h2 * w2, Ct, 384);
        int h3 = H, w3 = W;
        pool(pl, X, T1, N, b.in, h3, w3, 3, 2, 0, PoolMode::Max);
        put(pl, T1, Y, N, b.in, h3 * w3, Ct, 480, false);
        H = h;
        W = w;
        return;
      }
      case Kind::C: {
        off = conv_out(pl, f, X, T1, Y, N, H, W, Ct, off);
        int h = H, w = W;
        conv_relu(pl, f + 1, X, T1, N, h, w);
        conv_relu(pl, f + 2, T1, T2, N, h, w);
        off = conv_out(pl, f + 3, T2, T1, Y, N, h, w, Ct, off);
        conv_relu(pl, f + 4, X, T1, N, h, w);
        conv_relu(pl, f + 5, T1, T2, N, h, w);
        conv_relu(pl, f + 6, T2, T1, N, h, w);
        conv_relu(pl, f + 7, T1, T2, N, h, w);
        off = conv_out(pl, f + 8, T2, T1, Y, N, h, w, Ct, off);
        pool(pl, X, T1, N, b.in, h, w, 3, 1, 1, PoolMode::AvgExcludePad);
        conv_out(pl, f + 9, T1, T2, Y, N, h, w, Ct, off);
        return;
      }
      case Kind::D: {
        int h = H, w = W;
        conv_relu(pl, f, X, T1, N, h, w);
        conv(pl, f + 1, T1, T2, N, h, w);
        put(pl, T2, Y, N, 320, h * w, Ct, 0);
        int h2 = H, w2 = W;
        conv_relu(pl, f + 2, X, T1, N, h2, w2);
        conv_relu(pl, f + 3, T1, T2, N, h2, w2);
        conv_relu(pl, f + 4, T2, T1, N, h2, w2);
        conv(pl, f + 5, T1, T2, N, h2, w2);
        put(pl, T2, Y, N, 192, h2 * w2, Ct, 320);
        int h3 = H, w3 = W;
        pool(pl, X, T1, N, b.in, h3, w3, 3, 2, 0, PoolMode::Max);
        put(pl, T1, Y, N, b.in, h3 * w3, Ct, 512, false);
        H = h;
        W = w;
        return;
      }
      case Kind::E1:
      case Kind::E2: {
        off = conv_out(pl, f, X, T1, Y, N, H, W, Ct, off);
        int h = H, w = W;
        conv_relu(pl, f + 1, X, T1, N, h, w);
        off = conv_out(pl, f + 2, T1, T2, Y, N, h, w, Ct, off);
        off = conv_out(pl, f + 3, T1, T2, Y, N, h, w, Ct, off);
        conv_relu(pl, f + 4, X, T1, N, h, w);
        conv_relu(pl, f + 5, T1, T2, N, h, w);
        off = conv_out(pl, f + 6, T2, T1, Y, N, h, w, Ct, off);
        off = conv_out(pl, f + 7, T2, T1, Y, N, h, w, Ct, off);
        pool(pl, X, T1, N, b.in, h, w, 3, 1, 1, b.kind == Kind::E2 ? PoolMode::Max : PoolMode::AvgExcludePad);
        conv_out(pl, f + 8, T1, T2, Y, N, h, w, Ct, off);
        return;
      }
    }
  }

  // Images (float [N, 3, H, W] in [0, 1], in slot 0) -> pooled [N, 2048] and logit
  // [N, 1008]; `spatial` (host, may be null) receives mixed_6/conv[..., :7] in (h, w, c)
  // order.
  void run_graph(Plan& pl, int N, int H, int W, T* spatial) {
    pl.act(size_t(N) * 3 * H * W);
    int a = 0;
    if (H != kSize || W != kSize) {
      pl.act(size_t(N) * 3 * kSize * kSize);
      if (pl.run) be->resize_bilinear(slot[0], slot[1], N, 3, H, W, kSize, kSize);
      a = 1;
      H = W = kSize;
    }
    auto S = [&](int i) { return slot[i & 3]; };
    // stem: five BasicConv2d with max pools after the third and the fifth
    const int s = net.stem;
    conv_relu(pl, s, S(a), S(a + 1), N, H, W);
    conv_relu(pl, s + 1, S(a + 1), S(a + 2), N, H, W);
    conv_relu(pl, s + 2, S(a + 2), S(a + 3), N, H, W);
    pool(pl, S(a + 3), S(a), N, 64, H, W, 3, 2, 0, PoolMode::Max);
    conv_relu(pl, s + 3, S(a), S(a + 1), N, H, W);
    conv_relu(pl, s + 4, S(a + 1), S(a + 2), N, H, W);
    pool(pl, S(a + 2), S(a + 3), N, 192, H, W, 3, 2, 0, PoolMode::Max);
    int x = a + 3;
    for (size_t i = 0; i < net.blocks.size(); ++i) {
      block(pl, net.blocks[i], S(x), S(x + 1), S(x + 2), S(x + 3), N, H, W);
      x = (x + 1) & 3;
      if (static_cast<int>(i) == net.spatial_block && spatial && pl.run) {
        // branch1x1 is Y's first 192 channels: per image, channels 0..6 are contiguous
        const size_t plane = size_t(H) * W, per = size_t(out_channels(net.blocks[i])) * plane;
        std::vector<T> tmp(kSpatialC * plane);
        for (int n = 0; n < N; ++n) {
          be->to_host(tmp.data(), S(x) + n * per, tmp.size() * sizeof(T));
          T* dst = spatial + size_t(n) * kSpatial;
          for (size_t p = 0; p < plane; ++p)
            for (int c = 0; c < kSpatialC; ++c) dst[p * kSpatialC + c] = tmp[c * plane + p];
        }
      }
    }
    const double fc_flops = 2.0 * kPool3 * kLogits;
    pl.flops += double(N) * fc_flops;
    if (!pl.run) return;
    be->global_avg_pool(S(x), pooled, N, kPool3, H * W);
    // one Linear per image: a GEMM's rounding may depend on M, and results must not
    // depend on the chunk size
    for (int n = 0; n < N; ++n)
      be->linear_forward(pooled + size_t(n) * kPool3, folded + net.lay.fc_w, folded + net.lay.fc_b,
                         logit + size_t(n) * kLogits, nullptr, 1, kPool3, kLogits, Act::None);
  }

  Plan count(int N, int H, int W) {
    Plan p;
    p.run = false;
    run_graph(p, N, H, W, nullptr);
    return p;
  }

  const ParamInfo& find(const std::string& name) const {
    auto it = index.find(name);
    if (it == index.end()) throw Error("InceptionV3: unknown parameter '" + name + "'");
    return net.lay.params[it->second];
  }
  const T* R(size_t param) const { return raw.data() + net.lay.params[param].offset; }

  void prepare() {
    std::vector<std::string> missing;
    for (size_t i = 0; i < written.size(); ++i)
      if (!written[i]) missing.push_back(net.lay.params[i].name);
    if (!missing.empty()) {
      std::string m = "InceptionV3.prepare: " + std::to_string(missing.size()) + " parameters were never written: ";
      for (size_t i = 0; i < missing.size() && i < 5; ++i) m += (i ? ", " : "") + missing[i];
      if (missing.size() > 5) m += ", ...";
      throw Error(m);
    }
    std::vector<T> host(net.lay.folded_numel);
    for (size_t ci = 0; ci < net.lay.convs.size(); ++ci) {
      const ConvL& c = net.lay.convs[ci];
      const T *w = R(c.param), *g = R(c.param + 1), *beta = R(c.param + 2), *mean = R(c.param + 3),
              *var = R(c.param + 4);
      const size_t K = c.K();
      // the first conv also takes the input's 2x - 1: conv(2x - 1) = conv_{2w}(x) - sum(w)
      const bool first = static_cast<int>(ci) == net.stem;
      for (int o = 0; o < c.co; ++o) {
        const double sc = static_cast<double>(g[o]) / std::sqrt(static_cast<double>(var[o]) + kBnEps);
        double bias = static_cast<double>(beta[o]) - static_cast<double>(mean[o]) * sc, sum = 0;
        for (size_t k = 0; k < K; ++k) {
          const double v = static_cast<double>(w[o * K + k]) * sc;
          sum += v;
          host[c.w + o * K + k] = static_cast<T>(first ? 2 * v : v);
        }
        host[c.b + o] = static_cast<T>(first ? bias - sum : bias);
      }
    }
    std::copy(R(net.lay.fc_param), R(net.lay.fc_param) + size_t(kLogits) * kPool3, host.begin() + net.lay.fc_w);
    std::copy(R(net.lay.fc_param + 1), R(net.lay.fc_param + 1) + kLogits, host.begin() + net.lay.fc_b);
    T* dev = alloc(host.size());
    be->to_device(dev, host.data(), host.size() * sizeof(T));
    be->free_bytes(folded);
    folded = dev;
    std::vector<T>().swap(raw);
  }
};

template <typename T>
InceptionV3<T>::InceptionV3(std::shared_ptr<Backend<T>> backend) : impl_(std::make_unique<Impl>(std::move(backend))) {}
template <typename T>
InceptionV3<T>::~InceptionV3() = default;
template <typename T>
Backend<T>& InceptionV3<T>::backend() {
  return *impl_->be;
}
template <typename T>
const std::vector<ParamInfo>& InceptionV3<T>::params() const {
  return impl_->net.lay.params;
}
template <typename T>
void InceptionV3<T>::write_param(const std::string& name, const T* host) {
  Impl& I = *impl_;
  if (I.folded) throw Error("InceptionV3.write_param('" + name + "'): the network is already prepared");
  const ParamInfo& p = I.find(name);
  if (!host) throw Error("InceptionV3.write_param('" + name + "'): host buffer is null");
  const bool var = name.size() > 12 && name.compare(name.size() - 12, 12, ".running_var") == 0;
  for (size_t i = 0; i < p.numel; ++i) {
    const double v = static_cast<double>(host[i]);
    if (!std::isfinite(v)) throw Error("InceptionV3.write_param('" + name + "'): element " + std::to_string(i) + " is not finite");
    if (var && v < 0)
      throw Error("InceptionV3.write_param('" + name + "'): element " + std::to_string(i) + " is " + std::to_string(v) +
                  ", a variance must be >= 0");
  }
  std::copy(host, host + p.numel, I.raw.begin() + p.offset);
  I.written[I.index.at(name)] = true;
}
template <typename T>
std::vector<std::string> InceptionV3<T>::unwritten() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < impl_->written.size(); ++i)
    if (!impl_->written[i]) out.push_back(impl_->net.lay.params[i].name);
  return out;
}
template <typename T>
void InceptionV3<T>::prepare() {
  if (impl_->folded) return;
  impl_->prepare();
}
template <typename T>
bool InceptionV3<T>::prepared() const {
  return impl_->folded != nullptr;
}

template <typename T>
void InceptionV3<T>::run(const uint8_t* images, int N, int H, int W, int C, T* pool3, T* logits, T* spatial,
                         int chunk) {
  Impl& I = *impl_;
  if (!I.folded) throw Error("InceptionV3.run: the network is not prepared (write every parameter, then prepare())");
  if (N < 0 || H < 1 || W < 1 || H > 16384 || W > 16384)
    throw Error("InceptionV3.run: expected N >= 0 and 1 <= H, W <= 16384, got N=" + std::to_string(N) +
                " H=" + std::to_string(H) + " W=" + std::to_string(W));
  if (C != 1 && C != 3 && C != 4)
    throw Error("InceptionV3.run: images must have 1 (grey), 3 (RGB) or 4 (RGBA) channels, got " + std::to_string(C));
  if (chunk < 1) throw Error("InceptionV3.run: chunk must be >= 1, got " + std::to_string(chunk));
  if (N == 0) return;
  if (!images) throw Error("InceptionV3.run: images is null");
  chunk = std::min(chunk, N);
  const auto plan = I.count(chunk, H, W);
  I.ensure(plan.max_act, chunk);
  const size_t plane = size_t(H) * W, in_per = plane * C;
  std::vector<T> x(size_t(chunk) * 3 * plane);
  for (int n0 = 0; n0 < N; n0 += chunk) {
    const int n = std::min(chunk, N - n0);
    // uint8 NHWC -> [0, 1] NCHW; grey is replicated, alpha dropped
    for (int i = 0; i < n; ++i) {
      const uint8_t* src = images + size_t(n0 + i) * in_per;
      T* dst = x.data() + size_t(i) * 3 * plane;
      for (int c = 0; c < 3; ++c) {
        const int sc = C == 1 ? 0 : c;
        T* d = dst + c * plane;
        for (size_t p = 0; p < plane; ++p) d[p] = static_cast<T>(src[p * C + sc]) / T(255);
      }
    }
    I.be->to_device(I.slot[0], x.data(), size_t(n) * 3 * plane * sizeof(T));
    typename Impl::Plan run;
    I.run_graph(run, n, H, W, spatial ? spatial + size_t(n0) * kSpatial : nullptr);
    if (pool3) I.be->to_host(pool3 + size_t(n0) * kPool3, I.pooled, size_t(n) * kPool3 * sizeof(T));
    if (logits) I.be->to_host(logits + size_t(n0) * kLogits, I.logit, size_t(n) * kLogits * sizeof(T));
  }
}

template <typename T>
double InceptionV3<T>::flops() const {
  return impl_->count(1, kSize, kSize).flops;
}
template <typename T>
size_t InceptionV3<T>::activation_bytes(int chunk, int H, int W) const {
  if (chunk < 1 || H < 1 || W < 1) throw Error("InceptionV3.activation_bytes: chunk, H and W must be >= 1");
  const auto p = impl_->count(chunk, H, W);
  return (4 * p.max_act + size_t(chunk) * (kPool3 + kLogits)) * sizeof(T);
}

template class InceptionV3<float>;
template class InceptionV3<double>;

}  // namespace speed
