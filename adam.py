"""Adam for the flow, stepped the way the device favours, with one state_dict format.

The arithmetic is torch.optim.Adam's everywhere. What differs is the kernel and when it runs:
- CPU (memory is scarce): AdamInBackward updates each parameter as soon as its gradient is
  complete, during backward, and frees the gradient, so the flow's 0.7 GB of gradients never
  exist at once.
- GPU (memory is plentiful, the host is the bottleneck): one torch.optim.Adam over every
  parameter, stepped once after backward: one launch instead of 128 Python step() calls.
- kernel 'fused': torch's fused kernel (one pass over parameter, gradient and moments);
  'single': torch's single-tensor loop, bit for bit the reference code's optimizer. The two
  round differently in the last bits, which training amplifies (docs/method.md gives the
  measured effect), so 'auto' keeps the reference's loop on the CPU, where bit-equality can
  be had, and takes the fused kernel on a GPU, where it cannot anyway.
"""
import weakref

import torch

from model import flow_parameters

# how a torch.optim.Adam runs, not what it computes: a resumed run takes them from its device
IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")


def kernel_flags(fused):
    """Adam's keyword arguments choosing the kernel: fused, or the single-tensor loop."""
    return {"foreach": False, "fused": bool(fused)}


def implementation_of(optimizer):
    """The implementation flags a torch.optim.Adam was built with."""
    return {k: optimizer.param_groups[0][k] for k in IMPLEMENTATION_FLAGS}


def with_own_implementation(state_dict, flags):
    """A saved optimizer state whose param groups take `flags` (this process's kernel) in place
    of those of the process that saved it: a run trained on the CPU and resumed on a GPU keeps
    the GPU's fused kernel, and the reverse."""
    groups = [{**{k: v for k, v in g.items() if k not in IMPLEMENTATION_FLAGS}, **flags}
              for g in state_dict["param_groups"]]
    return {"state": state_dict["state"], "param_groups": groups}


def _step_and_free(optimizer_ref):
    """The hook of one parameter. It holds its optimizer weakly: a strong reference would live
    in autograd's C++ metadata, out of the cycle collector's sight, and keep the parameter,
    the moments and so the whole flow alive after the run."""
    def hook(param):
        optimizer = optimizer_ref()
        if optimizer is not None:
            optimizer.step()
        param.grad = None
    return hook


class AdamInBackward:
    """Adam whose update of each parameter runs during backward, as soon as that parameter's
    gradient is complete, after which the gradient is freed. The update equals that of one
    Adam over all parameters (tested). state_dict() has torch.optim.Adam's format."""

    def __init__(self, params, **adam_args):
        self.params = list(params)
        self.optimizers = [torch.optim.Adam([p], **adam_args) for p in self.params]
        self.flags = implementation_of(self.optimizers[0])
        self._hooks = [p.register_post_accumulate_grad_hook(_step_and_free(weakref.ref(opt)))
                       for p, opt in zip(self.params, self.optimizers)]

    def step(self):
        """Nothing left to do: each parameter was updated during backward."""

    def zero_grad(self, set_to_none=True):
        """Nothing to clear: each gradient was freed after its update."""

    def close(self):
        """Remove the hooks: the parameters train no more through this optimizer."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def state_dict(self):
        groups = [dict(self.optimizers[0].state_dict()["param_groups"][0],
                       params=list(range(len(self.params))))]
        state = {i: opt.state_dict()["state"][0] for i, opt in enumerate(self.optimizers)
                 if opt.state_dict()["state"]}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        state_dict = with_own_implementation(state_dict, self.flags)
        group = {k: v for k, v in state_dict["param_groups"][0].items() if k != "params"}
        for i, opt in enumerate(self.optimizers):
            state = {0: state_dict["state"][i]} if i in state_dict["state"] else {}
            opt.load_state_dict({"state": state, "param_groups": [dict(group, params=[0])]})


class AdamAfterBackward(torch.optim.Adam):
    """torch.optim.Adam over every parameter, stepped once after backward (the GPU's way).
    A loaded state keeps this process's kernel, whatever the saving process used."""

    def __init__(self, params, **adam_args):
        super().__init__(params, **adam_args)
        self.flags = implementation_of(self)

    def load_state_dict(self, state_dict):
        super().load_state_dict(with_own_implementation(state_dict, self.flags))

    def close(self):
        """Nothing to remove: this optimizer holds no hooks."""


def uses_fused_kernel(kernel, on_gpu):
    """config adam_kernel: 'auto' (fused on a GPU, single-tensor on the CPU), 'fused', 'single'."""
    return kernel == "fused" or (kernel == "auto" and on_gpu)


def make_optimizer(flow, lr, betas, eps, weight_decay, kernel="auto"):
    """Adam on the flow's trainable parameters (the backbone has none): one step after
    backward on a GPU, in backward on the CPU, with the kernel config adam_kernel names."""
    params = flow_parameters(flow)
    args = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                **kernel_flags(uses_fused_kernel(kernel, params[0].is_cuda)))
    if params[0].is_cuda:
        return AdamAfterBackward(params, **args)
    return AdamInBackward(params, **args)
