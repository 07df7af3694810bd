"""Tests of restoring a run and colorizing photos of any size, kind and mode."""

import decimal
import fractions
import io
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import types

import jax
import numpy as np
from PIL import Image
from PIL import PngImagePlugin
import pytest

from colorize_jax import checkpoints
from colorize_jax import cli
from colorize_jax import color
from colorize_jax import images
from colorize_jax import inference
from colorize_jax import steps
from experiments import default
from tests import helpers

IMAGE_SIZE = 32
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODERATE_STEP, VIVID_STEP = 1, 2   # checkpoints whose generators give moderate / vivid colours


def tiny_config():
  config = default.get_config()
  config.image_size = IMAGE_SIZE
  config.batch_size = 2
  config.model.width = 4
  return config


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A run with two checkpoints of a random generator whose output layer is scaled up.

  An untrained generator's ab is ~0.2 units; scaling its last layer gives colours
  that are moderate (step 1) or so vivid that many fall outside sRGB (step 2).
  """
  root = tmp_path_factory.mktemp('run')
  config = tiny_config()
  gan = steps.GAN.from_config(config)
  state = gan.init(jax.random.PRNGKey(0), IMAGE_SIZE)
  checkpoints.save_config(root, config)
  ckpts = checkpoints.Checkpoints(root)
  for step, scale in ((MODERATE_STEP, 100.0), (VIVID_STEP, 500.0)):
    params = dict(state.generator.params)
    params['to_ab'] = {'kernel': params['to_ab']['kernel'] * scale,
                       'bias': params['to_ab']['bias'] + np.array([0.1, 0.2], np.float32)}
    saved = state.replace(step=np.int32(step), generator=state.generator.replace(params=params))
    ckpts.save(step, saved, {'epoch': step})
  ckpts.close()
  return str(root)


@pytest.fixture(scope='module')
def vivid(workdir):
  return inference.Colorizer.from_workdir(workdir, VIVID_STEP, batch_size=2)


@pytest.fixture(scope='module')
def moderate(workdir):
  return inference.Colorizer.from_workdir(workdir, MODERATE_STEP, batch_size=2)


def photo(height, width, seed=0):
  """A smooth colour photo stand-in: random colour blocks, bilinearly enlarged; uint8 [H, W, 3]."""
  blocks = np.random.default_rng(seed).integers(0, 256, (4, 5, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(blocks).resize((width, height), Image.Resampling.BILINEAR))


def lightness(rgb):
  rgb = np.asarray(rgb)
  scale = 65535.0 if rgb.dtype == np.uint16 else 255.0 if rgb.dtype == np.uint8 else 1.0
  return np.asarray(color.rgb_to_lab(rgb[..., :3].astype(np.float32) / scale))[..., 0]


def chroma(rgb):
  lab = np.asarray(color.rgb_to_lab(np.asarray(rgb)[..., :3]))
  return np.hypot(lab[..., 1], lab[..., 2])


def four_device_env():
  """Environment of a subprocess whose JAX sees 4 CPU devices."""
  env = dict(os.environ, PYTHONPATH=REPO)
  flags = env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4'
  env['XLA_FLAGS'] = flags.strip()
  return env


def run_flags(workdir):
  return types.SimpleNamespace(workdir=workdir)


# ----------------------------------------------------------------------------
# Restore.


def test_restore_picks_latest_given_and_missing_steps(workdir):
  """step=None is the latest checkpoint, an int that one; a missing step or selection is a clear
  error."""
  assert inference.restore(workdir).step == VIVID_STEP
  restored = inference.restore(workdir, MODERATE_STEP)
  assert restored.step == MODERATE_STEP and restored.epoch == MODERATE_STEP
  assert int(restored.state.step) == MODERATE_STEP
  with pytest.raises(FileNotFoundError, match='saved steps'):
    inference.restore(workdir, 7)
  with pytest.raises(FileNotFoundError, match='select'):
    inference.restore(workdir, 'best')
  with pytest.raises(FileNotFoundError, match='config.json'):
    inference.restore(os.path.dirname(workdir))
  # A whole number in any spelling is that step; a fraction or a bool is no step (int()
  # made 1.5 step 1 and True step 1).
  assert inference.resolve_step(workdir, float(MODERATE_STEP)) == MODERATE_STEP
  assert inference.resolve_step(workdir, np.int64(MODERATE_STEP)) == MODERATE_STEP
  assert inference.resolve_step(workdir, str(MODERATE_STEP)) == MODERATE_STEP
  assert inference.resolve_step(workdir, np.array(MODERATE_STEP)) == MODERATE_STEP
  assert inference.resolve_step(workdir, fractions.Fraction(2 * MODERATE_STEP, 2)) == (
      MODERATE_STEP)
  for bad in (MODERATE_STEP + 0.5, True, np.True_, float('nan'), float('inf'), '1.0', 'abc',
              fractions.Fraction(2 * MODERATE_STEP + 1, 2),
              decimal.Decimal(MODERATE_STEP) + decimal.Decimal('0.5'),
              np.array(MODERATE_STEP + 0.5), [MODERATE_STEP]):
    with pytest.raises(ValueError, match='an integer'):
      inference.resolve_step(workdir, bad)


def test_restore_reads_the_weights_and_no_optimizer_state(workdir):
  """restore gives the saved weights without Adam states; a Colorizer's restore only the
  generator's."""
  config = checkpoints.load_config(workdir)
  gan = steps.GAN.from_config(config)
  ckpts = checkpoints.Checkpoints(workdir, read_only=True)
  full, _ = ckpts.restore(steps.abstract_state(gan, IMAGE_SIZE), MODERATE_STEP)
  ckpts.close()
  restored = inference.restore(workdir, MODERATE_STEP)
  for name in ('generator', 'discriminator'):
    got, want = getattr(restored.state, name), getattr(full, name)
    assert got.opt_state is None and jax.tree.leaves(want.opt_state)
    jax.tree.map(np.testing.assert_array_equal, got.variables, want.variables)
  np.testing.assert_array_equal(restored.state.rng, full.rng)

  only_g = inference.restore(workdir, MODERATE_STEP, nets=('generator',)).state
  assert only_g.discriminator is None and only_g.generator.opt_state is None
  g_bytes = sum(x.nbytes for x in jax.tree.leaves(full.generator.variables))
  assert sum(x.nbytes for x in jax.tree.leaves(only_g)) == g_bytes + 4 + 8   # + step, rng
  with pytest.raises(ValueError, match='nets'):
    inference.restore(workdir, nets=('critic',))
  # One name is that net, not its letters.
  assert inference.restore(workdir, MODERATE_STEP, nets='generator').state.discriminator is None


def test_restore_on_another_device_count(workdir, tmp_path):
  """A checkpoint saved on 1 device restores on 4 (replicated there), and one saved on 4 restores on
  1, with equal params."""
  script = textwrap.dedent('''
      import sys
      import jax, numpy as np
      from colorize_jax import checkpoints, inference
      src, dst, npz = sys.argv[1:4]
      assert jax.device_count() == 4, jax.devices()
      restored = inference.restore(src, 1)
      leaf = jax.tree.leaves(restored.state.generator.params)[0]
      assert len(leaf.sharding.device_set) == 4 and leaf.sharding.is_fully_replicated
      np.savez(npz, *[np.asarray(x) for x in jax.tree.leaves(restored.state)])
      doubled = jax.jit(lambda s: s.replace(generator=s.generator.replace(
          params=jax.tree.map(lambda p: 2 * p, s.generator.params))))(restored.state)
      checkpoints.save_config(dst, restored.config)
      ckpts = checkpoints.Checkpoints(dst)
      ckpts.save(5, doubled, {'epoch': 5})
      ckpts.close()
  ''')
  env = four_device_env()
  dst, npz = tmp_path / 'saved_on_4', tmp_path / 'restored_on_4.npz'
  result = subprocess.run([sys.executable, '-c', script, workdir, str(dst), str(npz)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]

  here = inference.restore(workdir, 1)
  assert len(jax.tree.leaves(here.state)[0].sharding.device_set) == jax.device_count()
  there = np.load(npz)
  leaves = jax.tree.leaves(here.state)
  assert len(there.files) == len(leaves)
  for i, leaf in enumerate(leaves):
    np.testing.assert_array_equal(there[f'arr_{i}'], np.asarray(leaf))

  back = inference.restore(dst)
  assert back.step == 5
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), 2 * np.asarray(b)),
               back.state.generator.params, here.state.generator.params)


# ----------------------------------------------------------------------------
# Colour arithmetic.


def test_gamut_fitting_keeps_lightness_and_hue():
  """Out-of-gamut colours lose chroma at constant L and hue (clipping would change L); in-gamut ones
  are untouched."""
  rng = np.random.default_rng(0)
  l = rng.uniform(5, 95, (64, 64)).astype(np.float32)
  ab = rng.uniform(-100, 100, (64, 64, 2)).astype(np.float32)
  clipped_l = np.asarray(color.rgb_to_lab(color.lab_to_rgb(np.dstack([l, ab]))))[..., 0]
  assert np.abs(clipped_l - l).max() > 5   # plain clipping would fail the checks below

  lab = np.asarray(color.rgb_to_lab(inference.lab_to_rgb_in_gamut(l, ab)))
  np.testing.assert_allclose(lab[..., 0], l, atol=0.05)
  kept = np.hypot(lab[..., 1], lab[..., 2]) > 5
  angle = np.angle((lab[..., 1] + 1j * lab[..., 2]) / (ab[..., 0] + 1j * ab[..., 1]))
  assert np.abs(angle[kept]).max() < 0.05
  assert np.all(np.hypot(lab[..., 1], lab[..., 2]) <= np.hypot(ab[..., 0], ab[..., 1]) + 0.05)

  small = rng.uniform(-5, 5, (64, 64, 2)).astype(np.float32)
  mid = np.full((64, 64), 50.0, np.float32)
  np.testing.assert_allclose(inference.lab_to_rgb_in_gamut(mid, small),
                             np.asarray(color.lab_to_rgb(np.dstack([mid, small]))), atol=1e-6)


def test_gamut_fitting_leaves_the_colours_on_the_gamuts_surface_alone():
  """Colours with a channel at 0 or 255 (pure red, every saturated photo colour) are in sRGB:
  they come back as they were, not with chroma cut (a test for 'clipped' at exactly 0 or 1
  took them for outside: pure green came back as (2.2, 255.0, 1.1))."""
  v = np.arange(0, 256, 5, dtype=np.uint8)
  a, b = (x.ravel() for x in np.meshgrid(v, v, indexing='ij'))
  surface = []
  for bound in (0, 255):
    for channel in range(3):
      rgb = np.zeros((a.size, 3), np.uint8)
      rgb[:, channel] = bound
      rgb[:, [c for c in range(3) if c != channel]] = np.stack([a, b], -1)
      surface.append(rgb)
  rgb = np.concatenate(surface)[None]
  lab = np.asarray(color.rgb_to_lab(rgb))
  back = inference.lab_to_rgb_in_gamut(lab[..., 0], lab[..., 1:])
  assert np.abs(back * 255.0 - rgb).max() < 0.01


# ----------------------------------------------------------------------------
# The Python API.


@pytest.mark.parametrize('aspect', ['stretch', 'pad'])
@pytest.mark.parametrize('height,width', [(37, 53), (301, 199)])
def test_full_resolution_output_keeps_input_lightness(vivid, aspect, height, width):
  """At sizes that are not multiples of 2, the output has the input's size and its L within 1 unit,
  with real colour."""
  image = photo(height, width)
  vivid.aspect = aspect
  try:
    out = vivid.colorize(image)
  finally:
    vivid.aspect = 'stretch'
  assert out.shape == image.shape and out.dtype == np.uint8
  assert np.abs(lightness(out) - lightness(image)).max() <= 1.0
  assert chroma(out).mean() > 10   # colour came from the model, not a gray copy


def test_colour_inputs_are_treated_as_their_gray_version(moderate):
  """Two colour images with the same L (and their gray version) give the same colorization."""
  image = photo(40, 56, seed=1).astype(np.float32) / 255.0
  l = lightness(image)
  other = inference.lab_to_rgb_in_gamut(l, np.full(l.shape + (2,), (-30.0, 40.0), np.float32))
  gray = inference.lab_to_rgb_in_gamut(l, np.zeros(l.shape + (2,), np.float32))
  assert np.abs(lightness(other) - l).max() < 0.05 and np.abs(other - image).max() > 0.2
  outs = moderate.colorize_batch([image, other, gray])
  assert all(o.dtype == np.float32 for o in outs)
  np.testing.assert_allclose(outs[1], outs[0], atol=2e-3)
  np.testing.assert_allclose(outs[2], outs[0], atol=2e-3)


def test_saturation_scales_ab(moderate):
  """--saturation s multiplies the output's ab by s (0: gray), at unchanged L."""
  image = photo(48, 48, seed=2).astype(np.float32) / 255.0
  full, half, none = (moderate.colorize(image, saturation=s) for s in (1.0, 0.5, 0.0))
  lab_full, lab_half, lab_none = (np.asarray(color.rgb_to_lab(x)) for x in (full, half, none))
  inside = np.all((full > 0.002) & (full < 0.998), axis=-1)   # not cut back to the gamut
  assert inside.mean() > 0.3 and np.hypot(*lab_full[inside][:, 1:].T).mean() > 5
  np.testing.assert_allclose(lab_half[inside][:, 1:], 0.5 * lab_full[inside][:, 1:], atol=0.3)
  assert np.abs(lab_none[..., 1:]).max() < 0.5
  np.testing.assert_allclose(lab_half[..., 0], lab_full[..., 0], atol=0.05)
  for bad in (-1, 1e20, 5e38):   # huge factors overflowed float32: gray, black, NaN images
    with pytest.raises(ValueError, match='saturation'):
      moderate.colorize(image, saturation=bad)
  most = np.asarray(color.rgb_to_lab(moderate.colorize(image, saturation=1000.0)))
  assert np.hypot(most[..., 1], most[..., 2]).mean() > np.hypot(*lab_full[..., 1:].T).mean()


def test_api_refuses_what_it_would_get_wrong(moderate, workdir):
  """One image given to colorize_batch (whose rows it would colorize as images), an empty
  PIL image and saturation or sizes of the wrong type are ValueErrors; premultiplied
  'La' / 'RGBa' PIL images are colorized like their 'LA' / 'RGBA' versions."""
  rgb = photo(20, 30, seed=4)
  for one in (rgb, Image.fromarray(rgb)):
    with pytest.raises(ValueError, match='sequence of images'):
      moderate.colorize_batch(one)
  with pytest.raises(ValueError, match='Empty image'):
    moderate.colorize(Image.new('L', (0, 5)))
  # A path says to open it (it was "got shape ()"); a PIL image of a broken file, which
  # Pillow decodes only when asked, is an UnreadableImage (it was Pillow's OSError).
  for path in ('old.jpg', pathlib.Path('old.jpg'), b'old.jpg'):
    with pytest.raises(ValueError, match='colorize_files'):
      moderate.colorize(path)
  encoded = io.BytesIO()
  Image.fromarray(rgb).save(encoded, format='JPEG')
  with pytest.raises(images.UnreadableImage, match='OSError'):
    moderate.colorize(Image.open(io.BytesIO(encoded.getvalue()[:-50])))
  for saturation in ('1.5', None, True):
    with pytest.raises(ValueError, match='saturation'):
      moderate.colorize(rgb, saturation=saturation)
  for bad in ({'render_size': 32.0}, {'render_size': 0}, {'batch_size': 2.5}):
    with pytest.raises(ValueError):
      inference.Colorizer.from_workdir(workdir, MODERATE_STEP, **bad)
  rgba = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]))
  for mode, plain in (('RGBa', 'RGBA'), ('La', 'LA')):
    premultiplied = rgba.convert(plain).convert(mode)
    got = np.asarray(moderate.colorize(premultiplied)).astype(int)
    want = np.asarray(moderate.colorize(premultiplied.convert(plain))).astype(int)
    assert np.abs(got - want).max() == 0, mode


def test_api_returns_the_kind_it_was_given(moderate):
  """PIL in gives PIL out, arrays give arrays of the same dtype, [H, W] gives [H, W, 3], alpha is
  kept."""
  rgb = photo(20, 30, seed=3)
  alpha = np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)
  rgba = np.dstack([rgb, alpha])
  gray = rgb[..., 0]
  out = moderate.colorize_batch([rgb, rgba, gray, rgb.astype(np.float64) / 255,
                                 rgb.astype(np.uint16) * 257])
  assert [(o.dtype, o.shape) for o in out] == [
      (np.uint8, (20, 30, 3)), (np.uint8, (20, 30, 4)), (np.uint8, (20, 30, 3)),
      (np.float64, (20, 30, 3)), (np.uint16, (20, 30, 3))]
  np.testing.assert_array_equal(out[1][..., 3], alpha)
  np.testing.assert_array_equal(out[1][..., :3], out[0])
  assert np.abs(out[3] * 255 - out[0]).max() <= 1 and np.abs(out[4] / 257 - out[0]).max() <= 1

  pil_rgba = moderate.colorize(Image.fromarray(rgba))
  pil_gray = moderate.colorize(Image.fromarray(gray))
  assert (pil_rgba.mode, pil_rgba.size, pil_gray.mode) == ('RGBA', (30, 20), 'RGB')
  np.testing.assert_array_equal(np.asarray(pil_rgba)[..., 3], alpha)
  with pytest.raises(ValueError, match=r'\[0, 1\]'):
    moderate.colorize(rgb.astype(np.float32))
  with pytest.raises(ValueError, match='shape'):
    moderate.colorize(np.zeros((4, 4, 2), np.uint8))


def test_render_size_twice_the_training_size(workdir, tmp_path, capsys):
  """At twice the training size the generator runs at 64x64 and the output has the input's size
  and L within 1 unit, with colour; a size that is no multiple of 2^depth is a clear error."""
  double = inference.Colorizer.from_workdir(workdir, VIVID_STEP, render_size=2 * IMAGE_SIZE,
                                            batch_size=2)
  assert double.predict_ab(np.zeros((1, 64, 64), np.float32)).shape == (1, 64, 64, 2)
  image = photo(150, 101, seed=5)
  out = double.colorize(image)
  assert out.shape == image.shape and out.dtype == np.uint8
  assert np.abs(lightness(out) - lightness(image)).max() <= 1.0
  assert chroma(out).mean() > 10

  with pytest.raises(ValueError, match=f'multiples of {IMAGE_SIZE}'):
    inference.Colorizer.from_workdir(workdir, render_size=48)
  Image.fromarray(image).save(tmp_path / 'in.png')
  code = cli.colorize(run_flags(workdir), [str(tmp_path / 'in.png'), '--out',
                                           str(tmp_path / 'out'), '--render-size', '48'])
  assert code == 2 and f'multiples of {IMAGE_SIZE}' in capsys.readouterr().err


# ----------------------------------------------------------------------------
# Files.


def save_odd_inputs(folder):
  """Writes one file of each awkward kind; returns {name: the displayed rgb float [H, W, 3]}."""
  os.makedirs(folder, exist_ok=True)
  rgb = photo(24, 40, seed=4)
  expected = {}

  alpha = np.linspace(0, 255, 24 * 40).reshape(24, 40).astype(np.uint8)
  Image.fromarray(np.dstack([rgb, alpha])).save(os.path.join(folder, 'rgba.png'))
  expected['rgba'] = rgb / 255.0

  gray16 = np.linspace(2000, 60000, 24 * 40).reshape(24, 40).astype(np.uint16)
  Image.fromarray(gray16).save(os.path.join(folder, 'gray16.png'))   # mode I;16
  expected['gray16'] = np.repeat(gray16[..., None] / 65535.0, 3, axis=-1)

  Image.fromarray(rgb).convert('CMYK').save(os.path.join(folder, 'cmyk.tif'))
  with Image.open(os.path.join(folder, 'cmyk.tif')) as img:
    expected['cmyk'] = np.asarray(img.convert('RGB')) / 255.0

  Image.fromarray(rgb[..., 1]).save(os.path.join(folder, 'gray.png'))
  expected['gray'] = np.repeat(rgb[..., 1:2] / 255.0, 3, axis=-1)

  exif = Image.Exif()
  exif[0x0112] = 6   # stored sideways: displayed rotated 90 degrees clockwise
  Image.fromarray(rgb).save(os.path.join(folder, 'rotated.jpg'), exif=exif, quality=95)
  with Image.open(os.path.join(folder, 'rotated.jpg')) as img:
    stored = np.asarray(img.convert('RGB'))
  expected['rotated'] = np.rot90(stored, k=-1) / 255.0   # as displayed: [40, 24]
  return expected


def test_odd_inputs_keep_alpha_precision_and_orientation(moderate, tmp_path):
  """RGBA keeps its alpha, 16-bit gray its full range, CMYK and gray work, EXIF rotation shows
  upright; L is kept."""
  expected = save_odd_inputs(tmp_path / 'in')
  jobs, missing = inference.plan_jobs([str(tmp_path / 'in')], str(tmp_path / 'out'))
  assert not missing and len(jobs) == len(expected)
  summary = moderate.colorize_files(jobs, progress=False)
  assert not summary.failed and len(summary.written) == len(expected)
  for name, want in expected.items():
    with Image.open(tmp_path / 'out' / f'{name}.png') as img:
      out = np.asarray(img)
      mode = img.mode
    assert out.shape[:2] == want.shape[:2], name
    assert np.abs(lightness(out) - lightness(want.astype(np.float32))).max() <= 1.0, name
    assert mode == ('RGBA' if name == 'rgba' else 'RGB'), name
  with Image.open(tmp_path / 'in' / 'rgba.png') as src:
    with Image.open(tmp_path / 'out' / 'rgba.png') as dst:
      np.testing.assert_array_equal(np.asarray(dst)[..., 3], np.asarray(src)[..., 3])


def test_output_names_mirror_inputs(tmp_path):
  """Outputs mirror input paths under --out as .png; a.jpg and a.png do not collide; missing inputs
  are listed."""
  for rel in ('a.jpg', 'a.png', 'sub/b.png', 'sub/deeper/c.tiff', 'notes.txt', '.hidden.png'):
    path = tmp_path / 'in' / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')
  out = str(tmp_path / 'out')
  jobs, missing = inference.plan_jobs([str(tmp_path / 'in'), str(tmp_path / 'none.jpg')], out)
  assert {os.path.relpath(j.destination, out) for j in jobs} == {
      'a.jpg.png', 'a.png.png', os.path.join('sub', 'b.png'),
      os.path.join('sub', 'deeper', 'c.png')}
  assert missing == [(str(tmp_path / 'none.jpg'), 'no such file or folder')]
  jobs, _ = inference.plan_jobs([str(tmp_path / 'in' / 'sub' / '*.png'),
                                 str(tmp_path / 'in' / 'a.jpg')], out)
  assert {os.path.relpath(j.destination, out) for j in jobs} == {
      'a.png', os.path.join('sub', 'b.png')}


def test_no_two_inputs_share_an_output_name(tmp_path):
  """A full name that is another input's name ('a.jpg.png' for a.jpg, and the input
  a.jpg.png's own) and names differing only in case (one file on macOS or Windows)
  still give every input its own output."""
  for name in ('a.jpg', 'a.png', 'a.jpg.png', 'B.png', 'b.jpg', 'c.png'):
    (tmp_path / 'in').mkdir(exist_ok=True)
    (tmp_path / 'in' / name).write_bytes(b'')
  out = str(tmp_path / 'out')
  jobs, _ = inference.plan_jobs([str(tmp_path / 'in')], out)
  names = {os.path.basename(j.source): os.path.relpath(j.destination, out) for j in jobs}
  assert len({n.casefold() for n in names.values()}) == len(names) == 6
  assert names['c.png'] == 'c.png'
  assert names['B.png'] == 'B.png.png' and names['b.jpg'] == 'b.jpg.png'


def test_cli_refuses_to_overwrite_inputs(workdir, tmp_path, capsys):
  """An --out that would replace an input, or is the input folder (whose next run would read
  the outputs as photos), is refused (exit 2) before anything is written."""
  folder = tmp_path / 'photos'
  folder.mkdir()
  Image.fromarray(photo(20, 20)).save(folder / 'x.png')
  before = (folder / 'x.png').read_bytes()
  assert cli.colorize(run_flags(workdir), [str(folder), '--out', str(folder)]) == 2
  assert 'is, or contains, the input folder' in capsys.readouterr().err
  assert cli.colorize(run_flags(workdir), [str(folder / 'x.png'), '--out', str(folder)]) == 2
  assert 'inputs are never overwritten' in capsys.readouterr().err
  assert (folder / 'x.png').read_bytes() == before
  assert sorted(os.listdir(folder)) == ['x.png']


def test_cli_keeps_existing_outputs_unless_told_to_overwrite(workdir, tmp_path, capsys):
  """An output already in --out is kept and its input left out, and a rerun with every
  output there has nothing to do: both succeed (exit 0: a rerun finishes a killed run);
  --overwrite replaces what colorize wrote, but never a file it did not write (the user's
  own a.png beside the a.jpg being colorized: --overwrite once replaced it), whose input
  is then not done (exit 1)."""
  folder, out = tmp_path / 'in', tmp_path / 'out'
  folder.mkdir()
  out.mkdir()
  Image.fromarray(photo(20, 20)).save(folder / 'a.jpg')
  Image.fromarray(photo(24, 24, seed=1)).save(folder / 'b.png')
  Image.fromarray(photo(28, 28, seed=2)).save(folder / 'c.png')
  Image.fromarray(photo(16, 16, seed=3)).save(out / 'a.png')   # the user's own photo
  users = (out / 'a.png').read_bytes()
  one = [str(folder / 'a.jpg'), str(folder / 'b.png'), '--out', str(out), '--no-progress']
  assert cli.colorize(run_flags(workdir), one) == 1   # a.jpg not done: its name is taken
  captured = capsys.readouterr()
  assert 'colorize did not write it' in captured.err and '1 images written' in captured.out
  assert sorted(os.listdir(out)) == ['a.png', 'b.png']
  written = (out / 'b.png').read_bytes()
  both = [str(folder / 'b.png'), str(folder / 'c.png'), '--out', str(out), '--no-progress']
  assert cli.colorize(run_flags(workdir), both) == 0   # finishes: c.png
  captured = capsys.readouterr()
  assert 'kept: ' in captured.err and '1 images written' in captured.out
  assert cli.colorize(run_flags(workdir), both) == 0
  assert 'nothing to do' in capsys.readouterr().out
  assert cli.colorize(run_flags(workdir), one) == 1   # the user's a.png stays in the way
  (out / 'b.png').write_bytes(written[:-20])   # damaged by hand: --overwrite is the remedy
  assert cli.colorize(run_flags(workdir), both + ['--overwrite']) == 0
  assert (out / 'a.png').read_bytes() == users
  assert (out / 'b.png').read_bytes() == written


def test_cli_never_takes_another_photos_colorization_for_this_ones(workdir, tmp_path, capsys):
  """Two cards' IMG_0001.JPG (other photos, one name) colorized into one --out: the second
  is reported as not done (exit 1), not 'kept' with exit 0, and --overwrite does not
  replace the first card's colorization with it; the same photo's rerun is kept."""
  out = tmp_path / 'col'
  for card, seed in (('card1', 1), ('card2', 2)):
    (tmp_path / card).mkdir()
    Image.fromarray(photo(20, 20, seed=seed)).save(tmp_path / card / 'IMG_0001.JPG')
  first = [str(tmp_path / 'card1'), '--out', str(out), '--no-progress']
  assert cli.colorize(run_flags(workdir), first) == 0
  made = (out / 'IMG_0001.png').read_bytes()
  assert images.colorized_source(out / 'IMG_0001.png') == images.source_id(
      tmp_path / 'card1' / 'IMG_0001.JPG')
  capsys.readouterr()
  for extra in ([], ['--overwrite']):
    assert cli.colorize(run_flags(workdir), [str(tmp_path / 'card2'), '--out', str(out),
                                             '--no-progress'] + extra) == 1
    assert 'colorization of another photo' in capsys.readouterr().err
    assert (out / 'IMG_0001.png').read_bytes() == made
  assert cli.colorize(run_flags(workdir), first) == 0   # the same photo: kept
  assert 'nothing to do' in capsys.readouterr().out


def test_cli_never_replaces_a_colorization_edited_since(workdir, moderate, tmp_path, capsys,
                                                        monkeypatch):
  """An output retouched in an editor that kept its PNG text (so still marked as this
  photo's colorization) is not replaced by --overwrite: its input is reported as not
  done (exit 1); the same output untouched is replaced. A rerun without --overwrite keeps
  it without reading it whole (a rerun of a big folder read every output)."""
  folder, out = tmp_path / 'in', tmp_path / 'out'
  folder.mkdir()
  Image.fromarray(photo(20, 20)).save(folder / 'a.jpg')
  args = [str(folder), '--out', str(out), '--no-progress', '--overwrite']
  assert cli.colorize(run_flags(workdir), args) == 0
  assert cli.colorize(run_flags(workdir), args) == 0   # its own output: replaced
  capsys.readouterr()
  with Image.open(out / 'a.png') as img:
    info = PngImagePlugin.PngInfo()
    for key, value in img.text.items():
      info.add_text(key, value)
    retouched = img.convert('RGB')
  retouched.putpixel((3, 3), (250, 10, 10))
  retouched.save(out / 'a.png', pnginfo=info)
  kept = (out / 'a.png').read_bytes()
  assert cli.colorize(run_flags(workdir), args) == 1
  assert 'was edited since colorize wrote it' in capsys.readouterr().err
  assert (out / 'a.png').read_bytes() == kept
  with monkeypatch.context() as patch:   # without --overwrite: kept, and not read whole
    patch.setattr(images, 'was_edited', lambda path: pytest.fail('read a kept output whole'))
    assert cli.colorize(run_flags(workdir), args[:-1]) == 0
  assert 'nothing to do' in capsys.readouterr().out
  with pytest.raises(inference.OverwriteError, match='edited since'):
    moderate.colorize_files([(folder / 'a.jpg', out / 'a.png')], progress=False)
  assert (out / 'a.png').read_bytes() == kept
  with pytest.raises(ValueError, match='give it a .png name'):   # then never known as ours
    moderate.colorize_files([(folder / 'a.jpg', out / 'a.jpg')], progress=False)
  assert not (out / 'a.jpg').exists()


def test_cli_reports_a_subfolder_it_cannot_list(workdir, tmp_path, capsys, monkeypatch):
  """A locked subfolder of an input folder is reported and the run exits 1; the rest
  is colorized (it exited 0, as if the album had been done)."""
  folder = tmp_path / 'album'
  (folder / 'locked').mkdir(parents=True)
  Image.fromarray(photo(20, 20)).save(folder / 'a.jpg')
  Image.fromarray(photo(20, 20, seed=1)).save(folder / 'locked' / 'b.jpg')
  helpers.locked(monkeypatch, folder / 'locked')
  args = [str(folder), '--out', str(tmp_path / 'out'), '--no-progress']
  assert cli.colorize(run_flags(workdir), args) == 1
  assert 'locked: cannot list this folder: Permission denied' in capsys.readouterr().err
  assert os.listdir(tmp_path / 'out') == ['a.png']


def test_cli_rerun_names_a_few_kept_outputs_and_counts_the_rest(workdir, tmp_path, capsys):
  """A rerun over a big finished folder lists ten kept outputs and counts the others (it
  printed one line per file: thousands)."""
  folder, out = tmp_path / 'in', tmp_path / 'out'
  folder.mkdir()
  for i in range(13):
    Image.fromarray(photo(8, 8, seed=i)).save(folder / f'p{i:02d}.png')
  args = [str(folder), '--out', str(out), '--no-progress']
  assert cli.colorize(run_flags(workdir), args) == 0
  capsys.readouterr()
  assert cli.colorize(run_flags(workdir), args) == 0
  err = capsys.readouterr().err
  assert err.count('kept: ') == 11 and 'kept: 3 more outputs that exist' in err


def test_cli_colorizes_into_the_folder_of_named_photos_without_harm(workdir, tmp_path, capsys):
  """Files or a pattern of a folder colorized into that folder: each photo gets its PNG
  beside it, and a photo of the user's that has the output's name is kept, --overwrite or
  not, its input reported as not done (the pattern was left out as 'matches in the output
  folder': 'no input images')."""
  album = tmp_path / 'album'
  album.mkdir()
  Image.fromarray(photo(20, 20)).save(album / 'x.jpg')
  Image.fromarray(photo(16, 16, seed=1)).save(album / 'x.png')   # a colour photo of the user
  Image.fromarray(photo(20, 24, seed=2)).save(album / 'y.jpg')
  users = (album / 'x.png').read_bytes()
  for args in ([str(album / 'x.jpg'), '--overwrite'], [str(album / '*.jpg'), '--overwrite']):
    # x.jpg is not done (exit 1): its output's name is the user's photo.
    assert cli.colorize(run_flags(workdir), args + ['--out', str(album), '--no-progress']) == 1
    assert (album / 'x.png').read_bytes() == users
  assert 'colorize did not write it' in capsys.readouterr().err
  assert sorted(os.listdir(album)) == ['x.jpg', 'x.png', 'y.jpg', 'y.png']
  assert images.is_colorized_output(album / 'y.png')
  assert not images.is_colorized_output(album / 'x.png')


def test_cli_checks_out_and_saturation_before_loading_the_model(workdir, tmp_path, capsys,
                                                                monkeypatch):
  """An --out that is a file or cannot be written, and a saturation of inf, are usage
  errors (exit 2) found before the checkpoint is read."""
  monkeypatch.setattr(inference.Colorizer, 'from_workdir',
                      lambda *a, **k: pytest.fail('loaded the model first'))
  source = tmp_path / 'in.png'
  Image.fromarray(photo(20, 20)).save(source)
  (tmp_path / 'a_file').write_bytes(b'')
  assert cli.colorize(run_flags(workdir), [str(source), '--out', str(tmp_path / 'a_file')]) == 2
  assert 'not a folder' in capsys.readouterr().err
  assert cli.colorize(run_flags(workdir), [str(source), '--out',
                                           str(tmp_path / 'a_file' / 'sub')]) == 2
  assert 'Cannot write' in capsys.readouterr().err
  locked = tmp_path / 'locked'
  locked.mkdir(mode=0o500)
  if not os.access(locked, os.W_OK):   # root may write anywhere
    assert cli.colorize(run_flags(workdir), [str(source), '--out', str(locked / 'sub')]) == 2
    assert 'Cannot write' in capsys.readouterr().err
  for value in ('inf', 'nan', '-1', '5e38'):
    assert cli.colorize(run_flags(workdir), [str(source), '--out', str(tmp_path / 'o'),
                                             '--saturation', value]) == 2
    assert 'must be a number in [0, 1000]' in capsys.readouterr().err


def test_cli_skips_and_reports_unreadable_files(workdir, tmp_path, capsys):
  """Unreadable files are reported and skipped, the rest written, and the exit code is 1."""
  folder = tmp_path / 'in'
  folder.mkdir()
  Image.fromarray(photo(20, 30)).save(folder / 'good.png')
  (folder / 'garbage.jpg').write_bytes(b'not an image at all')
  Image.fromarray(photo(64, 64)).save(folder / 'whole.png')
  (folder / 'truncated.png').write_bytes((folder / 'whole.png').read_bytes()[:200])
  out = tmp_path / 'out'
  code = cli.colorize(run_flags(workdir), [str(folder), '--out', str(out), '--no-progress'])
  err = capsys.readouterr().err
  assert code == 1
  assert 'garbage.jpg' in err and 'truncated.png' in err
  assert sorted(os.listdir(out)) == ['good.png', 'whole.png']
  assert cli.colorize(run_flags(workdir), [str(tmp_path / 'nowhere'), '--out', str(out)]) == 2


def test_cli_png_compression_trades_size_for_speed_with_equal_pixels(workdir, tmp_path):
  source = tmp_path / 'in.png'
  Image.fromarray(photo(48, 40)).save(source)
  written = {}
  for level in ('0', '9'):
    out = tmp_path / level
    assert cli.colorize(run_flags(workdir), [str(source), '--out', str(out), '--no-progress',
                                             '--png-compression', level]) == 0
    written[level] = out / 'in.png'
  with Image.open(written['0']) as fast, Image.open(written['9']) as small:
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(small))
  assert written['0'].stat().st_size > written['9'].stat().st_size
  with pytest.raises(SystemExit) as exit_info:
    cli.colorize(run_flags(workdir), [str(source), '--out', str(tmp_path / 'x'),
                                      '--png-compression', '10'])
  assert exit_info.value.code == 2


def test_launch_colorize_smoke_on_four_devices(workdir, moderate, tmp_path):
  """`launch.py colorize --step N` runs end to end (on 4 devices) and writes what the 1-device API
  computes."""
  folder = tmp_path / 'in'
  folder.mkdir()
  for i, (h, w) in enumerate([(30, 45), (33, 20), (32, 32)]):
    Image.fromarray(photo(h, w, seed=i)).save(folder / f'p{i}.png')
  env = four_device_env()
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'launch.py'), 'colorize', '--workdir', workdir,
       '--step', str(MODERATE_STEP), str(folder), '--out', str(tmp_path / 'out'),
       '--batch-size', '2', '--no-progress'],
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert '3 images written' in result.stdout
  for i in range(3):
    with Image.open(folder / f'p{i}.png') as img:
      want = moderate.colorize(img)
    with Image.open(tmp_path / 'out' / f'p{i}.png') as img:
      got = np.asarray(img)
    assert np.abs(got.astype(int) - np.asarray(want).astype(int)).max() <= 1


def test_deep_gray_scans_come_out_as_16_bit_pngs(moderate, tmp_path):
  """A 16-bit gray scan is written as a 16-bit-per-channel PNG holding what the API gives
  for the same uint16 array (its tonal steps, finer than 8 bits, are kept); an 8-bit gray
  file still gives an 8-bit PNG."""
  import png  # pylint: disable=g-import-not-at-top
  height, width = 40, 56
  ramp = np.linspace(1000, 60000, width)[None, :] + 7 * np.arange(height)[:, None]
  gray16 = np.rint(ramp).astype(np.uint16)
  (tmp_path / 'in').mkdir()
  Image.fromarray(gray16).save(tmp_path / 'in' / 'scan16.png')
  Image.fromarray((gray16 // 257).astype(np.uint8)).save(tmp_path / 'in' / 'scan8.png')
  jobs, _ = inference.plan_jobs([str(tmp_path / 'in')], str(tmp_path / 'out'))
  summary = moderate.colorize_files(jobs, progress=False)
  assert not summary.failed and len(summary.written) == 2

  def read(name):
    w, h, rows, info = png.Reader(filename=str(tmp_path / 'out' / name)).read_flat()
    return np.asarray(rows).reshape(h, w, info['planes']), info['bitdepth']

  out16, depth16 = read('scan16.png')
  out8, depth8 = read('scan8.png')
  assert (depth16, depth8) == (16, 8)
  want = moderate.colorize(gray16)
  assert want.dtype == np.uint16 and out16.shape == want.shape
  assert np.abs(out16.astype(np.int64) - want).max() <= 1
  assert len(np.unique(out16[..., 1])) > 256   # more steps than 8 bits could hold


def test_gamut_fitting_keeps_chroma_however_far_out_a_colour_is():
  """A colour past the gamut, or 1000x further (a high --saturation) is cut back to the
  same boundary colour of its L and hue, not to gray (the search once stopped at 1/1024 of
  the colour's chroma)."""
  rng = np.random.default_rng(1)
  l = rng.uniform(20, 80, (16, 16)).astype(np.float32)
  hue = rng.uniform(0, 2 * np.pi, (16, 16))
  ab = np.stack([np.cos(hue), np.sin(hue)], axis=-1).astype(np.float32)  # chroma 1
  near = inference.lab_to_rgb_in_gamut(l, 150.0 * ab)  # past sRGB's largest chroma, 133.8
  far = inference.lab_to_rgb_in_gamut(l, 150000.0 * ab)
  assert chroma(near).min() > 10
  np.testing.assert_allclose(chroma(far), chroma(near), atol=0.5)
  np.testing.assert_allclose(np.asarray(color.rgb_to_lab(far))[..., 0], l, atol=0.05)


def test_plan_jobs_never_reads_its_own_outputs(tmp_path):
  """A rerun plans what the first run did: an input folder that is --out (or inside it) is
  refused, a glob that matches --out leaves it out, and one path alone is one input (not a
  string of one-character paths)."""
  folder = tmp_path / 'g'
  (folder / 'col').mkdir(parents=True)
  Image.fromarray(photo(8, 8)).save(folder / 'x.jpg')
  (folder / 'col' / 'x.png').write_bytes(b'an output of the last run')
  for out in (folder, tmp_path):
    with pytest.raises(inference.OverwriteError, match='rerun would take the PNGs'):
      inference.plan_jobs([str(folder)], str(out))
  jobs, missing = inference.plan_jobs([str(folder / '*')], str(folder / 'col'))
  assert [(j.source, j.destination) for j in jobs] == [
      (str(folder / 'x.jpg'), str(folder / 'col' / 'x.png'))] and not missing
  jobs, _ = inference.plan_jobs([str(tmp_path / '**')], str(folder / 'col'))
  assert [j.source for j in jobs] == [str(folder / 'x.jpg')]
  jobs, _ = inference.plan_jobs(str(folder / 'x.jpg'), str(tmp_path / 'out'))
  assert [j.source for j in jobs] == [str(folder / 'x.jpg')]
  # The outputs of an earlier run into a subfolder are no photos for a run into another
  # --out (they were colorized again): found by their mark wherever they lie.
  images.save_png(photo(8, 8), folder / 'old' / 'x.png', software=images.SOFTWARE)
  images.save_png(photo(8, 8), folder / 'old' / 'y.png', bit_depth=16,
                  software=images.SOFTWARE)
  images.save_png(photo(8, 8), folder / 'old' / 'z.png')   # no mark: a photo
  jobs, _ = inference.plan_jobs([str(folder)], str(tmp_path / 'other'))
  assert sorted(os.path.relpath(j.source, folder) for j in jobs) == [
      os.path.join('col', 'x.png'), os.path.join('old', 'z.png'), 'x.jpg']


def test_plan_jobs_reports_output_names_too_long_before_the_model_runs(tmp_path):
  """Two 249-byte names that clash get their full names ('x...x.jpg.png', 257 bytes): they
  are reported at once as inputs not done (they failed only after the model ran)."""
  folder = tmp_path / 'in'
  folder.mkdir()
  stem = 'x' * 249
  for ext in ('jpg', 'png'):
    Image.fromarray(photo(8, 8)).save(folder / f'{stem}.{ext}')
  Image.fromarray(photo(8, 8)).save(folder / 'short.jpg')
  jobs, missing = inference.plan_jobs([str(folder)], str(tmp_path / 'out'))
  assert [os.path.basename(j.source) for j in jobs] == ['short.jpg']
  assert len(missing) == 2 and all('longer than 255 bytes' in why for _, why in missing)


def test_plan_jobs_lists_a_folder_once_whatever_links_loop_back(tmp_path):
  """Links to a folder itself or to one above it (followed, as links are) end neither in an
  endless walk nor in outputs nested under link names: each photo is planned once, at its
  shortest path."""
  folder = tmp_path / 'in'
  (folder / 'd').mkdir(parents=True)
  Image.fromarray(photo(8, 8)).save(folder / 'd' / 'x.png')
  os.symlink('.', folder / 'a')
  os.symlink('..', folder / 'd' / 'up')
  os.symlink(folder / 'd', folder / 'e')
  jobs, _ = inference.plan_jobs([str(folder)], str(tmp_path / 'out'))
  assert [os.path.relpath(j.destination, tmp_path / 'out') for j in jobs] == [
      os.path.join('d', 'x.png')]


def test_colorize_files_takes_pairs_and_never_writes_over_a_source(moderate, tmp_path):
  """The API takes (source, destination) pairs as its docstring says, and refuses a job
  that would replace an input, a file colorize did not write or another photo's
  colorization, or two jobs into one file, before anything is read or written."""
  source = tmp_path / 'x.png'
  Image.fromarray(photo(20, 20)).save(source)
  before = source.read_bytes()
  summary = moderate.colorize_files([(str(source), str(tmp_path / 'out' / 'x.png'))],
                                    progress=False)
  assert summary.written == [str(tmp_path / 'out' / 'x.png')] and not summary.failed
  for jobs in ([inference.Job(str(source), str(source))],
               [(str(tmp_path / 'out' / 'x.png'), str(tmp_path / 'y.png')),
                (str(tmp_path / 'y.png'), str(tmp_path / 'out' / 'x.png'))]):
    with pytest.raises(inference.OverwriteError, match='one of the inputs'):
      moderate.colorize_files(jobs, progress=False)
  assert source.read_bytes() == before and not (tmp_path / 'y.png').exists()
  # Nor over a file colorize did not write, nor two results into one file (one was lost);
  # its own colorization of the same photo it replaces.
  precious = tmp_path / 'precious.png'
  Image.fromarray(photo(8, 8, seed=9)).save(precious)
  kept = precious.read_bytes()
  other = tmp_path / 'other.png'
  Image.fromarray(photo(20, 20, seed=5)).save(other)
  for jobs, match in (([(str(source), str(precious))], 'not a colorization of'),
                      ([(str(source), str(tmp_path / 'o.png')),
                        (str(other), str(tmp_path / 'o.png'))], 'would both be written')):
    with pytest.raises(inference.OverwriteError, match=match):
      moderate.colorize_files(jobs, progress=False)
  assert precious.read_bytes() == kept and not (tmp_path / 'o.png').exists()
  again = moderate.colorize_files([(str(source), str(tmp_path / 'out' / 'x.png'))],
                                  progress=False)
  assert again.written == [str(tmp_path / 'out' / 'x.png')]
  with pytest.raises(inference.OverwriteError, match="another photo's colorization"):
    moderate.colorize_files([(str(other), str(tmp_path / 'out' / 'x.png'))], progress=False)


def test_cli_sigterm_stops_with_complete_files_and_a_rerun_hint(workdir, tmp_path, capsys,
                                                               monkeypatch):
  """SIGTERM during a run (a batch scheduler's stop) ends it like Ctrl-C: exit 143, a message
  that a rerun finishes the job, and the previous SIGTERM handler back in place."""
  import signal  # pylint: disable=g-import-not-at-top

  def killed(*args, **kwargs):
    del args, kwargs
    os.kill(os.getpid(), signal.SIGTERM)
    pytest.fail('SIGTERM did not stop the run')

  monkeypatch.setattr(inference.Colorizer, 'colorize_files', killed)
  source = tmp_path / 'in.png'
  Image.fromarray(photo(20, 20)).save(source)
  before = signal.getsignal(signal.SIGTERM)
  assert cli.colorize(run_flags(workdir), [str(source), '--out', str(tmp_path / 'out')]) == 143
  assert 'interrupted by SIGTERM' in capsys.readouterr().err
  assert signal.getsignal(signal.SIGTERM) == before


def test_cli_bad_workdir_leaves_no_output_folder(tmp_path, capsys):
  """A --workdir without checkpoints is a usage error found before --out is made."""
  source = tmp_path / 'in.png'
  Image.fromarray(photo(20, 20)).save(source)
  args = [str(source), '--out', str(tmp_path / 'out')]
  assert cli.colorize(run_flags(str(tmp_path / 'no_run')), args) == 2
  assert 'No checkpoint' in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()


# orbax's reader leaves a TensorStore callback for its closed event loop when a read fails.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_cli_damaged_checkpoint_leaves_no_output_folder(workdir, tmp_path, capsys):
  """A checkpoint found damaged only as the model loads (after --out was checked, and so
  made) leaves no empty --out behind; an --out that was there stays."""
  run = tmp_path / 'run'
  shutil.copytree(workdir, run)
  helpers.damage_checkpoint(run / 'checkpoints' / str(VIVID_STEP))
  source = tmp_path / 'in.png'
  Image.fromarray(photo(20, 20)).save(source)
  assert cli.colorize(run_flags(str(run)), [str(source), '--out', str(tmp_path / 'out')]) == 2
  assert 'damaged' in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()
  (tmp_path / 'there').mkdir()
  assert cli.colorize(run_flags(str(run)), [str(source), '--out', str(tmp_path / 'there')]) == 2
  assert (tmp_path / 'there').is_dir()


def test_a_scans_resolution_is_kept_in_its_png(moderate, tmp_path):
  """A 600-dpi scan's output records 600 dpi (its print size), 8- and 16-bit alike, upright
  as displayed; a file with no resolution gets none."""
  folder = tmp_path / 'in'
  folder.mkdir()
  gray = photo(24, 24)[..., 1]
  Image.fromarray(gray).save(folder / 'scan8.jpg', dpi=(600, 600))
  Image.fromarray(gray.astype(np.uint16) * 257).save(folder / 'scan16.png', dpi=(600, 300))
  Image.fromarray(gray).save(folder / 'plain.png')
  turned = Image.fromarray(photo(24, 30)[..., 0])   # stored on its side (EXIF orientation 6)
  exif = Image.Exif()
  exif[0x0112] = 6
  turned.save(folder / 'turned.jpg', dpi=(300, 150), exif=exif)
  jobs, _ = inference.plan_jobs([str(folder)], str(tmp_path / 'out'))
  assert not moderate.colorize_files(jobs, progress=False).failed
  # Turned upright, its x and y resolutions are swapped too (they were kept as stored).
  for name, dpi in (('scan8', (600, 600)), ('scan16', (600, 300)), ('plain', None),
                    ('turned', (150, 300))):
    with Image.open(tmp_path / 'out' / f'{name}.png') as img:
      got = img.info.get('dpi')
    assert (got is None if dpi is None else np.allclose(got, dpi, atol=0.1)), (name, got)


def test_cli_says_when_only_the_first_frame_of_a_file_was_colorized(workdir, tmp_path, capsys):
  """An animated GIF (or a multi-page TIFF) is colorized from its first frame, and the run
  says so instead of dropping the others without a word."""
  frames = [Image.fromarray(photo(16, 16, seed)).convert('P') for seed in range(3)]
  frames[0].save(tmp_path / 'anim.gif', save_all=True, append_images=frames[1:])
  code = cli.colorize(run_flags(workdir), [str(tmp_path / 'anim.gif'), '--out',
                                           str(tmp_path / 'out'), '--no-progress'])
  assert code == 0
  assert 'anim.gif: 3 frames or pages: only the first was colorized' in capsys.readouterr().err
  with Image.open(tmp_path / 'out' / 'anim.png') as out, Image.open(tmp_path / 'anim.gif') as src:
    first = np.asarray(src.convert('RGB'))
    assert np.abs(lightness(np.asarray(out)) - lightness(first)).max() <= 1.0


def test_colorize_writes_photos_whose_names_are_not_utf8(moderate, tmp_path):
  """b'caf\\xe9.jpg' (not UTF-8; fine on Linux) becomes b'caf\\xe9.png' (its temporary
  file's name once failed to encode, so every rerun stopped at it)."""
  source = os.fsencode(tmp_path) + b'/caf\xe9.jpg'
  try:
    Image.fromarray(photo(20, 20)).save(source)
  except (OSError, ValueError):
    pytest.skip('this file system takes UTF-8 names only')
  jobs, _ = inference.plan_jobs([str(tmp_path)], str(tmp_path / 'out'))
  summary = moderate.colorize_files(jobs, progress=False)
  assert not summary.failed
  assert os.listdir(os.fsencode(tmp_path / 'out')) == [b'caf\xe9.png']


def test_a_48_bit_colour_scan_comes_out_as_a_16_bit_png(moderate, tmp_path):
  """A scanner's 16-bit RGB TIFF of a B&W print (Pillow alone reads 8 bits of it) is
  colorized at full precision: a 16-bit PNG equal to what the API gives for the array."""
  import png  # pylint: disable=g-import-not-at-top
  import tifffile  # pylint: disable=g-import-not-at-top
  height, width = 40, 56
  ramp = np.linspace(1000, 60000, width)[None, :] + 7 * np.arange(height)[:, None]
  rgb16 = np.repeat(np.rint(ramp).astype(np.uint16)[..., None], 3, axis=-1)
  tifffile.imwrite(tmp_path / 'scan.tif', rgb16, photometric='rgb')
  summary = moderate.colorize_files([(str(tmp_path / 'scan.tif'), str(tmp_path / 'scan.png'))],
                                    progress=False)
  assert not summary.failed
  w, h, rows, info = png.Reader(filename=str(tmp_path / 'scan.png')).read_flat()
  out = np.asarray(rows).reshape(h, w, info['planes'])
  assert info['bitdepth'] == 16
  assert np.abs(out.astype(np.int64) - moderate.colorize(rgb16)).max() <= 1
  assert len(np.unique(out[..., 1])) > 256
