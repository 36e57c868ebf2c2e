"""PyTorch reference for `cargo xtask bench --compare --model dupn`: the same DUPN as the
user-dupn crate's (crates/user-dupn/src/{model,gated_lstm,attention}.rs, widths from meta.json),
trained on the same exported batches, in the same order, with the same thread count; and, with
`--serve`, the same serving by network disassembly (encode one user, score many candidates).

Architecture:
- behaviour t: item part e_t = [item, brand, shop, category, tag vectors] (width 16 each, the
  tables of the target item's fields, shared), property part p_t = [behaviour, channel, gap,
  weekend, hour vectors] (width 8 each);
- property-gated LSTM (hidden h): the input, forget and output gates read e_t and p_t, the cell
  candidate reads e_t only, forget bias 1. Run as PyTorch's LSTM kernel (`torch.lstm`, the
  function behind `nn.LSTM`) with input [e_t; p_t] and an input weight assembled every step
  from the crate's parameters: W_e [4h, de] and W_p [3h, dp] padded with zeros for the cell
  rows, gate rows reordered to PyTorch's (i, f, g, o); the hidden-to-hidden bias is a zero
  constant, so the trainable parameters are exactly the crate's (W_e, W_p, W_hh, one bias);
- attention net: a_t = softmax_t v^T tanh(W_h h_t + b + W_p p_t + W_c [q; u]), q the mean of
  the query terms' vectors, u the profile vectors (user, country, age, gender; width 16 each);
  rep = [sum_t a_t h_t; u];
- heads: CTR = MLP([rep; target item vectors]) (the first layer split into a rep block with
  bias and an item block without, hidden [64], ReLU, dropout 0.2), PPP = MLP(rep) over the
  classes; loss = BCE(CTR) + softmax cross-entropy(PPP) (equal weights).
Optimizers: Adagrad (lr 0.05, eps 1e-10) for the dense parameters and for the tables, which are
`sparse=True` (PyTorch's Adagrad updates only the rows of a sparse gradient, the crate's
row-wise AdaGrad).

Deviations: every history has the same length in the benchmark data, so no padding mask is
used here (the crate's LSTM and attention apply an all-ones mask); the target's multi-hot tags
use `embedding_bag` (mean) and a candidate's single tag a plain lookup (the crate pools a
one-element bag: the same numbers).

The parameter count is checked against the Rust model's (`params` in meta.json) before anything
is timed. Output: one JSON line (samples/s, or p50/p99 ms with `--serve`). Not part of CI.
"""

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness import report, time_train_and_infer


def table(vocab, dim):
    w = nn.Parameter(torch.empty(vocab, dim))
    nn.init.normal_(w, std=0.05)
    return w


def xavier(i, o, bias):
    lin = nn.Linear(i, o, bias=bias)
    nn.init.xavier_uniform_(lin.weight)
    if bias:
        nn.init.zeros_(lin.bias)
    return lin


class Dupn(nn.Module):
    def __init__(self, meta):
        super().__init__()
        cfg = meta["model"]
        by_name = {f["name"]: f for f in meta["fields"]}
        hist = [f for f in meta["fields"] if f["kind"] == "seq" and f["group"] == "hist"]
        self.item_hist = [f["name"] for f in hist if f["shares"]]
        self.item_target = [by_name[f]["shares"] for f in self.item_hist]
        self.target_kind = {t: by_name[t]["kind"] for t in self.item_target}
        self.prop_hist = [f["name"] for f in hist if not f["shares"]]
        self.profile = [p for p in cfg["profile"] if p in by_name and by_name[p]["kind"] == "ids"]
        self.query = cfg["query"] if by_name.get(cfg["query"], {}).get("kind") == "bag" else None
        di, dp_, du_, dq_ = (cfg["item_dim"], cfg["property_dim"], cfg["profile_dim"],
                             cfg["query_dim"])
        self.item = nn.ParameterDict({t: table(by_name[t]["vocab"], di) for t in self.item_target})
        self.prop = nn.ParameterDict({p: table(by_name[p]["vocab"], dp_) for p in self.prop_hist})
        self.prof = nn.ParameterDict({p: table(by_name[p]["vocab"], du_) for p in self.profile})
        self.qtab = nn.ParameterDict(
            {self.query: table(by_name[self.query]["vocab"], dq_)} if self.query else {})
        de = di * len(self.item_hist)
        dp = dp_ * len(self.prop_hist)
        du = du_ * len(self.profile)
        dq = dq_ if self.query else 0
        h = self.h = cfg["hidden"]
        a = 1.0 / h ** 0.5
        self.w_e = nn.Parameter(torch.empty(4 * h, de).uniform_(-a, a))
        self.w_p = nn.Parameter(torch.empty(3 * h, dp).uniform_(-a, a))
        self.w_hh = nn.Parameter(torch.empty(4 * h, h).uniform_(-a, a))
        bias = torch.zeros(4 * h)
        bias[h:2 * h] = 1.0
        self.bias = nn.Parameter(bias)
        self.register_buffer("b_hh", torch.zeros(4 * h))
        self.register_buffer("w_p_cell", torch.zeros(h, dp))
        # Crate gate order (i, f, o, c) -> PyTorch's (i, f, g, o).
        self.register_buffer("order", torch.cat([torch.arange(0, 2 * h),
                                                 torch.arange(3 * h, 4 * h),
                                                 torch.arange(2 * h, 3 * h)]))
        ah = cfg["attention_hidden"]
        self.att_h = xavier(h, ah, True)
        self.att_p = xavier(dp, ah, False)
        self.att_c = xavier(dq + du, ah, False)
        self.att_v = xavier(ah, 1, False)
        rep = h + du
        (hh,) = cfg["head_hidden"]
        self.ctr_rep = nn.Linear(rep, hh)
        self.ctr_x = nn.Linear(de, hh, bias=False)
        self.ctr_out = xavier(hh, 1, True)
        classes = [t for t in meta["tasks"] if t["kind"] == "multiclass"][0]["classes"]
        self.ppp_rep = nn.Linear(rep, hh)
        self.ppp_out = xavier(hh, classes, True)
        self.drop = nn.Dropout(cfg["head_dropout"])

    def sparse_params(self):
        return [p for d in (self.item, self.prop, self.prof, self.qtab) for p in d.values()]

    def lookup_target(self, b, name, single=False):
        w = self.item[name]
        if self.target_kind[name] == "bag" and not single:
            v, o = b[name]
            return F.embedding_bag(v, w, o, mode="mean", sparse=True)
        return F.embedding(b[name], w, sparse=True)

    def encode(self, b):
        e = torch.cat([F.embedding(b[f], self.item[t], sparse=True)
                       for f, t in zip(self.item_hist, self.item_target)], 2)
        p = torch.cat([F.embedding(b[f], self.prop[f], sparse=True) for f in self.prop_hist], 2)
        n = e.shape[0]
        w_ih = torch.cat([self.w_e, torch.cat([self.w_p, self.w_p_cell], 0)], 1)[self.order]
        w_hh = self.w_hh[self.order]
        b_ih = self.bias[self.order]
        zeros = e.new_zeros(1, n, self.h)
        hs, _, _ = torch.lstm(torch.cat([e, p], 2), (zeros, zeros),
                              [w_ih, w_hh, b_ih, self.b_hh], True, 1, 0.0, self.training,
                              False, True)
        u = torch.cat([F.embedding(b[f], self.prof[f], sparse=True) for f in self.profile], 1)
        parts = []
        if self.query:
            v, o = b[self.query]
            parts.append(F.embedding_bag(v, self.qtab[self.query], o, mode="mean", sparse=True))
        c = torch.cat(parts + [u], 1)
        z = self.att_h(hs) + self.att_p(p) + self.att_c(c).unsqueeze(1)
        att = torch.softmax(self.att_v(torch.tanh(z)).squeeze(-1), 1)
        rep_s = torch.bmm(att.unsqueeze(1), hs).squeeze(1)
        return torch.cat([rep_s, u], 1)

    def ppp(self, rep):
        return self.ppp_out(self.drop(torch.relu(self.ppp_rep(rep))))

    def ctr(self, rep_part, e_item):
        return self.ctr_out(self.drop(torch.relu(self.ctr_x(e_item) + rep_part))).squeeze(1)

    def forward(self, b):
        rep = self.encode(b)
        e_item = torch.cat([self.lookup_target(b, t) for t in self.item_target], 1)
        return self.ctr(self.ctr_rep(rep), e_item), self.ppp(rep)


def load(dir):
    meta = json.load(open(os.path.join(dir, "meta.json")))
    cols = {}
    for f in meta["fields"]:
        n = f["name"]
        if f["kind"] == "bag":
            v = np.load(os.path.join(dir, f"{n}.values.npy")).astype(np.int64)
            o = np.load(os.path.join(dir, f"{n}.offsets.npy")).astype(np.int64)
            cols[n] = (torch.from_numpy(v), torch.from_numpy(o))
        else:
            cols[n] = torch.from_numpy(np.load(os.path.join(dir, f"{n}.npy")).astype(np.int64))
    labels = {t["name"]: torch.from_numpy(np.load(os.path.join(dir, f"labels.{t['name']}.npy")))
              for t in meta["tasks"]}
    return meta, cols, labels


def rows(meta, cols, start, end):
    out = {}
    for f in meta["fields"]:
        x = cols[f["name"]]
        if f["kind"] == "bag":
            v, o = x
            lo, hi = int(o[start]), int(o[end])
            out[f["name"]] = (v[lo:hi], o[start:end] - lo)
        else:
            out[f["name"]] = x[start:end]
    return out


def check_params(model, meta):
    params = sum(p.numel() for p in model.parameters())
    if params != meta["params"]:
        raise SystemExit(f"parameter count {params} != rec-rs {meta['params']}")
    return params


def serve(args):
    meta, cols, _ = load(args.dir)
    model = Dupn(meta)
    params = check_params(model, meta)
    model.eval()
    req = rows(meta, cols, 0, 1)
    cands = {t: torch.from_numpy(
        np.load(os.path.join(args.dir, f"candidates.{t}.npy")).astype(np.int64))
        for t in model.item_target}
    times = []
    with torch.inference_mode():
        for r in range(args.warmup + args.reps):
            t = time.perf_counter()
            rep = model.encode(req)
            ppp = torch.softmax(model.ppp(rep), 1)
            rep_part = model.ctr_rep(rep)
            e = torch.cat([model.lookup_target(cands, f, single=True)
                           for f in model.item_target], 1)
            scores = model.ctr(rep_part, e).numpy()
            if r >= args.warmup:
                times.append(time.perf_counter() - t)
    assert scores.shape[0] == cands[model.item_target[0]].shape[0] and ppp.shape[0] == 1
    times.sort()
    q = lambda p: times[int(round((len(times) - 1) * p))]
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}", "params": params,
        "threads": args.threads, "reps": args.reps, "candidates": int(scores.shape[0]),
        "p50_ms": q(0.5) * 1e3, "p99_ms": q(0.99) * 1e3,
    }))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    torch.manual_seed(0)
    if args.serve:
        return serve(args)
    meta, cols, labels = load(args.dir)
    model = Dupn(meta)
    params = check_params(model, meta)
    n = meta["rows"]
    nb = n // args.batch
    bs = args.batch
    batches = [(rows(meta, cols, i * bs, (i + 1) * bs),
                {k: v[i * bs:(i + 1) * bs] for k, v in labels.items()}) for i in range(nb)]
    sparse = model.sparse_params()
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in ids]
    cfg = meta["model"]
    opt_d = torch.optim.Adagrad(dense, lr=cfg["dense_optimizer"]["lr"], eps=1e-10)
    opt_s = torch.optim.Adagrad(sparse, lr=cfg["sparse_optimizer"]["lr"], eps=1e-10)

    def loss_of(b, y):
        ctr, ppp = model(b)
        return (F.binary_cross_entropy_with_logits(ctr, y["ctr"])
                + F.cross_entropy(ppp, y["ppp"].long()))

    def predict(b):
        ctr, ppp = model(b)
        return torch.sigmoid(ctr), torch.softmax(ppp, 1)

    train_s, infer_s = time_train_and_infer(
        model, batches, loss_of, predict, [opt_d, opt_s], args.warmup, args.steps)
    report(args, train_s, infer_s, params=params)


if __name__ == "__main__":
    main()
