import Glibc
import MountControl
import MountCore
import Prometheus

/// The supervisor's metrics in the Prometheus text exposition format (docs/metrics.md).
///
/// They are a view of the same state `mountctl status` reads, made when asked: a fresh
/// registry of swift-prometheus per exposition, filled from the core's reports, so that no
/// metric is a second copy of a state that could drift from the first. The same bytes go to
/// `mountctl metrics`, to `[supervisor] metrics_file` and to `[supervisor] metrics_listen`.
///
/// Every value is constant while nothing happens (time since ready is exposed as the instant
/// of readiness, not as a growing age), so that the file need not be rewritten while the
/// supervisor is idle. A new failure kind is a new case of `Failure.Kind`; a new counter of the
/// supervisor is one more field of ``Totals`` and one line in `expose`.
enum MetricsExposition {
  /// Counters of the supervisor as a whole, kept by the runtime.
  struct Totals: Equatable {
    var reloadsApplied = 0
    var reloadsFailed = 0
    /// Upgrades in place since the daemon started.
    var upgrades = 0
  }

  /// The metrics of the core's mounts (in the supervisor's order) and of the supervisor.
  ///
  /// - Parameters:
  ///   - now: the monotonic instant the readiness instants are converted from.
  ///   - wallNow: the same instant in seconds since the Unix epoch.
  ///   - startTime: when the daemon started, in seconds since the Unix epoch.
  static func expose(
    _ core: SupervisorCore, totals: Totals, now: MonotonicInstant, wallNow: Double,
    startTime: Double
  ) -> [UInt8] {
    let registry = PrometheusCollectorRegistry()
    func gauge(_ name: MetricNameDescriptor, _ labels: [(String, String)], _ value: Double) {
      registry.makeGauge(descriptor: name, labels: labels).set(to: value)
    }
    func counter(_ name: MetricNameDescriptor, _ labels: [(String, String)], _ value: Int) {
      registry.makeCounter(descriptor: name, labels: labels).increment(by: Int64(value))
    }
    gauge(
      Name.buildInfo,
      [
        ("version", MountSupervisorRelease.version),
        ("commit", MountSupervisorRelease.commit),
        ("control_protocol", "\(ControlProtocol.version)"),
      ],
      1)
    gauge(Name.startTime, [], startTime)
    gauge(Name.ready, [], core.readyAnnounced ? 1 : 0)
    gauge(Name.shuttingDown, [], core.shuttingDown ? 1 : 0)
    counter(Name.reloads, [("result", "applied")], totals.reloadsApplied)
    counter(Name.reloads, [("result", "failed")], totals.reloadsFailed)
    counter(Name.upgrades, [], totals.upgrades)

    for name in core.order {
      guard let report = core.report(of: name) else { continue }
      let mount = ("mount", name)
      gauge(
        Name.mountInfo,
        [mount, ("mountpoint", report.mountpoint), ("required", "\(report.required)")], 1)
      gauge(Name.mountUp, [mount], report.state == .ready ? 1 : 0)
      for state in MountMachine.State.allCases {
        gauge(Name.mountState, [mount, ("state", state.rawValue)], report.state == state ? 1 : 0)
      }
      counter(Name.mountRestarts, [mount], report.restarts)
      counter(Name.mountResumes, [mount], report.resumes)
      for kind in Failure.Kind.allCases {
        counter(
          Name.mountFailures, [mount, ("kind", kind.rawValue)], report.failureCounts[kind] ?? 0)
      }
      if let took = report.lastTimeToReady {
        gauge(Name.mountTimeToReady, [mount], seconds(took))
      }
      if let since = report.readySince {
        gauge(Name.mountReadySince, [mount], wallNow - seconds(now - since))
      }
    }
    return registry.emitToBuffer()
  }

  /// Every metric's name and help text, as docs/metrics.md lists them.
  enum Name {
    static var buildInfo: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", metricName: "build", unitName: "info",
        helpText:
          "Always 1; the labels tell the release and commit of mountsupd and its control protocol.")
    }
    static var startTime: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", metricName: "start_time", unitName: "seconds",
        helpText: "When mountsupd started, in seconds since the Unix epoch.")
    }
    static var ready: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", metricName: "ready", unitName: "",
        helpText: "1 once every required mount was confirmed and READY=1 was sent, else 0.")
    }
    static var shuttingDown: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", metricName: "shutting_down", unitName: "",
        helpText: "1 while mountsupd stops every mount to exit, else 0.")
    }
    static var reloads: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", metricName: "reloads", unitName: "total",
        helpText: "Configuration reloads (SIGHUP, mountctl reload, watch_config) by result.")
    }
    static var upgrades: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", metricName: "upgrades", unitName: "total",
        helpText: "Upgrades of mountsupd in place (mountctl upgrade, SIGUSR2) since it started.")
    }
    static var mountInfo: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", subsystem: "mount", metricName: "info", unitName: "",
        helpText: "Always 1; the labels tell the mount's mountpoint and whether it is required.")
    }
    static var mountUp: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", subsystem: "mount", metricName: "up", unitName: "",
        helpText: "1 while the mount is confirmed ready (worker READY and kernel mount), else 0.")
    }
    static var mountState: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", subsystem: "mount", metricName: "state", unitName: "",
        helpText: "1 for the mount's current state (as mountctl status names it), 0 for the others."
      )
    }
    static var mountRestarts: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", subsystem: "mount", metricName: "restarts", unitName: "total",
        helpText: "Automatic restarts after failures (not those of operators or reloads).")
    }
    static var mountResumes: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", subsystem: "mount", metricName: "resumes", unitName: "total",
        helpText:
          "Crashes of the mount's worker that a successor resumed on the live FUSE connection (also counted as restarts)."
      )
    }
    static var mountFailures: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", subsystem: "mount", metricName: "failures", unitName: "total",
        helpText:
          "Failures of the mount's workers by kind: exit, signal, timeout, vanished, start, hang."
      )
    }
    static var mountTimeToReady: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", subsystem: "mount", metricName: "time_to_ready", unitName: "seconds",
        helpText:
          "How long the last start that became ready took, from its beginning to the confirmed mount."
      )
    }
    static var mountReadySince: MetricNameDescriptor {
      MetricNameDescriptor(
        namespace: "mountsup", subsystem: "mount", metricName: "ready_since",
        unitName: "timestamp_seconds",
        helpText:
          "While the mount is ready: since when, in seconds since the Unix epoch (time() minus this is the time since ready)."
      )
    }
  }

  /// The wall-clock time in seconds since the Unix epoch.
  static func wallClockNow() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
  }

  private static func seconds(_ duration: Duration) -> Double {
    let parts = duration.components
    return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
  }
}
