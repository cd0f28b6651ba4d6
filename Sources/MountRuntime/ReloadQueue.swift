import Logging
import MountCore

/// Runs configuration reloads one at a time, for SIGHUP and `mountctl reload` alike.
///
/// A reload is done when its configuration is applied and has settled: every added or changed
/// mount is ready or has failed, every removed one is gone. A request that arrives while a
/// reload runs is served by the next reload, which starts once the current one is done and
/// serves every request that waited for it: bursts are coalesced, never concurrent, never lost,
/// and every requester learns the result of a reload that read the configuration after it asked.
final class ReloadQueue {
  enum Outcome {
    case applied(SupervisorCore.ReloadSummary)
    /// The configuration is invalid; nothing changed. Carries the error text.
    case invalid(String)
    /// The supervisor began shutting down before the reload could finish.
    case abandoned
  }

  private unowned let host: any ControlHost
  private let logger: Logger
  /// Reloads begun so far; a reload's number is its position in this count.
  private var started = 0
  /// The highest reload number someone waits for.
  private var wanted = 0
  /// The configuration is being read and applied right now (effects run re-entrantly).
  private var applying = false
  /// The applied reload waiting to settle, and whether RELOADING=1 went out for it.
  private var settling: (summary: SupervisorCore.ReloadSummary, announced: Bool)?
  private var waiting: [(number: Int, completion: (Outcome) -> Void)] = []
  /// Why the last reload failed, until one succeeds; part of STATUS meanwhile.
  private(set) var lastError: String?

  init(host: any ControlHost, logger: Logger) {
    self.host = host
    self.logger = logger
  }

  var isReloading: Bool { applying || settling != nil }

  /// Asks for a reload that reads the configuration after this call; `completion` (if any)
  /// gets its outcome.
  func request(_ completion: ((Outcome) -> Void)? = nil) {
    wanted = started + 1
    if let completion { waiting.append((started + 1, completion)) }
    startNext()
  }

  /// Called after every step of the supervisor: finishes a reload that has settled and starts
  /// the next one.
  func stateChanged() {
    guard !applying else { return }
    if let current = settling {
      if host.supervisorCore.shuttingDown {
        settling = nil
        finish(.abandoned)
      } else if isSettled(current.summary) {
        settling = nil
        logger.notice("reload settled: \(host.serviceStatus)")
        if current.announced { host.serviceNotifier.ready(status: host.serviceStatus) }
        finish(.applied(current.summary))
      }
    }
    startNext()
  }

  private func startNext() {
    while !applying, settling == nil, wanted > started {
      started += 1
      if host.supervisorCore.shuttingDown {
        started = wanted
        finish(.abandoned)
        return
      }
      // Before READY the service manager is not in a state it could reload from.
      let announced = host.supervisorCore.readyAnnounced
      if announced { host.serviceNotifier.reloading() }
      applying = true
      do {
        let summary = try host.applyConfiguration()
        applying = false
        lastError = nil
        settling = (summary, announced)
        stateChanged()
        return
      } catch {
        applying = false
        let text = "\(error)".split(whereSeparator: \.isNewline).joined(separator: " ")
        lastError = text
        logger.error("reload failed, nothing changed: \(text)")
        if announced {
          host.serviceNotifier.ready(status: host.serviceStatus)
        } else {
          host.serviceNotifier.status(host.serviceStatus)
        }
        finish(.invalid(text))
      }
    }
  }

  /// Answers everyone whose reload number is covered by the reload that just ended.
  private func finish(_ outcome: Outcome) {
    let done = waiting.filter { $0.number <= started }
    waiting.removeAll { $0.number <= started }
    for entry in done { entry.completion(outcome) }
  }

  private func isSettled(_ summary: SupervisorCore.ReloadSummary) -> Bool {
    let core = host.supervisorCore
    let started = (summary.added + summary.changed).allSatisfy { name in
      guard let machine = core.machines[name] else { return true }
      switch machine.phase {
      case .ready, .failed, .exited, .inactive: return true
      case .preparing, .starting, .backoff, .stopping: return false
      }
    }
    return started && summary.removed.allSatisfy { core.machines[$0]?.isSettled ?? true }
  }
}
