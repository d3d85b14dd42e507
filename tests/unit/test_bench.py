"""The benchmark's pure parts: statistics, plan, machine facts and the
report's JSON shape (no broker; the benchmark itself is ``tox -e bench``)."""

import json

import pytest

from benchmarks import cli
from benchmarks import stats


def test_percentile_interpolates_between_ranks():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 50) == 3.0
    assert stats.percentile(values, 100) == 5.0
    assert stats.percentile(values, 25) == 2.0
    assert stats.percentile([1.0, 2.0], 50) == 1.5
    assert stats.percentile(range(1, 101), 99) == pytest.approx(99.01)
    assert stats.percentile([], 50) is None
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_spread_latency_summary_and_ratio():
    assert stats.spread([3.0, 1.0, 2.0]) == {
        'median': 2.0, 'min': 1.0, 'max': 3.0, 'all': [3.0, 1.0, 2.0]}
    assert stats.spread([None])['median'] is None
    summary = stats.latency_summary([0.010, 0.020, 0.030])
    assert summary['count'] == 3
    assert summary['p50'] == 20.0
    assert summary['max'] == 30.0
    assert summary['mean'] == 20.0
    assert stats.latency_summary([])['p99'] is None
    assert stats.ratio(3.0, 2.0) == 1.5
    assert stats.ratio(1.0, 0) is None
    assert stats.ratio(None, 2.0) is None


def test_cdf_points():
    xs, ys = stats.cdf_points([3.0, 1.0, 2.0, 4.0])
    assert xs == [1.0, 2.0, 3.0, 4.0]
    assert ys == [0.25, 0.5, 0.75, 1.0]


def test_sweep_sizes_and_round_robin():
    assert stats.sweep_sizes(200) == [50, 100, 200]
    assert stats.sweep_sizes(1000) == [50, 100, 200, 500, 1000]
    assert stats.sweep_sizes(120) == [50, 100, 120]
    assert stats.sweep_sizes(10) == [10]
    with pytest.raises(ValueError):
        stats.sweep_sizes(0)
    dealt = stats.round_robin(list(range(10)), 4)
    assert dealt == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]
    # The first n nodes of a fleet are spread over every process.
    assert stats.round_robin(list(range(3)), 4) == [[0], [1], [2]]


def test_machine_facts_parsers():
    cpuinfo = ('processor\t: 0\nvendor_id\t: GenuineIntel\n'
               'model name\t: Intel(R) Xeon(R) Processor\n\n'
               'processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n')
    assert stats.parse_cpu_model(cpuinfo) == 'Intel(R) Xeon(R) Processor'
    assert stats.parse_cpu_model('Hardware\t: BCM2835\n') == 'BCM2835'
    assert stats.parse_cpu_model('') is None
    meminfo = 'MemTotal:       24683424 kB\nMemFree:  1 kB\n'
    assert stats.parse_mem_total(meminfo) == 24683424 * 1024
    mounts = ('/dev/vda / ext4 rw 0 0\n'
              'tmpfs /dev/shm tmpfs rw 0 0\n'
              'tmpfs /dev/shm/my\\040dir tmpfs rw 0 0\n')
    assert stats.mount_for('/dev/shm/bench-x', mounts) == (
        '/dev/shm', 'tmpfs')
    assert stats.mount_for('/dev/shmx', mounts) == ('/', 'ext4')
    assert stats.mount_for('/dev/shm/my dir/a', mounts)[0] == \
        '/dev/shm/my dir'


def test_redact_url_drops_credentials():
    assert stats.redact_url('rabbit://user:secret@localhost:5692//') == \
        'rabbit://localhost:5692//'
    assert stats.redact_url(
        'rabbit://a:b@h1:5672,c:d@h2:5672/vhost') == \
        'rabbit://h1:5672,h2:5672/vhost'
    assert stats.redact_url(None) is None


def _round(kind, nodes, index, latency, fleet_seconds, **extra):
    result = {'kind': kind, 'nodes': nodes, 'round': index,
              'fleet_seconds': fleet_seconds, 'cast_seconds': 0.1,
              'latencies': [latency] * nodes, 'ended': nodes, 'failed': 0,
              'errors': {}, 'not_listening': 0, 'timed_out': 0,
              'notifications': nodes * (2 if kind == stats.RESCUE else 1),
              'worker_cpu_seconds': 0.01 * nodes,
              'broker_cpu_seconds': 0.005 * nodes,
              'conductor_cpu_seconds': 0.002 * nodes,
              'other_cpu_seconds': 0.0}
    result.update(extra)
    return result


def _rounds():
    rounds = []
    for size in (2, 4):
        for index in range(3):
            rounds.append(_round(stats.BASELINE, size, index, 0.010, 0.5))
            rounds.append(_round(
                stats.RESCUE, size, index, 0.020, 1.0,
                worker_ms=[5.0] * size,
                step_ms={'account': [2.0] * size}))
    return rounds


def test_summaries_and_ratios():
    section = stats.fleet_section(_rounds(), [2, 4], 4)
    entry = section['by_size']['4']
    rescue, baseline = entry[stats.RESCUE], entry[stats.BASELINE]
    assert rescue['rounds'] == 3 and rescue['complete_rounds'] == 3
    assert rescue['fleet_seconds']['median'] == 1.0
    assert rescue['latency_ms']['p99'] == 20.0
    assert rescue['ends_per_second']['median'] == 4.0
    assert rescue['notifications_per_second']['median'] == 8.0
    assert rescue['worker_cpu_ms_per_node']['median'] == 10.0
    assert rescue['step_ms']['account']['p50'] == 2.0
    assert rescue['worker_duration_ms']['p50'] == 5.0
    assert 'step_ms' not in baseline
    assert entry['ratios']['fleet_seconds'] == 2.0
    assert entry['ratios']['latency_p99'] == 2.0
    assert entry['ratios']['ends_per_second'] == 0.5
    assert section['latency_ms_main_size'][stats.RESCUE] == [20.0] * 12
    # Raw latencies stay out of the per-round records.
    assert all('latencies' not in r for r in section['rounds'])


def test_an_incomplete_round_has_no_fleet_time():
    rounds = [_round(stats.RESCUE, 4, 0, 0.02, 1.0),
              _round(stats.RESCUE, 4, 1, 0.02, 9.0, ended=3, timed_out=1)]
    summary = stats.summarize_rounds(rounds)
    assert summary['complete_rounds'] == 1
    assert summary['fleet_seconds']['all'] == [1.0]
    assert summary['timed_out'] == 1


def _process_runs():
    runs = []
    for index in range(3):
        runs.append({'kind': stats.RESCUE, 'start_to_ready_seconds': 1.0,
                     'rss_ready_bytes': (50 + index) * stats.MIB})
        runs.append({'kind': stats.BASELINE, 'start_to_ready_seconds': 0.5,
                     'rss_ready_bytes': 40 * stats.MIB})
    return runs


def test_process_summary_and_targets():
    processes = stats.summarize_processes(_process_runs())
    assert processes[stats.RESCUE]['rss_ready_mib']['median'] == 51.0
    assert processes['delta']['rss_ready_mib'] == 11.0
    assert processes['ratio']['start_to_ready'] == 2.0
    targets = {t['name']: t for t in stats.evaluate_targets(
        {'fleet_seconds': 1.3, 'latency_p99': 1.5}, processes)}
    assert targets['fleet_time']['met'] is False
    assert targets['latency_p99']['met'] is True
    assert targets['rss']['met'] is True
    assert stats.evaluate_targets(None, None)[0]['met'] is None


def test_report_shape_is_json_and_complete():
    fleet = stats.fleet_section(_rounds(), [2, 4], 4)
    report = stats.build_report(
        started_at='2026-01-01T00:00:00+00:00', wall_seconds=12.34,
        config={'nodes': 4, 'processes': 2}, machine={'nproc': 2},
        versions={}, fleet=fleet,
        process=stats.summarize_processes(_process_runs()),
        hashing=[{'scheme': 'bcrypt', 'rounds': 12}])
    assert stats.check_report(report) == []
    again = json.loads(json.dumps(report))
    assert again['schema'] == stats.SCHEMA
    assert [t['name'] for t in again['targets']] == [
        'fleet_time', 'latency_p99', 'rss']
    assert again['targets'][0]['value'] == 2.0
    text = cli.summary_text(report)
    assert 'fleet_time' in text and 'MISSED' in text

    broken = dict(report, fleet=dict(fleet, main_size=3))
    assert 'no fleet results for the main size' in \
        stats.check_report(broken)
    assert stats.check_report({}) != []


def test_run_options_are_checked():
    args = cli.build_parser().parse_args(['run', '--nodes', '0'])
    assert cli.cmd_run(args) == 2
