"""CoRaiS (seeds/004 section IV): a learned dispatch policy. An edge encoder and a request
encoder (attention layers with skip connections and batch norm, eqs. 12-14), a context from
max-pooled edge and request embeddings (eq. 15), and per request a softmax over edges of
clipped compatibilities C * tanh(q . k / sqrt(d)) (eqs. 16-17). Trained by REINFORCE with
S sampled dispatches per instance, their mean as the baseline, and an entropy bonus
(eqs. 18-21) on instances generated as in section V-A.

Our choices where the seed is silent or its numbers were lost: embedding 128, 8 heads,
3 + 3 layers, feed-forward 512, C = 10, Adam lr 1e-4, S = 8, entropy weight 0.01; the
policy is trained for a wall-clock budget on CPU, not 40,000 batches on a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from testbed.errors import InputError
from testbed.kinds.requests.instance import Instance, features, generate, makespan
from testbed.kinds.requests.policies import Dispatch

POLICY_DIR = Path(__file__).resolve().parents[3] / "policies"
DEFAULT_POLICY = "corais-10x100"


@dataclass(frozen=True)
class Settings:
    dim: int = 128
    heads: int = 8
    edge_layers: int = 3
    request_layers: int = 3
    feed_forward: int = 512
    clip: float = 10.0


class _Block(nn.Module):
    """One attention layer: MHA and a feed-forward sublayer, each with a skip and BN."""

    def __init__(self, s: Settings) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(s.dim, s.heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(s.dim, s.feed_forward), nn.ReLU(),
                                nn.Linear(s.feed_forward, s.dim))
        self.bn1, self.bn2 = nn.BatchNorm1d(s.dim), nn.BatchNorm1d(s.dim)

    @staticmethod
    def _norm(bn: nn.BatchNorm1d, h: torch.Tensor) -> torch.Tensor:
        return bn(h.transpose(1, 2)).transpose(1, 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self._norm(self.bn1, h + self.mha(h, h, h, need_weights=False)[0])
        return self._norm(self.bn2, h + self.ff(h))


class CoRaiS(nn.Module):
    def __init__(self, s: Settings = Settings()) -> None:
        super().__init__()
        self.s = s
        self.edge_in, self.request_in = nn.Linear(8, s.dim), nn.Linear(3, s.dim)
        self.edges = nn.Sequential(*[_Block(s) for _ in range(s.edge_layers)])
        self.requests = nn.Sequential(*[_Block(s) for _ in range(s.request_layers)])
        self.context = nn.Linear(2 * s.dim, s.dim)
        self.query, self.key = nn.Linear(s.dim, s.dim), nn.Linear(s.dim, s.dim)

    def forward(self, edge: torch.Tensor, req: torch.Tensor) -> torch.Tensor:
        """(B, Q, 8), (B, Z, 3) -> log-probabilities (B, Z, Q) of each request's edge."""
        he = self.edges(self.edge_in(edge))
        hr = self.requests(self.request_in(req))
        ctx = self.context(torch.cat([he.max(1).values, hr.max(1).values], -1))
        q, k = self.query(hr + ctx[:, None, :]), self.key(he)
        u = self.s.clip * torch.tanh(q @ k.transpose(1, 2) / self.s.dim ** 0.5)
        return torch.log_softmax(u, -1)


def _tensors(insts: list[Instance]) -> tuple[torch.Tensor, torch.Tensor]:
    e, r = zip(*(features(i) for i in insts), strict=True)
    return torch.from_numpy(np.stack(e)), torch.from_numpy(np.stack(r))


def batch_makespan(insts: list[Instance], dispatch: torch.Tensor) -> torch.Tensor:
    """(B, S, Z) dispatches -> (B, S) makespans (eq. 19), computed as in `makespan`."""
    comp = torch.from_numpy(np.stack([i.compute_s() for i in insts]))  # (B, Z, Q)
    moved = torch.from_numpy(np.stack([i.transfer_s() for i in insts]))
    src = torch.from_numpy(np.stack([i.source for i in insts]))  # (B, Z)
    w = {k: torch.from_numpy(np.stack([getattr(i, k) for i in insts]))
         for k in ("backlog_local_s", "backlog_transfer_s", "backlog_in_s")}
    B, S, Z = dispatch.shape
    Q = comp.shape[-1]
    c = comp[:, None].expand(B, S, Z, Q).gather(-1, dispatch[..., None])[..., 0]
    m = moved[:, None].expand(B, S, Z, Q).gather(-1, dispatch[..., None])[..., 0]
    loc = dispatch == src[:, None, :]
    onehot = torch.nn.functional.one_hot(dispatch, Q).double()
    t_local = w["backlog_local_s"][:, None] + torch.einsum("bsz,bszq->bsq", c * loc, onehot)
    t_in = w["backlog_in_s"][:, None] + torch.einsum("bsz,bszq->bsq", c * ~loc, onehot)
    t_move = torch.maximum(w["backlog_transfer_s"][:, None],
                           ((m * ~loc)[..., None] * onehot).max(2).values)
    return (torch.maximum(t_local, t_move) + t_in).max(-1).values


def train(edges: int, requests: int, minutes: float, seed: int = 0, batch: int = 64,
          samples: int = 8, lr: float = 1e-4, entropy: float = 0.01,
          progress: Callable[[float, dict], None] = lambda f, row: None,
          settings: Settings = Settings()) -> tuple[CoRaiS, list[dict]]:
    """REINFORCE for `minutes` of wall time; returns the model and its learning curve
    (per step: mean makespan of the samples, of greedy decoding on a fixed validation set)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    val = [generate(edges, requests, np.random.default_rng(10**6 + k)) for k in range(64)]
    val_e, val_r = _tensors(val)
    model = CoRaiS(settings)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    curve, t0, step = [], time.monotonic(), 0
    while (elapsed := time.monotonic() - t0) < minutes * 60:
        insts = [generate(edges, requests, rng) for _ in range(batch)]
        e, r = _tensors(insts)
        model.train()
        logp = model(e, r)  # (B, Z, Q)
        dist = torch.distributions.Categorical(logits=logp)
        d = dist.sample((samples,)).permute(1, 0, 2)  # (B, S, Z)
        cost = batch_makespan(insts, d).float()
        adv = (cost - cost.mean(1, keepdim=True)) / (cost.mean(1, keepdim=True) + 1e-9)
        lp = logp[:, None].expand(-1, samples, -1, -1).gather(-1, d[..., None])[..., 0].sum(-1)
        loss = (adv.detach() * lp).mean() - entropy * dist.entropy().mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 10 == 1:
            model.eval()
            with torch.no_grad():
                greedy = model(val_e, val_r).argmax(-1)[:, None, :]
                val_cost = float(batch_makespan(val, greedy).mean())
            row = {"step": step, "elapsed_s": round(elapsed, 1),
                   "sample_makespan": float(cost.mean()), "greedy_makespan_val": val_cost}
            curve.append(row)
            progress(elapsed / (minutes * 60), row)
    return model.eval(), curve


def save(model: CoRaiS, path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state": model.state_dict(), "settings": asdict(model.s), "meta": meta}, tmp)
    tmp.replace(path)


_LOADED: dict[Path, tuple[CoRaiS, dict]] = {}


def load(name: str) -> tuple[CoRaiS, dict]:
    """A trained policy by file path or by name in policies/ (`corais-10x100`)."""
    path = Path(name)
    if not path.suffix:
        path = POLICY_DIR / f"{name}.pt"
    if path not in _LOADED:
        if not path.exists():
            raise InputError(f"corais policy {name!r}: {path} does not exist; train one with "
                             "`testbed train-policy corais --edges 10 --requests 100`")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = CoRaiS(Settings(**blob["settings"]))
        model.load_state_dict(blob["state"])
        _LOADED[path] = (model.eval(), blob["meta"])
    return _LOADED[path]


def corais(inst: Instance, rng: np.random.Generator, arg: str) -> Dispatch:
    """`corais` (greedy), `corais:sample=1000` (best of 1000 sampled dispatches),
    `corais:policy=NAME` (a file in policies/ or a path); options joined by commas."""
    opts = dict(kv.split("=", 1) if "=" in kv else (kv, "") for kv in arg.split(",") if kv)
    unknown = set(opts) - {"sample", "policy"}
    if unknown:
        raise InputError(f"corais:{arg}: unknown option {sorted(unknown)[0]!r}; "
                         "use sample=N and/or policy=NAME")
    model, _ = load(opts.get("policy") or DEFAULT_POLICY)
    e, r = _tensors([inst])
    with torch.no_grad():
        logp = model(e, r)[0]  # (Z, Q)
    greedy = logp.argmax(-1).numpy()
    n = int(opts.get("sample") or 0)
    if n <= 0:
        return Dispatch(greedy)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    tries = torch.multinomial(logp.exp(), n, replacement=True, generator=gen).T.numpy()
    tries = np.vstack([greedy[None], tries])
    return Dispatch(tries[int(np.argmin(makespan(inst, tries)))])



def train_to_file(edges: int, requests: int, minutes: float, out: Path, seed: int = 0,
                  progress: Callable[[float, dict], None] = lambda f, row: None) -> dict:
    """Train, then write the policy (with its settings and training record), its learning
    curve as CSV and as a plot beside it. Returns the training record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    t0 = time.monotonic()
    model, curve = train(edges, requests, minutes, seed=seed, progress=progress)
    took = time.monotonic() - t0
    meta = {"edges": edges, "requests": requests, "seed": seed, "minutes": minutes,
            "train_s": round(took, 1), "steps": curve[-1]["step"] if curve else 0,
            "batch": 64, "samples": 8, "lr": 1e-4, "entropy": 0.01,
            "generation": "testbed.kinds.requests.instance.GENERATION",
            "torch": str(torch.__version__), "threads": torch.get_num_threads()}
    save(model, out, meta)
    df = pd.DataFrame(curve)
    df.to_csv(out.with_suffix(".curve.csv"), index=False)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(df.elapsed_s / 60, df.greedy_makespan_val, label="greedy, validation")
    ax.plot(df.elapsed_s / 60, df.sample_makespan, label="sampled, training", alpha=0.6)
    ax.set(xlabel="training time (min)", ylabel="mean makespan",
           title=f"CoRaiS {edges} edges x {requests} requests")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".curve.png"), dpi=120)
    plt.close(fig)
    return meta
