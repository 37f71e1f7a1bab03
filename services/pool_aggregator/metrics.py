"""pool_aggregator's own Prometheus series, on the app's per-instance registry."""

from __future__ import annotations

from prometheus_client import Gauge

from services.common.httpkit import ServiceMetrics


class AggregatorMetrics:
    def __init__(self, base: ServiceMetrics) -> None:
        self.base = base
        self.groups = Gauge("pool_groups", "Groups by state (updated by the ticker)", ["status"],
                            registry=base.registry)
        self.files_grouped = base.counter("pool_files_grouped_total", "Files put into a group")
        self.late_files = base.counter("pool_late_files_total", "Files put into a later window (late)")
        self.results_posted = base.counter("pool_results_posted_total", "Results posted by processors")
        self.results_published = base.counter("pool_results_published_total", "Results announced to members")
        self.lease_expiries = base.counter("pool_lease_expiries_total", "Processing leases that expired",
                                           ("outcome",))
        self.announce_failures = base.counter("pool_announce_failures_total",
                                              "Ready groups the processor_url did not accept")
        self.leader = Gauge("pool_ticker_leader", "1 on the replica that holds the ticker's leader lease",
                            registry=base.registry)
        self.leader_term = Gauge("pool_ticker_term", "The ticker lease's term this replica last held (fencing token)",
                                 registry=base.registry)
        self.fenced_writes = base.counter("pool_ticker_fenced_writes_total",
                                          "Ticker writes skipped because this replica no longer led")
        self.audit_lost = base.counter("audit_write_lost_total", "Audit records that could not be published")
