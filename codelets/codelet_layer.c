/* SPDX-License-Identifier: MIT */
/**
 * @brief A layer's few-row steps as one task each: decoding and the question pass.
 *
 * A decode step of one layer is eight small tasks when built from the prefill ops (rmsnorm, qkv,
 * rope, kv_append, attention, linear, rmsnorm, mlp); each runs for microseconds on a GPU, and the
 * fixed cost of a dependent task (completion seen, dependants released, pushed, popped, data
 * acquired, launched) is of the same order. These codelets run the same kernels, in the same
 * order and on the same data, inside one task:
 *
 *   layer_pre    x -> norm -> q, k, v (+bias) -> RoPE (positions pos0..) -> q out; k, v appended
 *                to the decode cache kd, vd at rows append_row..
 *   layer_post   x += o Wo^T; x += MLP(norm(x))
 *   layer        layer_pre, attention of q over the given segments plus the decode cache rows
 *                [0, append_row + rows) (causal, coordinates from dec_coord0), layer_post: the
 *                whole layer of a one-host sequence (method full) in one task
 *
 * The results are bitwise those of the separate tasks (same CPU functions, same kernels), so
 * methods keep their exactness and MPI runs stay bitwise equal to one process. The sequence-
 * parallel methods keep one attention task per host (each host's cache stays where it is) and a
 * merge between layer_pre and layer_post.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

enum { _APB_LAYER_PRE = 1, _APB_LAYER_ATTN = 2, _APB_LAYER_POST = 4 };

struct _apb_layer_args {
    int parts, has_bias, head_dim, n_heads, n_kv_heads;
    int pos0, append_row, q_coord0, dec_coord0;
    float eps;
    int n_segs;
    struct _apb_seg_arg seg[];
};

/* Buffer indices of one task (they depend on the parts and the biases). */
struct _apb_layer_idx {
    int x, attn_norm, wq, wk, wv, bq, bk, bv, inv_freq, kd, vd, q, wo, mlp_norm, w_gate, w_up,
        w_down, o, seg0, n;
};

static struct _apb_layer_idx _apb_layer_index(int parts, int has_bias, int n_segs)
{
    struct _apb_layer_idx ix;
    memset(&ix, 0xff, sizeof ix); /* -1: not a buffer of this task */
    int n = 0;
    if (parts == _APB_LAYER_POST)
        ix.o = n++;
    ix.x = n++;
    if (parts & _APB_LAYER_PRE) {
        ix.attn_norm = n++;
        ix.wq = n++;
        ix.wk = n++;
        ix.wv = n++;
        if (has_bias) {
            ix.bq = n++;
            ix.bk = n++;
            ix.bv = n++;
        }
        ix.inv_freq = n++;
        ix.kd = n++;
        ix.vd = n++;
        if (!(parts & _APB_LAYER_ATTN))
            ix.q = n++;
    }
    if (parts & _APB_LAYER_POST) {
        ix.wo = n++;
        ix.mlp_norm = n++;
        ix.w_gate = n++;
        ix.w_up = n++;
        ix.w_down = n++;
    }
    ix.seg0 = n;
    if (parts & _APB_LAYER_ATTN)
        n += 2 * n_segs;
    ix.n = n;
    return ix;
}

/* ------------------------------------------------------------------ CPU */
static void _apb_layer_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_layer_args *a = cl_arg;
    const struct _apb_layer_idx ix = _apb_layer_index(a->parts, a->has_bias, a->n_segs);
    const int d = a->head_dim, half = d / 2, H = a->n_heads, Hk = a->n_kv_heads;
    const int qd = H * d, kd = Hk * d;
    float *x = _APB_PTR(buffers[ix.x]);
    const int rows = _APB_ROWS(buffers[ix.x]), dim = _APB_COLS(buffers[ix.x]), ldx = _APB_LD(buffers[ix.x]);
    const int hidden = (a->parts & _APB_LAYER_POST) ? _APB_ROWS(buffers[ix.w_gate]) : 0;
    /* scratch: xn, q, k, v, o, lse, gate, up */
    size_t need = (size_t)rows * ((size_t)dim + 2 * qd + 2 * kd + H + 2 * (size_t)hidden);
    float *xn = _apb_thread_scratch(_APB_SCRATCH_LAYER, need);
    if (!xn) {
        _apb_task_fail(APB_E_NOMEM, "layer: out of host memory");
        return;
    }
    float *q = xn + (size_t)rows * dim, *k = q + (size_t)rows * qd, *v = k + (size_t)rows * kd;
    float *o = v + (size_t)rows * kd, *lse = o + (size_t)rows * qd, *g = lse + (size_t)rows * H;
    float *u = g + (size_t)rows * hidden;
    double flops = 0;
    if (a->parts & _APB_LAYER_PRE) {
        const float *nw = _APB_PTR(buffers[ix.attn_norm]);
        for (int i = 0; i < rows; i++)
            apb_rmsnorm_f32(xn + (size_t)i * dim, x + (size_t)i * ldx, nw, dim, a->eps);
        float *qo = ix.q >= 0 ? _APB_PTR(buffers[ix.q]) : q;
        int ldq = ix.q >= 0 ? _APB_LD(buffers[ix.q]) : qd;
        if (_apb_linear_w(qo, ldq, xn, dim, buffers[ix.wq], a->has_bias ? _APB_PTR(buffers[ix.bq]) : NULL, rows, 0) ||
            _apb_linear_w(k, kd, xn, dim, buffers[ix.wk], a->has_bias ? _APB_PTR(buffers[ix.bk]) : NULL, rows, 0) ||
            _apb_linear_w(v, kd, xn, dim, buffers[ix.wv], a->has_bias ? _APB_PTR(buffers[ix.bv]) : NULL, rows, 0)) {
            _apb_task_fail(APB_E_NOMEM, "layer: out of host memory");
            return;
        }
        const float *inv_freq = _APB_PTR(buffers[ix.inv_freq]);
        float cs[512], sn[512]; /* head_dim <= 1024 is checked at insert */
        for (int i = 0; i < rows; i++) {
            apb_rope_table(cs, sn, inv_freq, half, a->pos0 + i);
            apb_rope_row_f32(qo + (size_t)i * ldq, H, d, cs, sn);
            apb_rope_row_f32(k + (size_t)i * kd, Hk, d, cs, sn);
        }
        for (int m = 0; m < 2; m++) {
            void *db = buffers[m ? ix.vd : ix.kd];
            const float *src = m ? v : k;
            for (int i = 0; i < rows; i++)
                memcpy((float *)_APB_PTR(db) + (size_t)(a->append_row + i) * _APB_LD(db),
                       src + (size_t)i * kd, sizeof(float) * kd);
        }
        flops += 2.0 * rows * dim * (qd + 2 * kd);
    }
    if (a->parts & _APB_LAYER_ATTN) {
        struct _apb_attn_seg_cpu segs_local[17];
        struct _apb_attn_seg_cpu *segs = a->n_segs < 17 ? segs_local : malloc(sizeof *segs * (a->n_segs + 1));
        if (!segs) {
            _apb_task_fail(APB_E_NOMEM, "layer: out of host memory");
            return;
        }
        for (int s = 0; s < a->n_segs; s++) {
            segs[s] = _apb_seg_cpu(buffers[ix.seg0 + 2 * s], buffers[ix.seg0 + 2 * s + 1], &a->seg[s]);
            flops += 4.0 * rows * a->seg[s].len * H * d;
        }
        void *kb = buffers[ix.kd], *vb = buffers[ix.vd];
        segs[a->n_segs] = (struct _apb_attn_seg_cpu){
            .k = _APB_PTR(kb), .v = _APB_PTR(vb), .ld = _APB_LD(kb), .bf16 = 0,
            .len = a->append_row + rows, .coord0 = a->dec_coord0, .causal = 1, .min_q_coord = 0};
        apb_attention_f32(q, qd, rows, a->q_coord0, segs, a->n_segs + 1, H, Hk, d, o, qd, lse, H);
        if (segs != segs_local)
            free(segs);
    }
    if (a->parts & _APB_LAYER_POST) {
        const float *oin = ix.o >= 0 ? _APB_PTR(buffers[ix.o]) : o;
        int ldo = ix.o >= 0 ? _APB_LD(buffers[ix.o]) : qd;
        if (_apb_linear_w(x, ldx, oin, ldo, buffers[ix.wo], NULL, rows, 1)) {
            _apb_task_fail(APB_E_NOMEM, "layer: out of host memory");
            return;
        }
        const float *nw = _APB_PTR(buffers[ix.mlp_norm]);
        for (int i = 0; i < rows; i++)
            apb_rmsnorm_f32(xn + (size_t)i * dim, x + (size_t)i * ldx, nw, dim, a->eps);
        if (_apb_linear_w(g, hidden, xn, dim, buffers[ix.w_gate], NULL, rows, 0) ||
            _apb_linear_w(u, hidden, xn, dim, buffers[ix.w_up], NULL, rows, 0)) {
            _apb_task_fail(APB_E_NOMEM, "layer: out of host memory");
            return;
        }
        for (size_t i = 0; i < (size_t)rows * hidden; i++)
            g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
        if (_apb_linear_w(x, ldx, g, hidden, buffers[ix.w_down], NULL, rows, 1))
            _apb_task_fail(APB_E_NOMEM, "layer: out of host memory");
        flops += 2.0 * rows * qd * dim + 6.0 * rows * dim * hidden;
    }
    _apb_op_account(a->parts == _APB_LAYER_PRE ? APB_OP_LAYER_PRE
                    : a->parts == _APB_LAYER_POST ? APB_OP_LAYER_POST : APB_OP_LAYER, t0, flops);
}

/* ------------------------------------------------------------------ CUDA */
#ifdef APB_CUDA
static void _apb_layer_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_layer_args *a = cl_arg;
    const struct _apb_layer_idx ix = _apb_layer_index(a->parts, a->has_bias, a->n_segs);
    cudaStream_t st = starpu_cuda_get_local_stream();
    const int d = a->head_dim, H = a->n_heads, Hk = a->n_kv_heads, qd = H * d, kd = Hk * d;
    float *x = _APB_PTR(buffers[ix.x]);
    const int rows = _APB_ROWS(buffers[ix.x]), dim = _APB_COLS(buffers[ix.x]), ldx = _APB_LD(buffers[ix.x]);
    const int hidden = (a->parts & _APB_LAYER_POST) ? _APB_ROWS(buffers[ix.w_gate]) : 0;
    const int es = (a->parts & _APB_LAYER_POST) ? _apb_elem(buffers[ix.w_gate]) : 4;
    /* scratch: xn, q, k, v, o, lse (fp32), then gate, up (es bytes), then a bf16 copy of xn */
    size_t f32 = (size_t)rows * ((size_t)dim + 2 * qd + 2 * kd + H);
    size_t gbytes = (size_t)rows * hidden * es, xbytes = es == 2 ? (size_t)rows * dim * 2 : 0;
    char *scr = _apb_cuda_scratch(_APB_CUDA_SCRATCH_LAYER, f32 * 4 + 2 * gbytes + xbytes + 64);
    if (!scr)
        return; /* out of GPU memory: the sticky error is set */
    float *xn = (float *)scr, *q = xn + (size_t)rows * dim, *k = q + (size_t)rows * qd;
    float *v = k + (size_t)rows * kd, *o = v + (size_t)rows * kd, *lse = o + (size_t)rows * qd;
    char *gp = scr + ((f32 * 4 + 15) & ~(size_t)15);
    void *g = gp, *u = gp + gbytes;
    double flops = 0;
    if (a->parts & _APB_LAYER_PRE) {
        apb_cuda_rmsnorm(xn, dim, x, ldx, _APB_PTR(buffers[ix.attn_norm]), rows, dim, a->eps, st);
        float *qo = ix.q >= 0 ? _APB_PTR(buffers[ix.q]) : q;
        int ldq = ix.q >= 0 ? _APB_LD(buffers[ix.q]) : qd;
        /* as the qkv codelet: xn converted to bf16 once when the weights are bf16 */
        const void *in = xn;
        int ldin = dim, in_elem = 4;
        if (_apb_elem(buffers[ix.wq]) == 2) {
            uint16_t *x16 = _apb_cuda_scratch(_APB_CUDA_SCRATCH_OP, (size_t)rows * dim * 2);
            if (!x16)
                return;
            apb_cuda_f32_to_bf16(x16, dim, xn, dim, rows, dim, st);
            in = x16;
            in_elem = 2;
        }
        void *outs[3] = {qo, k, v};
        const void *ws[3];
        int lds[3] = {ldq, kd, kd}, nout[3] = {qd, kd, kd}, w_elems[3];
        for (int m = 0; m < 3; m++) {
            void *wb = buffers[m == 0 ? ix.wq : m == 1 ? ix.wk : ix.wv];
            ws[m] = _APB_PTR(wb), w_elems[m] = _apb_elem(wb);
        }
        if (_apb_cuda_gemm3(outs, lds, in, ldin, in_elem, ws, w_elems, rows, dim, nout))
            return;
        if (a->has_bias)
            for (int m = 0; m < 3; m++)
                apb_cuda_add_bias(outs[m], lds[m], _APB_PTR(buffers[m == 0 ? ix.bq : m == 1 ? ix.bk : ix.bv]),
                                  rows, nout[m], st);
        apb_cuda_rope(qo, ldq, H, k, kd, Hk, _APB_PTR(buffers[ix.inv_freq]), rows, d, a->pos0, st);
        for (int m = 0; m < 2; m++) {
            void *db = buffers[m ? ix.vd : ix.kd];
            cudaMemcpy2DAsync((float *)_APB_PTR(db) + (size_t)a->append_row * _APB_LD(db),
                              sizeof(float) * (size_t)_APB_LD(db), m ? v : k, sizeof(float) * (size_t)kd,
                              sizeof(float) * (size_t)kd, (size_t)rows, cudaMemcpyDeviceToDevice, st);
        }
        flops += 2.0 * rows * dim * (qd + 2 * kd);
    }
    if (a->parts & _APB_LAYER_ATTN) {
        if (a->n_segs + 1 > APB_CUDA_MAX_SEGS) {
            _apb_task_fail(APB_E_RUNTIME, "layer: %d KV segments; the GPU kernel takes at most %d",
                           a->n_segs + 1, APB_CUDA_MAX_SEGS);
            return;
        }
        apb_cuda_seg segs[APB_CUDA_MAX_SEGS];
        for (int s = 0; s < a->n_segs; s++) {
            segs[s] = _apb_seg_cuda(buffers[ix.seg0 + 2 * s], buffers[ix.seg0 + 2 * s + 1], &a->seg[s]);
            flops += 4.0 * rows * a->seg[s].len * H * d;
        }
        segs[a->n_segs] = (apb_cuda_seg){.k = _APB_PTR(buffers[ix.kd]), .v = _APB_PTR(buffers[ix.vd]),
                                         .ld = _APB_LD(buffers[ix.kd]), .bf16 = 0,
                                         .len = a->append_row + rows, .coord0 = a->dec_coord0,
                                         .causal = 1, .min_q_coord = 0};
        int tc = _apb_precision() == APB_PREC_BF16;
        size_t scr_b = apb_cuda_attention_scratch(q, qd, rows, a->q_coord0, segs, a->n_segs + 1, H, Hk,
                                                  Hk, d, tc);
        void *as = scr_b ? _apb_cuda_scratch(_APB_CUDA_SCRATCH_ATTN, scr_b) : NULL;
        if (scr_b && !as)
            return;
        if (apb_cuda_attention(q, qd, rows, a->q_coord0, segs, a->n_segs + 1, H, Hk, 0, Hk, d, o, qd,
                               lse, H, tc, as, scr_b, st)) {
            _apb_task_fail(APB_E_RUNTIME, "layer: attention with head_dim %d failed on the GPU", d);
            return;
        }
    }
    if (a->parts & _APB_LAYER_POST) {
        const float *oin = ix.o >= 0 ? _APB_PTR(buffers[ix.o]) : o;
        int ldo = ix.o >= 0 ? _APB_LD(buffers[ix.o]) : qd;
        void *wo = buffers[ix.wo];
        if (_apb_cuda_gemm(x, ldx, 0, oin, ldo, 4, _APB_PTR(wo), _apb_elem(wo), rows, qd, dim, 1.0f))
            return;
        apb_cuda_rmsnorm(xn, dim, x, ldx, _APB_PTR(buffers[ix.mlp_norm]), rows, dim, a->eps, st);
        /* as the mlp codelet */
        const void *in = xn;
        int ldin = dim, in_elem = 4;
        if (es == 2) {
            uint16_t *x16 = (uint16_t *)(gp + 2 * gbytes);
            apb_cuda_f32_to_bf16(x16, dim, xn, dim, rows, dim, st);
            in = x16;
            in_elem = 2;
        }
        if (_apb_cuda_gate_up(g, u, es, in, ldin, in_elem, _APB_PTR(buffers[ix.w_gate]),
                              _APB_PTR(buffers[ix.w_up]), rows, dim, hidden))
            return;
        if (_apb_cuda_gemm(x, ldx, 0, g, hidden, es, _APB_PTR(buffers[ix.w_down]),
                           _apb_elem(buffers[ix.w_down]), rows, hidden, dim, 1.0f))
            return;
        flops += 2.0 * rows * qd * dim + 6.0 * rows * dim * hidden;
    }
    _apb_cuda_check("layer");
    _apb_op_count(a->parts == _APB_LAYER_PRE ? APB_OP_LAYER_PRE
                  : a->parts == _APB_LAYER_POST ? APB_OP_LAYER_POST : APB_OP_LAYER, flops);
}
#endif

static struct starpu_perfmodel _apb_layer_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_layer",
};
static struct starpu_perfmodel _apb_layer_pre_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_layer_pre",
};
static struct starpu_perfmodel _apb_layer_post_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_layer_post",
};

#ifdef APB_CUDA
#define _APB_LAYER_CUDA .cuda_funcs = {_apb_layer_cuda}, .cuda_flags = {STARPU_CUDA_ASYNC},
#else
#define _APB_LAYER_CUDA
#endif
static struct starpu_codelet _apb_layer_cl = {
    .cpu_funcs = {_apb_layer_cpu}, .cpu_funcs_name = {"_apb_layer_cpu"}, _APB_LAYER_CUDA
    .nbuffers = STARPU_VARIABLE_NBUFFERS, .model = &_apb_layer_model, .name = "layer",
};
static struct starpu_codelet _apb_layer_pre_cl = {
    .cpu_funcs = {_apb_layer_cpu}, .cpu_funcs_name = {"_apb_layer_cpu"}, _APB_LAYER_CUDA
    .nbuffers = STARPU_VARIABLE_NBUFFERS, .model = &_apb_layer_pre_model, .name = "layer_pre",
};
static struct starpu_codelet _apb_layer_post_cl = {
    .cpu_funcs = {_apb_layer_cpu}, .cpu_funcs_name = {"_apb_layer_cpu"}, _APB_LAYER_CUDA
    .nbuffers = STARPU_VARIABLE_NBUFFERS, .model = &_apb_layer_post_model, .name = "layer_post",
};

static int _apb_layer_insert(int parts, apb_handle x, const apb_layer_w *w, apb_handle q, apb_handle o,
                             apb_handle kdh, apb_handle vdh, int pos0, int append_row, int q_coord0,
                             int dec_coord0, const apb_attn_seg *segs, int n_segs, int n_heads,
                             int n_kv_heads, int head_dim, float eps, apb_task_tag tag)
{
    const int has_bias = (parts & _APB_LAYER_PRE) && w->bq != NULL;
    if (n_segs < 0 || n_kv_heads <= 0 || n_heads % n_kv_heads || head_dim <= 0 || head_dim > 1024 ||
        head_dim % 2 || !x)
        return -EINVAL;
    const int rows = apb_tile_rows(x), qd = n_heads * head_dim, kdim = n_kv_heads * head_dim;
    if ((parts & _APB_LAYER_PRE) &&
        (!kdh || !vdh || apb_tile_cols(kdh) != kdim || apb_tile_elemsize(kdh) != sizeof(float) ||
         append_row < 0 || append_row + rows > apb_tile_rows(kdh) || (q && apb_tile_cols(q) != qd)))
        return -EINVAL;
    if (parts == _APB_LAYER_POST && (!o || apb_tile_cols(o) != qd || apb_tile_rows(o) != rows))
        return -EINVAL;
    const int ns = (parts & _APB_LAYER_ATTN) ? n_segs : 0;
    size_t asz = sizeof(struct _apb_layer_args) + (size_t)ns * sizeof(struct _apb_seg_arg);
    struct _apb_layer_args *a = malloc(asz);
    const struct _apb_layer_idx ix = _apb_layer_index(parts, has_bias, ns);
    struct starpu_data_descr *d = malloc(sizeof *d * (size_t)ix.n);
    if (!a || !d) {
        free(a);
        free(d);
        return -ENOMEM;
    }
    *a = (struct _apb_layer_args){.parts = parts, .has_bias = has_bias, .head_dim = head_dim,
                                  .n_heads = n_heads, .n_kv_heads = n_kv_heads, .pos0 = pos0,
                                  .append_row = append_row, .q_coord0 = q_coord0,
                                  .dec_coord0 = dec_coord0, .eps = eps, .n_segs = ns};
#define _APB_D(i, h, m)                                                                            \
    do {                                                                                           \
        if ((i) >= 0)                                                                              \
            d[i] = (struct starpu_data_descr){(h), (m)};                                           \
    } while (0)
    _APB_D(ix.o, o, STARPU_R);
    _APB_D(ix.x, x, (parts & _APB_LAYER_POST) ? STARPU_RW : STARPU_R);
    if (parts & _APB_LAYER_PRE) {
        _APB_D(ix.attn_norm, w->attn_norm, STARPU_R);
        _APB_D(ix.wq, w->wq, STARPU_R);
        _APB_D(ix.wk, w->wk, STARPU_R);
        _APB_D(ix.wv, w->wv, STARPU_R);
        _APB_D(ix.bq, w->bq, STARPU_R);
        _APB_D(ix.bk, w->bk, STARPU_R);
        _APB_D(ix.bv, w->bv, STARPU_R);
        _APB_D(ix.inv_freq, w->inv_freq, STARPU_R);
        _APB_D(ix.kd, kdh, STARPU_RW);
        _APB_D(ix.vd, vdh, STARPU_RW);
        _APB_D(ix.q, q, STARPU_W);
    }
    if (parts & _APB_LAYER_POST) {
        _APB_D(ix.wo, w->wo, STARPU_R);
        _APB_D(ix.mlp_norm, w->mlp_norm, STARPU_R);
        _APB_D(ix.w_gate, w->w_gate, STARPU_R);
        _APB_D(ix.w_up, w->w_up, STARPU_R);
        _APB_D(ix.w_down, w->w_down, STARPU_R);
    }
#undef _APB_D
    if (_apb_segs_pack(segs, ns, kdim, a->seg, d + ix.seg0)) {
        free(a);
        free(d);
        return -EINVAL;
    }
    double flops = 0;
    for (int s = 0; s < ns; s++)
        flops += 4.0 * rows * segs[s].len * qd;
    struct starpu_codelet *cl = parts == _APB_LAYER_PRE ? &_apb_layer_pre_cl
                                : parts == _APB_LAYER_POST ? &_apb_layer_post_cl : &_apb_layer_cl;
    int ret = apb_task_insert(cl, STARPU_DATA_MODE_ARRAY, d, ix.n, STARPU_CL_ARGS, a, asz,
                              STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag), STARPU_FLOPS, flops,
                              STARPU_NAME, _apb_task_name(cl->name, tag), 0);
    free(d);
    return _apb_insert_check(ret, cl->name);
}

int apb_insert_layer_pre(apb_handle x, const apb_layer_w *w, apb_handle q, apb_handle kd, apb_handle vd,
                         int pos0, int append_row, int n_heads, int n_kv_heads, int head_dim, float eps,
                         apb_task_tag tag)
{
    if (!q)
        return -EINVAL;
    return _apb_layer_insert(_APB_LAYER_PRE, x, w, q, NULL, kd, vd, pos0, append_row, 0, 0, NULL, 0,
                             n_heads, n_kv_heads, head_dim, eps, tag);
}

int apb_insert_layer_post(apb_handle o, const apb_layer_w *w, apb_handle x, int n_heads, int n_kv_heads,
                          int head_dim, float eps, apb_task_tag tag)
{
    return _apb_layer_insert(_APB_LAYER_POST, x, w, NULL, o, NULL, NULL, 0, 0, 0, 0, NULL, 0, n_heads,
                             n_kv_heads, head_dim, eps, tag);
}

int apb_insert_layer(apb_handle x, const apb_layer_w *w, apb_handle kd, apb_handle vd, int pos0,
                     int append_row, int q_coord0, int dec_coord0, const apb_attn_seg *segs, int n_segs,
                     int n_heads, int n_kv_heads, int head_dim, float eps, apb_task_tag tag)
{
    return _apb_layer_insert(_APB_LAYER_PRE | _APB_LAYER_ATTN | _APB_LAYER_POST, x, w, NULL, NULL, kd,
                             vd, pos0, append_row, q_coord0, dec_coord0, segs, n_segs, n_heads,
                             n_kv_heads, head_dim, eps, tag);
}
