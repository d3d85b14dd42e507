"""``python -m benchmarks``: the command line of the benchmark.

    python -m benchmarks run [--nodes 200] [--output-dir D] ...
    python -m benchmarks bare-server --node-id N   (a baseline
        process; the broker URL in $RESCUE_WORKER_BENCH_TRANSPORT_URL)
    python -m benchmarks fleet-helper --spec FILE  (internal)

Heavy imports happen per command, so that ``bare-server`` loads nothing but
oslo.messaging.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks', allow_abbrev=False,
        description='Fleet benchmark of rescue-worker against bare '
                    'oslo.messaging servers on a real broker '
                    '(doc/performance.rst). Run it under "pifpaf run '
                    'rabbitmq --" (tox -e bench).')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('run', allow_abbrev=False,
                       help='run the benchmark, write JSON and PNG')
    p.add_argument('--nodes', type=int, default=200,
                   help='fleet size N (default 200; tried up to 1000)')
    p.add_argument('--sizes', default=None,
                   help='comma-separated fleet sizes for the time-to-all-'
                        'done curve (default: those of 50,100,200,500,1000 '
                        'below N, and N)')
    p.add_argument('--processes', type=int, default=4,
                   help='helper processes per fleet; the nodes are dealt '
                        'over them (default 4)')
    p.add_argument('--rounds', type=int, default=3,
                   help='fresh fleets per size (default 3)')
    p.add_argument('--repeats', type=int, default=5,
                   help='single-process start-ups of each kind (default 5; '
                        '0 skips)')
    p.add_argument('--sequential', type=int, default=50,
                   help='nodes of each kind driven one at a time, for the '
                        'cost of one request on an idle machine (default '
                        '50; 0 skips)')
    p.add_argument('--hash-repeats', type=int, default=3,
                   help='hashes per scheme and rounds (default 3; 0 skips)')
    p.add_argument('--steps', default=None,
                   help='steps of the fleet (default: password,account,'
                        'network,verify, or without network where that '
                        'step does not load)')
    p.add_argument('--exit-after-rescue', action='store_true',
                   help='let every worker lock down after its rescue, '
                        'inside the measured round (default: no)')
    p.add_argument('--round-timeout', type=float, default=120.0,
                   help='seconds a round waits for every end (default 120)')
    p.add_argument('--budget', type=float, default=600.0,
                   help='seconds after which no new round starts '
                        '(default 600)')
    p.add_argument('--output-dir', default='bench-results',
                   help='where bench.json and bench.png go (default '
                        'bench-results)')
    p.add_argument('--sandbox-dir', default=None,
                   help='where the nodes\' temporary roots go (default '
                        '/dev/shm, a tmpfs like a ramdisk\'s root)')
    p.add_argument('--keep-sandbox', action='store_true',
                   help='keep the nodes\' temporary roots')
    p.add_argument('--transport-url', default=None,
                   help='broker URL (default: $PIFPAF_URL)')
    p.add_argument('--no-plot', action='store_true',
                   help='write the JSON only')
    p.add_argument('-v', '--verbose', action='store_true')
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from benchmarks import driver
    from benchmarks import stats

    for name, value, least in (('--nodes', args.nodes, 1),
                               ('--processes', args.processes, 1),
                               ('--rounds', args.rounds, 1),
                               ('--repeats', args.repeats, 0),
                               ('--sequential', args.sequential, 0),
                               ('--hash-repeats', args.hash_repeats, 0)):
        if value < least:
            print('%s must be at least %d' % (name, least), file=sys.stderr)
            return 2
    try:
        report = driver.run(args)
    except driver.BenchError as exc:
        print('bench: %s' % exc, file=sys.stderr)
        return 1
    written = driver.write_outputs(report, os.path.abspath(args.output_dir),
                                   plot=not args.no_plot)
    print(summary_text(report))
    for path in written:
        print('wrote %s' % path)
    problems = stats.check_report(report)
    for problem in problems:
        print('bench: incomplete report: %s' % problem, file=sys.stderr)
    return 1 if problems else 0


def summary_text(report: dict) -> str:
    from benchmarks import stats

    lines = []
    fleet = report.get('fleet')
    if fleet:
        lines.append('%-6s %-14s %9s %9s %9s %9s %9s' % (
            'N', 'fleet', 'all done', 'p50 ms', 'p99 ms', 'ends/s',
            'cpu ms/n'))
        for size in fleet['sizes']:
            entry = fleet['by_size'][str(size)]
            for kind in stats.KINDS:
                if kind not in entry:
                    continue
                s = entry[kind]
                lines.append('%-6d %-14s %9s %9s %9s %9s %9s' % (
                    size, kind, s['fleet_seconds']['median'],
                    s['latency_ms']['p50'], s['latency_ms']['p99'],
                    s['ends_per_second']['median'],
                    s['worker_cpu_ms_per_node']['median']))
            if 'ratios' in entry:
                r = entry['ratios']
                lines.append('%-6d %-14s %9s %9s %9s %9s %9s' % (
                    size, 'ratio', r['fleet_seconds'], r['latency_p50'],
                    r['latency_p99'], r['ends_per_second'],
                    r['worker_cpu_per_node']))
    process = report.get('process')
    if process:
        for kind in stats.KINDS:
            p = process[kind]
            lines.append('process %-14s ready in %s s, RSS %s MiB' % (
                kind, p['start_to_ready_seconds']['median'],
                p['rss_ready_mib']['median']))
    for target in report['targets']:
        lines.append('target %-12s %s <= %s %s: %s' % (
            target['name'], target['value'], target['limit'],
            target['unit'], {True: 'met', False: 'MISSED',
                             None: 'not measured'}[target['met']]))
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The internal commands parse their own arguments and import little.
    if argv and argv[0] == 'bare-server':
        from benchmarks import bare

        return bare.main(argv[1:])
    if argv and argv[0] == 'fleet-helper':
        from benchmarks import helper

        return helper.main(argv[1:])
    args = build_parser().parse_args(argv)
    # oslo.messaging's notification listener imports oslo.service, which
    # imports eventlet, which warns that it is deprecated; nothing here
    # uses it.
    warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format='%(asctime)s %(message)s', datefmt='%H:%M:%S')
    logging.getLogger('benchmarks').setLevel(logging.INFO)
    if not args.verbose:
        for name in ('oslo.messaging', 'oslo_messaging', 'kombu', 'amqp',
                     'passlib'):
            logging.getLogger(name).setLevel(logging.ERROR)
    return cmd_run(args)
