"""The benchmark's PNG: latency CDF of both fleets at N, and the time until
every end arrived against N (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from benchmarks import stats

COLORS = {stats.RESCUE: '#c0392b', stats.BASELINE: '#2c3e50'}
LABELS = {stats.RESCUE: 'rescue-worker',
          stats.BASELINE: 'bare oslo.messaging server'}


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot

    fleet = report['fleet']
    main = fleet['main_size']
    figure, (cdf_axes, size_axes) = pyplot.subplots(1, 2, figsize=(12, 4.8))

    for kind in stats.KINDS:
        values = fleet['latency_ms_main_size'].get(kind) or []
        if not values:
            continue
        xs, ys = stats.cdf_points(values)
        summary = fleet['by_size'][str(main)][kind]['latency_ms']
        cdf_axes.step(xs, ys, where='post', color=COLORS[kind],
                      label='%s (p50 %.0f ms, p99 %.0f ms)' % (
                          LABELS[kind], summary['p50'], summary['p99']))
    cdf_axes.set_xlabel('cast-to-end latency (ms)')
    cdf_axes.set_ylabel('fraction of nodes')
    cdf_axes.set_ylim(0, 1.02)
    cdf_axes.set_xlim(left=0)
    cdf_axes.grid(True, alpha=0.3)
    cdf_axes.legend(loc='lower right', fontsize=8)
    cdf_axes.set_title('Latency CDF at N=%d (all rounds)' % main)

    sizes = fleet['sizes']
    for kind in stats.KINDS:
        points = [(n, fleet['by_size'][str(n)][kind]['fleet_seconds'])
                  for n in sizes if kind in fleet['by_size'][str(n)]]
        points = [(n, s) for n, s in points if s['median'] is not None]
        if not points:
            continue
        xs = [n for n, _ in points]
        medians = [s['median'] for _, s in points]
        low = [s['median'] - s['min'] for _, s in points]
        high = [s['max'] - s['median'] for _, s in points]
        size_axes.errorbar(xs, medians, yerr=[low, high], marker='o',
                           capsize=3, color=COLORS[kind], label=LABELS[kind])
    size_axes.set_xlabel('nodes (N)')
    size_axes.set_ylabel('time until every end arrived (s)')
    size_axes.set_xlim(left=0)
    size_axes.set_ylim(bottom=0)
    size_axes.grid(True, alpha=0.3)
    size_axes.legend(loc='upper left', fontsize=8)
    size_axes.set_title('Fleet time against N (median, min-max)')

    machine = report.get('machine') or {}
    figure.suptitle('rescue-worker fleet benchmark: %s CPU(s), %s, %s '
                    'helper processes per fleet' % (
                        machine.get('nproc', '?'),
                        machine.get('cpu_model', '?'),
                        report['config'].get('processes', '?')),
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
