import CLinuxSupport
import Glibc
import Logging
import MountConfig
import MountCore

/// The imperative shell around `SupervisorCore`.
///
/// Every source (pidfds, worker sockets and pipes, signals, the timer, mount-table changes,
/// control clients, answers of work off the loop) only puts events on one queue, each stamped
/// with the instant it was read. One loop turn reads what is ready, feeds the queue to the core
/// in order, and carries out the effects the core returns; an effect that has an answer puts it
/// on the same queue. Nothing calls back into the core from inside an effect, so no call
/// chain's depth follows the number of mounts.
///
/// Each turn serves supervision first (exits, readiness, timers, the mount table), then a
/// bounded share of worker output, control clients and spawns: a worker that prints without
/// pause or a client that pipelines requests cannot hold a restart back.
public final class Supervisor {
  /// Spawns per loop turn: the loop keeps confirming the first mounts while the last ones start.
  static let spawnsPerTurn = 16
  /// Output read from one worker per loop turn.
  static let outputPerTurn = 64 * 1024

  var core: SupervisorCore
  var configuration: Configuration
  let loadConfiguration: () throws -> Configuration
  let loop: EventLoop
  let timer: DeadlineTimer
  let signals: Descriptor
  let table: MountTable
  let notifier = ServiceNotifier()
  var watchdog: Watchdog?
  let logger: Logger
  var control: ControlServer?
  /// The notify socket while the loop watches it for room (see `watchNotifySocket`).
  var watchedNotifySocket: Descriptor?
  let reloads: ReloadCoordinator
  /// `[supervisor] metrics_file`, `metrics_listen` and `watch_config`, when configured.
  var metricsFile: MetricsFile?
  var metricsListener: MetricsListener?
  var configWatch: ConfigWatch?
  /// What the metrics show of the supervisor as a whole at the last check, so that a change
  /// of it (a reload, READY) rewrites the metrics file like a change of a mount does.
  var lastMetricsSummary: MetricsSummary?

  /// What the loop has read and the core has not yet been told, in the order it was read.
  var inbox: [Input] = []
  var inboxNext = 0
  var spawnQueue: [(name: String, attempt: Int, spec: MountSpec, resume: Bool)] = []
  var spawnNext = 0

  var workers: [WorkerID: Worker] = [:]
  /// The current worker of each mount.
  var workerOf: [String: WorkerID] = [:]
  /// The worker that mounts at each mountpoint, for mount-table changes.
  var workerAt: [String: WorkerID] = [:]
  /// Exited workers whose output pipe a grandchild still holds: read until end of file.
  var orphanedOutputs: [WorkerID: Worker] = [:]
  var nextWorkerID: WorkerID = 1
  /// Where a mount's last worker mounted and what was there before it, for the detach that
  /// follows its exit.
  var lastMountSite: [String: (mountpoint: String, baseline: Set<UInt64>)] = [:]
  var outputs: [String: OutputLog] = [:]
  /// FUSE connections handed over by kit workers, by mount (see `HeldConnection`).
  var heldConnections: [String: HeldConnection] = [:]
  /// Whether the log has said that this kernel cannot resend requests (said once).
  var saidKernelCannotResend = false
  var mountLoggers: [String: Logger] = [:]
  /// Executables by command, see `executable(for:)`.
  var resolvedCommands: [String: String] = [:]
  var offLoop: [Int: (work: OffLoopWork, purpose: OffLoopPurpose)] = [:]
  /// The unmounts a shutdown asked for in this turn: `startShutdownUnmounts` runs them.
  var shutdownUnmounts: [(mount: String, mountpoint: String)] = []
  /// The periodic hang check, from the first mount it watches on.
  var hangWatcher: HangWatcher?
  /// Why hangs cannot be checked here (fusectl missing), once that is known and said.
  var hangCheckUnavailable: String?
  /// The upgrade under way, from the request to the exec.
  var upgrade: UpgradeAttempt?
  /// The state an upgrade handed over, until `run` has taken it.
  var resumedState: UpgradeState?
  /// The file the daemon was first started from, as the path it had then (an upgrade keeps
  /// it): what `mountctl upgrade` execs by default, as it is on disk by the time.
  let executablePath: String
  /// When the daemon started (seconds since the epoch), kept across upgrades.
  let startedAt: Double
  var upgrades = 0
  var lastUpgradeAt: Double?
  var nextOffLoopID = 1
  var readBuffer = [UInt8](repeating: 0, count: Supervisor.outputPerTurn)
  var exitCode: Int32?

  let commands: CommandLookup
  let inheritedEnvironment: InheritedEnvironment
  /// The soft descriptor limit the daemon inherited, before raising its own: workers get it.
  let inheritedDescriptorLimit: rlimit
  /// The descriptor table's size made sure of (see `reserveDescriptors`).
  var reservedDescriptors = 0
  let unmountsAsRoot = geteuid() == 0
  let spawnSlots: SpawnSlots

  /// Something read by the loop, for the core or the runtime.
  enum Input {
    case mount(String, MountMachine.Event, at: MonotonicInstant)
    case timer(at: MonotonicInstant)
    case shutdown(signal: Int32, at: MonotonicInstant)
    case operate(OperatorAction, [String], at: MonotonicInstant)
    case reload
  }

  enum OffLoopPurpose {
    /// The owner's `statfs` of a FUSE mount found at a mountpoint before a start.
    case inspection(mount: String, attempt: Int, fsType: String, source: String)
    case probe(mount: String, attempt: Int, worker: WorkerID)
    /// The probe of a ready mount whose server has requests waiting.
    case hangProbe(mount: String, attempt: Int)
    /// Unmounts of a shutdown; a report is "NAME<tab>problem".
    case unmounts
  }

  /// How many threads unmount at once in a shutdown.
  static let unmountThreads = 4

  /// - Parameters:
  ///   - signalFD: from `captureSignals()`.
  ///   - reload: reads and validates the configuration again, for SIGHUP and `mountctl reload`.
  public convenience init(
    configuration: Configuration, signalFD: Int32, logger: Logger,
    reload: @escaping () throws -> Configuration
  ) throws {
    try self.init(
      configuration: configuration, core: SupervisorCore(specs: configuration.mounts),
      resuming: nil, signalFD: signalFD, logger: logger, reload: reload)
  }

  /// The supervisor an upgrade handed over to this binary: `upgradeStateDescriptor()` names the
  /// state; the configuration is the one that ran, not the file as it is now.
  public convenience init(
    resumingFrom stateFD: Int32, signalFD: Int32, logger: Logger,
    reload: @escaping () throws -> Configuration
  ) throws {
    let reading = MonotonicInstant.now()
    let state = try UpgradeState.read(from: stateFD)
    logger.debug(
      "upgrade: state read in \(Self.milliseconds(since: reading)) ms (\(Self.elapsed(since: state.requestedAt)))"
    )
    try self.init(
      configuration: state.runningConfiguration,
      core: SupervisorCore(snapshot: state.core), resuming: state, signalFD: signalFD,
      logger: logger, reload: reload)
  }

  private init(
    configuration: Configuration, core: SupervisorCore, resuming: UpgradeState?, signalFD: Int32,
    logger: Logger, reload: @escaping () throws -> Configuration
  ) throws {
    self.configuration = configuration
    self.loadConfiguration = reload
    self.logger = logger
    self.core = core
    resumedState = resuming
    startedAt = resuming?.startedAt ?? MetricsExposition.wallClockNow()
    if let resuming {
      upgrades = resuming.upgrades + 1
      lastUpgradeAt = MetricsExposition.wallClockNow()
    }
    executablePath = resuming?.executablePath ?? Self.currentExecutablePath()
    // First, while few descriptors are open: what lies below the slots is copied per spawn.
    spawnSlots = try SpawnSlots()
    loop = try EventLoop()
    timer = try DeadlineTimer()
    signals = Descriptor(signalFD)
    table = try resuming?.mountEvents.map(MountTable.init(adoptingEvents:)) ?? MountTable()
    reloads = ReloadCoordinator(logger: logger)
    inheritedDescriptorLimit = Self.raiseDescriptorLimit()
    var environment: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
      let text = String(cString: entry)
      if let equals = text.firstIndex(of: "=") {
        environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
      }
      pointer += 1
    }
    // Workers are found on PATH, then beside this executable (where mountsup-mirror is built);
    // a worker that is a shell wrapper finds them the same way.
    commands = CommandLookup.daemon(path: environment["PATH"])
    environment["PATH"] = commands.searchPath.joined(separator: ":")
    // Inherited by every worker and its helpers: who they belong to (see LeftoverWorkers).
    environment["MOUNTSUP_SUPERVISOR"] = LeftoverWorkers.identity
    inheritedEnvironment = InheritedEnvironment(environment)
    // Before any thread exists (see reserveDescriptors).
    reserveDescriptors(forMounts: core.machines.count)
  }

  /// Runs until every mount is stopped after SIGTERM/SIGINT, or the service failed; returns the
  /// exit code (0 after a clean stop, 1 when a required mount could not start).
  public func run() throws -> Int32 {
    try loop.add(signals, as: .signals)
    try loop.add(timer.fd, as: .timer)
    try loop.add(raw: table.fd, as: .mountTable, events: table.epollEvents)
    logger.info("mount changes: \(table.summary)")
    // Before the control socket: a metrics address that cannot be bound leaves nothing behind.
    // After an upgrade it is no reason to stop: the mounts run, so it is said and the rest goes on.
    do {
      try startMetricsAndConfigWatch()
    } catch  where resumedState != nil {
      logger.error("after the upgrade: \(error); metrics_listen and watch_config are off")
    }
    let passed = resumedState == nil ? PassedDescriptors.take() : PassedDescriptors()
    if let problem = passed.problem { logger.error("\(problem)") }
    control = try ControlServer(
      host: self, loop: loop, logger: logger, adopting: resumedState?.control, passed: passed)
    watchdog = try Watchdog.start(on: loop, notifier: notifier)
    if let watchdog {
      logger.info(
        "watchdog: WATCHDOG=1 every \(watchdog.timeout / 2) (WatchdogSec=\(watchdog.timeout))")
    }
    if let state = resumedState {
      resumedState = nil
      resume(from: state)
    } else {
      logger.info("starting \(configuration.summary)")
      adoptStoredConnections(passed.stored)
      execute(core.begin(now: .now()))
    }
    while exitCode == nil {
      turn()
    }
    control?.close()
    metricsListener?.close()
    metricsFile?.writeIfDue(now: .now(), force: true, metricsExposition)
    notifier.flushBeforeExit()
    return exitCode!
  }

  /// One turn of the loop: wait, read supervision sources, let the core decide, then give the
  /// bounded shares to output, clients and spawns.
  func turn() {
    drain()
    afterTurn()
    guard exitCode == nil else { return }
    let busy =
      inboxNext < inbox.count || spawnNext < spawnQueue.count || control?.hasBacklog == true
    // Between turns nothing read waits for the core: the one point where an exec loses nothing.
    if upgrade?.isChecked == true { performUpgrade() }
    let ready = loop.wait(timeout: busy ? 0 : -1)
    var later: [(source: Source, events: UInt32)] = []
    for (source, events) in ready {
      switch source {
      case .workerOutput, .controlClient, .controlListener, .metricsClient, .metricsListener:
        later.append((source, events))
      default: read(source, events)
      }
    }
    drain()
    for (source, events) in later { read(source, events) }
    control?.serveBacklog()
    spawnSome()
  }

  // MARK: The queue

  /// Feeds everything queued to the core, in the order it was read, and carries out the
  /// effects; their answers join the queue and are taken in the same loop.
  func drain() {
    while inboxNext < inbox.count {
      let input = inbox[inboxNext]
      inboxNext += 1
      switch input {
      case .mount(let name, let event, let at):
        execute(core.handle(event, for: name, now: at))
        if case .spawned(let pid) = event, core.machines[name]?.pid != pid,
          let worker = workerOf[name].flatMap({ workers[$0] }), worker.pid == pid
        {
          // No machine waits for this worker (never expected; it must not run unsupervised).
          logger(for: name).error("worker \(pid) is not expected by its mount; killing it")
          worker.signal(SIGKILL)
        }
      case .timer(let at):
        execute(core.timerFired(now: at))
      case .shutdown(let signal, let at):
        if core.shuttingDown {
          logger.notice("already stopping; waiting for workers to exit")
          continue
        }
        logger.notice("received \(signal == SIGINT ? "SIGINT" : "SIGTERM"); stopping all mounts")
        execute(core.shutdown(now: at))
        notifier.stopping(status: core.statusLine)
      case .operate(let action, let names, let at):
        for name in names {
          switch action {
          case .start: execute(core.operatorStart(name, now: at))
          case .stop: execute(core.operatorStop(name, now: at))
          case .restart: execute(core.operatorRestart(name, now: at))
          case .abort: execute(core.operatorAbort(name, now: at))
          }
        }
      case .reload:
        startDueReload()
      }
    }
    inbox.removeAll(keepingCapacity: true)
    inboxNext = 0
    startShutdownUnmounts()
  }

  func execute(_ effects: [SupervisorCore.Effect]) {
    for effect in effects {
      switch effect {
      case .mount(let name, let mountEffect):
        perform(mountEffect, for: name)
      case .announceReady:
        logger.notice("ready: \(core.statusLine)")
        notifier.ready(status: core.statusLine)
      case .announceFailure(let name, let failure):
        // The failure itself was logged as it happened; here what it means, and what led to it.
        logger.error(
          "cannot start: required mount \(name) failed; stopping every mount",
          metadata: ["mount": "\(name)"])
        for line in failure.outputTail.suffix(10) {
          logger.error("  | \(line)", metadata: ["mount": "\(name)"])
        }
        notifier.failure(status: core.statusLine, errno: failure.errno)
      case .exit(let code):
        // A failure that ends the service was logged when it happened.
        logger.notice(code == 0 ? "all mounts stopped" : "exiting with status \(code)")
        exitCode = code
      }
    }
  }

  /// The logger of one mount (its name as metadata), made once per mount.
  func logger(for name: String) -> Logger {
    if let cached = mountLoggers[name] { return cached }
    var mountLogger = logger
    mountLogger[metadataKey: "mount"] = "\(name)"
    mountLoggers[name] = mountLogger
    return mountLogger
  }
}

extension LogLevel {
  var loggerLevel: Logger.Level {
    switch self {
    case .debug: .debug
    case .info: .info
    case .notice: .notice
    case .warning: .warning
    case .error: .error
    }
  }
}
