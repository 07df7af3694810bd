"""Turing-test statistics: fool rates with Wilson score intervals (pure functions).

A participant is "fooled" on a pair when they pick the real photo as the
generated one. Paper sec. 4: 23% fooled; Zhang et al. 2016: 32%; 50% would mean
real and generated images are indistinguishable.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Hashable, Iterable, Sequence

from scipy import stats as scipy_stats

PAPER_FOOL_RATE = 0.23       # Petre & Trausan-Matu 2020, sec. 4
ZHANG_FOOL_RATE = 0.32       # Zhang et al. 2016, as cited in sec. 2 and 4


def wilson_interval(successes: int, trials: int,
                    confidence: float = 0.95) -> tuple[float, float]:
  """Wilson score interval for a binomial proportion (no continuity correction).

  Args:
    successes: k, 0 <= k <= trials.
    trials: n >= 0.
    confidence: the two-sided confidence level.

  Returns:
    (low, high) in [0, 1]; (0.0, 1.0) when trials == 0 (no information).
  """
  if trials < 0 or not 0 <= successes <= trials:
    raise ValueError(f'need 0 <= successes <= trials, got {successes} of {trials}')
  if trials == 0:
    return 0.0, 1.0
  ci = scipy_stats.binomtest(int(successes), int(trials)).proportion_ci(
      confidence_level=confidence, method='wilson')
  return float(ci.low), float(ci.high)


@dataclasses.dataclass(frozen=True)
class Proportion:
  """k of n, with its rate and 95% Wilson interval.

  Attributes:
    successes: k (here: answers that were fooled).
    trials: n (here: answers).
    rate: k / n in [0, 1], or None when n == 0.
    low, high: Wilson 95% interval in [0, 1]; (0, 1) when n == 0.
  """
  successes: int
  trials: int
  rate: float | None
  low: float
  high: float

  def as_dict(self) -> dict[str, object]:
    return {'fooled': self.successes, 'answers': self.trials, 'rate': self.rate,
            'ci95': [self.low, self.high]}


def proportion(successes: int, trials: int) -> Proportion:
  """Returns k of n as a `Proportion` (rate None when n == 0) with its 95% interval."""
  low, high = wilson_interval(successes, trials)
  rate = successes / trials if trials else None
  return Proportion(int(successes), int(trials), rate, low, high)


@dataclasses.dataclass(frozen=True)
class Answer:
  """One stored answer: `participant` picked the real image on `pair_id` iff fooled."""
  participant: Hashable
  pair_id: str
  fooled: bool


@dataclasses.dataclass(frozen=True)
class PairStat:
  """Fool rate of one pair, over the counted answers."""
  pair_id: str
  proportion: Proportion


@dataclasses.dataclass(frozen=True)
class ParticipantStat:
  """How many pairs a participant answered and on how many they were fooled."""
  participant: Hashable
  answered: int
  fooled: int
  completed: bool


@dataclasses.dataclass(frozen=True)
class Summary:
  """Study statistics.

  Attributes:
    num_pairs: pairs in the study.
    overall: fool rate over the answers of participants who answered every
      pair (the headline number, comparable to the paper's).
    overall_all_answers: fool rate over every stored answer, partial
      participants included (for reference).
    per_pair: per-pair fool rates over the same answers as `overall`, highest
      rate first; pairs without answers last.
    per_participant: every participant with at least one answer, in first-seen
      order.
  """
  num_pairs: int
  overall: Proportion
  overall_all_answers: Proportion
  per_pair: tuple[PairStat, ...]
  per_participant: tuple[ParticipantStat, ...]

  @property
  def num_completed(self) -> int:
    return sum(p.completed for p in self.per_participant)

  @property
  def num_partial(self) -> int:
    return len(self.per_participant) - self.num_completed


def summarize(answers: Iterable[Answer], pair_ids: Sequence[str]) -> Summary:
  """Fool rates overall, per pair and per participant.

  Only participants who answered all `pair_ids` count towards `overall` and
  `per_pair`, so that each counted participant weighs the same on every pair
  (as in the paper, where all 40 participants saw all 20 pairs). Partial
  participants show up in `per_participant` and `overall_all_answers`.

  Args:
    answers: stored answers; at most one per (participant, pair).
    pair_ids: the study's pair ids.

  Returns:
    The summary.

  Raises:
    ValueError: an answer names an unknown pair, or a participant answered a
      pair twice.
  """
  known = set(pair_ids)
  by_participant: dict[Hashable, dict[str, bool]] = {}
  for a in answers:
    if a.pair_id not in known:
      raise ValueError(f'answer for unknown pair {a.pair_id!r}')
    seen = by_participant.setdefault(a.participant, {})
    if a.pair_id in seen:
      raise ValueError(f'participant {a.participant!r} answered pair {a.pair_id!r} twice')
    seen[a.pair_id] = bool(a.fooled)

  per_participant = []
  pair_counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
  all_fooled = all_n = 0
  for participant, seen in by_participant.items():
    completed = len(seen) == len(known)
    fooled = sum(seen.values())
    per_participant.append(ParticipantStat(participant, len(seen), fooled, completed))
    all_fooled += fooled
    all_n += len(seen)
    if completed:
      for pair_id, f in seen.items():
        pair_counts[pair_id][0] += f
        pair_counts[pair_id][1] += 1

  per_pair = [PairStat(pid, proportion(*pair_counts[pid])) for pid in pair_ids]
  per_pair.sort(key=lambda s: (s.proportion.rate is None, -(s.proportion.rate or 0.0),
                               s.pair_id))
  counted_fooled = sum(k for k, _ in pair_counts.values())
  counted_n = sum(n for _, n in pair_counts.values())
  return Summary(
      num_pairs=len(pair_ids),
      overall=proportion(counted_fooled, counted_n),
      overall_all_answers=proportion(all_fooled, all_n),
      per_pair=tuple(per_pair),
      per_participant=tuple(per_participant),
  )
