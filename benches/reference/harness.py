"""The timing loop shared by the PyTorch references of `cargo xtask bench --compare`.

`time_train_and_infer` runs `warmup` untimed and then `steps` timed training steps over the
batches in order (cycling), then the same for inference under `infer_ctx`; `report` prints the
one JSON line the Rust side reads. Not part of CI.
"""

import json
import time

import torch


def time_train_and_infer(model, batches, loss_of, predict, optimizers, warmup, steps,
                         infer_ctx=torch.inference_mode):
    """Returns (train seconds, inference seconds) of `steps` steps each.

    loss_of(batch, labels) -> loss tensor; predict(batch) -> anything; `optimizers` are
    zeroed before and stepped after every backward pass.
    """
    nb = len(batches)
    model.train()

    def step(i):
        b, y = batches[i % nb]
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        loss_of(b, y).backward()
        for o in optimizers:
            o.step()

    for i in range(warmup):
        step(i)
    t = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    train_s = time.perf_counter() - t

    model.eval()
    with infer_ctx():
        for i in range(warmup):
            predict(batches[i % nb][0])
        t = time.perf_counter()
        for i in range(steps):
            predict(batches[i % nb][0])
        infer_s = time.perf_counter() - t
    return train_s, infer_s


def report(args, train_s, infer_s, **extra):
    """Prints the result line: framework, threads, batch, steps, samples/s, and `extra`."""
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}",
        **extra,
        "threads": args.threads,
        "batch": args.batch,
        "steps": args.steps,
        "train_samples_per_sec": args.steps * args.batch / train_s,
        "infer_samples_per_sec": args.steps * args.batch / infer_s,
    }))
