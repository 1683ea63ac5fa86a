"""What KIP with the exact empirical NTK of the protocol's ConvNet would cost on this machine (issue 19: build `kip`
if the exact empirical NTK of a small ConvNet fits here, else say what it costs).

```bash
python benchmarks/kip_cost.py --dataset-shape 1 28 28 --support 10 20 --targets 10 40
```

KIP (Nguyen, Chen & Lee, ICLR 2021 / NeurIPS 2021) scores a support set by the kernel ridge regression it induces,
with the NTK of a network as kernel. The exact empirical NTK of a finite network is `K(x, x') = sum_c <df_c(x)/dtheta,
df_c(x')/dtheta>` (the trace over outputs, as `neural_tangents`' empirical kernels): every image needs its Jacobian,
`num_classes x num_parameters` floats, and the support's pixels need the gradient *through* those Jacobians (a
second-order derivative). This script times, on the protocol's ConvNet-3 (instance norm, width 128), with
`torch.func` (`vmap(jacrev)`, differentiated by ordinary autograd):

- one image's Jacobian (forward only) and its size;
- one KIP step: Jacobians of `S` support and `T` target images, the `S x S` and `T x S` kernels, the ridge
  solution's squared error on the targets, and its gradient w.r.t. the support pixels; for each `(S, T)` given.

Peak memory is the process's `ru_maxrss`. Results: `benchmarks/results/kip_cost.json` (with this command).
"""

import argparse
import json
import resource
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev, vmap

from hf_distill.modeling import build_model, default_convnet_config

REPO_ROOT = Path(__file__).resolve().parents[1]


def empirical_ntk_features(model, params: dict, images: torch.Tensor) -> torch.Tensor:
    """Per-image Jacobians of the logits w.r.t. every parameter, flattened: `(N, num_classes, num_parameters)`."""

    def logits(params, image):
        return functional_call(model, params, (), {"pixel_values": image[None]}).logits[0]

    jacobians = vmap(jacrev(logits), in_dims=(None, 0))(params, images)
    return torch.cat([j.flatten(2) for j in jacobians.values()], dim=2)


def kip_step(model, params, support, support_targets, targets_images, targets, ridge=1e-6) -> float:
    """One KIP loss and its gradient w.r.t. the support pixels; returns the seconds it took."""
    start = time.perf_counter()
    support = support.detach().requires_grad_(True)
    j_support = empirical_ntk_features(model, params, support)
    j_target = empirical_ntk_features(model, params, targets_images)
    k_ss = torch.einsum("icp,jcp->ij", j_support, j_support)
    k_ts = torch.einsum("icp,jcp->ij", j_target, j_support)
    regulariser = ridge * k_ss.diagonal().mean() * torch.eye(len(support))
    prediction = k_ts @ torch.linalg.solve(k_ss + regulariser, support_targets)
    loss = F.mse_loss(prediction, targets)
    loss.backward()
    assert support.grad is not None and torch.isfinite(support.grad).all()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset-shape", type=int, nargs=3, default=[1, 28, 28], metavar=("C", "H", "W"))
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--net-width", type=int, default=128)
    parser.add_argument("--support", type=int, nargs="+", default=[10, 20], help="Support images per step.")
    parser.add_argument("--targets", type=int, nargs="+", default=[10, 40], help="Target images per step.")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "kip_cost.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    channels, height, width = args.dataset_shape
    config = default_convnet_config(channels, height, args.num_classes, net_width=args.net_width)
    model = build_model(config).requires_grad_(False)
    params = {name: p.detach() for name, p in model.named_parameters()}
    num_parameters = sum(p.numel() for p in params.values())
    generator = torch.Generator().manual_seed(0)

    def images(n):
        return torch.randn(n, channels, height, width, generator=generator)

    empirical_ntk_features(model, params, images(2))  # warm-up
    start = time.perf_counter()
    jacobian_images = 10
    empirical_ntk_features(model, params, images(jacobian_images))
    seconds_per_jacobian = (time.perf_counter() - start) / jacobian_images

    steps = []
    for s in args.support:
        for t in args.targets:
            support_targets = F.one_hot(torch.arange(s) % args.num_classes, args.num_classes).float()
            targets = F.one_hot(torch.arange(t) % args.num_classes, args.num_classes).float()
            seconds = kip_step(model, params, images(s), support_targets, images(t), targets)
            steps.append({"support": s, "targets": t, "seconds": round(seconds, 3)})
            print(f"S={s} T={t}: {seconds:.2f} s per KIP step", flush=True)

    result = {
        "command": shlex.join(["python", "benchmarks/kip_cost.py", *sys.argv[1:]]),
        "image_shape": args.dataset_shape,
        "net_width": args.net_width,
        "num_parameters": num_parameters,
        "jacobian_mib_per_image": round(args.num_classes * num_parameters * 4 / 2**20, 2),
        "seconds_per_jacobian": round(seconds_per_jacobian, 4),
        "kip_steps": steps,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
