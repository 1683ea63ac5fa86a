"""Unrolled SGD (`hf_distill.functional`): the three memory modes against each other and a hand-written unroll."""

import pytest
import torch
import torch.nn.functional as F

from hf_distill.augment import SiameseAugment
from hf_distill.functional import AdamState, ParameterSpec, plan_unroll, unrolled_sgd, unrolled_sgd_flat
from hf_distill.modeling import build_model, default_convnet_config, fresh_model
from hf_distill.seeding import derive_generator

CONFIG = default_convnet_config(1, 8, 3, net_width=8, net_depth=2)
AUGMENT = SiameseAugment("color_crop_cutout_scale_rotate")


# The gradient comparisons run in float64: instance norm over the 2x2 maps of 8x8 images divides by tiny variances
# for some augmented batches, which turns float32 rounding differences between two exact methods into visible ones.
DTYPE = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def network():
    return build_model(CONFIG).requires_grad_(False).to(DTYPE)


@pytest.fixture(scope="module")
def start_params():
    model = fresh_model(CONFIG, derive_generator(0, "start")).to(DTYPE)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _gradients(
    network, start_params, memory, num_steps, soft_labels=True, batch_size=4, augment=AUGMENT, step_size=0.05
):
    """Loss and gradients (images, label logits, step size, one start tensor) of ||theta_N - theta*||^2.

    `step_size`: a number, or a list (one step size per step)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(6, 1, 8, 8, generator=generator, dtype=DTYPE).requires_grad_(True)
    label_logits = torch.randn(6, 3, generator=generator, dtype=DTYPE).requires_grad_(True)
    targets = label_logits.softmax(-1) if soft_labels else torch.tensor([0, 0, 1, 1, 2, 2])
    step_size = torch.tensor(step_size, dtype=DTYPE, requires_grad=True)
    start = {name: t.clone().requires_grad_(True) for name, t in start_params.items()}
    final = unrolled_sgd(
        network,
        start,
        images,
        targets,
        step_size,
        num_steps,
        batch_size,
        derive_generator(1, "unroll"),
        augment,
        memory,
    )
    loss = sum(((final[name] - 0.5 * start_params[name]) ** 2).sum() for name in final)
    loss.backward()
    return {
        "loss": loss.detach(),
        "images": images.grad,
        "labels": label_logits.grad if soft_labels else None,
        "step_size": step_size.grad,
        "start": start["features.0.weight"].grad,
    }


@pytest.mark.parametrize("soft_labels", [True, False])
def test_checkpoint_gradients_equal_full(network, start_params, soft_labels):
    full = _gradients(network, start_params, "full", num_steps=4, soft_labels=soft_labels)
    checkpoint = _gradients(network, start_params, "checkpoint", num_steps=4, soft_labels=soft_labels)
    for name, value in full.items():
        if value is None:
            continue
        assert torch.count_nonzero(value) > 0, name
        torch.testing.assert_close(checkpoint[name], value, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("memory", ["checkpoint", "tesla"])
def test_per_step_step_sizes(network, start_params, memory):
    """A schedule (DD's per-step step sizes): the hand-written backward gives full autograd's gradient per step
    (TESLA: for one step, start parameters aside), and a constant schedule is the scalar step size, its gradients
    summing to the scalar's."""
    schedule = [0.03, 0.05, 0.07, 0.04]
    num_steps = len(schedule) if memory == "checkpoint" else 1
    full = _gradients(network, start_params, "full", num_steps, step_size=schedule[:num_steps])
    other = _gradients(network, start_params, memory, num_steps, step_size=schedule[:num_steps])
    assert full["step_size"].shape == (num_steps,) and torch.count_nonzero(full["step_size"]) == num_steps
    for name in ("loss", "images", "labels", "step_size") + (("start",) if memory == "checkpoint" else ()):
        torch.testing.assert_close(other[name], full[name], rtol=1e-9, atol=1e-12, msg=name)

    scalar = _gradients(network, start_params, memory, num_steps=4)
    constant = _gradients(network, start_params, memory, num_steps=4, step_size=[0.05] * 4)
    torch.testing.assert_close(constant["step_size"].sum(), scalar["step_size"], rtol=1e-9, atol=1e-12)
    for name in ("loss", "images", "labels", "start"):
        torch.testing.assert_close(constant[name], scalar[name], rtol=1e-9, atol=1e-12, msg=name)


def test_tesla_is_exact_for_one_step_and_first_order_beyond(network, start_params):
    one_full = _gradients(network, start_params, "full", num_steps=1)
    one_tesla = _gradients(network, start_params, "tesla", num_steps=1)
    for name in ("loss", "images", "labels", "step_size"):
        torch.testing.assert_close(one_tesla[name], one_full[name], rtol=1e-9, atol=1e-12, msg=name)

    full = _gradients(network, start_params, "full", num_steps=5)
    tesla = _gradients(network, start_params, "tesla", num_steps=5)
    torch.testing.assert_close(tesla["loss"], full["loss"])  # the forward is the same unroll
    for name in ("images", "labels"):
        assert not torch.allclose(tesla[name], full[name], rtol=1e-3, atol=1e-6), name
        cosine = F.cosine_similarity(tesla[name].flatten(), full[name].flatten(), dim=0)
        assert cosine > 0.5, (name, cosine)


def _trained_by_torch_optim(start_params, images, labels, optimizer_class, lr, num_steps):
    """A model from `start_params` trained by a `torch.optim` optimiser on all images: the unroll's reference."""
    model = fresh_model(CONFIG, derive_generator(0, "other")).to(DTYPE)
    model.load_state_dict(start_params, strict=False)
    optimizer = optimizer_class(model.parameters(), lr=lr)
    for _ in range(num_steps):
        optimizer.zero_grad()
        F.cross_entropy(model(pixel_values=images).logits, labels).backward()
        optimizer.step()
    return model


def test_full_unroll_matches_hand_written_sgd(network, start_params):
    """No augmentation, all images per step: theta_{i+1} = theta_i - lr * grad CE, written out with a real model."""
    images = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    final = unrolled_sgd(network, start_params, images, labels, 0.1, 3, None, derive_generator(0, "u"), None)

    model = _trained_by_torch_optim(start_params, images, labels, torch.optim.SGD, lr=0.1, num_steps=3)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(final[name], parameter.detach(), rtol=1e-10, atol=1e-12)
    assert not final["classifier.weight"].requires_grad  # nothing to differentiate: no graph kept


def test_adam_unroll_matches_torch_adam_and_resumes_its_moments(network, start_params):
    """An Adam student (RaT-BPTT's inner optimiser) takes torch.optim.Adam's steps; 2 + 2 steps in two calls sharing
    one AdamState are the 4 steps of one call."""
    images = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    spec = ParameterSpec.from_dict(start_params)
    start = spec.flatten(start_params)

    def unroll(theta, adam, num_steps):
        return unrolled_sgd_flat(
            network, spec, theta, images, labels, 0.01, num_steps, None, derive_generator(0, "u"), adam=adam
        )

    whole = unroll(start, AdamState.zeros_like(start), 4)
    state = AdamState.zeros_like(start)
    split = unroll(unroll(start, state, 2), state, 2)
    assert state.count == 4
    # Each call draws its own image order; Adam's division by sqrt(v) magnifies the summation-order rounding of
    # near-zero gradients, hence the tolerance.
    torch.testing.assert_close(split, whole, rtol=1e-7, atol=1e-9)

    model = _trained_by_torch_optim(start_params, images, labels, torch.optim.Adam, lr=0.01, num_steps=4)
    torch.testing.assert_close(whole, spec.flatten(dict(model.named_parameters())).detach(), rtol=1e-8, atol=1e-10)
    sgd = unroll(start, None, 4)
    assert not torch.allclose(sgd, whole, rtol=1e-3)


def test_adam_unroll_is_differentiated_by_full_autograd_only(network, start_params):
    """The pixel gradient through an Adam unroll agrees with a finite difference; the hand-written backward modes
    refuse it."""
    spec = ParameterSpec.from_dict(start_params)
    start = spec.flatten(start_params)
    images = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=DTYPE).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    direction = torch.randn(images.shape, generator=torch.Generator().manual_seed(5), dtype=DTYPE)

    def loss(pixels, memory="full"):
        final = unrolled_sgd_flat(
            network, spec, start, pixels, labels, 0.01, 3, 4, derive_generator(0, "u"), memory=memory,
            adam=AdamState.zeros_like(start),
        )  # fmt: skip
        return ((final - 0.5 * start) ** 2).sum()

    (gradient,) = torch.autograd.grad(loss(images), images)
    with torch.no_grad():
        # Adam divides by sqrt(v) with v ~ 0 after its first step, which amplifies the float64 rounding of the forward:
        # at h = 1e-5 the central difference was 5e-5 off on one CPU (further off at smaller h), at h = 1e-4 3e-6.
        h = 1e-4
        finite = (loss(images + h * direction) - loss(images - h * direction)) / (2 * h)
    torch.testing.assert_close((gradient * direction).sum(), finite, rtol=1e-4, atol=1e-9)
    for memory in ("checkpoint", "tesla"):
        with pytest.raises(ValueError, match="Adam student is differentiated by plain autograd only"):
            loss(images, memory)


def test_plan_cycles_through_permutations_and_is_reproducible():
    plan = plan_unroll(5, 4, 2, torch.Generator().manual_seed(0), AUGMENT, (8, 8))
    assert [len(rows) for rows in plan.indices] == [2, 2, 1, 2]
    assert sorted(torch.cat(plan.indices[:3]).tolist()) == [0, 1, 2, 3, 4]  # one permutation, then a new one
    again = plan_unroll(5, 4, 2, torch.Generator().manual_seed(0), AUGMENT, (8, 8))
    for first, second in zip(plan.augment_params, again.augment_params):
        assert first.ops == second.ops
        assert all(torch.equal(first.values[k], second.values[k]) for k in first.values)
    with pytest.raises(ValueError, match="batch_size"):
        plan_unroll(5, 1, 0, torch.Generator(), None)


def test_parameter_spec_round_trip(network):
    spec = ParameterSpec.from_module(network)
    vector = spec.flatten(dict(network.named_parameters()))
    assert vector.shape == (spec.num_parameters,)
    for name, tensor in spec.unflatten(vector).items():
        assert torch.equal(tensor, dict(network.named_parameters())[name])
    with pytest.raises(ValueError, match="flat vector"):
        spec.unflatten(vector[:-1])


@pytest.mark.parametrize(
    "step_size, memory, message",
    [
        (torch.tensor([0.1, 0.1, 0.1]), "full", "one value per step \\(2\\)"),  # a schedule of the wrong length
        (0.1, "nope", "memory must be one of"),
    ],
)
def test_invalid_unroll_arguments(network, start_params, step_size, memory, message):
    spec = ParameterSpec.from_dict(start_params)
    with pytest.raises(ValueError, match=message):
        unrolled_sgd_flat(
            network,
            spec,
            spec.flatten(start_params),
            torch.zeros(3, 1, 8, 8, dtype=DTYPE),
            torch.zeros(3).long(),
            step_size,
            2,
            None,
            torch.Generator(),
            memory=memory,
        )


def test_parameter_spec_copy_into_writes_every_parameter_in_place():
    source = fresh_model(CONFIG, derive_generator(0, "source"))
    target = fresh_model(CONFIG, derive_generator(0, "target"))
    spec = ParameterSpec.from_module(target)
    storages = [p.data_ptr() for p in target.parameters()]
    vector = spec.flatten({name: p.detach() for name, p in source.named_parameters()})

    assert spec.copy_into(target, vector) is target
    assert [p.data_ptr() for p in target.parameters()] == storages  # in place: compiled functions keep working
    for (name, expected), actual in zip(source.named_parameters(), target.parameters()):
        assert torch.equal(expected, actual), name
