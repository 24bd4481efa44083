"""Per-loop figures of the GPU profile: seconds, steps/s and achieved TFLOP/s of each training loop and
evaluation, with the ratio to the chip's floor on every line (used by `bench_cifar.py loops`; not a test).

Data are random CIFAR-shaped tensors: the speed of a loop does not depend on what the pixels show.
The model is the profile's ResNet-18 (CIFAR stem). FLOPs are counted with torch.utils.flop_counter
(matmuls and convolutions only) on a small batch on the CPU and scaled by the batch size.

The floor: ResNet-18 at half the chip's rate; `floor_ratio` = measured time over the time the loop's counted
FLOPs would take at that rate (1.0 = at the floor; 10 = ten times slower). The chip's rate is measured on the
machine that runs the benchmark (`Floor.measure`: a large dense matrix product, bf16 on CUDA, fp32 on a CPU), so
that a line's ratio says the same thing on an H100, an H200 or a CPU rehearsal; runs committed before it was
measured used the H200's 790 TFLOP/s (their JSON's `chip_bf16_flops`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

FLOOR_FRACTION = 0.5  # the floor runs at half of the chip's rate


CIFAR10_TRAIN_IMAGES = 50_000
"""The training set of the profile's data: what a full pass and the attacks' poison budgets are counted over."""


def flops_per_image(width: int, probe_batch: int = 4) -> dict[str, float]:
    """Forward and forward+backward FLOPs of one image through ResNet-18 of `width`."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from unlearn_audit.profiles.cifar.resnet import ResNet18

    model = ResNet18(width=width).train()
    x, y = torch.rand(probe_batch, 3, 32, 32), torch.randint(0, 10, (probe_batch,))
    with FlopCounterMode(display=False) as train:
        F.cross_entropy(model(x), y).backward()
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        model.eval()(x)
    return {"forward": forward.get_total_flops() / probe_batch, "train": train.get_total_flops() / probe_batch}


@functools.cache
def attack_step_flops(width: int) -> dict[str, float]:
    """FLOPs per poison of one step of each build-time attack loop, through ResNet-18 of `width`.

    A Witches' Brew step and a Gradient Canceling step both take the poisons' parameter gradient with
    `create_graph` and differentiate it again with respect to the poisons (a double backward). Counted
    with torch.utils.flop_counter at 2 and 4 poisons and differenced, so the fixed part (the brew's target
    gradient) drops out.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from unlearn_audit.attacks.gradient_canceling import canceling_objective
    from unlearn_audit.attacks.witches_brew import gradient_matching_loss
    from unlearn_audit.profiles.cifar.resnet import ResNet18

    model = ResNet18(width=width).eval()
    clean_grad = [torch.zeros_like(p) for p in model.parameters()]
    g = torch.Generator().manual_seed(0)
    target_x, target_y = torch.rand(1, 3, 32, 32, generator=g), torch.tensor([1])

    def count(poisons: int) -> dict[str, float]:
        # A non-leaf input: FlopCounterMode's module hooks refuse autograd.grad with respect to a leaf.
        x = torch.rand(poisons, 3, 32, 32, generator=g).requires_grad_(True) * 1.0
        y = torch.randint(0, 10, (poisons,), generator=g)
        out = {}
        with FlopCounterMode(display=False) as brew:
            torch.autograd.grad(gradient_matching_loss(model, x, y, target_x, target_y), x)
        out["brew"] = float(brew.get_total_flops())
        with FlopCounterMode(display=False) as canceling:
            torch.autograd.grad(
                canceling_objective(model, clean_grad, CIFAR10_TRAIN_IMAGES, x, y, 5e-4, create_graph=True), x
            )
        out["canceling"] = float(canceling.get_total_flops())
        return out

    # Grad mode on whatever the caller left: a SIGTERM that stops the benchmark inside a no_grad block's
    # __enter__ leaves grad mode off (its __exit__ never runs), and the estimate is computed after that.
    with torch.enable_grad():
        two, four = count(2), count(4)
    return {k: (four[k] - two[k]) / 2 for k in two}


def attack_poisons(num_train: int = CIFAR10_TRAIN_IMAGES) -> tuple[int, int]:
    """Poisons of one Witches' Brew target and of Gradient Canceling, as the profile's recipes set them."""
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    recipes = load_profile_recipes("cifar10-resnet18")
    brew, canceling = recipes["witches_brew"].attack, recipes["gradient_canceling"].attack
    return round(float(brew["budget"]) * num_train), round(float(canceling["poison_fraction"]) * num_train)


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: Any) -> tuple[float, Any]:
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


@dataclasses.dataclass(frozen=True)
class Floor:
    """The chip's matrix rate that every line's `floor_ratio` is measured against, and where it came from."""

    chip_flops: float  # FLOP/s of a large dense matrix product on this device, in the loops' precision
    dtype: str
    source: str  # "measured" or what it was taken from

    @classmethod
    def measure(cls, device: Any, *, size: int | None = None, reps: int | None = None) -> Floor:
        """The best of a few timed runs of `reps` (size x size) @ (size x size) products on `device`.

        bf16 on CUDA (the recipes' precision; cuBLAS reaches most of the tensor cores' rate at 8192), fp32 on a CPU
        (where the loops run fp32). Takes well under a second on a GPU, a few on a CPU."""
        import torch

        cuda = torch.device(device).type == "cuda"
        dtype = torch.bfloat16 if cuda else torch.float32
        size = size or (8192 if cuda else 512)
        reps = reps or (20 if cuda else 4)
        g = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
        b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
        a @ b  # warm-up: library initialisation and kernel choice stay out of the timing
        best = math.inf
        for _ in range(3):
            seconds, _ = timed(lambda: [a @ b for _ in range(reps)], device)
            best = min(best, seconds)
        return cls(2.0 * size**3 * reps / best, str(dtype).removeprefix("torch."), "measured")

    def line(
        self, rows: list[dict[str, Any]], name: str, seconds: float, steps: int, flops: float, **extra: Any
    ) -> dict[str, Any]:
        """One benchmark line (seconds, steps/s, achieved TFLOP/s, ratio to the floor), kept in `rows`, then printed.

        Kept before it is printed: a slot's `timeout` that stops the run when a line appears still finds it kept."""
        floor_s = flops / (FLOOR_FRACTION * self.chip_flops)
        row = {
            "loop": name,
            "seconds": round(seconds, 4),
            "steps": steps,
            "steps_per_s": round(steps / seconds, 2) if seconds > 0 else None,
            "ms_per_step": round(1000 * seconds / steps, 3) if steps else None,
            "gflop": float(f"{flops / 1e9:.6g}"),  # counted, so a reader can recompute the ratios
            # Significant digits, not decimals: a CPU's rate is about 0.05 TFLOP/s.
            "tflops": float(f"{flops / seconds / 1e12:.4g}") if seconds > 0 else None,
            "floor_ratio": round(seconds / floor_s, 2) if floor_s > 0 else None,
            **extra,
        }
        rows.append(row)
        print(
            f"{name:<44} {seconds:8.2f} s  {row['steps_per_s'] or 0:9.1f} steps/s  "
            f"{row['ms_per_step'] or 0:8.2f} ms/step  "
            f"{row['tflops'] or 0:7.1f} TFLOP/s  x{row['floor_ratio'] or 0:.1f} floor  "
            + "  ".join(f"{k}={v}" for k, v in extra.items() if not isinstance(v, (dict, list))),
            flush=True,
        )
        return row


def run_loops(
    device: str,
    *,
    quick: bool,
    relearn_steps: int,
    scenario: str = "gaussian",
    compile_modes: tuple[str, ...] = (),
    cudnn_benchmark: bool = False,
    doc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every loop of the profile, timed on `device` (quick: a CPU-sized rehearsal of the same code paths).

    `compile_modes`: the fast trainer again under each of these `torch.compile` modes (forced on a CPU), one line
    each, with the compilation's seconds (its first epoch less a later one). `cudnn_benchmark`: and once more,
    eager, with `torch.backends.cudnn.benchmark` on (cuDNN times its algorithms for each shape once).
    `doc`: the dict to fill and return; a caller that keeps it has every line timed so far if the run is stopped."""
    import torch

    from unlearn_audit.metrics import gaussian_unlearning_scores
    from unlearn_audit.profiles.cifar.resnet import ResNet18
    from unlearn_audit.protocol import ExampleSet
    from unlearn_audit.scenarios.recipes import load_profile_recipes
    from unlearn_audit.training.fast import FastTrainStats, train_fast
    from unlearn_audit.training.interpolation import interpolate, per_sample_loss
    from unlearn_audit.training.loops import predict, train
    from unlearn_audit.training.numerics import LoopNumerics, evaluating_fixture_of
    from unlearn_audit.training.relearning import AttackRun, attack_from_options, relearn_many

    recipe = load_profile_recipes("cifar10-resnet18")[scenario]
    # Quick (CPU) runs use width 8, not less: a compiled graph on a CPU runs its convolutions channels_last, and
    # oneDNN's AVX2 kernel for a 1x1 stride-2 convolution's weight gradient (the shortcuts) with fewer than 8
    # input channels in channels_last returned wrong gradients, crashed or hung in torch 2.13 on an AVX2-only CPU.
    width = 8 if quick else int(recipe.model.get("width", 64))
    training = recipe.training
    if quick:
        training = dataclasses.replace(training, epochs=2, batch_size=64, warmup_epochs=0.5)
    n_train, n_test, n_poison = (512, 256, 64) if quick else (CIFAR10_TRAIN_IMAGES, 9_000, 650)
    g = torch.Generator().manual_seed(0)
    data = ExampleSet(torch.rand(n_train, 3, 32, 32, generator=g), torch.randint(0, 10, (n_train,), generator=g))
    test_x, test_y = torch.rand(n_test, 3, 32, 32, generator=g), torch.randint(0, 10, (n_test,), generator=g)
    noise = torch.randn(n_poison, 3, 32, 32, generator=g)
    flops = flops_per_image(width)
    rows: list[dict[str, Any]] = []
    doc = {} if doc is None else doc
    doc.update(
        {
            "device": device,
            "width": width,
            "quick": quick,
            "flops_per_image": flops,
            "floor_fraction": FLOOR_FRACTION,
            "loops": rows,
        }
    )
    if torch.device(device).type == "cuda":
        doc["gpu"] = torch.cuda.get_device_name(device)
    floor = Floor.measure(device)
    doc["chip_flops"] = {"flops": floor.chip_flops, "dtype": floor.dtype, "source": floor.source}
    print(
        f"chip: {doc.get('gpu', device)}, {floor.chip_flops / 1e12:.1f} TFLOP/s {floor.dtype} ({floor.source})",
        flush=True,
    )

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return ResNet18(width=width).to(device)

    # 1. The fast trainer (fixture builds, Retrain): one epoch of warm-up, then the timed epochs (4 of the
    # recipe's schedule: the speed of an epoch does not depend on where it is in the schedule).
    steps_per_epoch = math.ceil(n_train / training.batch_size)
    trainer_variants = [("none", False), *((m, False) for m in compile_modes), *([("none", True)] * cudnn_benchmark)]
    for mode, autotune in trainer_variants:
        epochs: list[float] = []
        stats: list[FastTrainStats] = []
        short = dataclasses.replace(training, epochs=min(training.epochs, 4), compile=mode)
        torch.backends.cudnn.benchmark = autotune
        try:  # the epoch times come from the trainer's callback (it synchronises once per epoch)
            train_fast(
                model(),
                data,
                short,
                generator=torch.Generator().manual_seed(1),
                device=device,
                on_epoch=lambda e, t, s, **kw: epochs.append(s),  # noqa: B023 (called before the next loop)
                stats=stats,
                force_compile=mode != "none",
            )
        except Exception as exc:  # noqa: BLE001 - a compile mode that breaks is a finding; the rest still runs
            doc.setdefault("errors", []).append(f"fast trainer, compile {mode}: {type(exc).__name__}: {exc}")
            print(f"fast trainer, compile {mode}: FAILED {type(exc).__name__}: {exc}", flush=True)
            continue
        finally:
            torch.backends.cudnn.benchmark = False
        later = (epochs[-1] - epochs[0]) / (len(epochs) - 1) if len(epochs) > 1 else epochs[0]
        name = "fast trainer (per epoch after the first)" if mode == "none" else f"fast trainer, compiled {mode}"
        name = "fast trainer, cudnn.benchmark" if autotune else name
        extra: dict[str, Any] = {}
        if mode != "none":  # the compile time, and how close the compiled gradients came to the check's limit
            extra = {
                "compile_s": round(epochs[0] - later, 2),
                "compiled_gradient_excess": stats[0].compiled_gradient_excess,
            }
        floor.line(
            rows,
            name,
            later,
            steps_per_epoch,
            flops["train"] * n_train,
            precision=stats[0].precision,
            first_epoch_s=round(epochs[0], 3),
            epochs=len(epochs),
            batch=training.batch_size,
            **extra,
        )

    # 2. Budgeted fine-tuning (the reference unlearners, e.g. GradientDescent): 10% of the training compute.
    budget = max(1, training.epochs * n_train // 10)
    m = model()
    seconds, _ = timed(
        lambda: train(
            m,
            data,
            training,
            generator=torch.Generator().manual_seed(2),
            epochs=training.epochs,
            max_examples=budget,
            device=device,
        ),
        device,
    )
    floor.line(
        rows,
        "budgeted fine-tuning (GradientDescent, 10%)",
        seconds,
        math.ceil(budget / training.batch_size),
        flops["train"] * budget,
        batch=training.batch_size,
    )

    # 2b. The build-time attack loops (Witches' Brew brewing, Gradient Canceling), as the build runs them.
    for precision in ("fp32", "bf16"):
        try:
            attack_loop_rows(rows, model(), data, device, floor, quick=quick, width=width, precision=precision)
        except Exception as exc:  # noqa: BLE001 - a loop that breaks is a finding; the others still run
            doc.setdefault("errors", []).append(f"attack loops ({precision}): {type(exc).__name__}: {exc}")
            print(f"attack loops ({precision}): FAILED {type(exc).__name__}: {exc}", flush=True)

    # 3. The relearning attack: the recipe's attacker, `relearn_steps` steps, variants of the numerics.
    options = {k: v for k, v in recipe.options("relearning_resistant").items() if k not in ("window", "eval_every")}
    attack = attack_from_options(options, training, n_train)
    full_steps = attack.steps
    attack = dataclasses.replace(attack, steps=relearn_steps, eval_every=relearn_steps, window=1)
    base = model().eval()

    def relearn_variant(
        name: str, copies: int, *, fp32: bool = False, graphs: bool = True, compile: str = "none"
    ) -> dict[str, Any]:
        runs: list[AttackRun] = []
        rec = dataclasses.replace(training, precision="fp32", channels_last=False) if fp32 else training
        rec = dataclasses.replace(rec, compile=compile)
        numerics = LoopNumerics.of(rec, device, force_compile=compile != "none")

        def run(steps: int, out: list[AttackRun] | None = None) -> Any:
            return relearn_many(
                [base] * copies,
                [data] * copies,
                rec,
                dataclasses.replace(attack, steps=steps, eval_every=steps),
                seeds=list(range(copies)),
                measures=[lambda _m: 0.0] * copies,
                device=device,
                graphs=graphs,
                numerics=numerics,
                runs_out=out,
            )

        extra: dict[str, Any] = {}
        if compile != "none":  # compile outside the timed steps (a few steps; the compiled code is then reused)
            extra["compile_s"] = round(timed(lambda: run(4), device)[0], 2)
        seconds, _ = timed(lambda: run(relearn_steps, runs), device)
        per_model = seconds / copies
        # The check's relearning of one model: 3 attacker sizes x the full attack, at this speed (evaluations aside).
        per_step = per_model / relearn_steps
        return floor.line(
            rows,
            name,
            per_model,
            relearn_steps,
            flops["train"] * attack.batch_size * relearn_steps,
            models=copies,
            batch=attack.batch_size,
            run=runs[0].describe(),
            full_attack_steps=full_steps,
            three_sizes_estimate_s=round(per_step * full_steps * 3, 1),
            **extra,
        )

    variants: list[tuple[str, int, dict[str, Any]]] = [
        ("relearning, fp32 eager (before)", 1, {"fp32": True, "graphs": False}),
        ("relearning, recipe numerics, eager", 1, {"graphs": False}),
        ("relearning, recipe numerics, graphed", 1, {}),
        ("relearning, 3 sizes at once, graphed", 3, {}),
        ("relearning, 3 sizes at once, eager", 3, {"graphs": False}),
        ("relearning, 6 runs at once (references), graphed", 6, {}),
        *((f"relearning, 3 sizes at once, graphed, compiled {m}", 3, {"compile": m}) for m in compile_modes),
    ]
    errors = doc.setdefault("errors", [])
    for name, copies, kwargs in variants:
        try:
            relearn_variant(name, copies, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a variant that breaks is a finding; the others still run
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"{name}: FAILED {type(exc).__name__}: {exc}", flush=True)

    # 4. Graphed and eager steps agree: the same 200 (or fewer) steps from one model, compared with two eager runs.
    try:
        doc["graph_equivalence"] = graph_equivalence(
            base, data, training, attack, test_x[:1000], test_y[:1000], device, steps=min(200, relearn_steps)
        )
    except Exception as exc:  # noqa: BLE001
        errors.append(f"graph equivalence: {type(exc).__name__}: {exc}")
        print(f"graph equivalence: FAILED {type(exc).__name__}: {exc}", flush=True)

    # 4b. Curves measured on snapshots while training goes on, against measured between steps.
    try:
        doc["snapshot_equivalence"] = snapshot_equivalence(
            base, data, training, attack, test_x[:1000], device, steps=min(200, relearn_steps)
        )
    except Exception as exc:  # noqa: BLE001
        errors.append(f"snapshot equivalence: {type(exc).__name__}: {exc}")
        print(f"snapshot equivalence: FAILED {type(exc).__name__}: {exc}", flush=True)

    # 4c. A graphed step of the recipe's own SGD at its batch size (what the fast trainer and fine-tuning could do).
    if torch.device(device).type == "cuda":
        try:
            graphed_sgd_steps(rows, model(), data, training, device, flops["train"], floor)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"graphed SGD: {type(exc).__name__}: {exc}")
            print(f"graphed SGD: FAILED {type(exc).__name__}: {exc}", flush=True)

    # 5. Evaluations, in the recipe's numerics.
    with evaluating_fixture_of(training):
        evaluated = model().eval()
        poisons_x, poisons_y = data.inputs[:n_poison], data.labels[:n_poison]
        seconds, _ = timed(lambda: gaussian_unlearning_scores(evaluated, poisons_x, poisons_y, noise), device)
        seconds, _ = timed(
            lambda: [gaussian_unlearning_scores(evaluated, poisons_x, poisons_y, noise) for _ in range(5)], device
        )
        floor.line(
            rows,
            f"GUS of {n_poison} poisons (one relearning evaluation)",
            seconds / 5,
            1,
            flops["train"] * n_poison,
            note="forward + input gradient",
        )
        seconds, _ = timed(lambda: predict(evaluated, test_x), device)
        floor.line(rows, f"accuracy on {n_test} test images", seconds, 1, flops["forward"] * n_test)
        other = model().eval()
        points = 21

        def path() -> None:
            for i in range(points):
                mixed = interpolate(evaluated, other, i / (points - 1))
                per_sample_loss(mixed, test_x, test_y)
                predict(mixed, test_x)
                gaussian_unlearning_scores(mixed, poisons_x, poisons_y, noise)

        seconds, _ = timed(path, device)
        floor.line(
            rows,
            f"interpolation path, {points} points (loss, accuracy, GUS)",
            seconds,
            points,
            points * (2 * flops["forward"] * n_test + flops["train"] * n_poison),
        )
    return doc


def attack_loop_rows(
    rows: list[dict[str, Any]],
    model: Any,
    data: Any,
    device: str,
    floor: Floor,
    *,
    quick: bool,
    width: int,
    precision: str,
    steps: int = 6,
) -> None:
    """`steps` steps of each build-time attack loop at the profile's sizes, through the attack code itself.

    - Witches' Brew: `brew_poisons` on the recipe's poisons per target (750), one restart, the recipe's
      brewing augmentation; the build runs `steps x restarts` such steps per brew.
    - Gradient Canceling: one full-gradient pass over the training set (`loss_gradient`: what each GradPC
      step and the clean gradient cost), then `make_gradient_canceling` on the recipe's poisons (1,250)
      for `steps` steps, timed by its own step clock (which starts after its clean-gradient pass).
    Both run as the build runs them, batch norm in eval mode, through the numerics of
    `BuildContext.attack_numerics` with `[attack] precision = precision`: "fp32" (the papers' numerics) or
    "bf16" (bfloat16 autocast and the training recipe's memory format; forced on a CPU, so that a rehearsal
    takes the same path). Each row names its precision; a recipe's `[attack] precision` says which one its
    build runs.
    """
    import dataclasses

    import torch

    from unlearn_audit.attacks.gradient_canceling import loss_gradient, make_gradient_canceling
    from unlearn_audit.attacks.witches_brew import brew_poisons
    from unlearn_audit.scenarios.recipes import load_profile_recipes
    from unlearn_audit.training.numerics import LoopNumerics

    recipes = load_profile_recipes("cifar10-resnet18")
    brew, canceling = recipes["witches_brew"].attack, recipes["gradient_canceling"].attack
    n_train = len(data.labels)
    per_poison = attack_step_flops(width)
    train_flops = flops_per_image(width)["train"]
    x_all, y_all = data.inputs.to(device), data.labels.to(device)
    model = model.eval()
    brew_poisons_n, canceling_poisons_n = (16, 16) if quick else attack_poisons()
    loop_clock: list[float] = []  # the canceling loop's own elapsed seconds, reported by its on_step
    label = f", [attack] precision = {precision}"
    training = dataclasses.replace(recipes["gradient_canceling"].training, precision=precision)
    numerics = LoopNumerics.of(training, device, force_precision=True)
    numerics.prepare_model(model)
    brew_s, _ = timed(
        lambda: brew_poisons(
            [model],
            x_all[:brew_poisons_n],
            y_all[:brew_poisons_n],
            x_all[-1:],
            torch.tensor([0], device=device),
            epsilon=float(brew["epsilon"]) / 255,
            steps=steps,
            restarts=1,
            generator=torch.Generator().manual_seed(0),
            lr=float(brew.get("lr", 0.1)),
            augmentation=str(brew.get("brew_augmentation", "none")),
            numerics=numerics,
        ),
        device,
    )
    floor.line(
        rows,
        f"Witches' Brew step, {brew_poisons_n} poisons{label}",
        brew_s,
        steps,
        per_poison["brew"] * brew_poisons_n * steps,
        poisons=brew_poisons_n,
        full_brew_steps=int(brew["steps"]) * int(brew["restarts"]),
        full_brew_estimate_s=round(brew_s / steps * int(brew["steps"]) * int(brew["restarts"]), 1),
        attack_precision=precision,
    )
    with torch.enable_grad():
        pass_s, _ = timed(lambda: loss_gradient(model, x_all, y_all, numerics=numerics), device)
    floor.line(
        rows,
        f"full-gradient pass over {n_train} images (GradPC step){label}",
        pass_s,
        1,
        train_flops * n_train,
        gradpc_steps=int(canceling["gradpc_steps"]),
        attack_precision=precision,
    )
    # The canceling loop is timed from inside (its on_step clock starts after the clean-gradient pass):
    # subtracting a separately timed pass from the whole call is noise-dominated on small sizes.
    loop_clock.clear()
    timed(
        lambda: make_gradient_canceling(
            model,
            x_all,
            y_all,
            canceling_poisons_n,
            torch.Generator().manual_seed(0),
            steps=steps,
            lr=float(canceling.get("canceling_lr", 0.1)),
            weight_decay=float(recipes["gradient_canceling"].training.weight_decay),
            record_every=steps,
            on_step=lambda _step, _total, elapsed: loop_clock.append(elapsed),
            numerics=numerics,
        ),
        device,
    )
    cancel_s = loop_clock[-1]
    floor.line(
        rows,
        f"Gradient Canceling step, {canceling_poisons_n} poisons{label}",
        cancel_s,
        steps,
        per_poison["canceling"] * canceling_poisons_n * steps,
        poisons=canceling_poisons_n,
        full_canceling_steps=int(canceling["canceling_steps"]),
        full_canceling_estimate_s=round(cancel_s / steps * int(canceling["canceling_steps"]), 1),
        attack_precision=precision,
    )


def graph_equivalence(
    base: Any, data: Any, training: Any, attack: Any, x: Any, y: Any, device: str, steps: int
) -> dict[str, Any]:
    """Logits of the attacked model after `steps` steps: graphed vs eager, against eager vs eager (run-to-run)."""
    import dataclasses as dc

    import torch

    from unlearn_audit.training.relearning import AttackRun, relearn_many

    attack = dc.replace(attack, steps=steps, eval_every=steps)
    finals: dict[str, torch.Tensor] = {}
    info: dict[str, Any] = {}
    for name, graphs in (("eager", False), ("eager_again", False), ("graphed", True)):
        runs: list[AttackRun] = []
        models: list[torch.nn.Module] = []

        def keep(m: torch.nn.Module, models: list[torch.nn.Module] = models) -> float:
            models.append(m)
            return 0.0

        relearn_many(
            [base], [data], training, attack, seeds=[7], measures=[keep], device=device, graphs=graphs, runs_out=runs
        )
        with torch.no_grad():
            finals[name] = runs[0].model.eval()(x.to(device)).float().cpu()
        info[name] = runs[0].describe()

    def compare(a: str, b: str) -> dict[str, float]:
        d = (finals[a] - finals[b]).abs()
        return {
            "max_abs_logit_diff": float(d.max()),
            "mean_abs_logit_diff": float(d.mean()),
            "argmax_agreement": float((finals[a].argmax(1) == finals[b].argmax(1)).float().mean()),
        }

    out = {
        "steps": steps,
        "eager_vs_eager": compare("eager", "eager_again"),
        "graphed_vs_eager": compare("graphed", "eager"),
        "runs": info,
        "logit_scale": float(finals["eager"].abs().mean()),
    }
    print(
        f"graph equivalence after {steps} steps: graphed vs eager {out['graphed_vs_eager']}, "
        f"eager vs eager {out['eager_vs_eager']}",
        flush=True,
    )
    return out


def snapshot_equivalence(
    base: Any, data: Any, training: Any, attack: Any, x: Any, device: str, steps: int
) -> dict[str, Any]:
    """The same attack measured on snapshots (overlapped) and on the model between steps: identical curves?"""
    import dataclasses as dc

    import torch

    from unlearn_audit.training.relearning import relearn_many

    attack = dc.replace(attack, steps=steps, eval_every=max(1, steps // 4))
    probe = x.to(device)

    def mean_logit(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(m.eval()(probe).float().mean())

    curves = {}
    for overlap in (True, False):
        curves[overlap] = relearn_many(
            [base],
            [data],
            training,
            attack,
            seeds=[11],
            measures=[mean_logit],
            device=device,
            overlap_evaluation=overlap,
        )[0]
    diff = max(abs(a[1] - b[1]) for a, b in zip(curves[True], curves[False]))
    out = {
        "steps": steps,
        "overlapped": curves[True],
        "between_steps": curves[False],
        "max_abs_diff": diff,
        "same_steps": [s for s, _ in curves[True]] == [s for s, _ in curves[False]],
    }
    print(
        f"snapshot equivalence after {steps} steps: max |diff| {diff:.3g}, same steps {out['same_steps']}", flush=True
    )
    return out


def graphed_sgd_steps(
    rows: list[dict[str, Any]],
    model: Any,
    data: Any,
    training: Any,
    device: str,
    train_flops: float,
    floor: Floor,
    steps: int = 200,
) -> dict[str, Any]:
    """`steps` graphed steps of the recipe's SGD (fused, lr in a device tensor) at the recipe's batch size."""
    import torch

    from unlearn_audit.training.graphed_step import GraphedTrainingStep
    from unlearn_audit.training.numerics import LoopNumerics

    numerics = LoopNumerics.of(training, device)
    numerics.prepare_model(model).train()
    lr = torch.tensor(training.lr, device=device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=training.momentum,
        nesterov=training.nesterov,
        weight_decay=training.weight_decay,
        fused=True,
    )
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    step = GraphedTrainingStep(model, optimizer, lr, numerics, stream, batch_size=training.batch_size)
    x_all, y_all = data.inputs.to(device), data.labels.to(device)
    batch = training.batch_size
    _sync(device)
    t = time.perf_counter()
    for i in range(steps):
        s = (i * batch) % (len(y_all) - batch)
        step.step(x_all[s : s + batch], y_all[s : s + batch], training.lr)
    torch.cuda.current_stream(device).wait_stream(stream)
    _sync(device)
    seconds = time.perf_counter() - t
    return floor.line(
        rows,
        "fine-tuning step, recipe SGD, graphed",
        seconds,
        steps,
        train_flops * batch * steps,
        batch=batch,
        replayed=step.replayed,
        eager=step.eager,
        fallback=step.fallback_reason,
    )
