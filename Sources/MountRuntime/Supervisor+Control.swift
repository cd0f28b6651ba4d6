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
      let (summary, effects) = core.apply(specs: next.mounts, now: .now())
      configuration = next
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
