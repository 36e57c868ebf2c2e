"""PyTorch reference for `cargo xtask bench --compare --model saml`: the same SAML as the
scenario-saml crate's (crates/scenario-saml/src/saml.rs with its defaults), trained on the same
exported batches, in the same order, with the same thread count.

Architecture (dim 16, hidden [128, 64], ReLU, no dropout, attention MLP [32], every part on):
- global embeddings: one width-16 vector per non-sequence field (the scenario field included);
  the behaviour sequence `hist_item_id` reads the item table;
- global DIN attention over the behaviours from the target item:
  score_j = MLP([q; k_j; q*k_j; q-k_j]) (4*16 -> 32 ReLU -> 1), softmax over positions;
- scenario embeddings: every categorical field but the scenario field has a table of
  vocab * M rows read at `id * M + scenario`;
- scenario attention: q (I + P_q[s]), k_j (I + P_k[s]) with per-scenario 16x16 matrices
  (zero at start) and its own scoring MLP, values the global behaviour vectors;
- auxiliary net on x_aux = [global fields; attended] (96 -> 128 -> 64, ReLU), its own head and
  BCE loss (weight 1);
- M branches, routed as in the crate: the batch is sorted by scenario, each sample runs
  through its own branch only (one matmul per scenario block, with gradient), and every other
  branch runs without gradient on the other scenarios' samples, as the mutual unit's constant
  inputs (`--dense` instead runs every branch on every sample as batched matmuls, the crate's
  earlier computation). Layer 0 reads [scenario fields; scenario attention; x_aux]
  (176 -> 128), layer 1 reads the own branch's layer 0 (128 -> 64) plus the auxiliary net's
  layer 0 (128 -> 64, no bias); ReLU;
- mutual unit after the last hidden layer: gates = softmax over the other branches of
  beta * cos(h_own, h_m) + c[s, m] (others detached), h~ = h_own + sum_m gate_m h_m;
- a head per scenario: logit = w_s . h~ + b_s (+ the auxiliary logit when `aux_in_output`,
  the crate's default); loss = BCE(logit) + BCE(aux logit) + scenario_l2 * (mean over the
  batch of the scenario vectors' squared norms).
Branch weights start tied (one draw copied to every branch), as in the crate.
Optimizers: Adam (lr 1e-3) for the dense parameters; the tables are `sparse=True` and use
SparseAdam (lr 1e-3), PyTorch's lazy Adam: the same arithmetic per touched row as the crate's
row-wise Adam (SparseAdam keeps one step count per table, the crate one per row; the cost is
the same).

Deviations (none changes the amount of arithmetic by more than a few element-wise ops): every
history in the benchmark data has the same length, so the softmaxes here take no padding mask
(ours is a masked softmax over an all-ones mask).

The parameter count is checked against the Rust model's (`params` in meta.json) before
anything is timed. Output: one JSON line with samples/s. Not part of CI.
"""

import argparse
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness import report, time_train_and_infer


def table(vocab, dim):
    w = nn.Parameter(torch.empty(vocab, dim))
    nn.init.normal_(w, std=0.05)
    return w


def stacked(m, i, o, tied=True):
    """[m, i, o] He-uniform weights; with `tied`, one draw copied to every branch."""
    a = (6.0 / i) ** 0.5
    one = torch.empty(1 if tied else m, i, o).uniform_(-a, a)
    return nn.Parameter(one.expand(m, i, o).clone())


class TargetAttention(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        layers, w = [], 4 * width
        for h in hidden:
            lin = nn.Linear(w, h)
            nn.init.kaiming_uniform_(lin.weight, a=5 ** 0.5)
            layers += [lin, nn.ReLU()]
            w = h
        self.mlp = nn.Sequential(*layers)
        self.score = nn.Linear(w, 1)

    def forward(self, q, k, v):
        n, t, d = k.shape
        qe = q.unsqueeze(1).expand(n, t, d)
        feats = torch.cat([qe, k, qe * k, qe - k], -1)
        s = self.score(self.mlp(feats.reshape(n * t, 4 * d))).reshape(n, t)
        w = torch.softmax(s, 1)
        return (v * w.unsqueeze(-1)).sum(1)


class Saml(nn.Module):
    def __init__(self, meta, routed=True):
        super().__init__()
        self.routed = routed
        self.aux_in_output = meta["model"]["aux_in_output"]
        cfg = meta["model"]
        self.m = m = meta["num_scenarios"]
        dim = cfg["dim"]
        hidden = cfg["hidden"]
        assert len(hidden) == 2, "this reference mirrors the two-layer default"
        fields = meta["fields"]
        self.scen_field = meta["scenario_field"]
        self.flat = [f for f in fields if f["kind"] == "ids"]
        self.seq = [f for f in fields if f["kind"] == "seq"]
        self.tables = nn.ParameterDict()
        for f in self.flat:
            self.tables[f["name"]] = table(f["vocab"], dim)
        self.scen = [f for f in self.flat if f["name"] != self.scen_field]
        self.scen_tables = nn.ParameterDict()
        for f in self.scen:
            self.scen_tables[f["name"]] = table(f["vocab"] * m, dim)
        w = dim * len(self.seq)
        self.width = w
        self.attention = TargetAttention(w, cfg["attention_hidden"])
        self.proj_q = nn.Parameter(torch.zeros(m, w * w))
        self.proj_k = nn.Parameter(torch.zeros(m, w * w))
        self.scen_attention = TargetAttention(w, cfg["attention_hidden"])
        aux_in = len(self.flat) * dim + w
        branch_in = len(self.scen) * dim + w
        h0, h1 = hidden
        self.aux0 = nn.Linear(aux_in, h0)
        self.aux1 = nn.Linear(h0, h1)
        self.aux_out = nn.Linear(h1, 1)
        tied = cfg["tied_init"]
        self.b0_w = stacked(m, branch_in + aux_in, h0, tied)
        self.b0_b = nn.Parameter(torch.zeros(m, 1, h0))
        self.b1_w = stacked(m, h0, h1, tied)
        self.b1_b = nn.Parameter(torch.zeros(m, 1, h1))
        self.b1_fed = stacked(m, h0, h1, tied)
        self.beta = nn.Parameter(torch.ones(1))
        self.affinity = nn.Parameter(torch.zeros(m, m))
        self.head_w = stacked(m, h1, 1, tied)
        self.head_b = nn.Parameter(torch.zeros(m))

    def sparse_params(self):
        return list(self.tables.values()) + list(self.scen_tables.values())

    @staticmethod
    def shared(x, w):
        """x [n, i] through every branch's w [m, i, o] as one matmul -> [m, n, o]."""
        m, i, o = w.shape
        wide = w.transpose(0, 1).reshape(i, m * o)
        return (x @ wide).reshape(x.shape[0], m, o).transpose(0, 1)

    def forward(self, b):
        logit, aux = self.logits(b)
        if self.aux_in_output:
            logit = logit + aux
        return logit, aux

    def logits(self, b):
        s = b[self.scen_field]
        n = s.shape[0]
        vecs = {f["name"]: F.embedding(b[f["name"]], self.tables[f["name"]], sparse=True)
                for f in self.flat}
        target = torch.cat([vecs[f["shares"]] for f in self.seq], 1)
        beh = torch.cat([F.embedding(b[f["name"]], self.tables[f["shares"]], sparse=True)
                         for f in self.seq], 2)
        attended = self.attention(target, beh, beh)
        x_aux = torch.cat([vecs[f["name"]] for f in self.flat] + [attended], 1)
        m, w = self.m, self.width
        scen = [F.embedding(b[f["name"]] * m + s, self.scen_tables[f["name"]], sparse=True)
                for f in self.scen]
        # mean over the batch of the scenario vectors' squared norms (the scenario_l2 term)
        self.scen_sq = torch.cat(scen, 1).pow(2).sum(1).mean()
        pq = self.proj_q[s].view(n, w, w)
        pk = self.proj_k[s].view(n, w, w)
        q = target + torch.bmm(target.unsqueeze(1), pq).squeeze(1)
        k = beh + torch.bmm(beh, pk)
        scen_att = self.scen_attention(q, k, beh)
        x_branch = torch.cat(scen + [scen_att, x_aux], 1)
        a0 = torch.relu(self.aux0(x_aux))
        a = torch.relu(self.aux1(a0))
        if self.routed:
            return self.routed_head(s, x_branch, a0, a)
        h = torch.relu(self.shared(x_branch, self.b0_w) + self.b0_b)  # [M, n, h0]
        h = torch.relu(torch.bmm(h, self.b1_w) + self.b1_b + self.shared(a0, self.b1_fed))
        rows = torch.arange(n)
        own = h[s, rows]  # [n, h1]
        logit = self.mutual_and_head(s, own, h.detach())
        return logit, self.aux_out(a).squeeze(1)

    def branch(self, j, x, a0, w0, b0, w1, b1, fed):
        h = torch.relu(x @ w0[j] + b0[j])
        return torch.relu(h @ w1[j] + b1[j] + a0 @ fed[j])

    def routed_head(self, s, x_branch, a0, a):
        """The crate's routed computation: the batch sorted by scenario, each sample through
        its own branch only; every other branch run without gradient (detached weights) on
        the other scenarios' samples, as the mutual unit's constant inputs."""
        m, n = self.m, s.shape[0]
        order = torch.argsort(s, stable=True)
        inv = torch.empty_like(order)
        inv[order] = torch.arange(n)
        ss, xs, as_ = s[order], x_branch[order], a0[order]
        counts = torch.bincount(ss, minlength=m).tolist()
        weights = (self.b0_w, self.b0_b, self.b1_w, self.b1_b, self.b1_fed)
        blocks, start = [], 0
        for j, c in enumerate(counts):
            if c:
                blocks.append(self.branch(j, xs[start:start + c], as_[start:start + c],
                                          *weights))
            start += c
        own = torch.cat(blocks, 0)
        others = torch.zeros(m, n, own.shape[1])
        with torch.no_grad():
            frozen = [w.detach() for w in weights]
            for j in range(m):
                comp = ss != j
                if comp.any():
                    others[j, comp] = self.branch(j, xs[comp], as_[comp], *frozen)
        logit = self.mutual_and_head(ss, own, others)[inv]
        return logit, self.aux_out(a).squeeze(1)

    def mutual_and_head(self, s, own, others):
        m, n = self.m, s.shape[0]
        own_u = own / (own.pow(2).sum(-1, keepdim=True) + 1e-8).sqrt()
        oth_u = others / (others.pow(2).sum(-1, keepdim=True) + 1e-8).sqrt()
        cos = (oth_u * own_u.unsqueeze(0)).sum(-1).t()  # [n, M]
        logits = cos * self.beta + self.affinity[s]
        own_mask = F.one_hot(s, m).bool()
        gates = torch.softmax(logits.masked_fill(own_mask, float("-inf")), 1)
        out = own + (others * gates.t().unsqueeze(-1)).sum(0)
        return (out * self.head_w[s].view(n, -1)).sum(-1) + self.head_b[s]


def load(dir):
    meta = json.load(open(os.path.join(dir, "meta.json")))
    cols = {}
    for f in meta["fields"]:
        cols[f["name"]] = torch.from_numpy(
            np.load(os.path.join(dir, f"{f['name']}.npy")).astype(np.int64))
    task = meta["tasks"][0]["name"]
    labels = torch.from_numpy(np.load(os.path.join(dir, f"labels.{task}.npy")))
    return meta, cols, labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--dense", action="store_true",
                    help="every branch on every sample (the crate's earlier computation)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    torch.manual_seed(0)
    meta, cols, labels = load(args.dir)
    model = Saml(meta, routed=not args.dense)
    params = sum(p.numel() for p in model.parameters())
    if params != meta["params"]:
        raise SystemExit(f"parameter count {params} != rec-rs {meta['params']}")
    nb = labels.shape[0] // args.batch
    batches = [({k: v[i * args.batch:(i + 1) * args.batch] for k, v in cols.items()},
                labels[i * args.batch:(i + 1) * args.batch]) for i in range(nb)]
    sparse = model.sparse_params()
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in ids]
    opt_d = torch.optim.Adam(dense, lr=meta["model"]["dense_optimizer"]["lr"])
    opt_s = torch.optim.SparseAdam(sparse, lr=meta["model"]["sparse_optimizer"]["lr"])
    aux_w = meta["model"]["aux_loss_weight"]
    l2 = meta["model"]["scenario_l2"]

    def loss_of(b, y):
        logit, aux = model(b)
        return (F.binary_cross_entropy_with_logits(logit, y)
                + aux_w * F.binary_cross_entropy_with_logits(aux, y)
                + l2 * model.scen_sq)

    train_s, infer_s = time_train_and_infer(
        model, batches, loss_of, lambda b: torch.sigmoid(model(b)[0]), [opt_d, opt_s],
        args.warmup, args.steps)
    report(args, train_s, infer_s, params=params)


if __name__ == "__main__":
    main()
