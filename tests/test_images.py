"""Tests of image file I/O: listing, decoding any mode, grayscale checks, atomic PNG writing."""

import io
import os
import subprocess
import sys
import warnings

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import PngImagePlugin
import pytest

from colorize_jax import images
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _noise(seed, h=24, w=40):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def _png_bytes(array, **kwargs):
  buf = io.BytesIO()
  Image.fromarray(array, **kwargs).save(buf, 'PNG')
  return buf.getvalue()


def test_importing_images_loads_neither_tensorflow_nor_jax():
  """Colorizing reads files through this module; importing it must not cost TensorFlow's import."""
  code = ('import sys, colorize_jax.images; '
          'print(sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "jax"}))')
  out = subprocess.run([sys.executable, '-c', code], env=dict(os.environ, PYTHONPATH=REPO),
                       capture_output=True, text=True, timeout=120, check=True).stdout
  assert out.strip() == '[]'


def test_16bit_gray_is_scaled_instead_of_clipped():
  """16-bit gray decodes to round(v / 257) in uint8 and to v / 65535 at full precision."""
  values = np.array([[0, 257, 1000], [32768, 60000, 65535]], np.uint16)
  data = _png_bytes(values)
  want = np.round(values / 257).astype(np.uint8)
  np.testing.assert_array_equal(images.load_rgb8(data), np.repeat(want[..., None], 3, axis=-1))
  picture = images.load_picture(data)
  assert picture.alpha is None and picture.rgb.dtype == np.float32
  np.testing.assert_allclose(picture.rgb, np.repeat(values[..., None] / 65535.0, 3, axis=-1),
                             atol=1e-7)


def test_32bit_integer_gray_from_8_bits_keeps_its_brightness():
  """Pillow's convert('I') of an 8-bit image holds 0..255: read as such (it came out
  near black on the 16-bit scale); larger values keep the 16-bit scale."""
  gray = Image.fromarray(np.array([[0, 100, 255]], np.uint8))
  np.testing.assert_allclose(images.picture_from_pil(gray.convert('I')).rgb[0, :, 0],
                             [0, 100 / 255, 1], atol=1e-7)
  wide = Image.fromarray(np.array([[0, 1000, 65535]], np.int32), mode='I')
  np.testing.assert_allclose(images.picture_from_pil(wide).rgb[0, :, 0],
                             [0, 1000 / 65535, 1], atol=1e-7)


def _odd_files():
  """{name: encoded bytes} of one image of each awkward mode."""
  rgb = _noise(0)
  alpha = np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2])
  exif = Image.Exif()
  exif[0x0112] = 6
  files = {}
  for name, image, fmt, kwargs in (
      ('rgba', Image.fromarray(np.dstack([rgb, alpha.astype(np.uint8)])), 'PNG', {}),
      ('gray', Image.fromarray(rgb[..., 0]), 'PNG', {}),
      ('palette', Image.fromarray(rgb).quantize(16), 'PNG', {}),
      ('cmyk', Image.fromarray(rgb).convert('CMYK'), 'TIFF', {}),
      ('rotated', Image.fromarray(rgb), 'JPEG', {'exif': exif, 'quality': 95}),
      ('float', Image.fromarray(rgb[..., 1].astype(np.float32) / 255.0), 'TIFF', {})):
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    files[name] = buf.getvalue()
  return files


@pytest.mark.parametrize('name', ['rgba', 'gray', 'palette', 'cmyk', 'rotated', 'float'])
def test_uint8_and_full_precision_decoders_agree(name):
  """One decoder serves both: 8-bit RGB is the rounded float picture, alpha composited over white."""
  data = _odd_files()[name]
  rgb8 = images.load_rgb8(data)
  picture = images.load_picture(data)
  assert rgb8.dtype == np.uint8 and rgb8.shape == picture.rgb.shape
  if picture.alpha is None:
    np.testing.assert_array_equal(rgb8, np.round(picture.rgb.astype(np.float64) * 255))
  else:
    a = picture.alpha[..., None] / 255.0
    over_white = picture.rgb * a + (1.0 - a)
    assert np.abs(rgb8 - over_white * 255).max() <= 1.0
    assert name == 'rgba' and picture.alpha.min() == 0 and picture.alpha.max() == 255
  if name == 'rotated':   # displayed upright: stored [24, 40], shown [40, 24]
    assert rgb8.shape[:2] == (40, 24)


def test_unreadable_files_raise_a_clear_error(tmp_path):
  """Missing, garbage and truncated files raise UnreadableImage naming the file."""
  (tmp_path / 'garbage.jpg').write_bytes(b'not an image')
  (tmp_path / 'cut.png').write_bytes(_png_bytes(_noise(1, 64, 64))[:200])
  for name in ('garbage.jpg', 'cut.png', 'missing.png'):
    path = str(tmp_path / name)
    with pytest.raises(images.UnreadableImage, match=name):
      images.load_picture(path)
    with pytest.raises(images.UnreadableImage, match=name):
      images.load_rgb8(path)


def test_a_float_image_with_nan_pixels_is_unreadable_not_black(tmp_path):
  """One NaN in a 32-bit float TIFF would make its maximum NaN and silently rescale
  every pixel: the file is refused, naming the NaNs, by both decoders."""
  values = np.full((16, 16), 0.5, np.float32)
  values[2:4, 2:4] = np.nan
  path = str(tmp_path / 'nan.tif')
  Image.fromarray(values).save(path)   # float32: mode 'F'
  for load in (images.load_picture, images.load_rgb8):
    with pytest.raises(images.UnreadableImage, match='nan.tif.*4 pixels are NaN'):
      load(path)


def test_check_finds_corrupt_and_gray_files_and_runs_inspect():
  """check says 'ok' for colour, 'grayscale' for gray (also gray saved as RGB), 'corrupt' for bad."""
  gray = np.repeat(_noise(2)[..., :1], 3, axis=-1)
  assert images.check(_png_bytes(_noise(3)), inspect=lambda img: img.format) == ('ok', 'PNG')
  assert images.check(_png_bytes(gray))[0] == 'grayscale'
  assert images.check(_png_bytes(gray[..., 0]))[0] == 'grayscale'
  status, reason = images.check(b'\x89PNG garbage')
  assert status == 'corrupt' and 'bytes' in reason


def test_list_images_skips_hidden_non_images_and_the_skipped_folder(tmp_path):
  """Listing finds image extensions in any case, recursively and sorted, minus hidden entries and
  the folder to skip."""
  for rel in ('b.PNG', 'a.jpg', 'sub/c.tiff', 'sub/f.gif', 'notes.txt', '.hidden.png',
              '.cache/d.png', 'out/e.png'):
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')
  found = images.list_images(tmp_path, skip=os.path.realpath(tmp_path / 'out'))
  assert [os.path.relpath(p, tmp_path) for p in found] == [
      'a.jpg', 'b.PNG', os.path.join('sub', 'c.tiff'), os.path.join('sub', 'f.gif')]


def test_save_png_replaces_atomically_and_scales_alpha(tmp_path):
  """save_png creates folders, replaces an existing file, leaves no temporary file, keeps alpha."""
  path = tmp_path / 'new' / 'x.png'
  images.save_png(np.zeros((4, 5, 3), np.uint8), path)
  rgb = np.linspace(0, 1, 4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
  alpha = np.linspace(0, 65535, 20).reshape(4, 5).astype(np.uint16)
  images.save_png(rgb, path, alpha)
  assert os.listdir(path.parent) == ['x.png']
  with Image.open(path) as img:
    out = np.asarray(img)
  assert out.shape == (4, 5, 4)
  np.testing.assert_array_equal(out[..., :3], images.to_uint8(rgb))
  np.testing.assert_array_equal(out[..., 3], np.round(alpha / 257).astype(np.uint8))


def test_png_compression_level_changes_the_size_never_the_pixels(tmp_path):
  rgb = np.kron(np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8),
                np.ones((8, 8, 1), np.uint8))
  sizes = {}
  for level in (0, 9):
    path = tmp_path / f'{level}.png'
    images.save_png(rgb, path, compress_level=level)
    with Image.open(path) as img:
      np.testing.assert_array_equal(np.asarray(img), rgb)
    sizes[level] = path.stat().st_size
  assert sizes[0] > 2 * sizes[9]
  with pytest.raises(ValueError, match='0..9'):
    images.save_png(rgb, tmp_path / 'x.png', compress_level=10)
  assert not (tmp_path / 'x.png').exists()


@pytest.mark.parametrize('mode,values,depth', [
    ('I;16', np.array([[0, 300], [40000, 65535]]), 16),
    ('I', np.array([[0, 60000], [3, 9]]), 16),
    ('I', np.array([[0, 255], [3, 9]]), 8),     # Pillow's convert('I') of an 8-bit image
    ('F', np.array([[0.0, 0.5], [0.25, 1.0]]), 16),
    ('L', np.array([[0, 255], [3, 9]]), 8),
])
def test_picture_bit_depth_says_whether_the_file_had_more_than_8_bits(mode, values, depth):
  """Deep gray files (16/32-bit integer, float) decode with bit_depth 16, 8-bit data
  (including 'I' that holds 0..255) with 8, so that what is written from them keeps or
  does not invent precision."""
  dtype = {'I;16': np.uint16, 'I': np.int32, 'F': np.float32, 'L': np.uint8}[mode]
  img = Image.fromarray(values.astype(dtype))
  assert img.mode == mode
  assert images.picture_from_pil(img).bit_depth == depth


def test_save_png_16_bit_keeps_every_value(tmp_path):
  """bit_depth=16 writes 48-bit RGB (64-bit with alpha) PNGs holding the float input rounded
  to 1/65535 and a uint16 alpha unchanged; other depths are refused."""
  import png  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  rgb = rng.random((5, 7, 3)).astype(np.float32)
  alpha = rng.integers(0, 65536, (5, 7)).astype(np.uint16)
  for name, a, planes in (('rgb.png', None, 3), ('rgba.png', alpha, 4)):
    images.save_png(rgb, tmp_path / name, a, bit_depth=16)
    w, h, rows, info = png.Reader(filename=str(tmp_path / name)).read_flat()
    got = np.asarray(rows).reshape(h, w, info['planes'])
    assert (info['bitdepth'], info['planes']) == (16, planes)
    np.testing.assert_array_equal(got[..., :3], np.rint(rgb.astype(np.float64) * 65535))
    if a is not None:
      np.testing.assert_array_equal(got[..., 3], alpha)
  assert sorted(os.listdir(tmp_path)) == ['rgb.png', 'rgba.png']   # no temporary left
  with pytest.raises(ValueError, match='bit depth'):
    images.save_png(rgb, tmp_path / 'x.png', bit_depth=12)


@pytest.mark.parametrize('bit_depth', [8, 16])
def test_a_colorization_edited_in_a_tool_that_keeps_its_text_is_told_from_it(tmp_path,
                                                                              bit_depth):
  """A marked PNG records its pixel data's digest: one whose pixels an editor changed while
  keeping the text (Pillow copies it) is `was_edited`; the file as written, a damaged
  (cut) one and one saved without a mark are not."""
  path = tmp_path / 'c.png'
  images.save_png(np.full((6, 5, 3), 0.4), path, bit_depth=bit_depth,
                  software=images.SOFTWARE, source='0123456789abcdef')
  assert images.colorized_source(path) == '0123456789abcdef'
  assert not images.was_edited(path)
  with Image.open(path) as img:
    text = dict(img.text)
    edited = img.convert('RGB')
  edited.putpixel((0, 0), (255, 0, 0))
  info = PngImagePlugin.PngInfo()
  for key, value in text.items():
    info.add_text(key, value)
  edited.save(tmp_path / 'e.png', pnginfo=info)
  assert images.colorized_source(tmp_path / 'e.png') == '0123456789abcdef'
  assert images.was_edited(tmp_path / 'e.png')
  (tmp_path / 'cut.png').write_bytes(path.read_bytes()[:-20])
  assert not images.was_edited(tmp_path / 'cut.png')
  images.save_png(np.full((6, 5, 3), 0.4), tmp_path / 'plain.png', bit_depth=bit_depth)
  assert images.colorized_source(tmp_path / 'plain.png') is None


@pytest.mark.parametrize('values,expected,depth', [
    (np.array([[0.0, 0.5], [0.25, 1.0]]), np.array([[0.0, 0.5], [0.25, 1.0]]), 16),
    (np.array([[0.0, 128.0], [3.0, 255.0]]), np.array([[0, 128], [3, 255]]) / 255.0, 8),
    (np.array([[0.0, 300.0], [3.0, 65535.0]]), np.array([[0, 300], [3, 65535]]) / 65535.0, 16),
])
def test_float_gray_files_are_read_on_the_scale_their_values_show(tmp_path, values, expected,
                                                                  depth):
  """A float TIFF holding 0..1, or whole 8- or 16-bit counts, decodes to those levels."""
  path = str(tmp_path / 'f.tif')
  Image.fromarray(values.astype(np.float32)).save(path)
  picture = images.load_picture(path)
  np.testing.assert_allclose(picture.rgb[..., 0], expected, atol=1e-6)
  assert picture.bit_depth == depth


@pytest.mark.parametrize('values', [
    np.array([[0.0, 0.5], [0.9, 1.05]]),     # a scan that overshoots 1 a little
    np.array([[-0.01, 0.5], [0.25, 1.0]]),
    np.array([[0.0, 0.5], [40.25, 255.0]]),
])
def test_float_gray_files_of_no_known_scale_are_refused_not_guessed(tmp_path, values):
  """Values a little over 1 were once read as 0..255 (a black photo), written without a
  word: a float file whose scale cannot be told is unreadable, saying why."""
  path = str(tmp_path / 'f.tif')
  Image.fromarray(values.astype(np.float32)).save(path)
  for load in (images.load_picture, images.load_rgb8):
    with pytest.raises(images.UnreadableImage, match='f.tif.*scale is unknown'):
      load(path)


def test_32_bit_integer_gray_beyond_16_bits_is_refused_not_wrapped(tmp_path):
  """A uint32 gray TIFF using its 32 bits (Pillow's mode 'I' wraps values above 2^31
  negative) came out as an inverted, clipped picture: it is unreadable, saying why;
  values within 16 bits still read on 0..65535."""
  import tifffile  # pylint: disable=g-import-not-at-top
  gray = np.array([[0, 100], [200, 255]], np.uint32)
  tifffile.imwrite(tmp_path / 'wide.tif', gray * 16843009)   # 0..2^32 - 1
  with pytest.raises(images.UnreadableImage, match='wide.tif.*scale is unknown'):
    images.load_picture(tmp_path / 'wide.tif')
  tifffile.imwrite(tmp_path / 'narrow.tif', gray * 257)
  np.testing.assert_allclose(images.load_picture(tmp_path / 'narrow.tif').rgb[..., 0],
                             gray / 255, atol=1e-6)


def test_every_jpeg_extension_is_listed(tmp_path):
  """Browsers save JPEGs as .jfif; .jpe is JPEG's too (both were skipped without a word)."""
  for name in ('a.JFIF', 'b.jpe', 'c.jpeg', 'notes.txt'):
    (tmp_path / name).write_bytes(b'')
  assert [os.path.basename(p) for p in images.list_images(tmp_path)] == [
      'a.JFIF', 'b.jpe', 'c.jpeg']


def test_a_folder_that_cannot_be_listed_is_an_error_or_reported(tmp_path, monkeypatch):
  """os.walk skips a folder it cannot list without a word (a colorize of an album
  with a locked subfolder did part of it and said 'done'): list_images raises, naming
  it, or reports it when asked to go on."""
  Image.new('RGB', (4, 4)).save(tmp_path / 'ok.png')
  (tmp_path / 'locked').mkdir()
  Image.new('RGB', (4, 4)).save(tmp_path / 'locked' / 'a.png')
  helpers.locked(monkeypatch, tmp_path / 'locked')
  with pytest.raises(PermissionError, match='cannot list the folder .*locked'):
    images.list_images(tmp_path)
  unreadable = []
  assert images.list_images(tmp_path, unreadable=unreadable) == [str(tmp_path / 'ok.png')]
  assert unreadable == [(str(tmp_path / 'locked'), 'cannot list this folder: Permission denied')]


def test_save_png_writes_names_up_to_the_file_system_limit(tmp_path):
  """Its temporary file's name stays within 255 bytes where the destination's does (a
  250-byte name once failed with 'File name too long'), multibyte names included."""
  for name in ('n' * 251 + '.png', 'é' * 125 + '.png'):
    images.save_png(np.zeros((2, 2, 3), np.uint8), tmp_path / name)
    assert (tmp_path / name).exists()
  assert sorted(os.listdir(tmp_path)) == sorted(['n' * 251 + '.png', 'é' * 125 + '.png'])


def test_save_png_refuses_nan_and_wrong_shapes_instead_of_writing_them(tmp_path):
  rgb = np.full((2, 2, 3), 0.5, np.float32)
  rgb[0, 0, 1] = np.nan
  with pytest.raises(ValueError, match='rgb has 1 NaN'):
    images.save_png(rgb, tmp_path / 'x.png')
  with pytest.raises(ValueError, match=r'rgb \[H, W, 3\]'):
    images.save_png(np.zeros((2, 2, 4), np.uint8), tmp_path / 'x.png')
  with pytest.raises(ValueError, match='alpha'):
    images.save_png(np.zeros((2, 2, 3), np.uint8), tmp_path / 'x.png', np.zeros((3, 2)))
  assert not os.listdir(tmp_path)


def test_encoded_images_may_come_as_any_bytes_like_object():
  encoded = _png_bytes(_noise(4))
  expected = images.load_rgb8(encoded)
  for source in (bytearray(encoded), memoryview(encoded)):
    np.testing.assert_array_equal(images.load_rgb8(source), expected)
  with pytest.raises(images.UnreadableImage, match='<7 bytes>'):
    images.load_picture(bytearray(b'garbage'))


def test_a_16_bit_gray_png_keeps_its_transparent_value_as_alpha():
  """A 16-bit gray PNG with a transparent value (tRNS) decodes with that value's pixels
  transparent (kept as alpha, or over white in 8-bit RGB), like 8-bit gray ones."""
  values = (np.arange(16).reshape(4, 4) * 4000).astype(np.uint16)
  buf = io.BytesIO()
  Image.fromarray(values).save(buf, 'PNG', transparency=8000)
  encoded = buf.getvalue()
  picture = images.load_picture(encoded)
  np.testing.assert_array_equal(picture.alpha, np.where(values == 8000, 0, 255))
  assert picture.bit_depth == 16
  rgb8 = images.load_rgb8(encoded)
  assert (rgb8[values == 8000] == 255).all()
  np.testing.assert_array_equal(rgb8[values != 8000][:, 0],
                                np.round(values[values != 8000] / 257))


def _rgb16(h=6, w=5, planes=3, seed=0):
  return np.random.default_rng(seed).integers(0, 65536, (h, w, planes)).astype(np.uint16)


def test_16_bit_colour_pngs_with_significant_bits_or_a_transparent_colour(tmp_path):
  """A 16-bit RGB PNG that records 12 significant bits (sBIT, as scanners write) reads on
  its 16-bit scale (it came out 1/16 as bright: almost black), and one with a transparent
  colour (tRNS) keeps its 16 bits and gets that colour as alpha (it fell back to 8 bits
  with a warning about its shape)."""
  import png  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  rgb8 = rng.integers(1, 256, (6, 5, 3)).astype(np.uint16)
  rgb8[0, 0] = 0
  path = tmp_path / 'sbit.png'
  with open(path, 'wb') as f:
    png.Writer(5, 6, greyscale=False, bitdepth=12).write_array(f, (rgb8 * 16).ravel())
  picture = images.load_picture(path)
  assert picture.bit_depth == 16
  np.testing.assert_allclose(picture.rgb, rgb8 * 16 / 4095, atol=1e-4)
  path = tmp_path / 'trns.png'
  with open(path, 'wb') as f:
    png.Writer(5, 6, greyscale=False, bitdepth=16, transparent=(0, 0, 0)).write_array(
        f, (rgb8 * 257).ravel())
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    picture = images.load_picture(path)
  assert picture.bit_depth == 16
  np.testing.assert_allclose(picture.rgb, rgb8 / 255, atol=1e-6)
  expected_alpha = np.full((6, 5), 65535)
  expected_alpha[0, 0] = 0
  np.testing.assert_array_equal(picture.alpha, expected_alpha)


def test_16_bit_colour_png_and_tiff_keep_their_precision(tmp_path):
  """Pillow reads 48-bit colour (a scanner's RGB of a B&W print) as 8 bits; load_picture
  reads 16-bit RGB and RGBA PNGs and TIFFs whole (bit_depth 16, alpha uint16), from a path
  or from bytes, and load_rgb8 still gives 8-bit RGB for training (one level at most
  from rounding)."""
  import png  # pylint: disable=g-import-not-at-top
  import tifffile  # pylint: disable=g-import-not-at-top
  rgb, rgba = _rgb16(), _rgb16(planes=4, seed=1)
  png.from_array(rgb.reshape(6, -1), 'RGB;16').save(str(tmp_path / 'rgb.png'))
  png.from_array(rgba.reshape(6, -1), 'RGBA;16').save(str(tmp_path / 'rgba.png'))
  tifffile.imwrite(tmp_path / 'rgb.tif', rgb, photometric='rgb')
  tifffile.imwrite(tmp_path / 'planar.tif', np.moveaxis(rgb, -1, 0), photometric='rgb',
                   planarconfig='separate')   # Pillow cannot read this layout at all
  for name, want in (('rgb.png', rgb), ('rgba.png', rgba), ('rgb.tif', rgb),
                     ('planar.tif', rgb)):
    for source in (tmp_path / name, (tmp_path / name).read_bytes()):
      with warnings.catch_warnings():
        warnings.simplefilter('error')   # no fallback to Pillow's 8 bits
        picture = images.load_picture(source)
      assert picture.bit_depth == 16, name
      np.testing.assert_array_equal(images.to_uint16(picture.rgb), want[..., :3])
      if want.shape[-1] == 4:
        np.testing.assert_array_equal(picture.alpha, want[..., 3])
  rgb8 = images.load_rgb8(tmp_path / 'rgb.tif')
  assert np.abs(rgb8.astype(int) - np.round(rgb / 257)).max() <= 1


def test_16_bit_colour_follows_exif_orientation_like_8_bit(tmp_path):
  """A turned 16-bit TIFF comes out upright as Pillow shows its 8-bit version (whose TIFF
  loader turns it on load and then resets the tag: read after, it said "upright")."""
  import tifffile  # pylint: disable=g-import-not-at-top
  rgb = _rgb16(6, 4)
  for orientation in (3, 6, 8):
    path = tmp_path / f'o{orientation}.tif'
    tifffile.imwrite(path, rgb, photometric='rgb',
                     extratags=[(274, 'H', 1, orientation, False)])
    with Image.open(path) as img:
      eight = np.asarray(ImageOps.exif_transpose(img))
    with warnings.catch_warnings():
      warnings.simplefilter('error')   # no fallback to Pillow's 8 bits
      picture = images.load_picture(path)
    assert picture.bit_depth == 16
    sixteen = images.to_uint16(picture.rgb)
    assert sixteen.shape == eight.shape, orientation
    assert np.abs(sixteen.astype(int) // 257 - eight.astype(int)).max() <= 1, orientation


# ----------------------------------------------------------------------------
# ICC profiles.


def _l_star(y):
  """CIE L* of relative luminance y in [0, 1] (white = 1)."""
  y = np.asarray(y, np.float64)
  f = np.where(y > (6 / 29) ** 3, np.cbrt(y), y / (3 * (6 / 29) ** 2) + 4 / 29)
  return 116 * f - 16


def _saved(img, fmt='PNG', **options):
  out = io.BytesIO()
  img.save(out, format=fmt, **options)
  return out.getvalue()


def test_icc_warnings_name_the_file(tmp_path):
  """In a batch, 'ignoring an unreadable ICC profile' said nothing of which photo."""
  path = tmp_path / 'scan.png'
  Image.new('RGB', (4, 4)).save(path, icc_profile=b'\0' * 200)
  with pytest.warns(UserWarning, match=r'scan\.png: ignoring an unreadable ICC profile'):
    images.load_picture(path)


def _lightness(picture):
  from colorize_jax import color  # pylint: disable=g-import-not-at-top
  return np.asarray(color.rgb_to_lab(picture.rgb))[..., 0]


def test_an_embedded_icc_profile_is_applied_before_the_lightness_is_taken():
  """A linear (gamma 1.0) gray scan and an Adobe RGB photo are read as the colours their
  profiles say, not as sRGB numbers: the lightness is the profile's (a linear scan's
  mid-gray read as sRGB was 22 L too dark), to 8-bit rounding, in PNG, JPEG and TIFF."""
  from tests import helpers  # pylint: disable=g-import-not-at-top
  levels = np.arange(16, 256, 16, dtype=np.uint8)
  gray = Image.fromarray(np.tile(levels, (4, 1)), 'L')
  linear = helpers.icc_profile('GRAY', 1.0, name='Gray gamma 1.0')
  want = _l_star(levels / 255.0)
  for fmt in ('PNG', 'JPEG', 'TIFF'):
    options = {'quality': 100} if fmt == 'JPEG' else {}
    got = _lightness(images.load_picture(_saved(gray, fmt, icc_profile=linear, **options)))
    assert np.abs(got[0] - want).max() < (1.0 if fmt == 'JPEG' else 0.7), fmt
  plain = _lightness(images.load_picture(_saved(gray)))[0]
  assert np.abs(plain - want).max() > 15   # read as sRGB: far off
  # Deepest shadows too (LittleCMS's optimised transform was up to 4.5 L off at 1..7).
  shadows = np.arange(1, 9, dtype=np.uint8)
  got = _lightness(images.load_picture(_saved(Image.fromarray(shadows[None], 'L'),
                                              icc_profile=linear)))[0]
  assert np.abs(got - _l_star(shadows / 255.0)).max() < 1.0
  # A profile is judged by what it does, not by its name: a 'Linear sRGB' one is applied.
  srgb_d50 = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
  linear_srgb = helpers.icc_profile('RGB', 1.0, srgb_d50, name='GIMP built-in Linear sRGB')
  got = _lightness(images.load_picture(_saved(gray.convert('RGB'), icc_profile=linear_srgb)))
  assert np.abs(got[0] - want).max() < 0.7

  rgb = np.array([[[128, 100, 90], [90, 120, 100], [200, 180, 150], [90, 90, 140]]], np.uint8)
  adobe = helpers.icc_profile('RGB', helpers.ADOBE_RGB_GAMMA, helpers.ADOBE_RGB_D50,
                              name='Adobe RGB (1998)')
  linear_rgb = (rgb / 255.0) ** helpers.ADOBE_RGB_GAMMA
  want = _l_star(linear_rgb @ np.array([p[1] for p in helpers.ADOBE_RGB_D50]))
  picture = images.load_picture(_saved(Image.fromarray(rgb), icc_profile=adobe))
  assert np.abs(_lightness(picture) - want).max() < 0.7
  rgba = np.dstack([rgb, np.array([[0, 77, 200, 255]], np.uint8)])
  picture = images.load_picture(_saved(Image.fromarray(rgba), icc_profile=adobe))
  np.testing.assert_array_equal(picture.alpha, rgba[..., 3])
  assert np.abs(_lightness(picture) - want).max() < 0.7


def test_srgb_damaged_and_unappliable_profiles_leave_the_pixels_as_they_are():
  """An sRGB profile changes nothing; a damaged profile and one on a 16-bit image (which
  LittleCMS cannot convert here) are warned about and the pixels read as sRGB."""
  from PIL import ImageCms  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), np.uint8)
  plain = images.load_picture(_saved(Image.fromarray(rgb))).rgb
  srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()
  np.testing.assert_array_equal(
      images.load_picture(_saved(Image.fromarray(rgb), icc_profile=srgb)).rgb, plain)
  with pytest.warns(UserWarning, match='unreadable ICC profile'):
    damaged = images.load_picture(_saved(Image.fromarray(rgb), icc_profile=b'\0' * 200))
  np.testing.assert_array_equal(damaged.rgb, plain)
  deep = Image.fromarray(np.full((4, 4), 30000, np.uint16))
  linear = helpers.icc_profile('GRAY', 1.0)
  with pytest.warns(UserWarning, match='not applied'):
    picture = images.load_picture(_saved(deep, 'TIFF', icc_profile=linear))
  assert picture.bit_depth == 16 and abs(picture.rgb[0, 0, 0] - 30000 / 65535) < 1e-6
