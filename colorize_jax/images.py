"""Image files: listing, decoding with Pillow, grayscale detection and atomic PNG writing.

The one place where image files are read and written; the input pipeline,
inference, evaluation and the sample grids all go through it. It imports only
Pillow, NumPy and pypng (no TensorFlow, no JAX), so that colorizing a photo does not
pay for TensorFlow's import.

Decoding shows an image as it is meant to be seen, whatever its mode:

* EXIF orientation is applied (the result is upright as displayed);
* palette, gray, CMYK and colour images become RGB (gray replicated);
* 16-bit and 32-bit integer gray is scaled by 1/65535; float gray ('F') is taken
  as [0, 1] if it fits there, or as 8- or 16-bit counts stored as floats (whole
  numbers up to 255 or 65535), and refused otherwise rather than guessed at
  (Pillow's own conversion would clip it at 255); Pillow reads 16-bit colour
  as 8 bits, so `load_picture` reads 16-bit RGB(A) PNG and TIFF files with pypng
  and tifffile instead;
* transparency (RGBA, LA, PA, or a palette / gray / RGB transparency colour) is
  either kept as a separate alpha channel (`load_picture`) or composited over
  white (`load_rgb8`), so that transparent regions are a known colour instead of
  whatever RGB was stored under alpha 0.

`load_picture` keeps full precision (float32 in [0, 1]) and alpha, for
colorizing; `load_rgb8` gives uint8 RGB, for training and evaluation batches.
Both come from the same decoder, so `load_rgb8(x)` is `round(255 *
load_picture(x).rgb)` wherever the image has no alpha and is not 16-bit colour
(which Pillow narrows by dropping the low byte: at most one level apart).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import io
import os
import uuid
import warnings
from typing import Any, BinaryIO, Callable, Iterable, Sequence

import numpy as np
import png
from PIL import ExifTags
from PIL import Image
from PIL import ImageCms
from PIL import ImageOps

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.webp', '.bmp', '.tif', '.tiff',
                    '.gif')

# An image is grayscale when the mean over the pixels of a <= 32 px thumbnail
# of max(R, G, B) - min(R, G, B) is below this (0..255 scale). That leaves room
# for JPEG chroma noise in gray photos saved as RGB (spread < 1), while colour
# photos sit well above it: of the 3,110 shared training photos the six below
# it are plain black or white crops (spread <= 0.7), the next one is at 3.2.
GRAY_TOLERANCE = 2.0
THUMB_SIZE = 32

_DEEP_GRAY_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F')
_ALPHA_MODES = ('RGBA', 'LA', 'PA', 'RGBa', 'La')

Source = str | os.PathLike | bytes | bytearray | memoryview
_BYTES = (bytes, bytearray, memoryview)


class UnreadableImage(ValueError):
  """A file or buffer could not be read as an image; the message says which and why."""


# ----------------------------------------------------------------------------
# Listing.


def list_images(root: str | os.PathLike, skip: str | None = None,
                unreadable: list[tuple[str, str]] | None = None) -> list[str]:
  """Image files under `root` (recursively, following links), sorted.

  Args:
    root: a folder.
    skip: the real path of a folder to leave out (e.g. an output folder inside
      the inputs), or None.
    unreadable: where to add (folder, reason) for each folder that cannot be listed
      (no permission, say); None: such a folder raises OSError, naming it.

  Returns:
    Paths `os.path.join(root, ...)` of the files whose names end in one of
    `IMAGE_EXTENSIONS` (any case); hidden files and folders (name starting with
    '.') are left out. A folder reached twice through links (a link to itself or
    to a folder above it) is listed once, at the first path the walk reaches.
  """
  root = os.fspath(root)
  found = []

  def cannot_list(error: OSError) -> None:   # os.walk would skip the folder without a word
    reason = error.strerror or str(error)
    if unreadable is None:
      raise OSError(error.errno, f'cannot list the folder {error.filename}: {reason}')
    unreadable.append((os.fspath(error.filename), f'cannot list this folder: {reason}'))

  # Following links, a link to a folder above it would be walked without end.
  visited = {os.path.realpath(root)}

  def keep(dirpath: str, name: str) -> bool:
    real = os.path.realpath(os.path.join(dirpath, name))
    if name.startswith('.') or real == skip or real in visited:
      return False
    visited.add(real)
    return True

  for dirpath, dirnames, filenames in os.walk(root, onerror=cannot_list, followlinks=True):
    dirnames[:] = [d for d in sorted(dirnames) if keep(dirpath, d)]
    found.extend(os.path.join(dirpath, name) for name in filenames
                 if not name.startswith('.') and name.lower().endswith(IMAGE_EXTENSIONS))
  return sorted(found)


# ----------------------------------------------------------------------------
# Decoding.


@dataclasses.dataclass
class Picture:
  """One decoded image, as displayed.

  Attributes:
    rgb: float32 [H, W, 3] in [0, 1], sRGB (gray inputs replicated).
    alpha: uint8 [H, W] for images with transparency (uint16 for 16-bit colour
      files; when built from an array, its alpha as given: uint8, uint16 or
      float), else None.
    bit_depth: 16 for 16-bit colour files and 16-bit, 32-bit integer and float
      gray ones (their precision is worth keeping in what is written from them,
      see `save_png`), else 8.
    dpi: the file's resolution (x, y) in dots per inch if it records one, else None
      (a scan's print size, worth writing into what is made from it).
    frames: how many frames or pages the file holds (an animated GIF, a multi-page
      TIFF); `rgb` is the first.
  """
  rgb: np.ndarray
  alpha: np.ndarray | None = None
  bit_depth: int = 8
  dpi: tuple[float, float] | None = None
  frames: int = 1


def _dpi(img: Image.Image) -> tuple[float, float] | None:
  """The (x, y) dots per inch Pillow read from the file (JPEG, PNG, TIFF), if plausible."""
  try:
    x, y = (float(v) for v in img.info['dpi'])
  except (KeyError, TypeError, ValueError, ZeroDivisionError):
    return None
  # JFIF's aspect-ratio-only units and broken files give 0, 1 or absurd values.
  return (x, y) if all(1 < v < 1e6 for v in (x, y)) else None


def _upright_dpi(img: Image.Image) -> tuple[float, float] | None:
  """`_dpi` of the image as displayed: a file turned by 90 degrees (EXIF orientation 5-8)
  has its x and y resolutions swapped too."""
  dpi = _dpi(img)
  return (dpi[1], dpi[0]) if dpi is not None and exif_orientation(img) in (5, 6, 7, 8) else dpi


def _unpremultiplied(img: Image.Image) -> Image.Image:
  # Pillow converts premultiplied 'La' / 'RGBa' only to their plain-alpha modes.
  return img.convert(img.mode[:-1] + 'A') if img.mode in ('La', 'RGBa') else img


def has_alpha(img: Image.Image) -> bool:
  """Whether a Pillow image has transparency (an alpha band or a transparent colour)."""
  return img.mode in _ALPHA_MODES or ('transparency' in img.info and
                                      img.mode in ('P', 'L', 'RGB') + _DEEP_GRAY_MODES)


def _transparent_value_mask(img: Image.Image) -> np.ndarray | None:
  """uint8 alpha [H, W] of a deep gray image with a transparent value (PNG tRNS), else None."""
  value = img.info.get('transparency') if img.mode in _DEEP_GRAY_MODES else None
  if not isinstance(value, int):
    return None
  return np.where(np.asarray(img) == value, 0, 255).astype(np.uint8)


def _deep_gray(img: Image.Image) -> tuple[np.ndarray, int]:
  """A 16/32-bit integer or float gray image -> (float32 [H, W] in [0, 1] at full
  precision, the bit depth worth writing it back at: 8 or 16).

  16-bit values are on a 0..65535 scale, 32-bit integer ('I') values on 0..255 if
  none exceeds 255 (Pillow's convert('I') of an 8-bit image: 8 bits deep), on
  0..65535 if none exceeds that, and otherwise refused (ValueError). Float values are
  on 0..1 if they all lie there; whole numbers up to 255 or 65535 are 8- or 16-bit
  counts stored as floats; anything else
  (values a little over 1, negative ones, fractions above 1) has no scale one can
  tell, and a wrong guess would turn the photo black or white: ValueError.
  """
  arr = np.asarray(img, dtype=np.float64)
  if img.mode == 'I' and arr.size and 0 <= arr.min() and arr.max() <= 255:
    return (arr / 255.0).astype(np.float32), 8
  if img.mode == 'I' and arr.size and not 0 <= arr.min() <= arr.max() <= 65535:
    # Wider (or signed) 32-bit counts: Pillow wraps unsigned ones above 2^31 negative.
    raise ValueError(f'32-bit integer pixel values in [{arr.min():.0f}, {arr.max():.0f}]: '
                     'not 8- or 16-bit counts, so their scale is unknown; save the scan as '
                     'a 16-bit integer image, or as float scaled to 0..1')
  if img.mode != 'F':
    return np.clip(arr / 65535.0, 0.0, 1.0).astype(np.float32), 16
  if not np.isfinite(arr).all():
    raise ValueError(f'{np.count_nonzero(~np.isfinite(arr))} pixels are NaN or infinite')
  lo, hi = (arr.min(), arr.max()) if arr.size else (0.0, 0.0)
  if lo >= 0 and hi <= 1:
    return arr.astype(np.float32), 16
  if lo >= 0 and hi <= 65535 and np.array_equal(arr, np.round(arr)):
    scale = 255.0 if hi <= 255 else 65535.0
    return (arr / scale).astype(np.float32), 8 if scale == 255 else 16
  raise ValueError(f'float pixel values in [{lo:.6g}, {hi:.6g}]: neither 0..1 nor whole '
                   '8- or 16-bit counts, so their scale is unknown; save the scan as a 16-bit '
                   'integer image, or as float scaled to 0..1')


def _gray_to_rgb8(gray: np.ndarray) -> np.ndarray:
  """float [H, W] in [0, 1] -> uint8 [H, W, 3], rounded."""
  gray8 = np.clip(np.round(gray.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
  return np.repeat(gray8[..., None], 3, axis=-1)


def to_rgb8_image(img: Image.Image) -> Image.Image:
  """Any Pillow image (as stored, no EXIF rotation) as an 8-bit 'RGB' image.

  Deep gray is scaled as in `picture_from_pil` and rounded; transparency is
  composited over white.
  """
  img = _unpremultiplied(img)
  if img.mode in _DEEP_GRAY_MODES:
    rgb = _gray_to_rgb8(_deep_gray(img)[0])
    alpha = _transparent_value_mask(img)
    if alpha is not None:
      rgb[alpha == 0] = 255
    return Image.fromarray(rgb)
  if has_alpha(img):
    rgba = img.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert('RGB')
  return img.convert('RGB')


# Modes LittleCMS converts from here, and what each becomes in sRGB.
_ICC_OUTPUT_MODES = {'L': 'RGB', 'RGB': 'RGB', 'CMYK': 'RGB', 'RGBA': 'RGBA', 'LA': 'RGBA'}


def _where(img: Image.Image) -> str:
  """'<file name>: ' of an image opened from a file (to start its warnings with), else ''."""
  return f'{img.filename}: ' if getattr(img, 'filename', '') else ''


def _to_srgb(img: Image.Image, where: str = '') -> Image.Image:
  """`img` converted from its embedded ICC profile to sRGB (8-bit modes), else as it is;
  warnings start with `where` (the file's name and ': ', or '').

  A scan saved with another profile (Adobe RGB, a linear or 'Dot Gain' gray, a
  press CMYK) holds numbers that mean other colours and tones than the same numbers
  in sRGB, which is what the lightness is computed in: read as sRGB, a gamma-1.0
  gray scan's mid-gray came out 22 L units too dark. Profiles that are sRGB already
  are left alone; a profile LittleCMS cannot read, and one on a 16-bit or float
  image (which it cannot convert here), are ignored with a warning.
  """
  icc = img.info.get('icc_profile')
  if not icc:
    return img
  try:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    name = ImageCms.getProfileDescription(source).strip()
  except (OSError, ImageCms.PyCMSError) as e:
    warnings.warn(f'{where}ignoring an unreadable ICC profile ({e}); pixels taken as sRGB')
    return img
  if img.mode in ('P', 'PA', '1'):   # the profile describes the palette's colours (or gray)
    img = img.convert('L' if img.mode == '1' else 'RGBA' if has_alpha(img) else 'RGB')
  if img.mode in ('L', 'RGB', 'RGBA', 'LA') and _means_srgb(source, img.mode):
    return img   # sRGB already (by what it does, not its name: 'Linear sRGB' is none)
  if img.mode not in _ICC_OUTPUT_MODES:
    warnings.warn(f'{where}the ICC profile {name!r} of a {img.mode} image is not applied '
                  '(LittleCMS converts 8-bit images only here); pixels taken as sRGB')
    return img
  if img.mode == 'LA':   # no LittleCMS type: convert the gray, keep the alpha as it is
    rgb = _to_srgb_via(img.getchannel('L'), source, 'RGB', where)
    rgb.putalpha(img.getchannel('A'))
    return rgb
  return _to_srgb_via(img, source, _ICC_OUTPUT_MODES[img.mode], where)


def _means_srgb(source: ImageCms.ImageCmsProfile, mode: str) -> bool:
  """Whether converting `mode` pixels from `source` to sRGB changes no probe colour by
  more than one level (then the conversion, and its rounding, is skipped)."""
  levels = np.arange(0, 256, 17, dtype=np.uint8)
  if mode in ('L', 'LA'):
    probe = Image.fromarray(levels[None], 'L')
    want = np.repeat(levels[None, :, None], 3, axis=-1)
  else:
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing='ij'), -1).reshape(1, -1, 3)
    probe, want = Image.fromarray(grid, 'RGB'), grid
  try:
    got = np.asarray(ImageCms.profileToProfile(probe, source, _SRGB_PROFILE, outputMode='RGB'))
  except ImageCms.PyCMSError:
    return False
  return int(np.abs(got.astype(int) - want.astype(int)).max()) <= 1


def _to_srgb_via(img: Image.Image, source: ImageCms.ImageCmsProfile, mode: str,
                 where: str = '') -> Image.Image:
  intent = ImageCms.getDefaultIntent(source)
  try:
    if img.mode == 'L':
      # Gray (most black-and-white scans) through an exact 256-entry table: LittleCMS's
      # optimised 8-bit transform is up to 4.5 L off in a linear scan's deepest shadows,
      # and its exact one 10x slower per pixel.
      ramp = Image.fromarray(np.arange(256, dtype=np.uint8)[None], 'L')
      table = np.asarray(ImageCms.profileToProfile(
          ramp, source, _SRGB_PROFILE, outputMode='RGB', renderingIntent=intent,
          flags=ImageCms.Flags.NOOPTIMIZE))[0]
      return Image.merge('RGB', [img.point(table[:, c].tolist()) for c in range(3)])
    return ImageCms.profileToProfile(img, source, _SRGB_PROFILE, outputMode=mode,
                                     renderingIntent=intent)
  except ImageCms.PyCMSError as e:   # a profile of another colour space than the pixels
    warnings.warn(f'{where}cannot apply the ICC profile ({e}); pixels taken as sRGB')
    return img


_SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB'))


def picture_from_pil(img: Image.Image) -> Picture:
  """Decodes a Pillow image of any mode, EXIF orientation applied, converted to sRGB from
  its ICC profile if it has one (`_to_srgb`).

  Args:
    img: an open Pillow image.

  Returns:
    The `Picture`: rgb float32 [H, W, 3] in [0, 1] (deep gray at full
    precision, bit_depth 16), alpha uint8 [H, W] kept separately, or None.

  Raises:
    Whatever Pillow raises for a broken image (OSError, SyntaxError, ...).
  """
  about = {'dpi': _upright_dpi(img), 'frames': getattr(img, 'n_frames', 1)}
  img = _to_srgb(_unpremultiplied(ImageOps.exif_transpose(img)), _where(img))
  if img.mode in _DEEP_GRAY_MODES:
    gray, bit_depth = _deep_gray(img)
    return Picture(np.repeat(gray[..., None], 3, axis=-1), _transparent_value_mask(img),
                   bit_depth=bit_depth, **about)
  if has_alpha(img):
    rgba = np.asarray(img.convert('RGBA'))
    return Picture(rgba[..., :3].astype(np.float32) / 255.0, rgba[..., 3].copy(), **about)
  return Picture(np.asarray(img.convert('RGB'), dtype=np.float32) / 255.0, **about)


def _name(source: Source) -> str:
  if isinstance(source, _BYTES):
    return f'<{memoryview(source).nbytes} bytes>'
  return os.fspath(source)


def _open(source: Source) -> Image.Image:
  return Image.open(io.BytesIO(source) if isinstance(source, _BYTES) else source)


def _decode(source: Source, decode: Callable[[Image.Image], Any],
            deep_colour: Callable[[Image.Image], Any] | None = None) -> Any:
  """Opens `source` (a path or encoded bytes) with Pillow and applies `decode`; with
  `deep_colour`, a 16-bit colour file it knows a reader for becomes
  `_deep_colour_picture` of what that reader reads instead.

  Raises:
    UnreadableImage: missing, not an image, truncated or otherwise broken.
  """
  try:
    with _open(source) as img:
      read = deep_colour(img) if deep_colour is not None else None
      if read is not None:
        # Before Pillow loads the pixels: its TIFF loader applies the orientation then
        # (and resets the tag), so size and orientation must be the file's as stored.
        try:
          return _deep_colour_picture(img, read(source))
        except Exception as e:  # pylint: disable=broad-except
          # A layout the reader does not know: Pillow's 8 bits are still right.
          warnings.warn(f'{_name(source)}: read at 8 bits ({type(e).__name__}: {e})')
      img.load()
      return decode(img)
  except Exception as e:  # pylint: disable=broad-except
    # Pillow reports broken files with many exception types (OSError,
    # SyntaxError, ValueError, DecompressionBombError, ...): all mean "unreadable".
    raise UnreadableImage(f'{_name(source)}: {type(e).__name__}: {e}') from e


def _deep_colour_reader(img: Image.Image) -> Callable[[Source], np.ndarray] | None:
  """For an opened, not yet loaded 16-bit RGB / RGBA PNG or TIFF: a function reading its
  pixels as uint16 [H, W, 3 | 4] at full precision (Pillow would give 8 bits); else None."""
  if img.mode not in ('RGB', 'RGBA'):
    return None
  if img.format == 'PNG' and img.tile and ';16' in str(img.tile[0][3]):
    def read(source):
      # read(), not asDirect(): that one rescales to the significant bits an sBIT chunk
      # records (12-bit scans came out 1/16 as bright) and adds tRNS's alpha itself.
      with (io.BytesIO(source) if isinstance(source, _BYTES) else open(source, 'rb')) as f:
        width, height, rows, info = png.Reader(file=f).read()
        pixels = np.vstack([np.asarray(row, np.uint16) for row in rows]).reshape(
            height, width, info['planes'])
      if info.get('transparent') is not None:   # one colour (tRNS) is transparent
        clear = np.all(pixels == np.asarray(info['transparent'], np.uint16), axis=-1)
        pixels = np.dstack([pixels, np.where(clear, 0, 65535).astype(np.uint16)])
      return pixels
    return read
  bits = getattr(img, 'tag_v2', {}).get(258) if img.format == 'TIFF' else None
  if isinstance(bits, tuple) and set(bits) == {16}:   # BitsPerSample, one per channel
    def read(source):
      import tifffile  # pylint: disable=g-import-not-at-top
      with tifffile.TiffFile(io.BytesIO(source) if isinstance(source, _BYTES)
                             else os.fspath(source)) as tiff:
        page = tiff.pages[0]
        pixels = page.asarray()
        if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
          pixels = np.moveaxis(pixels, 0, -1)
      return pixels
    return read
  return None


def _deep_colour_picture(img: Image.Image, pixels: np.ndarray) -> Picture:
  """The `Picture` of 16-bit colour `pixels` [H, W, 3 | 4] of `img` (Pillow's header of
  the same file: size, EXIF orientation, dpi, frames)."""
  # As stored: Pillow's TIFF header already swaps the size of a file turned by 90 degrees.
  stored = ((img.tag_v2.get(257), img.tag_v2.get(256)) if img.format == 'TIFF'
            else (img.height, img.width))
  # A transparent colour (tRNS) of an RGB image comes as a fourth plane.
  planes = len(img.mode) + ('transparency' in img.info and img.mode == 'RGB')
  if pixels.dtype != np.uint16 or pixels.shape[:2] != stored or pixels.shape[-1] != planes:
    raise ValueError(f'16-bit pixels of shape {pixels.shape} ({pixels.dtype}) for a '
                     f'{stored[1]}x{stored[0]} {img.mode} image')
  method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}.get(exif_orientation(img))
  if method is not None:   # as ImageOps.exif_transpose would, plane by plane
    pixels = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c]))
                                  .transpose(method)) for c in range(pixels.shape[-1])], -1)
  alpha = pixels[..., 3].copy() if pixels.shape[-1] == 4 else None
  if img.info.get('icc_profile'):
    warnings.warn(f'{_where(img)}the ICC profile of a 16-bit colour image is not applied '
                  '(LittleCMS converts 8-bit images only here); pixels taken as sRGB')
  return Picture(pixels[..., :3].astype(np.float32) / 65535.0, alpha, bit_depth=16,
                 dpi=_upright_dpi(img), frames=getattr(img, 'n_frames', 1))


def load_picture(source: Source) -> Picture:
  """Reads an image file (or its bytes) as it is displayed, see `picture_from_pil`.

  Args:
    source: a path, or the bytes of an image file (any format Pillow reads).

  Returns:
    The `Picture`: rgb float32 [H, W, 3] in [0, 1], alpha uint8 [H, W] or None.

  Raises:
    UnreadableImage: missing, not an image, truncated, empty or otherwise broken.
  """
  picture = _decode(source, picture_from_pil, _deep_colour_reader)
  if min(picture.rgb.shape[:2]) < 1:
    raise UnreadableImage(
        f'{_name(source)}: empty image ({picture.rgb.shape[1]}x{picture.rgb.shape[0]})')
  return picture


def load_rgb8(source: Source) -> np.ndarray:
  """Reads an image file (or its bytes) as 8-bit RGB, as it is displayed.

  Args:
    source: a path, or the bytes of an image file (any format Pillow reads).

  Returns:
    rgb uint8 [H, W, 3]: EXIF orientation applied, transparency composited over
    white, deep gray rounded to 8 bits.

  Raises:
    UnreadableImage: missing, not an image, truncated or otherwise broken.
  """
  return _decode(source, lambda img: np.asarray(
      to_rgb8_image(ImageOps.exif_transpose(img)), dtype=np.uint8))


def exif_orientation(img: Image.Image) -> int:
  """The EXIF orientation tag of an open image (1..8; 1, upright, when absent or unreadable)."""
  try:
    return int(img.getexif().get(ExifTags.Base.Orientation, 1))
  except Exception:  # pylint: disable=broad-except
    # A malformed EXIF block must not reject an otherwise readable image.
    return 1


# ----------------------------------------------------------------------------
# Grayscale detection.


def chroma_spread(rgb: np.ndarray) -> float:
  """Mean over pixels of max(R,G,B) - min(R,G,B); rgb uint8 [H, W, 3] -> [0, 255]."""
  rgb = np.asarray(rgb, dtype=np.int16)
  return float((rgb.max(axis=-1) - rgb.min(axis=-1)).mean()) if rgb.size else 0.0


def thumbnail(img: Image.Image, size: int = THUMB_SIZE) -> np.ndarray:
  """A small 8-bit copy of an open image, for cheap checks.

  Args:
    img: a Pillow image of any mode (as stored: orientation does not matter here).
    size: the longest side of the result.

  Returns:
    rgb uint8 [h, w, 3] with max(h, w) <= size (bilinear; transparency over white).
  """
  thumb = to_rgb8_image(img)
  thumb.thumbnail((size, size), Image.Resampling.BILINEAR)
  return np.asarray(thumb, dtype=np.uint8)


def is_grayscale(thumb: np.ndarray) -> bool:
  """Whether a `thumbnail` (rgb uint8 [h, w, 3]) has no colour to learn or compare with."""
  return chroma_spread(thumb) < GRAY_TOLERANCE


def check(source: Source,
          inspect: Callable[[Image.Image], Any] | None = None) -> tuple[str, Any]:
  """Validates one image file cheaply and tells whether it has colour.

  JPEGs are decoded at up to 1/8 scale in the DCT domain: all the entropy-coded
  data is still read, so truncation is caught, but the rest costs much less.

  Args:
    source: a path, or the bytes of an image file.
    inspect: called with the opened, loaded image (e.g. to look at its format
      and mode); its result is returned for readable images.

  Returns:
    (status, detail): status 'ok', 'grayscale' or 'corrupt'; detail is what
    `inspect` returned (None without it) or, for 'corrupt', the reason.
  """
  try:
    with _open(source) as img:
      if img.format == 'JPEG':
        img.draft(img.mode if img.mode in ('RGB', 'L') else None, (THUMB_SIZE, THUMB_SIZE))
      img.load()
      detail = inspect(img) if inspect is not None else None
      thumb = thumbnail(img)
  except Exception as e:  # pylint: disable=broad-except
    # Pillow signals bad files with many exception types (OSError, SyntaxError,
    # ValueError, DecompressionBombError, ...): all mean "skip".
    return 'corrupt', f'{_name(source)}: {type(e).__name__}: {e}'
  if min(thumb.shape[:2]) < 1:
    return 'corrupt', f'{_name(source)}: empty image'
  return ('grayscale' if is_grayscale(thumb) else 'ok'), detail


# ----------------------------------------------------------------------------
# Writing.


def to_uint8(x: np.ndarray) -> np.ndarray:
  """Float in [0, 1] -> uint8, rounded and clipped; uint8 passes through unchanged."""
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return x
  return np.clip(np.rint(x.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


# zlib level; Pillow's default. Level 1 encoded a smooth 12 MP photo 3.5x as fast (3.2 -> 0.9 s)
# into a file 40-60% larger.
PNG_COMPRESS_LEVEL = 6
SOFTWARE = 'colorize_jax'   # the 'Software' text of every colorization (`is_colorized_output`)
MAX_NAME_BYTES = 255   # a file name's limit on Linux, macOS and Windows file systems


def io_threads() -> int:
  """Threads for decoding or encoding image files: Pillow releases the GIL while it
  works, so one per CPU, at most 8."""
  return min(8, os.cpu_count() or 1)


def check_all(sources: Sequence[Source],
              inspect: Callable[[Image.Image], Any] | None = None) -> list[tuple[str, Any]]:
  """`check` of every source, in `io_threads()` threads; results in the sources' order."""
  with concurrent.futures.ThreadPoolExecutor(io_threads()) as pool:
    return list(pool.map(functools.partial(check, inspect=inspect), sources))


def check_png_compress_level(level: int) -> None:
  """Raises ValueError unless `level` is a zlib compression level, 0..9."""
  if level not in range(10):
    raise ValueError(f'PNG compression level must be 0..9, got {level!r}')


def to_uint16(x: np.ndarray) -> np.ndarray:
  """Float in [0, 1] -> uint16, rounded and clipped; uint8 is scaled exactly (x 257)."""
  x = np.asarray(x)
  if x.dtype == np.uint16:
    return x
  if x.dtype == np.uint8:
    return x.astype(np.uint16) * 257
  return np.clip(np.rint(x.astype(np.float64) * 65535.0), 0, 65535).astype(np.uint16)


SOURCE_KEY = 'colorize_jax source'   # PNG text: which photo a colorization was made from
PIXELS_KEY = 'colorize_jax pixels'   # PNG text: a digest of the pixel data as written


def source_id(path: str | os.PathLike) -> str:
  """16 hex digits naming the file `path` (its real path), as colorizations record it."""
  return hashlib.sha256(os.fsencode(os.path.realpath(path))).hexdigest()[:16]


def colorized_source(path: str | os.PathLike) -> str | None:
  """The `source_id` recorded in a PNG colorize wrote ('' if it recorded none), or None
  if `path` is no such PNG (its tEXt 'Software' is not `SOFTWARE`): a photo of the
  user's, say."""
  if not os.fspath(path).lower().endswith('.png'):
    return None
  try:
    with Image.open(path) as img:   # reads the chunks before the pixels only
      if img.format != 'PNG' or img.info.get('Software') != SOFTWARE:
        return None
      return str(img.info.get(SOURCE_KEY, ''))
  except Exception:  # pylint: disable=broad-except
    return None


def is_colorized_output(path: str | os.PathLike) -> bool:
  """Whether `path` is a PNG that `save_png(..., software=SOFTWARE)` wrote: a
  colorization, not a photo of the user's."""
  return colorized_source(path) is not None


def _pixel_digest(chunks: Iterable[tuple[bytes, bytes]]) -> str:
  """16 hex digits of the SHA-256 of a PNG's (type, data) chunks' IDAT data."""
  digest = hashlib.sha256()
  for kind, data in chunks:
    if kind == b'IDAT':
      digest.update(data)
  return digest.hexdigest()[:16]


def was_edited(path: str | os.PathLike) -> bool:
  """Whether `path`, a colorization (`colorized_source` is not None), holds other pixels
  than colorize wrote (an editor that keeps PNG text kept the mark). False for one that
  recorded no digest (earlier versions) and for a damaged file (it cannot be read to
  its end): only a whole file that differs is an edit."""
  with Image.open(path) as img:
    recorded = img.info.get(PIXELS_KEY)
  if recorded is None:
    return False
  try:
    return _pixel_digest(png.Reader(filename=os.fspath(path)).chunks()) != recorded
  except (png.Error, OSError, EOFError, ValueError):
    return False


def _write_png_with_text(f: BinaryIO, encoded: bytes, text: dict[str, str]) -> None:
  """Writes a PNG file's bytes to `f` with tEXt chunks key=value, and `PIXELS_KEY` = the
  digest of its pixel data, inserted before its pixel data."""
  chunks = list(png.Reader(bytes=encoded).chunks())
  text = {**text, PIXELS_KEY: _pixel_digest(chunks)}
  first_idat = next(i for i, (kind, _) in enumerate(chunks) if kind == b'IDAT')
  chunks[first_idat:first_idat] = [
      (b'tEXt', key.encode('latin-1') + b'\0' + value.encode('latin-1'))
      for key, value in text.items()]
  png.write_chunks(f, chunks)


def save_png(rgb: np.ndarray, path: str | os.PathLike, alpha: np.ndarray | None = None,
             compress_level: int = PNG_COMPRESS_LEVEL, bit_depth: int = 8,
             dpi: tuple[float, float] | None = None, software: str | None = None,
             source: str | None = None) -> None:
  """Writes an image as PNG, creating its folder; readers never see half a file.

  The PNG is written to a hidden temporary file in the same folder and renamed
  over `path` (os.replace: atomic, replaces an existing file).

  Args:
    rgb: uint8 [H, W, 3], or float [H, W, 3] in [0, 1].
    path: the destination.
    alpha: optional [H, W]: uint8, uint16 or float in [0, 1] (scaled to bit_depth).
    compress_level: zlib level 0 (none, fastest) to 9 (smallest); the pixels are
      the same at every level.
    bit_depth: 8, or 16 (48-bit RGB / 64-bit RGBA, written with pypng: Pillow writes
      no 16-bit colour PNGs), e.g. for what is colorized from a 16-bit gray scan.
    dpi: (x, y) dots per inch to record (PNG's pHYs chunk, in whole dots per metre),
      e.g. the scan's `Picture.dpi`; None records none.
    software: recorded as the PNG's 'Software' text (`SOFTWARE` marks a colorization,
      see `is_colorized_output`), with a digest of the pixel data (`was_edited`); None
      records neither.
    source: with `software`, the `source_id` of the photo it was made from (recorded as
      `SOURCE_KEY` text, see `colorized_source`).

  Raises:
    ValueError: compress_level outside 0..9, bit_depth not 8 or 16, rgb not
      [H, W, 3] or alpha not [H, W], or NaN / infinite values (which would be
      written as some colour without a word).
  """
  check_png_compress_level(compress_level)
  if bit_depth not in (8, 16):
    raise ValueError(f'PNG bit depth must be 8 or 16, got {bit_depth!r}')
  text = {} if software is None else {'Software': software, **(
      {} if source is None else {SOURCE_KEY: source})}
  rgb = np.asarray(rgb)
  if rgb.ndim != 3 or rgb.shape[-1] != 3 or (alpha is not None and
                                             np.shape(alpha) != rgb.shape[:2]):
    raise ValueError(f'save_png takes rgb [H, W, 3] and alpha [H, W] or None, got rgb '
                     f'{rgb.shape} and alpha {None if alpha is None else np.shape(alpha)}')
  for name, values in (('rgb', rgb), ('alpha', alpha)):
    if values is not None and np.issubdtype(np.asarray(values).dtype, np.floating) and (
        not np.isfinite(values).all()):
      raise ValueError(f'{name} has {np.count_nonzero(~np.isfinite(values))} NaN or '
                       'infinite values')
  if bit_depth == 16:
    pixels = to_uint16(rgb) if alpha is None else np.dstack([to_uint16(rgb), to_uint16(alpha)])
    height, width, channels = pixels.shape
    per_metre = {} if dpi is None else dict(
        x_pixels_per_unit=round(dpi[0] / 0.0254), y_pixels_per_unit=round(dpi[1] / 0.0254),
        unit_is_meter=True)
    writer = png.Writer(width, height, greyscale=False, alpha=channels == 4, bitdepth=16,
                        compression=compress_level, **per_metre)

    write_pixels = lambda f: writer.write_array(f, pixels.reshape(-1))  # noqa: E731
  else:
    rgb = to_uint8(rgb)
    if alpha is not None:
      if alpha.dtype == np.uint16:
        alpha = ((alpha.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
      else:
        alpha = to_uint8(alpha)
      image = Image.fromarray(np.dstack([rgb, alpha]))
    else:
      image = Image.fromarray(rgb)
    options = {} if dpi is None else {'dpi': dpi}
    write_pixels = lambda f: image.save(f, format='PNG',  # noqa: E731
                                        compress_level=compress_level, **options)

  def encode(f):
    if not text:
      write_pixels(f)
      return
    encoded = io.BytesIO()   # the text goes in once the pixel data it digests is encoded
    write_pixels(encoded)
    _write_png_with_text(f, encoded.getvalue(), text)
  path = os.fspath(path)
  folder, name = os.path.split(path)
  os.makedirs(folder or '.', exist_ok=True)
  # A unique name: concurrent writers of the same path never share a temporary file. The
  # name is cut so that it stays within the 255-byte limit wherever `name` fits.
  stem = os.fsdecode(os.fsencode(name)[:MAX_NAME_BYTES - 18])
  tmp = os.path.join(folder, f'.{stem}.{uuid.uuid4().hex[:12]}.tmp')
  try:
    with open(tmp, 'xb') as f:
      encode(f)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise

