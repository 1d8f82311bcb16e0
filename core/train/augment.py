"""Augmentation of the training images with Keras preprocessing layers.

    aug = augmenter(config)                      # None when the config asks for no augmentation
    ds = training_data(x_train, y_train, config) # shuffled, batched, augmented: the training split only
    variants = preview(image, config, n=8)       # what the network will see, for the Train page

The layers run in the input pipeline, outside the model: validation data goes to ``fit`` as plain arrays and
the saved model holds no augmentation layer, so prediction is untouched. Images stay uint8 end to end (the
model's first layer does VGG16's normalisation), so an augmented image is rounded back to 0-255.
"""

from __future__ import annotations

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np

from core.config import TrainConfig


def augmenter(config: TrainConfig, seed: int | None = None) -> keras.Sequential | None:
    """The augmentation layers the config asks for, in a fixed order; None when it asks for none."""
    if not config.augmented:
        return None
    seed = config.seed if seed is None else seed
    steps: list[keras.layers.Layer] = []
    if config.augment_flip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if config.augment_rotation:
        steps.append(keras.layers.RandomRotation(config.augment_rotation / 360.0, seed=seed + 1))
    if config.augment_zoom:
        steps.append(keras.layers.RandomZoom(config.augment_zoom, seed=seed + 2))
    if config.augment_translation:
        t = config.augment_translation
        steps.append(keras.layers.RandomTranslation(t, t, seed=seed + 3))
    if config.augment_contrast:
        steps.append(keras.layers.RandomContrast(config.augment_contrast, value_range=(0, 255), seed=seed + 4))
    if config.augment_brightness:
        steps.append(keras.layers.RandomBrightness(config.augment_brightness, value_range=(0, 255), seed=seed + 5))
    return keras.Sequential(steps, name="augmentation")


def _to_uint8(x):
    import tensorflow as tf

    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def training_data(x: np.ndarray, y: np.ndarray, config: TrainConfig):
    """A ``tf.data.Dataset`` of the training split: reshuffled every epoch, batched, augmented, prefetched."""
    import tensorflow as tf

    aug = augmenter(config)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True)
    ds = ds.batch(config.batch_size)
    if aug is not None:
        ds = ds.map(lambda images, labels: (_to_uint8(aug(images, training=True)), labels))
    return ds.prefetch(tf.data.AUTOTUNE)


def preview(image: np.ndarray, config: TrainConfig, n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """``n`` augmented variants of one uint8 HxWx3 image, as the training pipeline would make them."""
    aug = augmenter(config, seed=seed)
    if aug is None:
        return [image] * n
    batch = np.repeat(image[None], n, axis=0)
    return list(np.asarray(keras.ops.convert_to_numpy(_to_uint8(aug(batch, training=True)))))
