import Glibc
import MountCore

/// What the supervisor does once a turn's events are taken: the answers, reloads, metrics and
/// STATUS that follow from the mounts that changed, and the timer at the next deadline.
extension Supervisor {
  /// What follows a turn: answers for whoever waits on the mounts that changed, the reload in
  /// progress, STATUS, and the timer at the next deadline.
  func afterTurn() {
    let changed = core.takeChangedMounts()
    for name in changed { updateHangWatch(name) }
    for name in changed where core.machines[name] == nil {
      // A reload removed it and its worker is gone: nothing of it is kept.
      outputs[name] = nil
      lastMountSite[name] = nil
      mountLoggers[name] = nil
    }
    if !changed.isEmpty {
      control?.mountsChanged(changed)
      if reloads.mountsChanged(changed, core: core, notifier: notifier, status: serviceStatus) {
        inbox.append(.reload)
      }
    }
    control?.evaluateSubmitted()
    if let metricsFile {
      let summary = MetricsSummary(self)
      if !changed.isEmpty || summary != lastMetricsSummary { metricsFile.changed() }
      lastMetricsSummary = summary
      metricsFile.writeIfDue(now: .now(), metricsExposition)
    }
    if configWatch?.takeDueReload(now: .now()) == true {
      logger.notice("watch_config: a configuration file changed; reloading")
      reloads.request()
      inbox.append(.reload)
    }
    timer.arm(
      at: [
        core.nextDeadline, control?.nextDeadline, upgrade?.deadline, metricsFile?.nextDeadline,
        configWatch?.reloadDeadline,
      ].compactMap { $0 }.min()?.nanoseconds)
    // While required mounts are legitimately starting, ask the service manager for the time
    // their start timeouts allow, plus a margin for the cleanup after a failure.
    var moreTime: UInt64?
    if let deadline = core.startupDeadline {
      let now = MonotonicInstant.now()
      let remaining = deadline > now ? (deadline - now).nanosecondsClamped / 1000 : 0
      moreTime = UInt64(remaining) + 5_000_000
    }
    notifier.progress(status: changed.isEmpty ? nil : serviceStatus, extendBy: moreTime)
    watchNotifySocket()
  }

  /// Watches the notify socket for room while messages wait for it, and only then.
  func watchNotifySocket() {
    let wanted = notifier.hasBacklog ? notifier.socket : nil
    guard wanted !== watchedNotifySocket else { return }
    if let watched = watchedNotifySocket { loop.remove(watched) }
    watchedNotifySocket = nil
    if let wanted, (try? loop.add(wanted, as: .serviceManager, events: EventLoop.writable)) != nil {
      watchedNotifySocket = wanted
    }
  }
}
