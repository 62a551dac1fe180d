"""Reference implementations written from the published algorithms (not from evoopt's code)."""

from __future__ import annotations

import torch


class ReferenceLion(torch.optim.Optimizer):
    """Lion as in google/automl lion_pytorch.py.

    c = b1*m + (1-b1)*g;  p <- p*(1 - lr*wd);  p <- p - lr*sign(c);  m <- b2*m + (1-b2)*g
    """

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                update = m * beta1 + p.grad * (1 - beta1)
                p.add_(torch.sign(update), alpha=-group["lr"])
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)


class ReferenceAdan(torch.optim.Optimizer):
    """Adan in the official sail-sg/Adan convention (proximal decay, no clipping).

    m = EMA(g, b1); d = EMA(g - g_prev, b2); n = EMA((g + b2 (g - g_prev))^2, b3), bias-corrected;
    p <- (p - lr (m_hat + b2 d_hat) / (sqrt(n_hat) + eps)) / (1 + lr wd); g_prev = g at step 1.
    """

    def __init__(self, params, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.02):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2, b3 = group["betas"]
            group["step"] = group.get("step", 0) + 1
            t = group["step"]
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["d"] = torch.zeros_like(p)
                    state["n"] = torch.zeros_like(p)
                    state["pre_grad"] = g.clone()
                diff = g - state["pre_grad"]
                state["m"].mul_(b1).add_(g, alpha=1 - b1)
                state["d"].mul_(b2).add_(diff, alpha=1 - b2)
                u = g + b2 * diff
                state["n"].mul_(b3).addcmul_(u, u, value=1 - b3)
                denom = (state["n"] / (1 - b3**t)).sqrt() + eps
                update = (state["m"] / (1 - b1**t) + b2 * state["d"] / (1 - b2**t)) / denom
                p.sub_(lr * update)
                p.div_(1 + lr * wd)
                state["pre_grad"].copy_(g)


def adam_moments(state: dict, g: torch.Tensor, x: torch.Tensor, b1: float, b2: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of Adam's moments in ``state`` (created lazily; the step counted per
    parameter): m = EMA(g, b1), v = EMA(x^2, b2); returns the bias-corrected m_hat, v_hat."""
    if not state:
        state["t"] = 0
        state["m"] = torch.zeros_like(g)
        state["v"] = torch.zeros_like(g)
    state["t"] += 1
    t, m, v = state["t"], state["m"], state["v"]
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(x, x, value=1 - b2)
    return m / (1 - b1**t), v / (1 - b2**t)


class ReferenceLamb(torch.optim.Optimizer):
    """LAMB as in You et al. 2020 ("Large Batch Optimization for Deep Learning"), Algorithm 2,
    with Adam's bias-corrected moments and the trust ratio phi(x) = x:

    m = EMA(g, b1); v = EMA(g^2, b2); r = m_hat / (sqrt(v_hat) + eps) + wd * p;
    trust = ||p|| / ||r|| (1 when either norm is 0); p <- p - lr * trust * r.
    Steps count per parameter, as in torch.optim.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m_hat, v_hat = adam_moments(self.state[p], p.grad, p.grad, b1, b2)
                r = m_hat / (v_hat.sqrt() + group["eps"]) + group["weight_decay"] * p
                p_norm, r_norm = p.norm(), r.norm()
                trust = p_norm / r_norm if p_norm > 0 and r_norm > 0 else 1.0
                p.sub_(group["lr"] * trust * r)


class ReferenceMuonAdamW:
    """torch.optim.Muon on the parameters of 2 or more dims and torch.optim.AdamW on the others,
    stepped together, group by group. torch's Muon takes 2-D parameters only: it gets each
    matrix as its (out, -1) view (sharing storage, so Muon's in-place update is the
    parameter's), as Keller Jordan's Muon treats conv kernels, with the gradient viewed alike."""

    def __init__(self, params, muon: dict, adamw: dict):
        groups = list(params)
        if not groups or not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.views: list[tuple[torch.Tensor, torch.Tensor]] = []
        matrices, others = [], []
        for group in groups:
            views = []
            for p in group["params"]:
                if p.dim() >= 2:
                    view = p.detach().view(len(p), -1).requires_grad_()
                    self.views.append((p, view))
                    views.append(view)
            matrices += [{"params": views}] if views else []
            vectors = [p for p in group["params"] if p.dim() < 2]
            others += [{"params": vectors}] if vectors else []
        self.params = [p for group in groups for p in group["params"]]
        self.muon = torch.optim.Muon(matrices, **muon)
        self.adamw = torch.optim.AdamW(others, **adamw)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p, view in self.views:
            view.grad = None if p.grad is None else p.grad.view(view.shape)
        self.muon.step()
        self.adamw.step()


class ReferenceAdaHessian(torch.optim.Optimizer):
    """AdaHessian as in Yao et al. 2021 ("ADAHESSIAN: An Adaptive Second Order Optimizer for
    Machine Learning"), Algorithm 1, for a loss whose Hessian is diagonal and known: the
    Hutchinson estimate z * Hz of its diagonal is then the diagonal itself, whatever the
    Rademacher z, so this reference uses ``diagonals`` (one tensor per parameter, in order)
    where AdaHessian draws probes. With spatial averaging as in the paper's code, a kernel of
    3 or more dims uses the mean of |D| over its dims after the second:

    m = EMA(g, b1); v = EMA(D^2, b2); m_hat, v_hat bias-corrected;
    p <- p - lr * m_hat / (v_hat^(k/2) + eps). Steps count per parameter, as in torch.optim.
    """

    needs_graph = True  # its callers backpropagate with create_graph, as AdaHessian's do

    def __init__(self, params, diagonals, lr=0.15, betas=(0.9, 0.999), eps=1e-4,
                 hessian_power=1.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, hessian_power=hessian_power))
        ordered = [p for group in self.param_groups for p in group["params"]]
        self.diagonals = {}
        for p, d in zip(ordered, diagonals, strict=True):
            if d.dim() >= 3:
                d = d.abs().mean(dim=tuple(range(2, d.dim())), keepdim=True).expand_as(d)
            self.diagonals[p] = d

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            k = group["hessian_power"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m_hat, v_hat = adam_moments(self.state[p], p.grad, self.diagonals[p], b1, b2)
                p.sub_(group["lr"] * m_hat / (v_hat.sqrt() ** k + group["eps"]))
