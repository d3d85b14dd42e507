"""The benchmark's pure parts: statistics, machine facts, the report's shape.

Nothing here talks to a broker or imports oslo.messaging, so the unit tests
check it in milliseconds. Times are seconds on the way in; the report gives
latencies in milliseconds and memory in MiB (2**20 bytes).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from collections.abc import Sequence
from urllib import parse

SCHEMA = 'rescue-worker-bench/1'

RESCUE = 'rescue_worker'
BASELINE = 'baseline'
KINDS = (RESCUE, BASELINE)

MIB = 1024 * 1024

#: fleet sizes tried for the time-to-all-done curve, up to the run's N
SWEEP_CANDIDATES = (50, 100, 200, 500, 1000)

#: the targets of issue 6: (name, what is compared, limit, unit)
TARGETS = (
    ('fleet_time', 'time until every end arrived, rescue-worker / '
     'baseline, at N', 1.25, 'ratio'),
    ('latency_p99', 'cast-to-end latency p99, rescue-worker / baseline, '
     'at N', 2.0, 'ratio'),
    ('rss', 'resident memory once ready, rescue-worker process minus bare '
     'server process (medians)', 15.0, 'MiB'),
)


# -- statistics ---------------------------------------------------------------

def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100), interpolating linearly between
    the closest ranks (numpy's default); None for no values."""
    data = sorted(values)
    if not data:
        return None
    if not 0 <= q <= 100:
        raise ValueError('percentile must be within 0..100, not %r' % q)
    position = (len(data) - 1) * q / 100.0
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(data[low])
    return data[low] + (data[high] - data[low]) * (position - low)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def spread(values: Iterable[float], digits: int = 3) -> dict:
    """Median, min, max and every value (rounded), of repeated
    measurements."""
    data = [v for v in values if v is not None]
    if not data:
        return {'median': None, 'min': None, 'max': None, 'all': []}
    return {'median': _round(statistics.median(data), digits),
            'min': _round(min(data), digits),
            'max': _round(max(data), digits),
            'all': [_round(v, digits) for v in data]}


def latency_summary(seconds: Sequence[float]) -> dict:
    """Count, p50, p90, p99, max and mean of latencies, in ms."""
    ms = [s * 1000.0 for s in seconds]
    return {'count': len(ms),
            'p50': _round(percentile(ms, 50)),
            'p90': _round(percentile(ms, 90)),
            'p99': _round(percentile(ms, 99)),
            'max': _round(max(ms)) if ms else None,
            'mean': _round(statistics.fmean(ms)) if ms else None}


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference`` (3 decimals); None when either is missing or
    the reference is zero."""
    if value is None or not reference:
        return None
    return round(value / reference, 3)


def cdf_points(values: Iterable[float]) -> tuple[list[float], list[float]]:
    """Sorted values and the fraction of values at or below each."""
    data = sorted(values)
    count = len(data)
    return data, [(i + 1) / count for i in range(count)]


# -- plan ---------------------------------------------------------------------

def sweep_sizes(nodes: int, candidates: Sequence[int] = SWEEP_CANDIDATES
                ) -> list[int]:
    """The fleet sizes for the time-to-all-done curve: the candidates
    below ``nodes``, and ``nodes`` itself."""
    if nodes < 1:
        raise ValueError('the fleet needs at least one node')
    return sorted({c for c in candidates if c < nodes} | {nodes})


def round_robin(items: Sequence, parts: int) -> list[list]:
    """Deal ``items`` over ``parts`` lists (item i to list i % parts), so
    that the first n items of a fleet are spread evenly over its
    processes; empty lists are left out."""
    if parts < 1:
        raise ValueError('at least one part is needed')
    dealt: list[list] = [[] for _ in range(parts)]
    for index, item in enumerate(items):
        dealt[index % parts].append(item)
    return [part for part in dealt if part]


# -- machine facts ------------------------------------------------------------

def parse_cpu_model(cpuinfo: str) -> str | None:
    """The CPU model from the text of /proc/cpuinfo."""
    for key in ('model name', 'Hardware', 'Processor', 'cpu model'):
        for line in cpuinfo.splitlines():
            name, sep, value = line.partition(':')
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return None


def parse_mem_total(meminfo: str) -> int | None:
    """MemTotal, in bytes, from the text of /proc/meminfo."""
    for line in meminfo.splitlines():
        if line.startswith('MemTotal:'):
            words = line.split()
            amount = int(words[1])
            unit = words[2].lower() if len(words) > 2 else 'b'
            return amount * 1024 if unit == 'kb' else amount
    return None


def mount_for(path: str, mounts: str) -> tuple[str, str] | None:
    """(mount point, file system type) of ``path`` (absolute, symlinks
    resolved), from the text of /proc/mounts: the longest mount point that
    contains it."""
    best = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # /proc/mounts escapes spaces and the like as octal (\040).
        point = fields[1].encode().decode('unicode_escape')
        inside = (path == point or point == '/' or
                  path.startswith(point.rstrip('/') + '/'))
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fields[2])
    return best


def redact_url(url: str | None) -> str | None:
    """The transport URL without user name and password."""
    if not url:
        return url
    parts = parse.urlsplit(url)
    hosts = []
    for netloc in parts.netloc.split(','):
        hosts.append(netloc.rpartition('@')[2])
    return parse.urlunsplit((parts.scheme, ','.join(hosts), parts.path, '',
                             ''))


# -- summaries ----------------------------------------------------------------

def summarize_rounds(rounds: Sequence[dict]) -> dict:
    """One fleet kind at one size, over its rounds.

    Each round is a dict with ``nodes``, ``fleet_seconds``, ``latencies``
    (seconds, one per node that ended), ``cast_seconds``,
    ``notifications``, ``ended``, ``failed``, ``timed_out``, and the CPU
    seconds ``worker_cpu_seconds``, ``broker_cpu_seconds`` and
    ``conductor_cpu_seconds``; a rescue round may add ``worker_ms`` (the
    workers' own duration of each request) and ``step_ms`` (name -> ms).
    """
    if not rounds:
        raise ValueError('no rounds to summarize')
    nodes = rounds[0]['nodes']
    pooled = [s for r in rounds for s in r['latencies']]
    complete = [r for r in rounds if r['ended'] == r['nodes']]

    def per_node_ms(key: str) -> dict:
        return spread(r[key] * 1000.0 / r['nodes'] for r in rounds
                      if r.get(key) is not None)

    summary = {
        'nodes': nodes,
        'rounds': len(rounds),
        'complete_rounds': len(complete),
        'ended': sum(r['ended'] for r in rounds),
        'failed': sum(r['failed'] for r in rounds),
        'timed_out': sum(r['timed_out'] for r in rounds),
        # Only rounds where every node ended have a time-to-all-done.
        'fleet_seconds': spread(r['fleet_seconds'] for r in complete),
        'cast_seconds': spread(r['cast_seconds'] for r in rounds),
        'latency_ms': latency_summary(pooled),
        'round_p99_ms': spread(percentile([s * 1000.0 for s in
                                           r['latencies']], 99)
                               for r in rounds),
        'ends_per_second': spread(r['nodes'] / r['fleet_seconds']
                                  for r in complete),
        'notifications_per_second': spread(
            r['notifications'] / r['fleet_seconds'] for r in complete),
        'worker_cpu_ms_per_node': per_node_ms('worker_cpu_seconds'),
        'broker_cpu_ms_per_node': per_node_ms('broker_cpu_seconds'),
        'conductor_cpu_ms_per_node': per_node_ms('conductor_cpu_seconds'),
        # CPU the rest of the machine used meanwhile: large values mean
        # the round was disturbed.
        'other_cpu_seconds': spread(r.get('other_cpu_seconds')
                                    for r in rounds),
    }
    worker_ms = [ms for r in rounds for ms in r.get('worker_ms') or ()]
    if worker_ms:
        summary['worker_duration_ms'] = latency_summary(
            [ms / 1000.0 for ms in worker_ms])
    steps: dict[str, list[float]] = {}
    for r in rounds:
        for name, values in (r.get('step_ms') or {}).items():
            steps.setdefault(name, []).extend(values)
    if steps:
        summary['step_ms'] = {
            name: {'p50': _round(percentile(values, 50)),
                   'p99': _round(percentile(values, 99))}
            for name, values in steps.items()}
    return summary


def compare(rescue: dict, baseline: dict) -> dict:
    """Ratios rescue-worker / baseline of two ``summarize_rounds``."""
    def med(summary: dict, key: str) -> float | None:
        return summary[key]['median']

    return {
        'fleet_seconds': ratio(med(rescue, 'fleet_seconds'),
                               med(baseline, 'fleet_seconds')),
        'latency_p50': ratio(rescue['latency_ms']['p50'],
                             baseline['latency_ms']['p50']),
        'latency_p99': ratio(rescue['latency_ms']['p99'],
                             baseline['latency_ms']['p99']),
        'ends_per_second': ratio(med(rescue, 'ends_per_second'),
                                 med(baseline, 'ends_per_second')),
        'notifications_per_second': ratio(
            med(rescue, 'notifications_per_second'),
            med(baseline, 'notifications_per_second')),
        'worker_cpu_per_node': ratio(med(rescue, 'worker_cpu_ms_per_node'),
                                     med(baseline,
                                         'worker_cpu_ms_per_node')),
    }


def summarize_processes(runs: Sequence[dict]) -> dict:
    """One ``rescue-worker`` process against one bare server process.

    Each run: ``kind``, ``start_to_ready_seconds``, ``rss_ready_bytes``,
    and optionally ``uss_ready_bytes``, ``rss_after_request_bytes``,
    ``threads_ready``.
    """
    result: dict = {}
    for kind in KINDS:
        mine = [r for r in runs if r['kind'] == kind]

        def mib(key: str, mine=mine) -> dict:
            return spread(r[key] / MIB for r in mine
                          if r.get(key) is not None)

        result[kind] = {
            'runs': len(mine),
            'start_to_ready_seconds': spread(
                r['start_to_ready_seconds'] for r in mine),
            'rss_ready_mib': mib('rss_ready_bytes'),
            'uss_ready_mib': mib('uss_ready_bytes'),
            'rss_after_request_mib': mib('rss_after_request_bytes'),
            'threads_ready': spread((r.get('threads_ready') for r in mine),
                                    0),
        }
    ours, bare = result[RESCUE], result[BASELINE]

    def delta(key: str) -> float | None:
        a, b = ours[key]['median'], bare[key]['median']
        return None if a is None or b is None else round(a - b, 3)

    result['delta'] = {
        'rss_ready_mib': delta('rss_ready_mib'),
        'uss_ready_mib': delta('uss_ready_mib'),
        'rss_after_request_mib': delta('rss_after_request_mib'),
        'start_to_ready_seconds': delta('start_to_ready_seconds'),
    }
    result['ratio'] = {
        'start_to_ready': ratio(ours['start_to_ready_seconds']['median'],
                                bare['start_to_ready_seconds']['median']),
        'rss_ready': ratio(ours['rss_ready_mib']['median'],
                           bare['rss_ready_mib']['median']),
    }
    return result


def evaluate_targets(fleet_ratios: dict | None,
                     processes: dict | None) -> list[dict]:
    """Each target of issue 6 with its measured value and whether it is
    met (None when it could not be measured)."""
    values = {
        'fleet_time': (fleet_ratios or {}).get('fleet_seconds'),
        'latency_p99': (fleet_ratios or {}).get('latency_p99'),
        'rss': ((processes or {}).get('delta') or {}).get('rss_ready_mib'),
    }
    targets = []
    for name, what, limit, unit in TARGETS:
        value = values[name]
        targets.append({'name': name, 'what': what, 'limit': limit,
                        'unit': unit, 'value': value,
                        'met': None if value is None else value <= limit})
    return targets


# -- the report ---------------------------------------------------------------

REPORT_KEYS = ('schema', 'started_at', 'wall_seconds', 'config', 'machine',
               'versions', 'fleet', 'process', 'hashing', 'targets')


def fleet_section(rounds: Sequence[dict], sizes: Sequence[int],
                  main_size: int) -> dict:
    """The report's ``fleet``: per size and kind a summary, the ratios,
    every round (without its raw latencies) and the latency CDF data of
    the main size."""
    by_size: dict[str, dict] = {}
    for size in sizes:
        entry: dict = {}
        for kind in KINDS:
            mine = [r for r in rounds
                    if r['kind'] == kind and r['nodes'] == size]
            if mine:
                entry[kind] = summarize_rounds(mine)
        if RESCUE in entry and BASELINE in entry:
            entry['ratios'] = compare(entry[RESCUE], entry[BASELINE])
        by_size[str(size)] = entry
    cdf = {}
    for kind in KINDS:
        cdf[kind] = [round(s * 1000.0, 3) for r in rounds
                     if r['kind'] == kind and r['nodes'] == main_size
                     for s in sorted(r['latencies'])]
        cdf[kind].sort()
    brief = [{k: v for k, v in r.items()
              if k not in ('latencies', 'worker_ms', 'step_ms')}
             for r in rounds]
    return {'sizes': list(sizes), 'main_size': main_size,
            'by_size': by_size, 'latency_ms_main_size': cdf,
            'rounds': brief}


def build_report(*, started_at: str, wall_seconds: float, config: dict,
                 machine: dict, versions: dict, fleet: dict | None,
                 process: dict | None, hashing: list[dict],
                 notes: list[str] | None = None) -> dict:
    main = None
    if fleet:
        main = fleet['by_size'].get(str(fleet['main_size']), {}).get(
            'ratios')
    return {
        'schema': SCHEMA,
        'started_at': started_at,
        'wall_seconds': round(wall_seconds, 1),
        'config': config,
        'machine': machine,
        'versions': versions,
        'fleet': fleet,
        'process': process,
        'hashing': hashing,
        'targets': evaluate_targets(main, process),
        'notes': list(notes or []),
    }


def check_report(report: dict) -> list[str]:
    """What is missing from a report (empty when its shape is right)."""
    problems = ['missing key %s' % key for key in REPORT_KEYS
                if key not in report]
    if report.get('schema') != SCHEMA:
        problems.append('schema is %r, not %r' % (report.get('schema'),
                                                  SCHEMA))
    fleet = report.get('fleet')
    if fleet:
        main = fleet.get('by_size', {}).get(str(fleet.get('main_size')))
        if not main:
            problems.append('no fleet results for the main size')
        else:
            for kind in KINDS:
                if kind not in main:
                    problems.append('no %s results at the main size' % kind)
            if 'ratios' not in main:
                problems.append('no ratios at the main size')
    for target in report.get('targets', []):
        if set(target) != {'name', 'what', 'limit', 'unit', 'value', 'met'}:
            problems.append('malformed target %r' % target.get('name'))
    return problems
