/* SPDX-License-Identifier: MIT */
/**
 * @brief Prefill attention through cuDNN's fused SDPA (cudnn-frontend graph API, host code only).
 *
 * The segment list of an attention task (apb_insert_attention) is mapped onto at most
 * 1 + APB_CUDNN_MAX_PASS fused SDPA calls whose results are merged by their log-sum-exp:
 *
 *   main call:  every segment that the first query row may see (min_q_coord <= q_coord0). Its
 *               visible keys are packed into one bf16 buffer, the wholly visible ones first
 *               ("prefix", P keys) then the causal ones in coordinate order ("tail", one run of
 *               consecutive coordinates starting at c0). Row i then sees packed key j iff
 *               j <= i + off with off = P + q_coord0 - c0: a top-left diagonal band with right
 *               bound off (the causal self block, bottom-right aligned, is the case
 *               off = S_kv - S_q). Without a tail there is no mask.
 *   pass calls: the non-causal segments with q_coord0 < min_q_coord (APB's passing blocks,
 *               which anchor rows skip): one unmasked call per distinct min_q_coord over the
 *               query rows that see them.
 *
 * Anything else (a causal segment that the first row cannot reach, more pass groups, head_dim
 * not a multiple of 8) is "not applicable" and the caller runs its own kernel. cuDNN writes bf16
 * O and fp32 natural-log stats; apb_k_cudnn_finish merges the parts and writes the fp32 O and LSE
 * tiles. Graphs are built once per shape and device and cached per worker thread. (cuDNN's
 * dynamic shapes with a shared kernel cache were tried: graphs that differ only in their mask
 * then reused each other's kernels and gave wrong results on an H200 with cuDNN 9.19, so every
 * shape has its own plan.)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

/* nvcc flags `st = g->f()` as discarding f's [[nodiscard]] result (#2810); it is assigned and checked */
#pragma nv_diag_suppress 2810
#include <cudnn_frontend.h>

#include "codelets/cuda/common.cuh"
#include "common/apb_env.h"

namespace fe = cudnn_frontend;

enum { APB_CUDNN_MAX_PASS = 3 };

/* The calls one task makes, derived from its segments (identical in the sizing and run calls). */
struct apb_cudnn_part {
    int row0, rows;  /* query rows [row0, row0 + rows) */
    int skv;         /* packed keys */
    int masked, off; /* top-left band, right bound off */
    int seg_idx[APB_CUDA_MAX_SEGS], seg_keys[APB_CUDA_MAX_SEGS], nseg;
    int shares0, kskip; /* a split diagonal: reads part 0's keys from key kskip on, packs none */
};
struct apb_cudnn_plan {
    apb_cudnn_part part[1 + APB_CUDNN_MAX_PASS];
    int nparts;
};

static int apb_cudnn_kend(const apb_cuda_seg &sg, int qhi)
{
    if (qhi < sg.min_q_coord)
        return 0;
    int k = sg.len;
    if (sg.causal && qhi - sg.coord0 + 1 < k)
        k = qhi - sg.coord0 + 1;
    return k > 0 ? k : 0;
}

static void apb_cudnn_split(apb_cudnn_plan *pl);

/* 0 = planned (with APB_CUDNN_SPLIT's split applied), 1 = not expressible */
static int apb_cudnn_make_plan(int n_q, int q_coord0, const apb_cuda_seg *segs, int n_segs,
                               apb_cudnn_plan *pl)
{
    const int qhi = q_coord0 + n_q - 1;
    apb_cudnn_part &m = pl->part[0];
    m = apb_cudnn_part{};
    m.rows = n_q;
    pl->nparts = 1;
    /* prefix first */
    int tail[APB_CUDA_MAX_SEGS], ntail = 0;
    for (int i = 0; i < n_segs; i++) {
        const apb_cuda_seg &sg = segs[i];
        int ke = apb_cudnn_kend(sg, qhi);
        if (ke == 0)
            continue;
        if (sg.min_q_coord > q_coord0) {
            if (sg.causal && sg.coord0 + ke - 1 > sg.min_q_coord)
                return 1; /* causal and partly hidden from rows that pass min_q: not expressible */
            int p = 1;
            for (; p < pl->nparts; p++)
                if (pl->part[p].row0 == sg.min_q_coord - q_coord0)
                    break;
            if (p == pl->nparts) {
                if (pl->nparts == 1 + APB_CUDNN_MAX_PASS)
                    return 1;
                pl->part[p] = apb_cudnn_part{};
                pl->part[p].row0 = sg.min_q_coord - q_coord0;
                pl->part[p].rows = n_q - pl->part[p].row0;
                pl->nparts++;
            }
            apb_cudnn_part &pp = pl->part[p];
            pp.seg_idx[pp.nseg] = i;
            pp.seg_keys[pp.nseg++] = ke;
            pp.skv += ke;
        } else if (!sg.causal || sg.coord0 + ke - 1 <= q_coord0) {
            m.seg_idx[m.nseg] = i;
            m.seg_keys[m.nseg++] = ke;
            m.skv += ke;
        } else {
            tail[ntail++] = i;
        }
    }
    if (ntail) {
        /* tail in coordinate order, consecutive coordinates */
        for (int a = 1; a < ntail; a++)
            for (int b = a; b > 0 && segs[tail[b]].coord0 < segs[tail[b - 1]].coord0; b--) {
                int t = tail[b];
                tail[b] = tail[b - 1];
                tail[b - 1] = t;
            }
        const int c0 = segs[tail[0]].coord0;
        if (c0 > q_coord0 + 1)
            return 1;
        int next = c0;
        for (int a = 0; a < ntail; a++) {
            const apb_cuda_seg &sg = segs[tail[a]];
            if (sg.coord0 != next)
                return 1;
            int ke = apb_cudnn_kend(sg, qhi);
            next = sg.coord0 + ke;
            m.seg_idx[m.nseg] = tail[a];
            m.seg_keys[m.nseg++] = ke;
        }
        m.masked = 1;
        m.off = m.skv + q_coord0 - c0;
        m.skv += next - c0;
        if (m.off < 0)
            return 1;
        if (m.off >= m.skv - 1)
            m.masked = 0; /* every row sees every key */
    }
    if (m.skv == 0)
        return 1; /* rows with no key at all: the own kernels write lse = -inf */
    apb_cudnn_split(pl);
    return 0;
}

/* APB_CUDNN_SPLIT=N (N >= 1): a masked main call whose band lets every row see the first off >= N
 * keys (a causal tile after the first one of a prompt) becomes two calls merged by LSE: those off
 * keys unmasked, and the diagonal band over the keys after them (row i sees key off + j iff j <= i:
 * top-left, bound 0). The second call reads the first one's keys (in place or packed) from key off
 * on. Token-major layout only. 0 (default) = one masked call. */
static int apb_cudnn_split_min(void)
{
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("APB_CUDNN_SPLIT");
        v = e ? atoi(e) : 0;
        v = v < 0 ? 0 : v;
    }
    return v;
}

static int apb_cudnn_bhsd(void);
static int apb_cudnn_verbose(void);

static void apb_cudnn_split(apb_cudnn_plan *pl)
{
    apb_cudnn_part &m = pl->part[0];
    const int min = apb_cudnn_split_min();
    if (!min || apb_cudnn_bhsd() || !m.masked || m.off < min || m.off >= m.skv ||
        pl->nparts == 1 + APB_CUDNN_MAX_PASS)
        return;
    apb_cudnn_part &b = pl->part[pl->nparts++];
    b = apb_cudnn_part{};
    b.row0 = m.row0;
    b.rows = m.rows;
    b.shares0 = 1;
    b.kskip = m.off;
    b.skv = m.skv - m.off;
    b.masked = 1;
    b.off = 0;
    m.skv = m.off;
    m.masked = 0;
    m.off = 0;
    static std::once_flag once;
    std::call_once(once, [&] {
        if (apb_cudnn_verbose())
            fprintf(stderr, "apb: cuDNN causal call split: %d keys unmasked + a %d x %d diagonal band\n",
                    m.skv, b.rows, b.skv);
    });
}

/* keys a part packs (or reads in place): its segments' visible rows */
static int apb_cudnn_kpack(const apb_cudnn_part &p)
{
    int n = 0;
    for (int a = 0; a < p.nseg; a++)
        n += p.seg_keys[a];
    return n;
}

/* ------------------------------------------------------------------ graphs */
struct apb_cudnn_key {
    int hq, hk, sq, skv, d, masked, off;
    int qs; /* head-major layout (APB_CUDNN_LAYOUT=bhsd): Q's rows per head; 0 = token-major */
    bool operator==(const apb_cudnn_key &o) const
    {
        return hq == o.hq && hk == o.hk && sq == o.sq && skv == o.skv && d == o.d &&
               masked == o.masked && off == o.off && qs == o.qs;
    }
};
struct apb_cudnn_key_hash {
    size_t operator()(const apb_cudnn_key &k) const
    {
        size_t h = 1469598103934665603ull;
        const int v[8] = {k.hq, k.hk, k.sq, k.skv, k.d, k.masked, k.off, k.qs};
        for (int x : v)
            h = (h ^ (size_t)(unsigned)x) * 1099511628211ull;
        return h;
    }
};
struct apb_cudnn_entry {
    std::shared_ptr<fe::graph::Graph> g;
    int64_t ws = 0;
    bool ok = false;
    mutable bool tuned = false; /* APB_CUDNN_AUTOTUNE: plans timed on the first call (set through the cache's const view) */
};

/* APB_CUDNN_AUTOTUNE=1: every engine configuration cuDNN's heuristics list for a shape is built and
 * the first call of that shape times them all on its own operands (cudnn-frontend's autotune) and
 * keeps the fastest; 0 (default) = the heuristics' first choice. */
static int apb_cudnn_autotune(void)
{
    static int on = -1;
    return apb_env_switch("APB_CUDNN_AUTOTUNE", 0, &on);
}
/* One per worker thread (a StarPU CUDA worker drives one device); never freed: cuDNN handles
 * cannot be destroyed safely after the CUDA context of a finished worker is gone. */
struct apb_cudnn_thread {
    int dev = -1;
    cudnnHandle_t h = nullptr;
    std::unordered_map<apb_cudnn_key, apb_cudnn_entry, apb_cudnn_key_hash> cache;
};
static thread_local apb_cudnn_thread *apb_cudnn_tl;

/* APB_CUDNN_LAYOUT=bhsd: Q, O and the packed K/V head-major ([head][row][d], PyTorch's layout
 * for SDPA) instead of token-major ([row][head][d], the tiles' own); keys are then always packed
 * (the cache is token-major). For comparisons of cuDNN's rate per layout. */
static int apb_cudnn_bhsd(void)
{
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("APB_CUDNN_LAYOUT");
        v = e && !strcmp(e, "bhsd") ? 1 : 0;
    }
    return v;
}

static int apb_cudnn_verbose(void)
{
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("APB_CUDNN_VERBOSE");
        v = e && *e && strcmp(e, "0") ? 1 : 0;
    }
    return v;
}

static apb_cudnn_thread *apb_cudnn_state(void)
{
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess)
        return nullptr;
    apb_cudnn_thread *t = apb_cudnn_tl;
    if (t && t->dev == dev)
        return t;
    t = new apb_cudnn_thread();
    t->dev = dev;
    if (cudnnCreate(&t->h) != CUDNN_STATUS_SUCCESS) {
        delete t;
        return nullptr;
    }
    apb_cudnn_tl = t; /* a previous device's state is kept (its graphs stay valid there) */
    static std::once_flag once;
    std::call_once(once, [] {
        if (apb_cudnn_verbose())
            fprintf(stderr, "apb: attention through cuDNN %zu fused SDPA (%s layout)\n", cudnnGetVersion(),
                    apb_cudnn_bhsd() ? "head-major" : "token-major");
    });
    return t;
}

/* APB_CUDNN_IMPL=composite|unified: which of cudnn-frontend's two SDPA implementations to ask for;
 * auto (default) lets the frontend pick, and frontend 1.32 picks UNIFIED wherever it is supported.
 * With cuDNN 9.19 UNIFIED does not take a diagonal band (it needs 9.21), so masked calls run the
 * COMPOSITE engine and unmasked ones (the passing blocks, APB_CUDNN_SPLIT's rectangles) UNIFIED;
 * PyTorch 2.11's own frontend builds COMPOSITE graphs. A refused graph falls back as any refusal. */
static int apb_cudnn_impl(void)
{
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("APB_CUDNN_IMPL");
        v = e && !strcmp(e, "composite") ? 1 : e && !strcmp(e, "unified") ? 2 : 0;
    }
    return v;
}

static apb_cudnn_entry apb_cudnn_build(apb_cudnn_thread *t, const apb_cudnn_key &k)
{
    apb_cudnn_entry e;
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    const int64_t hq = k.hq, hk = k.hk, sq = k.sq, skv = k.skv, d = k.d;
    const int64_t qs = k.qs;
    /* token-major: row stride = heads x d; head-major: head stride = rows x d */
    const std::vector<int64_t> qst = qs ? std::vector<int64_t>{hq * qs * d, qs * d, d, 1}
                                        : std::vector<int64_t>{sq * hq * d, d, hq * d, 1};
    const std::vector<int64_t> kst = qs ? std::vector<int64_t>{hk * skv * d, skv * d, d, 1}
                                        : std::vector<int64_t>{skv * hk * d, d, hk * d, 1};
    const std::vector<int64_t> ost = qs ? std::vector<int64_t>{hq * sq * d, sq * d, d, 1}
                                        : std::vector<int64_t>{sq * hq * d, d, hq * d, 1};
    auto Q = g->tensor(fe::graph::Tensor_attributes().set_name("Q").set_uid(1)
                           .set_dim({1, hq, sq, d}).set_stride(qst));
    auto K = g->tensor(fe::graph::Tensor_attributes().set_name("K").set_uid(2)
                           .set_dim({1, hk, skv, d}).set_stride(kst));
    auto V = g->tensor(fe::graph::Tensor_attributes().set_name("V").set_uid(3)
                           .set_dim({1, hk, skv, d}).set_stride(kst));
    auto opt = fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(true)
                   .set_attn_scale(1.0f / sqrtf((float)k.d));
    if (apb_cudnn_impl())
        opt.set_implementation(apb_cudnn_impl() == 1 ? fe::AttentionImplementation_t::COMPOSITE
                                                     : fe::AttentionImplementation_t::UNIFIED);
    if (k.masked) {
        if (k.off == skv - sq)
            opt.set_diagonal_alignment(fe::DiagonalAlignment_t::BOTTOM_RIGHT);
        else
            opt.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT);
        opt.set_diagonal_band_right_bound(k.off == skv - sq ? 0 : k.off);
    }
    auto outs = g->sdpa(Q, K, V, opt);
    outs[0]->set_output(true).set_uid(4).set_dim({1, hq, sq, d}).set_stride(ost);
    outs[1]->set_output(true).set_uid(5).set_data_type(fe::DataType_t::FLOAT)
        .set_dim({1, hq, sq, 1}).set_stride({hq * sq, sq, 1, 1});
    fe::error_t st = g->validate();
    if (st.is_good())
        st = g->build_operation_graph(t->h);
    if (st.is_good())
        st = g->create_execution_plans({fe::HeurMode_t::A});
    if (st.is_good())
        st = g->check_support(t->h);
    const bool tune = apb_cudnn_autotune();
    if (st.is_good())
        st = g->build_plans(t->h, tune ? fe::BuildPlanPolicy_t::ALL : fe::BuildPlanPolicy_t::HEURISTICS_CHOICE);
    if (st.is_good() && tune)
        e.ws = g->get_autotune_workspace_size();
    else if (st.is_good())
        st = g->get_workspace_size(e.ws);
    if (!st.is_good()) {
        if (apb_cudnn_verbose())
            fprintf(stderr, "apb: cuDNN SDPA refused hq %d hk %d sq %d skv %d d %d band %d/%d: %s\n",
                    k.hq, k.hk, k.sq, k.skv, k.d, k.masked, k.off,
                    st.get_message().c_str());
        return e;
    }
    if (apb_cudnn_verbose()) /* CUDNN_FRONTEND_LOG_INFO=1 CUDNN_FRONTEND_LOG_FILE=stderr names the one AUTO picks */
        fprintf(stderr, "apb: cuDNN SDPA graph sq %d skv %d band %d/%d built (implementation asked: %s)\n", k.sq,
                k.skv, k.masked, k.off, apb_cudnn_impl() == 1 ? "composite" : apb_cudnn_impl() == 2 ? "unified" : "auto");
    e.g = g;
    e.ok = true;
    return e;
}

static const apb_cudnn_entry *apb_cudnn_get(apb_cudnn_thread *t, const apb_cudnn_key &k)
{
    auto it = t->cache.find(k);
    if (it != t->cache.end())
        return &it->second;
    apb_cudnn_entry e;
    try {
        e = apb_cudnn_build(t, k);
    } catch (const std::exception &ex) {
        if (apb_cudnn_verbose())
            fprintf(stderr, "apb: cuDNN graph build threw: %s\n", ex.what());
        e = apb_cudnn_entry{};
    }
    return &t->cache.emplace(k, e).first->second;
}

static apb_cudnn_key apb_cudnn_key_of(const apb_cudnn_part &p, int nqh, int n_kvh, int d, int n_q)
{
    return apb_cudnn_key{nqh, n_kvh, p.rows, p.skv, d, p.masked, p.masked ? p.off : 0, apb_cudnn_bhsd() ? n_q : 0};
}

static size_t apb_align256(size_t b) { return (b + 255) & ~(size_t)255; }

/* A part reads its keys in place when they are one bf16 segment with the graph's row stride (the
 * compacted KV cache of a layer, all KV heads): no pack, no K/V scratch. */
static bool apb_cudnn_direct(const apb_cudnn_part &pp, const apb_cuda_seg *segs, size_t W)
{
    return !apb_cudnn_bhsd() && pp.nseg == 1 && segs[pp.seg_idx[0]].bf16 && (size_t)segs[pp.seg_idx[0]].ld == W;
}

/* Head-major copy: dst[(h * S + r0 + i) * d + c] = src[i * ld + h * d + c] as bf16, for rows i <
 * rows and heads h < nh (fp32 or bf16 source). One thread an element, in the source's order. */
template <typename T>
__global__ void apb_k_to_bhsd(uint16_t *__restrict__ dst, int S, int r0, const T *__restrict__ src, int ld,
                              int rows, int nh, int d)
{
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)rows * nh * d)
        return;
    const int c = (int)(idx % d), h = (int)((idx / d) % nh), i = (int)(idx / ((size_t)d * nh));
    const T x = src[(size_t)i * ld + (size_t)h * d + c];
    uint16_t b;
    if constexpr (sizeof(T) == 2)
        b = x;
    else
        b = apb_f32_to_bf16(x);
    dst[((size_t)h * S + r0 + i) * d + c] = b;
}

template <typename T>
static void apb_to_bhsd(uint16_t *dst, int S, int r0, const T *src, int ld, int rows, int nh, int d,
                        cudaStream_t s)
{
    const size_t n = (size_t)rows * nh * d;
    if (n)
        apb_k_to_bhsd<T><<<(unsigned)((n + 255) / 256), 256, 0, s>>>(dst, S, r0, src, ld, rows, nh, d);
}

/* Scratch layout: per part K, V (skv x W bf16; none when read in place), O (rows x nqh d bf16),
 * stats (nqh x rows fp32); then Q (n_q x nqh d bf16) and the largest workspace. */
static size_t apb_cudnn_layout(const apb_cudnn_plan &pl, const apb_cuda_seg *segs, int n_q, int nqh,
                               int n_kvh, int d, int64_t ws, size_t *offs)
{
    size_t at = 0;
    const size_t W = (size_t)n_kvh * d, QW = (size_t)nqh * d;
    for (int p = 0; p < pl.nparts; p++) {
        const apb_cudnn_part &pp = pl.part[p];
        const size_t kv = pp.shares0 || apb_cudnn_direct(pp, segs, W) ? 0 : (size_t)apb_cudnn_kpack(pp) * W * 2;
        offs[4 * p + 0] = at, at = apb_align256(at + kv);
        offs[4 * p + 1] = at, at = apb_align256(at + kv);
        offs[4 * p + 2] = at, at = apb_align256(at + (size_t)pp.rows * QW * 2);
        offs[4 * p + 3] = at, at = apb_align256(at + (size_t)pp.rows * nqh * 4);
    }
    offs[4 * APB_CUDNN_MAX_PASS + 4] = at, at = apb_align256(at + (size_t)n_q * QW * 2);
    offs[4 * APB_CUDNN_MAX_PASS + 5] = at, at = apb_align256(at + (size_t)ws);
    return at + 256;
}

/* ------------------------------------------------------------------ finish kernel */
struct apb_cudnn_fin {
    int bhsd; /* parts' O head-major */
    const uint16_t *o[1 + APB_CUDNN_MAX_PASS];
    const float *st[1 + APB_CUDNN_MAX_PASS];
    int row0[1 + APB_CUDNN_MAX_PASS], rows[1 + APB_CUDNN_MAX_PASS];
    int n;
};

/* One warp per (row, head): o = sum_p e^(lse_p - L) O_p, lse = L = logsumexp_p lse_p. The n_q rows
 * written are the task's rows [r0, r0 + n_q) (one query tile of a task over several). */
template <typename TO>
__global__ void apb_k_cudnn_finish(const apb_cudnn_fin f, int r0, int n_q, int nqh, int d, int qh0,
                                   TO *__restrict__ o, int ld_o, float *__restrict__ lse, int ld_lse)
{
    const int wid = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (wid >= n_q * nqh)
        return;
    const int h = wid % nqh, il = wid / nqh, i = il + r0;
    float l[1 + APB_CUDNN_MAX_PASS], L = -INFINITY;
    for (int p = 0; p < f.n; p++) {
        int r = i - f.row0[p];
        l[p] = r >= 0 && r < f.rows[p] ? f.st[p][(size_t)h * f.rows[p] + r] : -INFINITY;
        L = fmaxf(L, l[p]);
    }
    float sum = 0.f;
    for (int p = 0; p < f.n; p++) {
        l[p] = l[p] == -INFINITY ? 0.f : expf(l[p] - L);
        sum += l[p];
    }
    TO *orow = o + (size_t)il * ld_o + (size_t)(qh0 + h) * d;
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    for (int c = lane; c < d; c += 32) {
        float acc = 0.f;
        for (int p = 0; p < f.n; p++)
            if (l[p] != 0.f)
                acc += l[p] * apb_bf16_to_f32(f.o[p][f.bhsd ? ((size_t)h * f.rows[p] + (i - f.row0[p])) * d + c
                                                             : (size_t)(i - f.row0[p]) * nqh * d + (size_t)h * d + c]);
        if constexpr (sizeof(TO) == 2)
            orow[c] = apb_f32_to_bf16(acc * inv);
        else
            orow[c] = acc * inv;
    }
    if (lane == 0)
        lse[(size_t)il * ld_lse + qh0 + h] = sum > 0.f ? L + logf(sum) : -INFINITY;
}

/* ------------------------------------------------------------------ phase timing */
/* APB_CUDNN_TIMING=1: GPU time of each phase of every call (Q to bf16, K/V packing, the SDPA calls,
 * the merge), measured with events and a synchronize at the end of each call (so it slows the run),
 * and the SDPA calls' rate over the pairs they compute; printed at exit. For finding where an
 * attention task's time goes beside cuDNN's kernel. */
struct apb_cudnn_timing {
    double ms[4] = {0, 0, 0, 0}; /* q, pack, sdpa, finish */
    double host_ms = 0, flops = 0;
    long calls = 0, sdpa_calls = 0;
    std::mutex mu;
};
static apb_cudnn_timing *apb_cudnn_tm;
static double apb_cudnn_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}
static void apb_cudnn_timing_print(void)
{
    apb_cudnn_timing *t = apb_cudnn_tm;
    const double tot = t->ms[0] + t->ms[1] + t->ms[2] + t->ms[3];
    fprintf(stderr, "apb: cuDNN attention timing: %ld tasks, %ld SDPA calls; GPU ms: q->bf16 %.1f, pack %.1f, "
                    "sdpa %.1f (%.1f TFLOP/s), merge %.1f; sum %.1f; host ms in the calls %.1f\n",
            t->calls, t->sdpa_calls, t->ms[0], t->ms[1], t->ms[2],
            t->ms[2] > 0 ? t->flops / (t->ms[2] * 1e-3) * 1e-12 : 0.0, t->ms[3], tot, t->host_ms);
}
static apb_cudnn_timing *apb_cudnn_timing_on(void)
{
    static int on = -1;
    if (!apb_env_switch("APB_CUDNN_TIMING", 0, &on))
        return nullptr;
    static std::once_flag once;
    std::call_once(once, [] {
        apb_cudnn_tm = new apb_cudnn_timing();
        atexit(apb_cudnn_timing_print);
    });
    return apb_cudnn_tm;
}
/* query-key pairs a part's SDPA call computes (its band: row i sees keys j <= i + off) */
static double apb_cudnn_pairs(const apb_cudnn_part &p)
{
    if (!p.masked)
        return (double)p.rows * p.skv;
    double n = 0;
    for (int i = 0; i < p.rows; i++) {
        long k = (long)i + p.off + 1;
        n += (double)(k < p.skv ? (k > 0 ? k : 0) : p.skv);
    }
    return n;
}

/* apb_k_cudnn_finish with four columns a lane per step (8-byte bf16 loads, 16-byte fp32 or 8-byte
 * bf16 stores) and the part count NP a template parameter, so the per-part arrays stay in registers
 * (read at run time they went to local memory: ~0.7 TB/s, 36 ms of a 32K prefill in session 10).
 * Same arithmetic in the same order as apb_k_cudnn_finish. Needs d % 4 == 0 and rows aligned to
 * four elements (checked by the caller). */
template <int NP, typename TO>
__global__ void apb_k_cudnn_finish4(const apb_cudnn_fin f, int r0, int n_q, int nqh, int d, int qh0,
                                    TO *__restrict__ o, int ld_o, float *__restrict__ lse, int ld_lse)
{
    const int wid = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (wid >= n_q * nqh)
        return;
    const int h = wid % nqh, il = wid / nqh, i = il + r0, n = NP;
    float l[1 + APB_CUDNN_MAX_PASS], L = -INFINITY;
    const uint16_t *src[1 + APB_CUDNN_MAX_PASS];
#pragma unroll
    for (int p = 0; p < n; p++) {
        const int r = i - f.row0[p];
        const bool in = r >= 0 && r < f.rows[p];
        l[p] = in ? __ldg(&f.st[p][(size_t)h * f.rows[p] + r]) : -INFINITY;
        src[p] = in ? f.o[p] + (f.bhsd ? ((size_t)h * f.rows[p] + r) * d : (size_t)r * nqh * d + (size_t)h * d) : nullptr;
        L = fmaxf(L, l[p]);
    }
    float sum = 0.f;
#pragma unroll
    for (int p = 0; p < n; p++) {
        l[p] = l[p] == -INFINITY ? 0.f : expf(l[p] - L);
        sum += l[p];
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    TO *orow = o + (size_t)il * ld_o + (size_t)(qh0 + h) * d;
    for (int c = lane * 4; c < d; c += 128) {
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int p = 0; p < n; p++) {
            if (l[p] == 0.f)
                continue;
            const uint2 u = __ldg((const uint2 *)(src[p] + c));
            acc.x += l[p] * apb_bf16_lo(u.x);
            acc.y += l[p] * apb_bf16_hi(u.x);
            acc.z += l[p] * apb_bf16_lo(u.y);
            acc.w += l[p] * apb_bf16_hi(u.y);
        }
        acc.x *= inv, acc.y *= inv, acc.z *= inv, acc.w *= inv;
        if constexpr (sizeof(TO) == 2)
            *(uint2 *)(orow + c) = make_uint2(apb_bf16_pack2(acc.x, acc.y), apb_bf16_pack2(acc.z, acc.w));
        else
            *(float4 *)(orow + c) = acc;
    }
    if (lane == 0)
        lse[(size_t)il * ld_lse + qh0 + h] = sum > 0.f ? L + logf(sum) : -INFINITY;
}

/* lse[i][qh0 + h] = st[h][i]: the one part's stats as the LSE tile, when cuDNN wrote O in place
 * (what apb_k_cudnn_finish computes for one part: L + log(1) = L) */
__global__ void apb_k_cudnn_lse(const float *__restrict__ st, int rows, int nqh, int qh0, float *__restrict__ lse,
                                int ld_lse)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows * nqh)
        return;
    const int h = idx % nqh, i = idx / nqh;
    lse[(size_t)i * ld_lse + qh0 + h] = st[(size_t)h * rows + i];
}

/* the merge of the parts into an fp32 or bf16 o tile: four columns a lane where aligned */
template <typename TO>
static void apb_cudnn_finish_launch(bool vec, unsigned blocks, int threads, cudaStream_t s, const apb_cudnn_fin &f,
                                    int r0, int n_q, int nqh, int d, int qh0, TO *o, int ld_o, float *lse, int ld_lse)
{
    if (!vec) {
        apb_k_cudnn_finish<TO><<<blocks, threads, 0, s>>>(f, r0, n_q, nqh, d, qh0, o, ld_o, lse, ld_lse);
        return;
    }
    static_assert(APB_CUDNN_MAX_PASS == 3, "one instance a part count");
    auto *k4 = f.n == 1 ? apb_k_cudnn_finish4<1, TO> : f.n == 2 ? apb_k_cudnn_finish4<2, TO>
             : f.n == 3 ? apb_k_cudnn_finish4<3, TO> : apb_k_cudnn_finish4<4, TO>;
    k4<<<blocks, threads, 0, s>>>(f, r0, n_q, nqh, d, qh0, o, ld_o, lse, ld_lse);
}

/* ------------------------------------------------------------------ entry points */
extern "C" size_t apb_cudnn_attention_scratch(int n_q, int q_coord0, const apb_cuda_seg *segs,
                                              int n_segs, int n_heads, int n_kv_heads, int n_kvh,
                                              int head_dim)
{
    if (head_dim % 8 || head_dim > 256 || n_q < 2 || n_segs > APB_CUDA_MAX_SEGS)
        return 0;
    const char *e = getenv("APB_ATTN_IMPL");
    if (e && strcmp(e, "cudnn") && strcmp(e, "auto"))
        return 0;
    static apb_cudnn_plan pl; /* large; one task at a time per thread under the lock below */
    static std::mutex mu;
    std::lock_guard<std::mutex> lock(mu);
    if (apb_cudnn_make_plan(n_q, q_coord0, segs, n_segs, &pl))
        return 0;
    apb_cudnn_thread *t = apb_cudnn_state();
    if (!t)
        return 0;
    const int group = n_heads / n_kv_heads, nqh = n_kvh * group;
    int64_t ws = 0;
    for (int p = 0; p < pl.nparts; p++) {
        const apb_cudnn_entry *en = apb_cudnn_get(t, apb_cudnn_key_of(pl.part[p], nqh, n_kvh, head_dim, n_q));
        if (!en->ok)
            return 0;
        ws = en->ws > ws ? en->ws : ws;
    }
    size_t offs[4 * APB_CUDNN_MAX_PASS + 6];
    return apb_cudnn_layout(pl, segs, n_q, nqh, n_kvh, head_dim, ws, offs);
}

extern "C" int apb_cudnn_attention_tiles(const apb_cuda_qtile *qt, int n_qt, int q_coord0,
                                         const apb_cuda_seg *segs, int n_segs, int n_heads, int n_kv_heads,
                                         int kvh0, int n_kvh, int head_dim, void *scratch,
                                         size_t scratch_bytes, cudaStream_t s)
{
    static apb_cudnn_plan pl;
    static std::mutex mu;
    std::lock_guard<std::mutex> lock(mu);
    int n_q = 0;
    for (int i = 0; i < n_qt; i++)
        n_q += qt[i].rows;
    if (!scratch || n_qt <= 0 || apb_cudnn_make_plan(n_q, q_coord0, segs, n_segs, &pl))
        return 1;
    apb_cudnn_thread *t = apb_cudnn_state();
    if (!t)
        return 1;
    const int group = n_heads / n_kv_heads, nqh = n_kvh * group, d = head_dim, qh0 = kvh0 * group;
    const size_t W = (size_t)n_kvh * d;
    const apb_cudnn_entry *en[1 + APB_CUDNN_MAX_PASS];
    int64_t ws = 0;
    for (int p = 0; p < pl.nparts; p++) {
        en[p] = apb_cudnn_get(t, apb_cudnn_key_of(pl.part[p], nqh, n_kvh, d, n_q));
        if (!en[p]->ok)
            return 1;
        ws = en[p]->ws > ws ? en[p]->ws : ws;
    }
    size_t offs[4 * APB_CUDNN_MAX_PASS + 6];
    if (apb_cudnn_layout(pl, segs, n_q, nqh, n_kvh, d, ws, offs) > scratch_bytes)
        return 1;
    apb_cudnn_timing *tm = apb_cudnn_timing_on();
    cudaEvent_t ev[3 + 2 * (1 + APB_CUDNN_MAX_PASS)]; /* q0, q1, (packed, run) a part, merged */
    int nev = 0;
    const double host0 = tm ? apb_cudnn_wall_ms() : 0;
    auto mark = [&] {
        if (tm && cudaEventCreate(&ev[nev]) == cudaSuccess)
            cudaEventRecord(ev[nev++], s);
    };
    auto drop = [&] {
        for (int i = 0; i < nev; i++)
            cudaEventDestroy(ev[i]);
        return -1;
    };
    mark();
    char *base = (char *)(((uintptr_t)scratch + 255) & ~(uintptr_t)255);
    uint16_t *qb = (uint16_t *)(base + offs[4 * APB_CUDNN_MAX_PASS + 4]);
    void *wsp = base + offs[4 * APB_CUDNN_MAX_PASS + 5];
    const int bhsd = apb_cudnn_bhsd();
    for (int i = 0, r = 0; i < n_qt; r += qt[i].rows, i++) /* the tiles' rows, one after another */
        if (bhsd)
            apb_to_bhsd<float>(qb, n_q, r, qt[i].q + (size_t)qh0 * d, qt[i].ld_q, qt[i].rows, nqh, d, s);
        else
            apb_cuda_f32_to_bf16(qb + (size_t)r * nqh * d, nqh * d, qt[i].q + (size_t)qh0 * d, qt[i].ld_q,
                                 qt[i].rows, nqh * d, s);
    mark();
    if (cudnnSetStream(t->h, s) != CUDNN_STATUS_SUCCESS)
        return drop();
    if (apb_cudnn_verbose() && n_qt > 1) {
        static std::once_flag once;
        std::call_once(once, [&] {
            fprintf(stderr, "apb: one cuDNN SDPA call set over %d query tiles (%d rows, %d parts, keys %s)\n",
                    n_qt, n_q, pl.nparts, apb_cudnn_direct(pl.part[0], segs, W) ? "in place" : "packed");
        });
    }
    /* a bf16 O tile that one call fills whole, rows of heads x d: cuDNN writes it in place, no merge
     * (the main part's every row sees a key: its band keeps off >= 0, skv > 0) */
    const bool o_direct = n_qt == 1 && qt[0].o_bf16 && pl.nparts == 1 && !bhsd && qh0 == 0 &&
                          qt[0].ld_o == nqh * d && ((uintptr_t)qt[0].o & 15) == 0;
    apb_cudnn_fin fin{};
    uint16_t *k0 = nullptr, *v0 = nullptr;
    fin.n = pl.nparts;
    fin.bhsd = bhsd;
    for (int p = 0; p < pl.nparts; p++) {
        const apb_cudnn_part &pp = pl.part[p];
        uint16_t *kb = (uint16_t *)(base + offs[4 * p]), *vb = (uint16_t *)(base + offs[4 * p + 1]);
        uint16_t *ob = o_direct ? (uint16_t *)qt[0].o : (uint16_t *)(base + offs[4 * p + 2]);
        float *sb = (float *)(base + offs[4 * p + 3]);
        if (pp.shares0) { /* the diagonal of a split: part 0's keys from key kskip on */
            kb = k0 + (size_t)pp.kskip * W;
            vb = v0 + (size_t)pp.kskip * W;
        } else if (apb_cudnn_direct(pp, segs, W)) { /* in place: rows [0, skv) of the one bf16 segment */
            kb = (uint16_t *)(const void *)segs[pp.seg_idx[0]].k;
            vb = (uint16_t *)(const void *)segs[pp.seg_idx[0]].v;
        } else {
            size_t row = 0;
            for (int a = 0; a < pp.nseg; a++) { /* pack the visible rows of this task's KV heads */
                const apb_cuda_seg &sg = segs[pp.seg_idx[a]];
                const int ke = pp.seg_keys[a];
                if (bhsd && sg.bf16) {
                    apb_to_bhsd<uint16_t>(kb, pp.skv, (int)row, (const uint16_t *)(const void *)sg.k + (size_t)kvh0 * d,
                                          sg.ld, ke, n_kvh, d, s);
                    apb_to_bhsd<uint16_t>(vb, pp.skv, (int)row, (const uint16_t *)(const void *)sg.v + (size_t)kvh0 * d,
                                          sg.ld, ke, n_kvh, d, s);
                } else if (bhsd) {
                    apb_to_bhsd<float>(kb, pp.skv, (int)row, sg.k + (size_t)kvh0 * d, sg.ld, ke, n_kvh, d, s);
                    apb_to_bhsd<float>(vb, pp.skv, (int)row, sg.v + (size_t)kvh0 * d, sg.ld, ke, n_kvh, d, s);
                } else if (sg.bf16) {
                    const uint16_t *k16 = (const uint16_t *)(const void *)sg.k + (size_t)kvh0 * d;
                    const uint16_t *v16 = (const uint16_t *)(const void *)sg.v + (size_t)kvh0 * d;
                    cudaMemcpy2DAsync(kb + row * W, W * 2, k16, (size_t)sg.ld * 2, W * 2, ke, cudaMemcpyDeviceToDevice, s);
                    cudaMemcpy2DAsync(vb + row * W, W * 2, v16, (size_t)sg.ld * 2, W * 2, ke, cudaMemcpyDeviceToDevice, s);
                } else {
                    apb_cuda_f32_to_bf16(kb + row * W, (int)W, sg.k + (size_t)kvh0 * d, sg.ld, ke, (int)W, s);
                    apb_cuda_f32_to_bf16(vb + row * W, (int)W, sg.v + (size_t)kvh0 * d, sg.ld, ke, (int)W, s);
                }
                row += (size_t)ke;
            }
        }
        if (p == 0)
            k0 = kb, v0 = vb;
        mark();
        std::unordered_map<int64_t, void *> vp = {
            {1, qb + (size_t)pp.row0 * (bhsd ? 1 : nqh) * d}, {2, kb}, {3, vb}, {4, ob}, {5, sb}};
        fe::error_t st;
        if (apb_cudnn_autotune() && !en[p]->tuned) {
            en[p]->tuned = true; /* once, even if it fails: the heuristics' order stays */
            st = en[p]->g->autotune(t->h, vp, wsp);
            if (apb_cudnn_verbose())
                fprintf(stderr, "apb: cuDNN autotune of %d x %d keys (band %d/%d) over %lld plans: %s\n", pp.rows,
                        pp.skv, pp.masked, pp.off, (long long)en[p]->g->get_execution_plan_count(),
                        st.is_good() ? "ok" : st.get_message().c_str());
        }
        st = en[p]->g->execute(t->h, vp, wsp);
        if (!st.is_good()) {
            if (apb_cudnn_verbose())
                fprintf(stderr, "apb: cuDNN SDPA execute failed: %s\n", st.get_message().c_str());
            return drop();
        }
        mark();
        fin.o[p] = ob;
        fin.st[p] = sb;
        fin.row0[p] = pp.row0;
        fin.rows[p] = pp.rows;
    }
    const int threads = 256;
    if (o_direct)
        apb_k_cudnn_lse<<<(unsigned)((n_q * nqh + threads - 1) / threads), threads, 0, s>>>(
            fin.st[0], n_q, nqh, qh0, qt[0].lse, qt[0].ld_lse);
    for (int i = 0, r = 0; i < n_qt && !o_direct; r += qt[i].rows, i++) {
        const int warps = qt[i].rows * nqh;
        const unsigned blocks = (unsigned)((warps * 32 + threads - 1) / threads);
        const size_t es = qt[i].o_bf16 ? 2 : 4;
        const bool vec = d % 4 == 0 && (((uintptr_t)qt[i].o + (size_t)qh0 * d * es) & (4 * es - 1)) == 0 &&
                         qt[i].ld_o % 4 == 0;
        if (qt[i].o_bf16)
            apb_cudnn_finish_launch<uint16_t>(vec, blocks, threads, s, fin, r, qt[i].rows, nqh, d, qh0,
                                              (uint16_t *)qt[i].o, qt[i].ld_o, qt[i].lse, qt[i].ld_lse);
        else
            apb_cudnn_finish_launch<float>(vec, blocks, threads, s, fin, r, qt[i].rows, nqh, d, qh0,
                                           (float *)qt[i].o, qt[i].ld_o, qt[i].lse, qt[i].ld_lse);
    }
    mark();
    if (tm && nev == 3 + 2 * pl.nparts) {
        const double host = apb_cudnn_wall_ms() - host0;
        float ms[4] = {0, 0, 0, 0}, x = 0;
        cudaEventSynchronize(ev[nev - 1]);
        cudaEventElapsedTime(&ms[0], ev[0], ev[1]);
        for (int p = 0; p < pl.nparts; p++) {
            cudaEventElapsedTime(&x, ev[1 + 2 * p], ev[2 + 2 * p]);
            ms[1] += x;
            cudaEventElapsedTime(&x, ev[2 + 2 * p], ev[3 + 2 * p]);
            ms[2] += x;
        }
        cudaEventElapsedTime(&ms[3], ev[nev - 2], ev[nev - 1]);
        double flops = 0;
        for (int p = 0; p < pl.nparts; p++)
            flops += 4.0 * nqh * d * apb_cudnn_pairs(pl.part[p]);
        std::lock_guard<std::mutex> lock(tm->mu);
        for (int i = 0; i < 4; i++)
            tm->ms[i] += ms[i];
        tm->host_ms += host;
        tm->flops += flops;
        tm->calls++;
        tm->sdpa_calls += pl.nparts;
    }
    drop();
    return cudaPeekAtLastError() == cudaSuccess ? 0 : -1;
}

extern "C" int apb_cudnn_attention(const float *q, int ld_q, int n_q, int q_coord0,
                                   const apb_cuda_seg *segs, int n_segs, int n_heads, int n_kv_heads,
                                   int kvh0, int n_kvh, int head_dim, float *o, int ld_o, float *lse,
                                   int ld_lse, void *scratch, size_t scratch_bytes, cudaStream_t s)
{
    const apb_cuda_qtile qt = {q, o, lse, ld_q, ld_o, ld_lse, n_q, 0};
    return apb_cudnn_attention_tiles(&qt, 1, q_coord0, segs, n_segs, n_heads, n_kv_heads, kvh0, n_kvh,
                                     head_dim, scratch, scratch_bytes, s);
}
