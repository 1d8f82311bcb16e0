"""The preprocessing's facts, without any library: the resize strategies, the ImageNet mean, and the exact steps from
a file to the model's input as data (``preprocessing_spec``: an export's ``preprocessing.json``, the model card).
"""

from __future__ import annotations

from core.config import RESIZES

IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)
PAD_COLOR = tuple(round(c) for c in IMAGENET_MEAN_RGB)  # what "pad" fills with, in Pillow and in TensorFlow
RESIZE_MODES = RESIZES  # crop, pad, stretch: TrainConfig's choices
CAFFE = (
    "RGB -> BGR, minus the ImageNet mean BGR (103.939, 116.779, 123.68), float32: "
    "keras.applications.{name}.preprocess_input, as the model's first layer"
)
# What the first layers of a model on each backbone do (core.model.backbones): caffe-style, or the application's own.
NORMALISATION = {
    "vgg16": CAFFE.format(name="vgg16"),
    "resnet50": CAFFE.format(name="resnet50"),
    "mobilenet_v3_small": "cast to float32, then the network's own Rescaling layer: x / 127.5 - 1",
    "mobilenet_v3_large": "cast to float32, then the network's own Rescaling layer: x / 127.5 - 1",
    "efficientnet_v2_b0": "cast to float32, then the network's own Rescaling and Normalization layers: "
    "(x / 255 - ImageNet mean RGB (0.485, 0.456, 0.406)) / ImageNet std (0.229, 0.224, 0.225)",
    "convnext_tiny": "cast to float32, then the network's own Normalization layer: (x / 255 - ImageNet mean RGB "
    "(0.485, 0.456, 0.406)) / ImageNet std (0.229, 0.224, 0.225)",
}


def preprocessing_spec(size: int, resize: str = "crop", backbone: str = "vgg16") -> dict:
    """The exact steps from a file to the model's input, as data (an export's ``preprocessing.json``) and words."""
    geometry = {
        "crop": "centre crop: the largest centred square (side = the shorter side, offsets rounded down)",
        "pad": "pad: scale so the longer side is {s} px (the shorter rounded to whole pixels), then centre on a "
        "{s} x {s} square filled with the ImageNet mean colour RGB {c}",
        "stretch": "stretch: both sides scaled to {s} px, the aspect ratio not kept",
    }[resize].format(s=size, c=list(PAD_COLOR))
    return {
        "input": "an image file: JPEG, PNG, GIF, BMP, WebP or TIFF",
        "decode": [
            "decode to RGB uint8 (Pillow in the app)",
            f"JPEG: decoded at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling) when both sides stay >= {size} px",
            "EXIF orientation applied (Pillow's exif_transpose; the SavedModel reads a JPEG's orientation itself); "
            "animated images: the first frame",
            "transparency composited over white; 16-bit images scaled to 8 bits (x / 257, rounded)",
        ],
        "resize_strategy": resize,
        "size": size,
        "geometry": [
            geometry,
            f"resize to {size} x {size}: bilinear with antialiasing (tf.image.resize, antialias=True), "
            "rounded half to even, clipped to 0..255, uint8",
        ],
        "model_input": f"uint8 RGB, shape (batch, {size}, {size}, 3)",
        "normalisation_in_model": NORMALISATION.get(backbone, NORMALISATION["vgg16"]),
        "output": "softmax probabilities in the order of labels.txt (calibrated when the run was calibrated)",
    }
