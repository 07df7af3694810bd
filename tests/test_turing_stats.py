"""Tests of the Turing-test statistics (colorize_jax.turing.stats)."""

import math
import statistics

import pytest

from colorize_jax.turing import stats

Answer = stats.Answer


def wilson_by_hand(k, n, z=1.959963984540054):
  p = k / n
  denom = 1 + z * z / n
  center = (p + z * z / (2 * n)) / denom
  half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
  return center - half, center + half


def test_wilson_23_of_100_matches_the_formula_and_known_values():
  """23 fooled of 100 (the paper's rate) gives the textbook Wilson interval, about
  [0.158, 0.322], equal to the formula written out independently."""
  low, high = stats.wilson_interval(23, 100)
  exp_low, exp_high = wilson_by_hand(23, 100)
  assert low == pytest.approx(exp_low, abs=1e-12)
  assert high == pytest.approx(exp_high, abs=1e-12)
  # Reference: scipy.stats.binomtest(23, 100).proportion_ci(method='wilson').
  assert (round(low, 4), round(high, 4)) == (0.1584, 0.3215)


@pytest.mark.parametrize('k, n, expected', [
    # Newcombe (1998), Stat. Med. 17:857-872, Table I, method 3 (Wilson, no continuity
    # correction).
    (81, 263, (0.2553, 0.3662)),
    (15, 148, (0.0624, 0.1605)),
    (0, 20, (0.0, 0.1611)),
    (1, 29, (0.0061, 0.1718)),
])
def test_wilson_matches_published_values(k, n, expected):
  """The interval reproduces Newcombe's published Wilson intervals to 4 decimals."""
  low, high = stats.wilson_interval(k, n)
  assert (round(low, 4), round(high, 4)) == expected


def test_edge_cases():
  """No answers: rate None and the uninformative [0, 1]; none or all fooled: the bound
  at 0 or 1 is exact; impossible counts raise."""
  z95 = statistics.NormalDist().inv_cdf(0.975)   # two-sided 95%
  empty = stats.proportion(0, 0)
  assert empty.rate is None and (empty.low, empty.high) == (0.0, 1.0)
  none_fooled = stats.proportion(0, 40)
  assert none_fooled.rate == 0.0 and none_fooled.low == 0.0
  assert none_fooled.high == pytest.approx(z95**2 / (40 + z95**2))
  all_fooled = stats.proportion(40, 40)
  assert all_fooled.rate == 1.0 and all_fooled.high == 1.0
  assert all_fooled.low == pytest.approx(40 / (40 + z95**2))
  for k, n in ((5, 4), (-1, 3), (0, -1)):
    with pytest.raises(ValueError):
      stats.wilson_interval(k, n)
  assert stats.proportion(3, 10).as_dict() == {
      'fooled': 3, 'answers': 10, 'rate': 0.3, 'ci95': list(stats.wilson_interval(3, 10))}


def test_summarize_counts_completed_participants_per_pair():
  """Overall and per-pair rates count only participants who answered every pair; per-pair
  rates are sorted highest first; partial participants appear per participant and in
  the all-answers rate."""
  pairs = ['a', 'b', 'c']
  answers = [
      Answer(1, 'a', True), Answer(1, 'b', False), Answer(1, 'c', False),
      Answer(2, 'a', True), Answer(2, 'b', True), Answer(2, 'c', False),
      Answer(3, 'a', True), Answer(3, 'c', True),          # partial: not 'b'
  ]
  s = stats.summarize(answers, pairs)
  assert (s.overall.successes, s.overall.trials) == (3, 6)
  assert (s.overall.low, s.overall.high) == stats.wilson_interval(3, 6)
  assert (s.overall_all_answers.successes, s.overall_all_answers.trials) == (5, 8)
  assert [(p.pair_id, p.proportion.successes, p.proportion.trials) for p in s.per_pair] == [
      ('a', 2, 2), ('b', 1, 2), ('c', 0, 2)]
  assert [p.proportion.rate for p in s.per_pair] == [1.0, 0.5, 0.0]
  assert [(p.participant, p.answered, p.fooled, p.completed) for p in s.per_participant] == [
      (1, 3, 1, True), (2, 3, 2, True), (3, 2, 2, False)]
  assert (s.num_completed, s.num_partial) == (2, 1)


def test_summarize_without_answers_and_with_bad_answers():
  """No answers gives empty rates (None), pairs listed in study order; an unknown pair or a
  second answer to a pair raises instead of being counted."""
  s = stats.summarize([], ['x', 'y'])
  assert s.overall.rate is None and s.overall_all_answers.rate is None
  assert [p.pair_id for p in s.per_pair] == ['x', 'y']
  assert s.per_participant == ()
  with pytest.raises(ValueError, match='unknown pair'):
    stats.summarize([Answer(1, 'z', True)], ['x'])
  with pytest.raises(ValueError, match='twice'):
    stats.summarize([Answer(1, 'x', True), Answer(1, 'x', False)], ['x'])


def test_summarize_all_fooled():
  """When every answer is fooled the rate is 1 and the interval's top is exactly 1."""
  answers = [Answer(p, pair, True) for p in range(4) for pair in ('a', 'b')]
  s = stats.summarize(answers, ['a', 'b'])
  assert s.overall.rate == 1.0 and s.overall.high == 1.0
  assert s.overall.low == pytest.approx(wilson_by_hand(8, 8)[0])
  assert all(p.proportion.rate == 1.0 for p in s.per_pair)
