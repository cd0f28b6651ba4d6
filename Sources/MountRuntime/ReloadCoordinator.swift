import Logging
import MountCore

/// Runs configuration reloads one at a time, for SIGHUP and `mountctl reload` alike.
///
/// A reload is done when its configuration is applied and has settled: every added or changed
/// mount is ready or has met its first failure, every removed one is gone. A request that
/// arrives while a reload runs is served by the next reload, which starts once the current one
/// is done and serves every request that waited for it: bursts are coalesced, never concurrent,
/// never lost, and every requester learns the result of a reload that read the configuration
/// after it asked.
final class ReloadCoordinator {
  enum Outcome {
    case applied(SupervisorCore.ReloadSummary)
    /// The configuration is invalid; nothing changed. Carries the error text.
    case invalid(String)
    /// The supervisor began shutting down before the reload could finish.
    case abandoned
  }

  private let logger: Logger
  /// Reloads begun so far; a reload's number is its position in this count.
  private var started = 0
  /// The highest reload number someone waits for.
  private var wanted = 0
  /// The reload that was applied and waits for its mounts, whether RELOADING=1 went out for it,
  /// and the mounts it still waits for.
  private var settling:
    (summary: SupervisorCore.ReloadSummary, announced: Bool, remaining: Set<String>)?
  private var announced = false
  private var waiting: [(number: Int, completion: (Outcome) -> Void)] = []
  /// Why the last reload failed, until one succeeds; part of STATUS meanwhile.
  private(set) var lastError: String?
  /// Reloads whose configuration was applied, and those refused as invalid, for the metrics.
  private(set) var appliedCount = 0
  private(set) var failedCount = 0

  init(logger: Logger) {
    self.logger = logger
  }

  var isReloading: Bool { settling != nil }

  /// A reload is wanted and none is under way.
  var isDue: Bool { settling == nil && wanted > started }

  /// Asks for a reload that reads the configuration after this call; `completion` (if any)
  /// gets its outcome.
  func request(_ completion: ((Outcome) -> Void)? = nil) {
    wanted = started + 1
    if let completion { waiting.append((started + 1, completion)) }
  }

  /// Numbers the reload about to be applied; during a shutdown it is abandoned at once.
  func begin(shuttingDown: Bool, readyAnnounced: Bool, notifier: ServiceNotifier) {
    started += 1
    guard !shuttingDown else {
      started = wanted
      finish(.abandoned)
      return
    }
    // Before READY the service manager is not in a state it could reload from.
    announced = readyAnnounced
    if announced { notifier.reloading() }
  }

  func applied(_ summary: SupervisorCore.ReloadSummary, core: SupervisorCore) {
    lastError = nil
    appliedCount += 1
    let names = summary.added + summary.changed + summary.removed
    settling = (summary, announced, Set(names.filter { !isSettled($0, summary, core) }))
  }

  func failed(_ error: any Error, notifier: ServiceNotifier, status: @autoclosure () -> String) {
    let text = "\(error)".split(whereSeparator: \.isNewline).joined(separator: " ")
    lastError = text
    failedCount += 1
    logger.error("reload failed, nothing changed: \(text)")
    if announced {
      notifier.ready(status: status())
    } else {
      notifier.status(status())
    }
    finish(.invalid(text))
  }

  /// Checks the settling reload against the mounts that changed; true when it finished and
  /// another reload is due.
  func mountsChanged(
    _ changed: Set<String>, core: SupervisorCore, notifier: ServiceNotifier,
    status: @autoclosure () -> String
  ) -> Bool {
    guard var current = settling else { return false }
    if core.shuttingDown {
      settling = nil
      finish(.abandoned)
      return false
    }
    for name in changed.intersection(current.remaining)
    where isSettled(name, current.summary, core) {
      current.remaining.remove(name)
    }
    settling = current
    guard current.remaining.isEmpty else { return false }
    settling = nil
    let text = status()
    logger.notice("reload settled: \(text)")
    if current.announced { notifier.ready(status: text) }
    finish(.applied(current.summary))
    return isDue
  }

  private func isSettled(
    _ name: String, _ summary: SupervisorCore.ReloadSummary, _ core: SupervisorCore
  ) -> Bool {
    summary.removed.contains(name)
      ? !core.isConfigured(name) && core.machines[name] == nil : core.hasSettledAfterReload(name)
  }

  /// What of a reload crosses an upgrade: whether one is due, the one settling, the last
  /// error. Those waiting for a reload are clients, answered before the exec.
  struct Record: Codable {
    var due: Bool
    var settling: SupervisorCore.ReloadSummary?
    var settlingAnnounced: Bool
    var remaining: Set<String>
    var lastError: String?
    var appliedCount: Int
    var failedCount: Int
  }

  var record: Record {
    Record(
      due: isDue, settling: settling?.summary, settlingAnnounced: settling?.announced ?? false,
      remaining: settling?.remaining ?? [], lastError: lastError, appliedCount: appliedCount,
      failedCount: failedCount)
  }

  /// Takes over the reload state of the binary an upgrade replaced.
  func restore(_ record: Record) {
    lastError = record.lastError
    appliedCount = record.appliedCount
    failedCount = record.failedCount
    if let summary = record.settling {
      settling = (summary, record.settlingAnnounced, record.remaining)
    }
    if record.due { request() }
  }

  /// Answers everyone whose reload number is covered by the reload that just ended.
  private func finish(_ outcome: Outcome) {
    let done = waiting.filter { $0.number <= started }
    waiting.removeAll { $0.number <= started }
    for entry in done { entry.completion(outcome) }
  }
}
