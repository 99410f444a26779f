"""The recommended training recipes (README, "Recommended recipes"), as train.py arguments: `make demo`
and bench/bench_real.py train with CPU_RECIPE; tests check that the README shows these very flags."""

# --epochs is large on purpose: the recipes are meant to be stopped by --time_limit (or by --early_stop).
CPU_RECIPE = ["--depth", "48", "--nresblocks", "6", "--upsampling", "pixelshuffle", "--residual", "bicubic",
              "--augment", "--l1weight", "1", "--l2weight", "0", "--adam_lr", "1e-3", "--adam_b1", "0.9",
              "--batchsize", "16", "--pretrain", "--epochs", "1000", "--valid_split", "0.1"]
