"""The recommended training recipe for CPUs (README, "Recommended recipes"), as train.py arguments:
`make demo` and bench/bench_real.py train with it; a test checks that the README shows these very flags.

The generator trains alone (train.py's pre-training phase: L1 loss; --epochs 0: no GAN phase) until
--time_limit or --early_stop ends the run: --pretrain_epochs is large on purpose.
"""

CPU_RECIPE = ["--depth", "48", "--nresblocks", "6", "--upsampling", "pixelshuffle", "--residual", "bicubic",
              "--normalize", "--augment", "--l1weight", "1", "--l2weight", "0", "--adam_lr", "1e-3",
              "--batchsize", "16", "--pretrain", "--pretrain_epochs", "1000", "--epochs", "0",
              "--valid_split", "0.1"]
