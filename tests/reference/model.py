"""The Furnace model in plain PyTorch: the reference that tests/reference/check.py
compares Furnace against. docs/model.md describes the same math in words.

Everything runs in float64 (weights are converted from Furnace's float32 on load);
autograd provides the gradients. One function per layer, llm.c style.

Usage from Python:
    cfg = config_from_json(text)                 # the dump's `config_json` attribute
    params = {name: float64 tensor, requires_grad}
    out = forward(cfg, params, tokens)           # tokens int64 [B, T+1]
    out.loss.backward()
"""
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

DTYPE = torch.float64


# ----------------------------------------------------------------------------- config

def config_from_json(text):
    """The dump's resolved config (JSON with sections model, moe, train) as a dict."""
    import json
    cfg = json.loads(text)
    for section in ("model", "moe", "train"):
        if section not in cfg:
            raise KeyError(f"config_json has no section '{section}'")
    return cfg


def is_moe_layer(cfg, l):
    moe = cfg["moe"]
    return moe["experts"] > 0 and moe["every"] > 0 and (l + 1) % moe["every"] == 0


def param_shapes(cfg):
    """Every parameter's name and logical shape, in model order."""
    m, moe = cfg["model"], cfg["moe"]
    V, T, d, L = m["vocab_size"], m["seq_len"], m["d_model"], m["n_layers"]
    glu = 2 if m["activation"] == "swiglu" else 1
    has_bias = m["norm"] == "layernorm"
    shapes = OrderedDict()

    def norm(prefix):
        shapes[prefix + ".w"] = (d,)
        if has_bias:
            shapes[prefix + ".b"] = (d,)

    shapes["wte"] = (V, d)
    shapes["wpe"] = (T, d)
    for l in range(L):
        p = f"blocks.{l}"
        norm(p + ".ln1")
        shapes[p + ".attn.wqkv"] = (d, 3 * d)
        shapes[p + ".attn.wo"] = (d, d)
        norm(p + ".ln2")
        if is_moe_layer(cfg, l):
            E, H = moe["experts"], moe["expert_hidden"]
            shapes[p + ".moe.router"] = (d, E)
            shapes[p + ".moe.w1"] = (E, d, glu * H)
            shapes[p + ".moe.w2"] = (E, H, d)
        else:
            Fh = m["ffn_hidden"]
            shapes[p + ".ffn.w1"] = (d, glu * Fh)
            shapes[p + ".ffn.w2"] = (Fh, d)
    norm("lnf")
    return shapes


# ----------------------------------------------------------------------------- layers

def layernorm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased variance
    return (x - mean) * torch.rsqrt(var + eps) * w + b


def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def norm(cfg, params, prefix, x):
    eps = cfg["model"]["norm_eps"]
    if cfg["model"]["norm"] == "layernorm":
        return layernorm(x, params[prefix + ".w"], params[prefix + ".b"], eps)
    if cfg["model"]["norm"] == "rmsnorm":
        return rmsnorm(x, params[prefix + ".w"], eps)
    raise ValueError(f"unknown model.norm {cfg['model']['norm']!r}")


def attention(cfg, x, wqkv, wo):
    """Causal multi-head self-attention. x [B, T, d] -> [B, T, d]."""
    B, T, d = x.shape
    nh = cfg["model"]["n_heads"]
    hd = d // nh
    qkv = x @ wqkv                                   # [B, T, 3d]
    q, k, v = qkv.split(d, dim=-1)                   # each [B, T, d]
    # head h owns columns h*hd:(h+1)*hd of q, k and v
    q = q.view(B, T, nh, hd).transpose(1, 2)         # [B, nh, T, hd]
    k = k.view(B, T, nh, hd).transpose(1, 2)
    v = v.view(B, T, nh, hd).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)  # [B, nh, T, T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    att = torch.softmax(scores, dim=-1)
    y = att @ v                                      # [B, nh, T, hd]
    y = y.transpose(1, 2).reshape(B, T, d)           # merge heads back into columns
    return y @ wo


def activation(cfg, a):
    """gelu: tanh-approximate GELU of a. swiglu: a = [gate | up], silu(gate) * up."""
    act = cfg["model"]["activation"]
    if act == "gelu":
        return F.gelu(a, approximate="tanh")
    if act == "swiglu":
        half = a.shape[-1] // 2
        return F.silu(a[..., :half]) * a[..., half:]
    raise ValueError(f"unknown model.activation {act!r}")


def ffn(cfg, x, w1, w2):
    """Dense feed-forward layer (also one expert): act(x @ w1) @ w2."""
    return activation(cfg, x @ w1) @ w2


@dataclass
class RouteStats:
    layer: int             # block index
    capacity: int          # -1 = unlimited
    demand: list           # copies routed to each expert before the capacity cut
    kept: list             # copies each expert kept
    dropped: int           # copies dropped by the capacity cut
    margin: float          # smallest gap between neighbouring probabilities among each
                           # token's k+1 largest: a near tie (~1e-7) makes float32 and
                           # float64 route differently, and the check fails for that reason


def topk_stable(p, k):
    """Top-k of each row of p, largest first, ties to the lower column index."""
    # a stable descending sort keeps equal values in increasing index order
    _, idx = torch.sort(p.detach(), dim=-1, descending=True, stable=True)
    return idx[:, :k]


def capacity(cfg, n):
    moe = cfg["moe"]
    cf, k, E = moe["capacity_factor"], moe["top_k"], moe["experts"]
    if cf <= 0:
        return -1
    return int(math.ceil(cf * n * k / E))


def moe(cfg, x, router, w1, w2):
    """Mixture-of-experts layer on x [n, d]. Returns y [n, d], aux, z, RouteStats."""
    n, d = x.shape
    E, k = cfg["moe"]["experts"], cfg["moe"]["top_k"]
    r = x @ router                                   # router logits [n, E]
    p = torch.softmax(r, dim=-1)
    idx = topk_stable(p, k)                          # [n, k]
    w = torch.gather(p, 1, idx)                      # [n, k], not renormalised

    # capacity cut: copies in priority order (j = 0 for all tokens, then j = 1, ...)
    C = capacity(cfg, n)
    order = idx.t().reshape(-1)                      # copy (i, j) at position j*n + i
    onehot = F.one_hot(order, E)                     # [k*n, E]
    position = (onehot.cumsum(0) * onehot).sum(1) - 1  # rank of the copy within its expert
    keep = (position < C) if C >= 0 else torch.ones_like(position, dtype=torch.bool)
    keep = keep.view(k, n).t()                       # [n, k]

    y = torch.zeros_like(x)
    for e in range(E):
        rows, cols = torch.nonzero((idx == e) & keep, as_tuple=True)
        if rows.numel() == 0:
            continue
        out = ffn(cfg, x[rows], w1[e], w2[e])        # [m, d]
        y = y.index_add(0, rows, w[rows, cols].unsqueeze(1) * out)

    # auxiliary losses
    demand = torch.bincount(idx.reshape(-1), minlength=E).to(DTYPE)  # constant
    f = demand / (n * k)
    P = p.mean(0)
    aux = E * (f * P).sum()
    z = (torch.logsumexp(r, dim=-1) ** 2).mean()

    kept = torch.bincount(idx[keep], minlength=E)
    top = torch.sort(p.detach(), dim=-1, descending=True).values[:, :min(k + 1, E)]
    margin = float((top[:, :-1] - top[:, 1:]).min()) if top.shape[1] > 1 else float("inf")
    stats = RouteStats(-1, C, demand.long().tolist(), kept.tolist(), int((~keep).sum()), margin)
    return y, aux, z, stats


def block(cfg, params, l, x):
    """One transformer block. x [B, T, d] -> x, list of (aux, z, stats) for MoE."""
    p = f"blocks.{l}"
    h = norm(cfg, params, p + ".ln1", x)
    x = x + attention(cfg, h, params[p + ".attn.wqkv"], params[p + ".attn.wo"])
    h = norm(cfg, params, p + ".ln2", x)
    if is_moe_layer(cfg, l):
        B, T, d = h.shape
        y, aux, z, stats = moe(cfg, h.reshape(B * T, d), params[p + ".moe.router"],
                               params[p + ".moe.w1"], params[p + ".moe.w2"])
        stats.layer = l
        return x + y.view(B, T, d), [(aux, z, stats)]
    return x + ffn(cfg, h, params[p + ".ffn.w1"], params[p + ".ffn.w2"]), []


# ----------------------------------------------------------------------------- model

@dataclass
class Output:
    logits: torch.Tensor   # [B*T, V]
    ce: torch.Tensor       # mean cross-entropy
    loss: torch.Tensor     # ce + aux_coef * sum aux + z_coef * sum z
    aux: list = field(default_factory=list)    # per MoE layer
    z: list = field(default_factory=list)
    routes: list = field(default_factory=list)  # RouteStats per MoE layer


def forward(cfg, params, tokens):
    """tokens int64 [B, T+1]: inputs tokens[:, :T], targets tokens[:, 1:]."""
    inp, tgt = tokens[:, :-1], tokens[:, 1:]
    B, T = inp.shape
    x = params["wte"][inp] + params["wpe"][:T]
    moe_out = []
    for l in range(cfg["model"]["n_layers"]):
        x, extra = block(cfg, params, l, x)
        moe_out += extra
    h = norm(cfg, params, "lnf", x)
    logits = (h @ params["wte"].t()).reshape(B * T, -1)  # tied LM head
    ce = F.cross_entropy(logits, tgt.reshape(-1))
    aux = [a for a, _, _ in moe_out]
    z = [zz for _, zz, _ in moe_out]
    zero = torch.zeros((), dtype=DTYPE)
    loss = (ce + cfg["moe"]["aux_loss_coef"] * sum(aux, zero)
            + cfg["moe"]["z_loss_coef"] * sum(z, zero))
    return Output(logits, ce, loss, aux, z, [s for _, _, s in moe_out])


def to_params(arrays):
    """{name: array-like} -> {name: float64 leaf tensor with requires_grad}."""
    return {name: torch.tensor(a, dtype=DTYPE).requires_grad_(True) for name, a in arrays.items()}


def clip_grads(params, max_norm):
    """Global-norm clipping as Furnace does it; returns the norm before clipping."""
    total = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params.values()))
    if max_norm > 0 and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for p in params.values():
            p.grad.mul_(scale)
    return total


def make_optimizer(cfg, params):
    tr = cfg["train"]
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": tr["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=0.0, betas=(tr["beta1"], tr["beta2"]), eps=tr["eps"])


def train(cfg, params, batches, lrs):
    """S training steps; batches int64 [S, B, T+1], lrs [S]. Returns the ce and total
    loss of every step (before its update). Updates params in place."""
    opt = make_optimizer(cfg, params)
    ces, losses = [], []
    for s in range(len(lrs)):
        opt.zero_grad(set_to_none=False)
        out = forward(cfg, params, batches[s])
        out.loss.backward()
        for p in params.values():  # an unused parameter still gets a (zero) AdamW step
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        clip_grads(params, cfg["train"]["grad_clip"])
        for group in opt.param_groups:
            group["lr"] = float(lrs[s])
        opt.step()
        ces.append(float(out.ce))
        losses.append(float(out.loss))
    return ces, losses
