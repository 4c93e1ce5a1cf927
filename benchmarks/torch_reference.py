"""Plain PyTorch-eager TMS ReLU-output model: the speed baseline for the JAX package.

This follows the Anthropic TMS notebook (and the ARENA port of it) as closely as a benchmark can:

* ``W`` has the notebook's layout ``(n_inst, n_features, d_hidden)`` and is initialised with
  ``torch.nn.init.xavier_normal_`` on that 3-D tensor, i.e. std = sqrt(2 / (d_hidden * (n_features +
  n_inst))). The init depends on the layout, so another layout would not be the notebook's init.
  ``b_final`` is ``(n_inst, n_features)`` zeros.
* Data are drawn fresh every step with two ``torch.rand`` calls, one for the values and one for the mask:
  ``x = where(rand <= p, rand', 0)``, so each feature is Uniform[0, 1] with probability ``p``, else 0.
* ``h = einsum(x, W) -> (batch, inst, d_hidden)``; ``out = relu(einsum(h, W) + b_final)``.
* Loss: per instance, the mean over batch and features of ``importance * (x - out)**2``; summed over
  instances. ``torch.optim.AdamW(lr=1e-3, weight_decay=0.01)``, batch 1024, constant learning rate.

The fine-tuning baseline (``bench_torch_finetune``, the maths of ``toymodels run analogy-15deg``'s
fine-tuning) is the same model and step with another batch and loss:

* instances are (pretrained model i, regime r), instance ``k = i * R + r``; each starts from model i's
  ``W`` and ``b_final`` (given, or notebook-initialised when timing alone);
* data as above, then every feature the regime excludes is zeroed: ``narrow`` keeps only the target
  feature, ``full`` keeps all of them;
* target ``tgt_i = s_i x_i`` with ``s_target = gamma`` (2) and 1 elsewhere; loss per instance
  ``mean over batch and features of w_i (tgt_i - out_i)**2``, with ``w`` the one-hot target for loss
  scope ``target`` and the importance for ``all`` (the target's weight is its importance in both);
  summed over instances;
* ``torch.optim.Adam(lr=1e-3)`` (no weight decay), batch 1024.

Nothing here is used by ``toymodels``; it exists only to time the baseline. Run it with
``python -m benchmarks.torch_reference``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def _broadcast(value, n_inst: int, n_features: int) -> torch.Tensor:
    """Broadcast ``value`` (torch rules, as in the notebook) to a float32 ``(n_inst, n_features)`` tensor."""
    return torch.broadcast_to(torch.as_tensor(value, dtype=torch.float32), (n_inst, n_features)).clone()


class TorchTMS(torch.nn.Module):
    """Notebook-style batch of ``n_inst`` independent ReLU-output toy models."""

    def __init__(self, n_inst: int, n_features: int, d_hidden: int, feature_probability, importance):
        super().__init__()
        self.W = torch.nn.Parameter(torch.nn.init.xavier_normal_(torch.empty(n_inst, n_features, d_hidden)))
        self.b_final = torch.nn.Parameter(torch.zeros(n_inst, n_features))
        self.register_buffer("feature_probability", _broadcast(feature_probability, n_inst, n_features))
        self.register_buffer("importance", _broadcast(importance, n_inst, n_features))

    def generate_batch(self, batch_size: int) -> torch.Tensor:
        shape = (batch_size, *self.feature_probability.shape)
        feat = torch.rand(shape)
        return torch.where(torch.rand(shape) <= self.feature_probability, feat, torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("bif,ifh->bih", x, self.W)
        return F.relu(torch.einsum("bih,ifh->bif", h, self.W) + self.b_final)

    def loss(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return (self.importance * (x - out) ** 2).mean(dim=(0, 2)).sum()


def _time_steps(model: TorchTMS, opt: torch.optim.Optimizer, batch_size: int, steps: int, warmup: int) -> dict:
    """Run ``warmup + steps`` steps of ``model`` (fresh batch, loss, backward, optimiser step); time the last
    ``steps`` (see :func:`bench_torch` for the returned dict)."""

    def step() -> torch.Tensor:
        x = model.generate_batch(batch_size)
        loss = model.loss(x, model(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = step()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    n_inst = model.W.shape[0]
    return {
        "instance_steps_per_s": n_inst * steps / seconds,
        "seconds": seconds,
        "steps": steps,
        "final_loss": float(loss.item()),
        "threads": torch.get_num_threads(),
        "cpu_seconds": cpu_seconds,
    }


def bench_torch(
    n_inst: int,
    n_features: int,
    d_hidden: int,
    batch_size: int = 1024,
    steps: int = 500,
    warmup: int = 50,
    feature_probability=None,
    importance=1.0,
    seed: int = 0,
    threads: int | None = None,
) -> dict:
    """Train the notebook-style model for ``warmup + steps`` steps and time the last ``steps``.

    ``feature_probability`` and ``importance`` may be anything broadcastable to ``(n_inst, n_features)``,
    as in the notebook: a float, an ``(n_inst, 1)`` column (one value per instance), a length-``n_features``
    row, or the full array. ``feature_probability=None`` means the notebook's
    ``(20 ** -linspace(0, 1, n_inst))[:, None]``. ``threads`` sets ``torch.set_num_threads`` for the
    duration of the call (``None`` keeps torch's default).

    Returns ``{"instance_steps_per_s", "seconds", "steps", "final_loss", "threads", "cpu_seconds"}``, where
    instance-steps/s = ``n_inst * steps / seconds`` (wall clock) and ``final_loss`` is the summed loss of the
    last step. ``cpu_seconds`` is this process's CPU time over the timed steps: ``cpu_seconds`` well below
    ``threads * seconds`` means the run was starved by other load and the figure is not a clean measurement.
    """
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        if feature_probability is None:
            feature_probability = (20.0 ** -torch.linspace(0, 1, n_inst))[:, None]
        model = TorchTMS(n_inst, n_features, d_hidden, feature_probability, importance)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        return _time_steps(model, opt, batch_size, steps, warmup)
    finally:
        torch.set_num_threads(old_threads)


# --- fine-tuning (analogy-15deg): instances = pretrained models x regimes -------------------------------
# (name, data, loss scope) as in toymodels.lab_presets: narrow = only the target in the data, full = all
# features; loss on the target output only, or on every output.
REGIMES = (("narrow", "narrow", "target"), ("narrow-all", "narrow", "all"),
           ("full", "full", "target"), ("full-all", "full", "all"))


def finetune_arrays(n_pre: int, n_features: int, target: int, gamma: float, feature_probability,
                    importance, regimes=REGIMES) -> dict[str, torch.Tensor]:
    """Per-instance ``(n_pre * R, n_features)`` tensors of the fine-tuning objective, instance k = i * R + r:
    ``feature_probability`` (zero where the regime excludes the feature), ``present`` (1 where it may be
    active), ``out_scale`` (s) and ``loss_weight`` (w)."""
    R = len(regimes)
    onehot = F.one_hot(torch.tensor(target), n_features).float()
    p = _broadcast(feature_probability, n_pre, n_features).repeat_interleave(R, 0)
    imp = _broadcast(importance, n_pre, n_features).repeat_interleave(R, 0)
    narrow = torch.tensor([data == "narrow" for _, data, _ in regimes] * n_pre)[:, None]
    scope_target = torch.tensor([scope == "target" for _, _, scope in regimes] * n_pre)[:, None]
    present = torch.where(narrow, onehot, torch.ones(n_features))
    return {"feature_probability": p * present, "present": present,
            "out_scale": (1 + (gamma - 1) * onehot).expand(n_pre * R, n_features).clone(),
            "loss_weight": torch.where(scope_target, imp * onehot, imp)}


class TorchFinetune(TorchTMS):
    """``n_pre * R`` fine-tuning instances: each pretrained model under each regime (k = i * R + r)."""

    def __init__(self, W0: torch.Tensor, b0: torch.Tensor, arrays: dict[str, torch.Tensor]):
        n_pre, n_features, d_hidden = W0.shape
        n_inst = arrays["present"].shape[0]
        super().__init__(n_inst, n_features, d_hidden, arrays["feature_probability"], arrays["loss_weight"])
        R = n_inst // n_pre
        with torch.no_grad():
            self.W.copy_(W0.repeat_interleave(R, 0))
            self.b_final.copy_(b0.repeat_interleave(R, 0))
        self.register_buffer("present", arrays["present"].clone())
        self.register_buffer("out_scale", arrays["out_scale"].clone())

    def generate_batch(self, batch_size: int) -> torch.Tensor:
        return super().generate_batch(batch_size) * self.present   # the regime zeroes absent features

    def loss(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        # self.importance holds the loss weights w (one-hot target, or the importance)
        return (self.importance * (self.out_scale * x - out) ** 2).mean(dim=(0, 2)).sum()


def bench_torch_finetune(
    W0: torch.Tensor | None = None,
    b0: torch.Tensor | None = None,
    *,
    n_pre: int = 4,
    n_features: int = 5,
    d_hidden: int = 2,
    target: int = 0,
    gamma: float = 2.0,
    feature_probability=0.05,
    importance=1.0,
    regimes=REGIMES,
    batch_size: int = 1024,
    steps: int = 500,
    warmup: int = 50,
    seed: int = 0,
    threads: int | None = None,
) -> dict:
    """Fine-tune every pretrained model under every regime for ``warmup + steps`` steps (Adam lr 1e-3, no
    weight decay) and time the last ``steps``; returns the same dict as :func:`bench_torch`.

    ``W0`` ``(n_pre, n_features, d_hidden)`` and ``b0`` ``(n_pre, n_features)`` are the pretrained models
    (notebook layout); ``None`` means ``n_pre`` notebook-initialised ones (timing does not depend on it).
    """
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        if W0 is None:
            W0 = torch.nn.init.xavier_normal_(torch.empty(n_pre, n_features, d_hidden))
            b0 = torch.zeros(n_pre, n_features)
        n_pre, n_features, d_hidden = W0.shape
        arrays = finetune_arrays(n_pre, n_features, target, gamma, feature_probability, importance, regimes)
        model = TorchFinetune(W0, b0, arrays)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        return _time_steps(model, opt, batch_size, steps, warmup)
    finally:
        torch.set_num_threads(old_threads)


WORKLOADS = {
    # intro: 10 instances of 5 -> 2, sparsity varying per instance, importance 0.9**i.
    "intro": {"n_inst": 10, "n_features": 5, "d_hidden": 2, "importance": 0.9 ** torch.arange(5.0),
              "feature_probability": (20.0 ** -torch.linspace(0, 1, 10))[:, None]},
    # sweep: 100 instances of 20 -> 5, sparsity varying per instance, importance 1.
    "sweep": {"n_inst": 100, "n_features": 20, "d_hidden": 5, "importance": 1.0,
              "feature_probability": (20.0 ** -torch.linspace(0, 1, 100))[:, None]},
}

# finetune (analogy-15deg): 10 pretrained models of 5 -> 2 (p = 0.05; importance 3 and 3.3 for the helpful and
# toxic pair, 1 for the three benign features) x the 4 REGIMES = 40 instances; target feature 0 ("helpful"),
# gamma 2. Keys are bench_torch_finetune's arguments.
FINETUNE_WORKLOADS = {
    "finetune": {"n_pre": 10, "n_features": 5, "d_hidden": 2, "target": 0, "gamma": 2.0,
                 "feature_probability": 0.05, "importance": torch.tensor([3.0, 3.3, 1.0, 1.0, 1.0]),
                 "regimes": REGIMES},
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, *FINETUNE_WORKLOADS, "all"], default="all")
    parser.add_argument("--steps", type=int, help="timed steps (default: 2000 intro and finetune, 300 sweep)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    default_steps = {"intro": 2000, "sweep": 300, "finetune": 2000}
    print(f"torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}")
    for name in [*WORKLOADS, *FINETUNE_WORKLOADS] if args.workload == "all" else [args.workload]:
        kwargs = dict(steps=args.steps or default_steps[name], warmup=args.warmup, threads=args.threads)
        r = (bench_torch(**WORKLOADS[name], **kwargs) if name in WORKLOADS
             else bench_torch_finetune(**FINETUNE_WORKLOADS[name], **kwargs))
        print(f"{name}: {r['instance_steps_per_s']:9.0f} instance-steps/s  ({r['steps']} steps in "
              f"{r['seconds']:.2f} s, CPU {r['cpu_seconds']:.2f} s, final loss {r['final_loss']:.4g})")
