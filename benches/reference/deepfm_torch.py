"""PyTorch reference for `cargo xtask bench --compare`: the same DeepFM as rec-nn's, trained
on the same exported batches, in the same order, with the same thread count.

Architecture (mirrors crates/nn/src/models/deepfm.rs and crates/nn/src/features.rs):
per field a width-16 vector (categorical: an embedding row; multi-hot: the mean of its rows;
dense: a bias-free linear projection) and a first-order term (width-1 table or projection),
an FM interaction over the field vectors, an MLP over their concatenation (hidden [128, 64],
ReLU, dropout 0.3, linear output), logit = first-order + MLP + FM; binary cross-entropy.
Optimizers: Adam (lr 1e-3) for the dense parameters; the tables are `sparse=True` with
SparseAdam (lr 3e-3), PyTorch's lazy Adam, the same rule as rec-nn's row-wise lazy Adam
(rec-nn also applies weight decay 1e-4 to touched rows; SparseAdam has no weight decay).

Input: a directory written by `cargo xtask bench --compare` (meta.json plus .npy files).
Output: one JSON line with samples/s. Not part of CI; PyTorch installs from PyPI.
"""

import argparse
import json
import os

import numpy as np
import torch
from torch import nn

from harness import report, time_train_and_infer


class DeepFM(nn.Module):
    def __init__(self, fields, dim=16, hidden=(128, 64), dropout=0.3):
        super().__init__()
        self.fields = fields
        self.emb = nn.ModuleDict()
        self.lin = nn.ModuleDict()
        self.proj = nn.ModuleDict()
        self.proj_lin = nn.ModuleDict()
        for f in fields:
            n = f["name"]
            if f["kind"] == "ids":
                self.emb[n] = nn.Embedding(f["vocab"], dim, sparse=True)
                self.lin[n] = nn.Embedding(f["vocab"], 1, sparse=True)
            elif f["kind"] == "bag":
                self.emb[n] = nn.EmbeddingBag(f["vocab"], dim, mode="mean", sparse=True)
                self.lin[n] = nn.EmbeddingBag(f["vocab"], 1, mode="mean", sparse=True)
            else:
                self.proj[n] = nn.Linear(f["dim"], dim, bias=False)
                self.proj_lin[n] = nn.Linear(f["dim"], 1, bias=False)
            for t in (self.emb, self.lin):
                if n in t:
                    nn.init.normal_(t[n].weight, std=0.01)
        layers, width = [], len(fields) * dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, batch):
        vecs, lin = [], 0
        for f in self.fields:
            n, x = f["name"], batch[f["name"]]
            if f["kind"] == "ids":
                vecs.append(self.emb[n](x))
                lin = lin + self.lin[n](x)
            elif f["kind"] == "bag":
                values, offsets = x
                vecs.append(self.emb[n](values, offsets))
                lin = lin + self.lin[n](values, offsets)
            else:
                vecs.append(self.proj[n](x))
                lin = lin + self.proj_lin[n](x)
        v = torch.stack(vecs, 1)
        fm = 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1)).sum(1, keepdim=True)
        deep = self.mlp(v.flatten(1))
        return (lin + deep + fm).squeeze(1)


def load(dir):
    meta = json.load(open(os.path.join(dir, "meta.json")))
    cols = {}
    for f in meta["fields"]:
        n = f["name"]
        if f["kind"] == "ids":
            cols[n] = torch.from_numpy(np.load(os.path.join(dir, f"{n}.npy")).astype(np.int64))
        elif f["kind"] == "bag":
            v = np.load(os.path.join(dir, f"{n}.values.npy")).astype(np.int64)
            o = np.load(os.path.join(dir, f"{n}.offsets.npy")).astype(np.int64)
            cols[n] = (torch.from_numpy(v), torch.from_numpy(o))
        else:
            cols[n] = torch.from_numpy(np.load(os.path.join(dir, f"{n}.npy")))
    labels = torch.from_numpy(np.load(os.path.join(dir, "labels.npy")))
    return meta, cols, labels


def batch(meta, cols, start, end):
    out = {}
    for f in meta["fields"]:
        n = f["name"]
        if f["kind"] == "bag":
            v, o = cols[n]
            lo, hi = int(o[start]), int(o[end])
            out[n] = (v[lo:hi], o[start:end] - lo)
        else:
            out[n] = cols[n][start:end]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    torch.manual_seed(0)
    meta, cols, labels = load(args.dir)
    n = labels.shape[0]
    nb = n // args.batch
    batches = [
        (batch(meta, cols, i * args.batch, (i + 1) * args.batch),
         labels[i * args.batch:(i + 1) * args.batch])
        for i in range(nb)
    ]
    # The model settings of the configuration rec-rs trains (xtask refuses any it cannot
    # express here); the defaults are those of configs/deepfm-ml100k-ctr.toml.
    m = meta.get("model", {})
    model = DeepFM(meta["fields"], dim=m.get("dim", 16), hidden=tuple(m.get("hidden", (128, 64))),
                   dropout=m.get("dropout", 0.3))
    sparse = [p for m in (model.emb, model.lin) for p in m.parameters()]
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in ids]
    opt_d = torch.optim.Adam(dense, lr=m.get("dense_lr", 1e-3))
    opt_s = torch.optim.SparseAdam(sparse, lr=m.get("sparse_lr", 3e-3))
    loss_fn = nn.BCEWithLogitsLoss()
    train_s, infer_s = time_train_and_infer(
        model, batches, lambda b, y: loss_fn(model(b), y), model, [opt_d, opt_s],
        args.warmup, args.steps, infer_ctx=torch.no_grad)
    report(args, train_s, infer_s)


if __name__ == "__main__":
    main()
