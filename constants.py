"""Names and numbers that the rest of SR4RS, its SavedModels and OTB depend on (docs/DESIGN.md §1)."""

# Scale factors of the generator outputs: 1 = full HR resolution, 2 = half, 4 = LR resolution.
FACTORS = (1, 2, 4)
# Ratio between the LR and HR pixel sizes.
SCALE = 4
# Crop margins (HR pixels) of the SavedModel outputs `output_<pad>`; `sr.py --pad` picks one.
PADS = (32, 64, 128, 256, 512)

# Variable scopes (checkpoints keep the original names: gen/encoder/conv1_9x9/weight, ...).
GEN_SCOPE = "gen"
DIS_SCOPE = "dis"

# Dataset keys.
LR_KEY = "lr"
HR_KEY = "hr"

# SavedModel signature: input and outputs (OTB TensorflowModelServe finds them by these names).
SIGNATURE_KEY = "serving_default"
LR_INPUT_NAME = "lr_input"
OUTPUTS_PREFIX = "output_"
# Model description written next to the SavedModel (read by sr.py to check its input).
METADATA_DIR = "assets.extra"
METADATA_FILE = "sr4rs.json"

# TensorBoard scalar names.
GEN_LOSS_GAN = "gen_loss_gan"
GEN_LOSS_VGG = "gen_loss_vgg"
GEN_LOSS_L1 = "gen_loss_l1"
GEN_LOSS_L2 = "gen_loss_l2"
DIS_LOSS = "dis_loss"
PREVIEW_PREFIX = "preview_factor"

# Layers (docs/DESIGN.md §2).
LRELU_SLOPE = 0.2
PIXNORM_EPSILON = 1e-8
MBSTD_GROUP_SIZE = 4
MBSTD_EPSILON = 1e-8

# Choices of train.py's options (checked before TensorFlow loads, see train_options.py).
LOSS_TYPES = ("WGAN-GP", "LSGAN")
RESIDUALS = (None, "bicubic", "linear")
# How the generator makes its x2 and x4 outputs: the original's fused transposed convs followed by
# convolutions at those resolutions, or sub-pixel convolutions on the LR-resolution features.
UPSAMPLINGS = ("transposed", "pixelshuffle")
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")
# Feature sets of `--vggfeatures`: `poolN` after block N, `convX_Y` after ReLU, `convX_Ylin` before it.
VGG_FEATURES = {
    "1234": ("pool1", "pool2", "pool3", "pool4"),
    "1234lin": ("conv1_2lin", "conv2_2lin", "conv3_4lin", "conv4_4lin", "conv5_4lin"),
    "vgg344454": ("conv3_4", "conv4_4", "conv5_4"),
    "vgg54": ("conv5_4",),
    "vgg54lin": ("conv5_4lin",),
}


def output_name(pad: int) -> str:
    """Name of the SavedModel output cropped by `pad` HR pixels on every side, e.g. `output_64`."""
    return f"{OUTPUTS_PREFIX}{pad}"
