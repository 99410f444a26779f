"""The recommended training recipes (README, "Recommended recipes"), as train.py arguments: `make demo`
and bench/bench_real.py train with them; a test checks that the README shows these very flags.

Both train the generator alone (train.py's pre-training phase, L1 loss; --epochs 0: no GAN phase) until
--time_limit or --early_stop ends the run: --pretrain_epochs is large on purpose.
"""

COMMON = ["--upsampling", "pixelshuffle", "--residual", "bicubic", "--normalize", "--augment",
          "--l1weight", "1", "--l2weight", "0", "--adam_lr", "1e-3", "--batchsize", "16",
          "--pretrain", "--pretrain_epochs", "1000", "--epochs", "0", "--valid_split", "0.1"]
# A small network: many steps per minute on 2 CPU cores.
CPU_RECIPE = ["--depth", "48", "--nresblocks", "6", *COMMON]
# The original network's size (depth 64, 16 residual blocks: the defaults), stopped by early stopping.
GPU_RECIPE = [*COMMON, "--early_stop", "20"]
RECIPES = {"cpu": CPU_RECIPE, "gpu": GPU_RECIPE}
