"""What makes the generator learn on real imagery: the recommended CPU recipe and variants that change one
thing each, with the same time budget, through bench/bench_real.py's pipeline (LR by 4 x 4 averaging,
training part / held-out test part, train.py, sr.py, evaluate.py against GDAL bicubic).

    .venv/bin/python bench/bench_study.py --hr IMAGE [--minutes 3] [--only NAME ...]

Writes BENCHMARKS.md's "study" section.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

from bench.bench_real import run  # noqa: E402
from bench.report import BENCHMARKS, machine, write_section  # noqa: E402
from demo.recipes import CPU_RECIPE  # noqa: E402


def changed(drop: tuple[str, ...] = (), **values: str) -> list[str]:
    """CPU_RECIPE without the flags in `drop` and with `values` (option name without -- : value)."""
    recipe, i = [], 0
    while i < len(CPU_RECIPE):
        flag = CPU_RECIPE[i]
        takes_value = i + 1 < len(CPU_RECIPE) and not CPU_RECIPE[i + 1].startswith("--")
        name = flag[2:]
        if name not in drop and name not in values:
            recipe += CPU_RECIPE[i:i + 1 + takes_value]
        i += 1 + takes_value
    for name, value in values.items():
        recipe += [f"--{name}"] + ([value] if value else [])
    return recipe


# name: (train.py arguments, LR patch size, what it tests)
VARIANTS = {
    "recipe": (CPU_RECIPE, 16, "the recommended CPU recipe"),
    "the original network": (["--depth", "8", "--nresblocks", "2", "--l1weight", "1", "--l2weight", "0",
                              "--batchsize", "16", "--pretrain", "--pretrain_epochs", "1000", "--epochs", "0",
                              "--valid_split", "0.1"], 16,
                             "none of the recipe's options (original scaling, no skip, transposed x2/x4 "
                             "stages, no augmentation; depth 8 / 2 blocks, L1)"),
    "original x2/x4 stages": (changed(upsampling="transposed", depth="8", nresblocks="2"), 16,
                              "`--upsampling transposed` (the original's stages; depth 8 / 2 blocks so that "
                              "a step costs about as much)"),
    "no --normalize": (changed(drop=("normalize",)), 16, "the original scaling (values / their maximum)"),
    "no --augment": (changed(drop=("augment",)), 16, "no flips/quarter-turns"),
    "no residual skip": (changed(drop=("residual",)), 16, "no `--residual` (the output convs learn it all)"),
    "linear skip": (changed(residual="linear"), 16, "`--residual linear` (least-squares start)"),
    "L2 loss": (changed(l1weight="0", l2weight="1"), 16, "L2 instead of L1"),
    "Adam 3e-4": (changed(adam_lr="3e-4"), 16, "a lower learning rate"),
    "Adam 3e-3": (changed(adam_lr="3e-3"), 16, "a higher learning rate"),
    "batch 4": (changed(batchsize="4"), 16, "smaller batches"),
    "32-px patches": (changed(batchsize="4"), 32, "32-px LR patches, batch 4 (the same pixels per step)"),
    "depth 64 / 16 blocks": (changed(depth="64", nresblocks="16"), 16, "the default network's size"),
    "depth 32 / 4 blocks": (changed(depth="32", nresblocks="4"), 16, "a smaller network"),
    "then GAN, last weights": (changed(pretrain_epochs="40", epochs="1000", ganweight="0.01",
                                       export="last"), 16,
                               "40 pre-training epochs, then WGAN-GP (weight 0.01, L1 kept) until the time "
                               "limit; the last weights exported"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hr", required=True, help="the real image (BENCHMARKS.md: landsat8_rgb_30m.tif)")
    p.add_argument("--minutes", type=float, default=3.0, help="training time per variant")
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run these variants only")
    args = p.parse_args()
    rows = {}
    for name in args.only or VARIANTS:
        recipe, lr_patch, what = VARIANTS[name]
        with tempfile.TemporaryDirectory() as folder:
            result = run(args.hr, args.minutes, folder, True, recipe, lr_patch)
        print(name, result, flush=True)
        rows[name] = (f"| {name} | {what} | {result['steps']} | {result['psnr_sr']:.3f} | "
                      f"**{result['gain_db']:+.3f}** | {result['ssim_sr'] - result['ssim_bicubic']:+.4f} |")
    write_rows(rows, result, args.minutes)


def write_rows(rows: dict[str, str], result: dict, minutes: float) -> None:
    """Write the section, keeping the rows of variants not run this time."""
    text = open(BENCHMARKS).read() if os.path.exists(BENCHMARKS) else ""
    start = text.find("<!-- study -->")
    if start >= 0:
        for line in text[start:text.find("<!-- /study -->")].splitlines():
            name = line.split(" | ")[0][2:] if line.startswith("| ") else None
            if name in VARIANTS and name not in rows:
                rows[name] = line
    ordered = [rows[name] for name in VARIANTS if name in rows]
    write_section("study", f"""## What makes the generator learn on real imagery (`bench/bench_study.py`)

{machine()}. {result['image']}; bicubic PSNR {result['psnr_bicubic']:.3f} dB. Each variant trains for
{minutes:g} minutes (`--time_limit`, 2 CPU cores, nothing else running) with the recommended CPU recipe
changed in one thing, then `sr.py` and `evaluate.py` score the test part (gain = SR PSNR - bicubic PSNR).
Recipe: `{" ".join(CPU_RECIPE)}`.

| variant | what changes | steps | SR PSNR | gain (dB) | SSIM gain |
|---|---|---|---|---|---|
{chr(10).join(ordered)}

Re-run: `.venv/bin/python bench/bench_study.py --hr landsat8_rgb_30m.tif`
(about {len(VARIANTS) * (minutes + 1):.0f} minutes;
`--only NAME ...` re-runs some variants and keeps the other rows).
""")


if __name__ == "__main__":
    main()
