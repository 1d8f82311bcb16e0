"""core.imaging.pillow: decoding by content, every colour mode to RGB, EXIF orientation, the three resize modes,
refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import jpeg_bytes
from PIL import Image

from core.imaging.pillow import ImageError, open_image, to_rgb
from core.model.inputs import load_image, load_images
from core.util.errors import UserError

PAD = (124, 117, 104)  # ImageNet mean, rounded
RED, GREEN, BLUE = (220, 20, 20), (20, 200, 20), (20, 20, 220)


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def solid(color, size=(40, 30), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def stripes(colors, width=30, height=30) -> Image.Image:
    """Vertical bands of equal width, left to right."""
    im = Image.new("RGB", (width * len(colors), height))
    for k, c in enumerate(colors):
        im.paste(c, (k * width, 0, (k + 1) * width, height))
    return im


def assert_close(pixel, expected, tol=12):
    diff = np.abs(np.asarray(pixel, dtype=int) - np.asarray(expected, dtype=int))
    assert diff.max() <= tol, f"{tuple(int(v) for v in np.asarray(pixel))} is not close to {expected}"


def mean_colour(arr: np.ndarray) -> np.ndarray:
    return arr.reshape(-1, 3).mean(axis=0)


# ---------------------------------------------------------------------------------------------- output shape


@pytest.mark.parametrize("resize", ["crop", "pad", "stretch"])
@pytest.mark.parametrize("size", [1, 32, 57])
def test_output_is_square_uint8_rgb(resize, size):
    arr = load_image(jpeg_bytes(size=(40, 30)), size, resize)
    assert arr.shape == (size, size, 3)
    assert arr.dtype == np.uint8


def test_upscales_small_images():
    arr = load_image(encode(solid(RED, (5, 4))), 48, "crop")
    assert arr.shape == (48, 48, 3)
    assert_close(mean_colour(arr), RED, tol=2)


def test_unknown_resize_mode_is_a_programming_error_not_an_image_error():
    with pytest.raises(ValueError, match="resize") as info:
        load_image(encode(solid(RED)), 16, "squash")
    assert not isinstance(info.value, ImageError)
    with pytest.raises(ValueError, match="resize") as info:
        load_images([encode(solid(RED))], 16, "squash")
    assert not isinstance(info.value, ImageError)


@pytest.mark.parametrize("size", [0, -3])
def test_non_positive_size_is_a_programming_error(size):
    with pytest.raises(ValueError, match="size") as info:
        load_image(encode(solid(RED)), size)
    assert not isinstance(info.value, ImageError)


# ---------------------------------------------------------------------------------------------- resize modes


def test_crop_takes_the_centred_square():
    png = encode(stripes([RED, GREEN, BLUE]))  # 90 x 30: red | green | blue
    arr = load_image(png, 30, "crop")
    assert (arr == GREEN).all(), "the centre third is green; nothing of the sides may remain"
    small = load_image(png, 12, "crop")  # downscaled: the filter may blend a little across the crop's edge
    assert (small[:, 1:-1] == GREEN).all()
    for edge in (small[:, 0], small[:, -1]):
        assert (edge[:, 1] > 150).all() and (edge[:, [0, 2]] < 60).all(), "edges stay green, not red or blue"


def test_crop_of_portrait_takes_the_middle_band():
    im = stripes([RED, GREEN, BLUE]).rotate(90, expand=True)  # 30 x 90: blue on top, red at the bottom
    arr = load_image(encode(im), 30, "crop")
    assert (arr == GREEN).all()


def test_pad_keeps_all_content_and_fills_with_imagenet_mean():
    png = encode(stripes([RED, GREEN, BLUE], width=20, height=30))  # 60 x 30
    arr = load_image(png, 60, "pad")
    # content is 60 x 30, centred vertically: rows 15..44
    assert (arr[:14] == PAD).all() and (arr[46:] == PAD).all()
    mid = arr[30]
    assert_close(mid[2], RED, tol=0)
    assert_close(mid[30], GREEN, tol=0)
    assert_close(mid[57], BLUE, tol=0)


def test_pad_of_portrait_fills_left_and_right():
    im = solid(RED, (20, 60))
    arr = load_image(encode(im), 30, "pad")
    assert (arr[:, :4] == PAD).all() and (arr[:, -4:] == PAD).all()
    assert_close(arr[15, 15], RED, tol=0)
    assert_close(arr[0, 15], RED, tol=0), "the full height is kept"


def test_stretch_keeps_every_corner():
    im = Image.new("RGB", (80, 20))
    quads = {(0, 0): RED, (40, 0): GREEN, (0, 10): BLUE, (40, 10): (240, 240, 20)}
    for (x, y), c in quads.items():
        im.paste(c, (x, y, x + 40, y + 10))
    arr = load_image(encode(im), 20, "stretch")
    assert_close(arr[0, 0], RED, tol=0)
    assert_close(arr[0, -1], GREEN, tol=0)
    assert_close(arr[-1, 0], BLUE, tol=0)
    assert_close(arr[-1, -1], (240, 240, 20), tol=0)


def test_square_image_is_identical_in_every_mode():
    png = encode(stripes([RED, GREEN], width=16, height=32))
    results = [load_image(png, 32, mode) for mode in ("crop", "pad", "stretch")]
    assert (results[0] == results[1]).all() and (results[0] == results[2]).all()
    assert (results[0][:, :16] == RED).all() and (results[0][:, 16:] == GREEN).all()


# ---------------------------------------------------------------------------------------------- EXIF


def exif_jpeg(orientation: int | None) -> bytes:
    """A 60 x 30 JPEG: red left half, blue right half, with the given EXIF orientation tag."""
    im = stripes([RED, BLUE], width=30, height=30)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    return encode(im, "JPEG", exif=exif.tobytes(), quality=95)


def test_no_exif_orientation_keeps_landscape():
    arr = load_image(exif_jpeg(None), 30, "pad")
    assert (arr[:5] == PAD).all(), "landscape: pad above and below"
    assert_close(arr[15, 2], RED)
    assert_close(arr[15, -3], BLUE)


def test_exif_orientation_6_rotates_clockwise():
    # orientation 6: the stored image must be turned 90 degrees clockwise, so its left side ends on top
    arr = load_image(exif_jpeg(6), 30, "pad")
    assert (arr[:, :5] == PAD).all() and (arr[:, -5:] == PAD).all(), "portrait: pad left and right"
    assert_close(arr[2, 15], RED)
    assert_close(arr[-3, 15], BLUE)


def test_exif_orientation_8_rotates_counter_clockwise():
    arr = load_image(exif_jpeg(8), 30, "pad")
    assert (arr[:, :5] == PAD).all() and (arr[:, -5:] == PAD).all()
    assert_close(arr[2, 15], BLUE)
    assert_close(arr[-3, 15], RED)


def test_exif_orientation_3_turns_upside_down():
    arr = load_image(exif_jpeg(3), 30, "stretch")
    assert_close(arr[15, 2], BLUE)
    assert_close(arr[15, -3], RED)


# ---------------------------------------------------------------------------------------------- colour modes


def test_grayscale_l():
    arr = load_image(encode(solid(77, mode="L")), 8)
    assert (arr == 77).all()


def test_la_transparent_pixels_become_white():
    im = Image.new("LA", (20, 10), (50, 255))
    im.paste((50, 0), (10, 0, 20, 10))  # right half fully transparent
    arr = load_image(encode(im), 10, "stretch")
    assert (arr[:, :4] == 50).all()
    assert (arr[:, -4:] == 255).all()


def test_palette_with_transparency_becomes_white():
    im = Image.new("P", (20, 10), 0)
    im.putpalette([0, 0, 0, *RED, *BLUE] + [0] * (256 * 3 - 9))
    im.paste(1, (0, 0, 10, 10))
    im.paste(2, (10, 0, 20, 10))
    data = encode(im, "PNG", transparency=2)  # blue index transparent
    assert Image.open(io.BytesIO(data)).mode == "P"
    arr = load_image(data, 10, "stretch")
    assert (arr[:, :4] == RED).all()
    assert (arr[:, -4:] == 255).all()


def test_gif_with_transparency_becomes_white():
    im = Image.new("P", (20, 10), 1)
    im.putpalette([*BLUE, *RED] + [0] * (256 * 3 - 6))
    im.paste(0, (10, 0, 20, 10))
    arr = load_image(encode(im, "GIF", transparency=0), 10, "stretch")
    assert (arr[:, :4] == RED).all()
    assert (arr[:, -4:] == 255).all()


@pytest.mark.parametrize(("mode", "fill", "key"), [("RGB", RED, BLUE), ("L", 90, 200)])
def test_png_colour_key_transparency_becomes_white(mode, fill, key):
    im = Image.new(mode, (20, 10), fill)
    im.paste(key, (10, 0, 20, 10))
    data = encode(im, "PNG", transparency=key)  # tRNS chunk: the key colour is transparent
    assert "transparency" in Image.open(io.BytesIO(data)).info
    arr = load_image(data, 10, "stretch")
    expected = fill if mode == "RGB" else (fill,) * 3
    assert (arr[:, :4] == expected).all()
    assert (arr[:, -4:] == 255).all()


def test_rgba_is_composited_over_white():
    im = Image.new("RGBA", (20, 10), (*RED, 255))
    im.paste((0, 0, 0, 0), (10, 0, 20, 10))
    half = Image.new("RGBA", (20, 10), (0, 0, 0, 128))
    arr = load_image(encode(im), 10, "stretch")
    assert (arr[:, :4] == RED).all()
    assert (arr[:, -4:] == 255).all(), "transparent black must not come out black"
    assert_close(load_image(encode(half), 4)[0, 0], (127, 127, 127), tol=1)


def test_cmyk_jpeg_is_converted():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    data = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    arr = load_image(data, 16)
    assert_close(mean_colour(arr), (255, 0, 0), tol=10)


def test_cmyk_tiff_is_converted():
    cmyk = Image.new("CMYK", (16, 16), (255, 0, 255, 0))  # green
    arr = load_image(encode(cmyk, "TIFF"), 8)
    assert (arr == (0, 255, 0)).all()


@pytest.mark.parametrize(("value", "expected"), [(65535, 255), (65534, 255), (32896, 128), (0, 0), (257, 1), (128, 0)])
def test_16_bit_png_is_scaled_not_clipped(value, expected):
    im = Image.fromarray(np.full((12, 16), value, dtype=np.uint16))
    data = encode(im, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    arr = load_image(data, 8)
    assert arr.dtype == np.uint8
    assert (arr == expected).all()


def test_16_bit_png_keeps_its_gradient():
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    arr = load_image(encode(Image.fromarray(ramp)), 64, "stretch")[0, :, 0].astype(int)
    assert arr[0] == 0 and arr[-1] == 255
    assert (np.diff(arr) >= 0).all(), "a 16-bit ramp must stay monotonic (no wrap-around)"


def test_one_bit_image():
    im = Image.new("1", (16, 8), 0)
    im.paste(1, (8, 0, 16, 8))
    arr = load_image(encode(im), 8, "stretch")
    assert (arr[:, :3] == 0).all() and (arr[:, -3:] == 255).all()


def test_float_tiff_is_clipped_to_bytes():
    im = Image.fromarray(np.full((8, 8), 300.0, dtype=np.float32), "F")
    arr = load_image(encode(im, "TIFF"), 4)
    assert (arr == 255).all()


def test_to_rgb_returns_rgb_for_every_mode():
    for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "PA"):
        im = Image.new(mode, (4, 4))
        assert to_rgb(im).mode == "RGB", mode


def test_animated_gif_uses_first_frame():
    frames = [solid(RED, (20, 20)), solid(BLUE, (20, 20)), solid(GREEN, (20, 20))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 3
    arr = load_image(buf.getvalue(), 10)
    assert_close(mean_colour(arr), RED, tol=8)


def test_animated_webp_uses_first_frame():
    frames = [solid(GREEN, (20, 20)), solid(BLUE, (20, 20))]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    arr = load_image(buf.getvalue(), 10)
    assert_close(mean_colour(arr), GREEN, tol=3)


# ---------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"])
def test_accepted_formats_decode(fmt):
    data = encode(solid(RED, (24, 16)), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    with open_image(data) as im:
        assert im.format == fmt
    arr = load_image(data, 16)
    assert_close(mean_colour(arr), RED, tol=8)


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA", "PCX"])
def test_formats_pillow_reads_but_we_do_not_accept(fmt):
    data = encode(solid(RED, (16, 16)), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow can read it...
    with pytest.raises(ImageError, match=f"unsupported format \\({fmt}\\)"):
        load_image(data, 8)  # ...but it is not a photo format we take


def test_recognised_by_content_not_name(tmp_path):
    path = tmp_path / "really_a_png.JPG"
    path.write_bytes(encode(solid(GREEN)))
    assert_close(mean_colour(load_image(path, 8)), GREEN, tol=0)
    assert_close(mean_colour(load_image(str(path), 8)), GREEN, tol=0)


def test_path_and_bytes_give_the_same_pixels(tmp_path):
    data = jpeg_bytes(size=(50, 40), seed=3)
    path = tmp_path / "x.jpeg"
    path.write_bytes(data)
    assert (load_image(data, 24) == load_image(path, 24)).all()


# ---------------------------------------------------------------------------------------------- refusals


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello, I am not a picture\n")
    with pytest.raises(ImageError, match="not an image"):
        load_image(path, 8)


@pytest.mark.parametrize("data", [b"", b"\x00" * 100, b"\xff\xd8\xff"])
def test_empty_or_junk_bytes_raise_image_error(data):
    with pytest.raises(ImageError):
        load_image(data, 8)


def test_image_error_is_a_user_error():
    with pytest.raises(UserError):
        load_image(b"nope", 8)


def test_missing_file_raises_image_error(tmp_path):
    with pytest.raises(ImageError):
        load_image(tmp_path / "missing.jpg", 8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_raises_image_error(fmt):
    arr = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    data = encode(Image.fromarray(arr), fmt)
    with pytest.raises(ImageError, match=r"truncated|damaged|unreadable"):
        load_image(data[: len(data) // 2], 32)


def test_truncated_large_jpeg_raises_even_in_draft_mode():
    data = jpeg_bytes(size=(1600, 1200), seed=1)
    assert load_image(data, 32).shape == (32, 32, 3)
    with pytest.raises(ImageError, match="truncated"):
        load_image(data[: len(data) // 2], 32)


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(encode(solid(RED, (100, 100))), 8)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_just_over_the_pixel_limit_is_refused_not_warned(monkeypatch):
    # Pillow only errors above twice the limit and merely warns between 1x and 2x; a warning must not let it in,
    # whatever the process-wide warning filters are.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(solid(RED, (40, 40)))  # 1600 pixels
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(data, 8)
    with pytest.raises(ImageError, match="too many pixels"):
        open_image(data)


def test_image_under_the_pixel_limit_is_fine(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert load_image(encode(solid(RED, (30, 30))), 8).shape == (8, 8, 3)


def test_the_servers_pixel_limit_refuses_big_images_from_their_header_before_decoding(monkeypatch):
    from core.imaging.pillow import thumbnail

    monkeypatch.setenv("CLASSIFIER_MAX_PIXELS", "10000")
    png = encode(solid(RED, (200, 100)))  # 20 000 pixels, and PNG decodes every one of them
    for call in (lambda: open_image(png), lambda: load_image(png, 8), lambda: thumbnail(png, 8)):
        with pytest.raises(
            ImageError, match=r"^too many pixels \(200 x 100, 0.02 Mpx; this server decodes at most 0.01 Mpx\)"
        ):
            call()
    # A JPEG decodes at 1/8 scale when the model needs few pixels: 400 x 400 is 50 x 50 then, under the limit...
    big = jpeg_bytes(size=(400, 400), seed=3)
    assert load_image(big, 32).shape == (32, 32, 3) and thumbnail(big, 32).shape == (32, 32, 3)
    # ...but not when it needs them all (300 px: at most 1/1 scale), nor above 64 times the limit in any case.
    with pytest.raises(ImageError, match=r"^too many pixels"):
        load_image(big, 300)
    monkeypatch.setenv("CLASSIFIER_MAX_PIXELS", "2000")
    with pytest.raises(ImageError, match=r"^too many pixels"):
        open_image(big)
    monkeypatch.setenv("CLASSIFIER_MAX_PIXELS", "not a number")  # a typo in the setting: the default, not a crash
    assert open_image(png).size == (200, 100)


# ---------------------------------------------------------------------------------------------- draft mode


def test_large_jpeg_draft_keeps_the_colour():
    colour = (180, 90, 40)
    data = jpeg_bytes(colour, size=(2000, 1500), seed=7)
    with Image.open(io.BytesIO(data)) as im:
        reference = mean_colour(np.asarray(im.convert("RGB"), dtype=float))
    arr = load_image(data, 64)
    assert arr.shape == (64, 64, 3)
    assert_close(mean_colour(arr.astype(float)), reference, tol=3)
    assert_close(mean_colour(arr.astype(float)), colour, tol=6)


def test_large_jpeg_draft_keeps_the_geometry():
    im = Image.new("RGB", (2000, 1500), RED)
    im.paste(BLUE, (1000, 0, 2000, 1500))
    im.paste(GREEN, (0, 1200, 2000, 1500))  # bottom fifth
    arr = load_image(encode(im, "JPEG", quality=90), 64, "stretch")
    assert_close(arr[5, 5], RED)
    assert_close(arr[5, -6], BLUE)
    assert_close(arr[-3, 32], GREEN)


# ---------------------------------------------------------------------------------------------- load_images


def test_load_images_keeps_order_and_reports_progress(tmp_path):
    colours = [RED, GREEN, BLUE, (250, 250, 250), (5, 5, 5)]
    sources = []
    for k, c in enumerate(colours):
        p = tmp_path / f"{k}.png"
        p.write_bytes(encode(solid(c)))
        sources.append(p if k % 2 else encode(solid(c)))  # paths and bytes mixed
    calls = []
    out = load_images(sources, 12, progress=lambda d, t: calls.append((d, t)), workers=3)
    assert out.shape == (5, 12, 12, 3) and out.dtype == np.uint8
    for arr, c in zip(out, colours, strict=True):
        assert (arr == c).all()
    assert calls[-1] == (5, 5)
    assert [d for d, _ in calls] == [1, 2, 3, 4, 5]


def test_load_images_matches_load_image():
    sources = [jpeg_bytes(size=(50, 30), seed=s) for s in range(4)]
    out = load_images(sources, 20, resize="pad")
    for arr, src in zip(out, sources, strict=True):
        assert (arr == load_image(src, 20, "pad")).all()


def test_load_images_empty():
    out = load_images([], 16)
    assert out.shape == (0, 16, 16, 3) and out.dtype == np.uint8


def test_load_images_names_the_bad_file(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(encode(solid(RED)))
    bad = tmp_path / "broken_cat.jpg"
    bad.write_bytes(b"this is text")
    with pytest.raises(ImageError, match=r"broken_cat\.jpg: not an image"):
        load_images([good, bad, good], 8)


def test_load_images_names_bad_bytes_by_position():
    with pytest.raises(ImageError, match=r"image 2: not an image"):
        load_images([encode(solid(RED)), b"garbage"], 8)
