"""Inference precision of the built-in engine: float32 (the original's numbers, the same as the OTB engine),
or bfloat16 through TensorFlow's oneDNN graph rewrite, which runs the convolutions in bfloat16 on CPUs that
compute it natively (AVX512-BF16, AMX) while the SavedModel's interface stays float32 (docs/DESIGN.md §9).
"""
from __future__ import annotations

from errors import SR4RSError
from logs import get_logger

logger = get_logger("precision")

PRECISIONS = ("float32", "bfloat16", "auto")
# CPU flags (/proc/cpuinfo) of native bfloat16 arithmetic; without them oneDNN emulates it, slower.
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = "/proc/cpuinfo"


def cpu_bfloat16_flags(cpuinfo: str = CPUINFO) -> list[str]:
    """The native bfloat16 flags this machine's CPU has (empty when none, or not Linux).

    Args:
        cpuinfo: the file listing the CPU flags.
    """
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [flag for flag in BFLOAT16_FLAGS if flag in flags]


def choose_precision(name: str, engine: str, gpu: bool, cpuinfo: str = CPUINFO) -> str:
    """"float32" or "bfloat16" for --precision float32/bfloat16/auto.

    Args:
        name: the --precision value.
        engine: "tf" or "otb" (OTB runs its own TensorFlow session: float32 only).
        gpu: whether TensorFlow sees a GPU (the oneDNN rewrite is for CPUs).
        cpuinfo: the file listing the CPU flags.
    """
    if name not in PRECISIONS:
        raise SR4RSError(f"--precision {name!r} is not one of {', '.join(PRECISIONS)}")
    flags = cpu_bfloat16_flags(cpuinfo)
    if name == "bfloat16":
        if engine == "otb":
            raise SR4RSError("--precision bfloat16 works with the built-in engine only: add --engine tf")
        if gpu:
            raise SR4RSError("--precision bfloat16 is TensorFlow's oneDNN rewrite for CPUs; this run uses a "
                             "GPU: use --precision float32 (or hide the GPU: CUDA_VISIBLE_DEVICES=)")
        if not flags:
            logger.warning("--precision bfloat16: this CPU has no native bfloat16 (%s): emulated, likely "
                           "slower than float32", " or ".join(BFLOAT16_FLAGS))
        return "bfloat16"
    if name == "auto" and engine == "tf" and not gpu and flags:
        logger.info("--precision auto: bfloat16 (the CPU has %s)", ", ".join(flags))
        return "bfloat16"
    return "float32"


def tensorflow_sees_a_gpu() -> bool:
    """Whether TensorFlow (loaded by the caller) has a GPU to run on."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def enable_bfloat16() -> None:
    """Have TensorFlow's graph optimizer run the models of this process in bfloat16 where oneDNN can
    (convolutions, matrix products); call it before the SavedModel's function first runs."""
    import tensorflow as tf  # the callers have loaded it already

    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
