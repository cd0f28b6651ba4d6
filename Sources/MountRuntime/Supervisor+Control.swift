import CLinuxSupport
import Glibc
import Logging
import MountConfig
import MountCore

// MARK: What the control server may ask

extension Supervisor: ControlHost {
  var supervisorCore: SupervisorCore { core }
  var currentConfiguration: Configuration { configuration }
  var isReloading: Bool { reloads.isReloading }

  var serviceStatus: String {
    guard let error = reloads.lastError else { return core.statusLine }
    return "\(core.statusLine); last reload failed: \(error)"
  }

  func outputLines(of name: String) -> [String] { outputs[name]?.lines ?? [] }

  func submit(_ action: OperatorAction, _ names: [String]) {
    inbox.append(.operate(action, names, at: .now()))
  }

  func requestReload(_ completion: @escaping (ReloadCoordinator.Outcome) -> Void) {
    reloads.request(completion)
    inbox.append(.reload)
  }

  var lifetime: (startedAt: Double, upgrades: Int, lastUpgradeAt: Double?) {
    (startedAt, upgrades, lastUpgradeAt)
  }

  func metricsExposition() -> [UInt8] {
    MetricsExposition.expose(
      core,
      totals: .init(
        reloadsApplied: reloads.appliedCount, reloadsFailed: reloads.failedCount,
        upgrades: upgrades),
      now: .now(), wallNow: MetricsExposition.wallClockNow(), startTime: startedAt)
  }
}

/// What the metrics show of the supervisor as a whole; the mounts' part changes with them.
struct MetricsSummary: Equatable {
  var reloadsApplied: Int
  var reloadsFailed: Int
  var ready: Bool
  var shuttingDown: Bool
  var upgrades: Int

  init(_ supervisor: Supervisor) {
    reloadsApplied = supervisor.reloads.appliedCount
    reloadsFailed = supervisor.reloads.failedCount
    ready = supervisor.core.readyAnnounced
    shuttingDown = supervisor.core.shuttingDown
    upgrades = supervisor.upgrades
  }
}

/// The metrics outputs and the configuration watch.
extension Supervisor {
  /// Opens what `[supervisor]` asks for; a listener that cannot bind stops the start, with the
  /// address in the message.
  func startMetricsAndConfigWatch() throws {
    let settings = configuration.supervisor
    if let path = settings.metricsFile {
      metricsFile = MetricsFile(path: path, logger: logger)
      logger.info("metrics file \(path)")
    }
    if let address = settings.metricsListen {
      metricsListener = try MetricsListener(
        address: address, loop: loop, logger: logger,
        exposition: { [unowned self] in metricsExposition() })
    }
    if settings.watchConfig {
      let watch = try ConfigWatch(loop: loop, logger: logger)
      watch.watch(configuration)
      configWatch = watch
      logger.info(
        "watch_config: reloading when \(configuration.files.joined(separator: ", ")) change")
    }
  }

  /// After a reload: the metrics file follows `metrics_file`; the listener and the watch keep
  /// what they had until mountsupd restarts.
  func applyMetricsAndWatchSettings(_ next: SupervisorSettings) {
    let current = configuration.supervisor
    if next.metricsFile != current.metricsFile {
      if let path = next.metricsFile {
        if let metricsFile {
          metricsFile.move(to: path)
        } else {
          metricsFile = MetricsFile(path: path, logger: logger)
        }
      } else {
        metricsFile = nil
      }
    }
    if next.metricsListen != current.metricsListen {
      let address = next.metricsListen?.description ?? "none"
      logger.warning(
        "metrics_listen changed to \(address); it takes effect when mountsupd restarts")
    }
    if next.watchConfig != current.watchConfig {
      logger.warning("watch_config changed; it takes effect when mountsupd restarts")
    }
  }
}

/// Reloads, for SIGHUP and `mountctl reload` alike.
extension Supervisor {

  /// Applies the next reload if one is due and none is settling.
  func startDueReload() {
    guard reloads.isDue else { return }
    reloads.begin(
      shuttingDown: core.shuttingDown, readyAnnounced: core.readyAnnounced, notifier: notifier)
    guard !core.shuttingDown else { return }
    do {
      let next = try loadConfiguration()
      if next.supervisor.controlSocket != configuration.supervisor.controlSocket {
        logger.warning(
          "control_socket changed to \(next.supervisor.controlSocket); it takes effect when mountsupd restarts"
        )
      }
      reserveDescriptors(forMounts: next.mounts.count)
      let (summary, effects) = core.apply(specs: next.mounts, now: .now())
      applyMetricsAndWatchSettings(next.supervisor)
      configuration = next
      configWatch?.watch(next)
      logger.notice("reloaded: \(summary)")
      execute(effects)
      // A changed hang_timeout takes effect without a restart.
      for name in core.order { updateHangWatch(name) }
      reloads.applied(summary, core: core)
      _ = reloads.mountsChanged([], core: core, notifier: notifier, status: serviceStatus)
    } catch {
      reloads.failed(error, notifier: notifier, status: serviceStatus)
    }
    if reloads.isDue { inbox.append(.reload) }
  }
}
